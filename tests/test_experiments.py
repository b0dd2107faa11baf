"""The shipped studies (conf/experiment) compose, expand to their number of jobs, and every job is
valid; the sweep-report callback is registered (a tiny multirun's own report: test_sweep_records.py)."""
from __future__ import annotations

import copy

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from conftest import CONF_DIR, ROOT, compose_config
from eanet.sweeps.callbacks import count_jobs
from eanet.sweeps.ending import SweepReport
from eanet.validation import validate

# study → (jobs, what varies besides the seed)
STUDIES = {
    "seed": (6, {"model": {"ea", "vit"}}),
    "patch_size": (18, {"model": {"ea", "vit"}, "model.patch_size": {"2", "4", "8"}}),
    "heads": (24, {"model": {"ea", "vit"}, "model.num_heads": {"1", "2", "4", "8"}}),
    "dim_coefficient": (12, {"model.dim_coefficient": {"1", "2", "4", "8"}}),
    "grid": (96, {"model": {"ea"}, "model.patch_size": {"2", "4", "8"},
                  "model.num_heads": {"1", "2", "4", "8"},
                  "model.dim_coefficient": {"1", "2", "4", "8"}}),
}


def sweep_jobs(study: str, extra=()) -> list[list[str]]:
    """The jobs `python -m eanet.run -m +experiment=<study> <extra>` launches, as the basic sweeper
    makes them: the experiment's hydra.sweeper.params, then the command line (which wins)."""
    cfg = compose_config([f"+experiment={study}", *extra], return_hydra_config=True)
    arguments = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    arguments += [f"+experiment={study}", *extra]
    overrides = OverridesParser.create().parse_overrides(arguments)
    [jobs] = BasicSweeper.split_arguments(overrides, max_batch_size=None)
    return jobs


def test_every_study_is_shipped_with_a_readme():
    shipped = {p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")}
    assert set(STUDIES) <= shipped
    for study in STUDIES:
        text = (CONF_DIR / "experiment" / f"{study}.yaml").read_text()
        assert f"python -m eanet.run -m +experiment={study}" in text and "Expected" in text
        readme = (ROOT / "experiments" / study / "README.md").read_text()
        assert f"+experiment={study}" in readme and "Expected" in readme


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_study_expands_to_valid_jobs(study):
    jobs = sweep_jobs(study)
    expected_jobs, varying = STUDIES[study]
    assert len(jobs) == expected_jobs
    seen: dict[str, set[str]] = {}
    composed = {}  # one composition per choice of config groups; values are set on a copy
    for job in jobs:
        groups = tuple(o for o in job if o.split("=")[0] in ("model", "+experiment"))
        if groups not in composed:
            composed[groups] = compose_config(groups)
        cfg = copy.deepcopy(composed[groups])
        for override in job:
            key, value = override.split("=", 1)
            seen.setdefault(key, set()).add(value)
            if override not in groups:
                OmegaConf.update(cfg, key, value)  # the typed schema converts "4" to 4
        typed = validate(cfg)  # every job is a valid configuration
        assert typed.model.attention == {"ea": "external", "vit": "self"}[typed.model.name]
    for key, values in varying.items():
        assert seen[key] == values
    assert len(seen["seed"]) >= 2  # each study repeats over seeds


def test_grid_vit_counterpart_from_the_command_line():
    jobs = sweep_jobs("grid", ["model=vit", "model.dim_coefficient=4"])
    assert len(jobs) == 24  # command-line values replace the experiment's sweep
    cfg = compose_config(jobs[0])
    assert (cfg.model.name, cfg.tracking.experiment_name) == ("vit", "eanet-grid")


def test_callback_registered_and_counts_jobs():
    cfg = compose_config([], return_hydra_config=True)
    assert cfg.hydra.callbacks.sweep_report._target_ == "eanet.sweeps.ending.SweepReport"
    assert cfg.hydra.callbacks.sweep_report.enabled is True
    cfg.hydra.overrides.task = ["+experiment=patch_size", "seed=0"]
    cfg.hydra.sweeper.params = {"model": "ea,vit", "model.patch_size": "2,4,8"}
    assert count_jobs(cfg) == 6


class _Job:
    def __init__(self, status):
        self.status = status


def test_callback_reports_after_the_last_job_even_when_one_failed(monkeypatch):
    from hydra.core.utils import JobStatus

    reported = []
    callback = SweepReport()
    monkeypatch.setattr(callback, "report", lambda config: reported.append(config))
    callback.expected_jobs = 3
    callback.on_job_end(None, _Job(JobStatus.COMPLETED))
    callback.on_job_end(None, _Job(JobStatus.FAILED))
    assert reported == []
    callback.on_job_end("sweep config", _Job(JobStatus.COMPLETED))
    assert reported == ["sweep config"]  # Hydra will not call on_multirun_end after a failure


def test_callback_never_raises(tmp_path, caplog):
    cfg = compose_config([f"tracking.tracking_uri=sqlite:///{tmp_path / 'none.db'}"],
                         return_hydra_config=True)
    SweepReport().on_multirun_end(cfg)  # no store: logged, not raised
    assert "Sweep report failed: ReportError: Tracking store not found" in caplog.text
    caplog.clear()
    SweepReport(enabled=False).on_multirun_end(cfg)
    assert caplog.text == ""


def test_a_study_record_is_committed_whole_and_run_output_is_not():
    """scripts/gpu_study.sh writes each run's history.csv under experiments/<study>/<date>-<gpu>/runs/;
    .gitignore keeps run output (runs/, mlflow.db, multirun/) out of git but not that record."""
    import shutil
    import subprocess

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    paths = ["experiments/seed/2026-12-01-h200/runs/ea-p2-h4-dc4-s0/history.csv",
             "experiments/seed/2026-12-01-h200/record.json",
             "runs/seed/2026-12-01_10-00-00/mlflow.db", "runs/seed-gpu/multirun/0/run.log"]
    done = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.stdout.split() == paths[2:]  # git lists the ignored ones only
