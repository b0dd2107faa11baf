"""A tiny `python -m eanet.run -m model=ea,vit` end to end, as `make run` runs it: what it records
in MLflow (run names, tags, params, metrics, artifacts, data sets, system metrics) and the report
it ends with. It is launched twice: with `sweep.max_runs=1` (the EANet job trains, the ViT job
does not start), then again without a budget (EANet skipped, ViT trained): one sweep run, the
parent of both jobs' runs, across the two launches.

The expected records are those the same sweep made before the code was split into packages
(commit dcafedb): params and tags below were read from that sweep, and its fingerprints are
pinned, since a new fingerprint makes every finished run of an existing store train again.
One sweep serves the module.
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY, client_for, compose_config, run_eanet, training_runs
from eanet.sweeps.identity import legacy_fingerprint

EPOCH_METRICS = {"loss", "top1", "top5", "val_loss", "val_top1", "val_top5", "learning_rate",
                 "epoch_time_s"}
FINAL_METRICS = {"test_loss", "test_top1", "test_top5", "best_val_top1", "train_time_s",
                 "throughput_img_per_s", "param_count_total", "param_count_trainable",
                 "param_count_non_trainable", "param_count_patch_embedding",
                 "param_count_attention", "param_count_mlp", "param_count_norm",
                 "param_count_head", "flops_per_image", "flops_attention_per_image",
                 "peak_rss_mb", "job_overhead_s"}
ARTIFACTS = ["config.yaml", "history.csv", "hydra", "hydra/config.yaml", "hydra/hydra.yaml",
             "hydra/overrides.yaml", "learning_curves.png"]  # the model: once, as the MLflow model
# Each job's overrides as on the command line (Hydra keeps the last trainer.epochs), model= after.
JOB_OVERRIDES = [*("trainer.epochs=1" if o.startswith("trainer.epochs=") else o for o in TINY)]
SYSTEM_METRICS = "tracking.system_metrics_interval_s=1"  # the tiny runs last a few seconds
BUDGET = "sweep.max_runs=1"  # the first launch's
FINGERPRINTS = {"ea-p2-h2-dc2-s0": "45970a0c712c6348", "vit-p2-h2-s0": "66fd5558f7feef84"}
# The same jobs' fingerprints before the backend and ignored settings counted: runs recorded
# under them are found again (eanet.sweeps.jobs.find_runs).
LEGACY_FINGERPRINTS = {"ea": "20ee387a55d958b4", "vit": "cf29b4e71daf7acf"}
# What those jobs computed at dcafedb: Keras 3's contrast clip, now data.augmentation.contrast_clip=true
# (their runs keep these fingerprints; the unclipped default is another computation).
FINGERPRINTS_CLIPPED = {"ea": "3fbe1da9ffb2bd43", "vit": "61ac3ab9eb5d08bd"}

# The EANet job's params: the whole resolved config, flattened, plus the global batch size.
EA_PARAMS = {
    "data.augmentation.contrast": "0.1", "data.augmentation.contrast_clip": "False",
    "data.augmentation.horizontal_flip": "True",
    "data.augmentation.rotation": "0.1", "data.augmentation.zoom": "0.2", "data.image_size": "8",
    "data.name": "synthetic", "data.num_classes": "4", "data.path": "None",
    "data.synthetic_test_size": "32", "data.synthetic_train_size": "64", "data.test_size": "None",
    "data.train_size": "None", "data.validation_split": "0.2",
    "model.attention": "external", "model.attention_dropout": "0.2", "model.attention_layer": "None",
    "model.dim_coefficient": "2",
    "model.embedding_dim": "16", "model.implementation": "auto", "model.mlp_dim": "16",
    "model.mlp_dropout": "0.2", "model.name": "ea", "model.num_blocks": "1", "model.num_heads": "2",
    "model.patch_size": "2",
    "model.projection_dropout": "0.2",
    "optimizer.learning_rate": "0.001", "optimizer.momentum": "0.9", "optimizer.name": "adamw",
    "optimizer.nesterov": "False", "optimizer.weight_decay": "0.0001",
    "quiet": "False", "seed": "0",
    "tracking.checkpoint_dir": "checkpoints", "tracking.experiment_name": "eanet",
    "tracking.keep_checkpoints": "False", "tracking.log_model": "True",
    "tracking.register_best_as": "None", "tracking.rerun": "False",
    "tracking.tracking_uri": "None", "tracking.system_metrics_interval_s": "1.0",
    "tracking.lease_s": "120.0", "data.loader": "None", "library_logs": "False",
    "plan": "False", "sweep.max_runs": "1", "sweep.max_hours": "None",
    "trainer.batch_size": "16", "trainer.distribution": "none", "trainer.epochs": "1",
    "trainer.global_batch_size": "16", "trainer.jit_compile": "None",
    "trainer.label_smoothing": "0.1", "trainer.matmul_precision": "default",
    "trainer.precision": "float32",
    "trainer.steps_per_epoch": "None", "trainer.steps_per_execution": "1",
    "trainer.test_steps": "None", "trainer.validation_steps": "None", "trainer.verbose": "0",
}


@dataclass
class Sweep:
    folder: Path  # where both launches ran, with MLflow's default store (./mlflow.db, ./mlruns)
    stopped: subprocess.CompletedProcess  # the launch with sweep.max_runs=1
    relaunched: subprocess.CompletedProcess
    runs: dict  # {run name: run}
    parent: object  # the sweep's run, after the relaunch
    parent_after_stop: object  # ... and as the budget left it

    def sweep_dir(self, name: str) -> Path:
        """The sweep folder of the launch that trained run `name`."""
        return self.folder / self.runs[name].data.tags["eanet.sweep_id"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    stopped = run_eanet(folder, "-m", "model=ea,vit", "trainer.epochs=1", SYSTEM_METRICS, BUDGET)
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    (parent_after_stop,) = sweep_runs(folder)
    relaunched = run_eanet(folder, "-m", "model=ea,vit", "trainer.epochs=1", SYSTEM_METRICS)
    assert relaunched.returncode == 0, relaunched.stderr[-3000:]
    runs = {r.info.run_name: r for r in training_runs(client_for(folder))}
    (parent,) = sweep_runs(folder)
    return Sweep(folder, stopped, relaunched, runs, parent, parent_after_stop)


def sweep_runs(folder: Path) -> list:
    client = client_for(folder)
    return client.search_runs([client.get_experiment_by_name("eanet").experiment_id],
                              "tags.`eanet.run_type` = 'sweep'")


def artifact_tree(client, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for artifact in client.list_artifacts(run_id, path):
        found.append(artifact.path)
        if artifact.is_dir:
            found += artifact_tree(client, run_id, artifact.path)
    return sorted(found)


def test_one_finished_run_per_model_named_and_tagged(sweep):
    folder, runs = sweep.folder, sweep.runs
    assert sorted(runs) == ["ea-p2-h2-dc2-s0", "vit-p2-h2-s0"]
    assert (folder / "mlflow.db").is_file() and (folder / "mlruns").is_dir()
    for name in runs:
        sweep_id = str(sweep.sweep_dir(name).relative_to(folder))  # Hydra's default sweep folder
        assert re.fullmatch(r"multirun/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d", sweep_id)
        assert (sweep.sweep_dir(name) / "multirun.yaml").is_file()
    # EANet trained in the first launch, ViT in the relaunch
    assert sweep.sweep_dir("ea-p2-h2-dc2-s0") != sweep.sweep_dir("vit-p2-h2-s0")
    for job, (name, model) in enumerate([("ea-p2-h2-dc2-s0", "ea"), ("vit-p2-h2-s0", "vit")]):
        run = runs[name]
        assert run.info.status == "FINISHED"
        tags = {k: v for k, v in run.data.tags.items() if k.startswith("eanet.")}
        assert sorted(tags) == ["eanet.backend", "eanet.fingerprint", "eanet.git_dirty",
                                "eanet.ignored_settings", "eanet.implementation.attention",
                                "eanet.implementation.gelu",
                                "eanet.implementation.norm", "eanet.implementation.optimizer",
                                "eanet.job_num", "eanet.matmul_precision.effective",
                                "eanet.model", "eanet.model_uri", "eanet.onednn",
                                "eanet.overrides", "eanet.packages", "eanet.replicas",
                                "eanet.run_type", "eanet.sweep_id"]  # eanet.backend: added with the JAX backend
        assert tags["eanet.run_type"] == "train" and tags["eanet.model"] == model
        assert tags["eanet.backend"] == "tensorflow"
        assert tags["eanet.fingerprint"] == FINGERPRINTS[name]
        assert tags["eanet.job_num"] == str(job) and tags["eanet.replicas"] == "1"
        assert tags["eanet.onednn"] == "1" and tags["eanet.model_uri"].startswith("models:/m-")
        budget = [BUDGET] if model == "ea" else []
        assert tags["eanet.overrides"].split() == [*JOB_OVERRIDES, f"model={model}",
                                                   SYSTEM_METRICS, *budget]
        assert run.data.tags["mlflow.runName"] == name
        assert run.data.tags["mlflow.parentRunId"] == sweep.parent.info.run_id


@pytest.mark.parametrize("model", ["ea", "vit"])
def test_runs_recorded_before_keep_their_legacy_fingerprints(model):
    overrides = [*JOB_OVERRIDES, f"model={model}"]
    assert legacy_fingerprint(compose_config(overrides)) == LEGACY_FINGERPRINTS[model]


@pytest.mark.parametrize("model", ["ea", "vit"])
def test_runs_recorded_with_the_contrast_clip_keep_their_fingerprints(model):
    overrides = [*JOB_OVERRIDES, f"model={model}", "data.augmentation.contrast_clip=true"]
    assert legacy_fingerprint(compose_config(overrides)) == FINGERPRINTS_CLIPPED[model]


def test_params_are_the_resolved_config(sweep):
    runs = sweep.runs
    assert runs["ea-p2-h2-dc2-s0"].data.params == EA_PARAMS
    vit = runs["vit-p2-h2-s0"].data.params
    assert vit == {**EA_PARAMS, "model.name": "vit", "model.attention": "self",
                   "sweep.max_runs": "None"}


def test_metrics_artifacts_and_data_sets(sweep):
    runs = sweep.runs
    client = client_for(sweep.folder)
    for run in runs.values():
        own = {k for k in run.data.metrics if not k.startswith("system/")}
        assert own == EPOCH_METRICS | FINAL_METRICS
        for key in EPOCH_METRICS:
            assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0], key
        assert artifact_tree(client, run.info.run_id) == ARTIFACTS
        inputs = {d.tags[0].value: d.dataset.name for d in run.inputs.dataset_inputs}
        assert inputs == {"training": "synthetic/training", "validation": "synthetic/validation",
                          "test": "synthetic/test"}
    ea, vit = runs["ea-p2-h2-dc2-s0"].data.metrics, runs["vit-p2-h2-s0"].data.metrics
    assert ea["param_count_total"] == 2_356 and vit["param_count_total"] == 3_300
    assert ea["param_count_attention"] != vit["param_count_attention"]
    assert 0 < ea["flops_attention_per_image"] < vit["flops_attention_per_image"]


def test_every_run_records_system_metrics(sweep):
    """MLflow's own sampling of the training process (psutil), every second here."""
    client = client_for(sweep.folder)
    for run in sweep.runs.values():
        assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes",
                "system/system_memory_usage_percentage"} <= set(run.data.metrics)
        samples = client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
        assert samples and all(0 <= m.value <= 100 * 64 for m in samples)


def test_a_budget_stops_the_sweep_and_a_relaunch_continues(sweep):
    stopped, relaunched = sweep.stopped, sweep.relaunched
    summary = stopped.stderr[stopped.stderr.index("eanet sweep "):].splitlines()
    assert summary[0].endswith("2 jobs: 1 trained, 1 not started (budget)")
    assert summary[2].split()[:5] == ["#1", "not", "started", "(budget)", "model=vit"]
    assert "not started: sweep.max_runs=1 runs started" in summary[2]
    # the sweep's run: not FINISHED, the job left named on it
    before = sweep.parent_after_stop
    assert before.info.status == "KILLED"
    assert before.data.tags["eanet.not_started"].startswith("#1 ")
    assert "model=vit" in before.data.tags["eanet.not_started"]
    assert before.data.metrics["sweep_not_started"] == 1 and before.data.metrics["sweep_done"] == 1
    # the relaunch skipped what finished and trained the rest, under the same sweep run
    summary = relaunched.stderr[relaunched.stderr.index("eanet sweep "):].splitlines()
    assert summary[0].endswith("2 jobs: 1 finished earlier, 1 trained")
    assert summary[1].split()[:3] == ["#0", "finished", "earlier"]
    assert summary[1].endswith("run " + sweep.runs["ea-p2-h2-dc2-s0"].info.run_id)
    assert summary[2].split()[:2] == ["#1", "trained"]
    assert "start job 1 of 2 |" in relaunched.stdout
    assert "end (completed) job 2 of 2 |" in relaunched.stdout


def test_the_sweep_is_one_parent_run_of_its_jobs(sweep):
    parent = sweep.parent
    assert parent.info.status == "FINISHED"  # every job's run finished
    assert parent.info.run_name.startswith("sweep-")
    assert "eanet.not_started" not in parent.data.tags  # the relaunch left none
    assert parent.data.tags["eanet.sweep_id"] == sweep.runs["vit-p2-h2-s0"].data.tags["eanet.sweep_id"]
    assert "model=ea,vit" in parent.data.tags["eanet.overrides"].split()
    assert parent.data.tags["eanet.progress"] == ("job 2 of 2 ended | 1 finished earlier | "
                                                  "1 trained | ETA 0m00s")
    metrics = parent.data.metrics
    assert metrics["sweep_done"] == 2 and metrics["sweep_failed"] == 0
    assert metrics["sweep_running"] == 0 and metrics["sweep_eta_s"] == 0
    client = client_for(sweep.folder)
    done = client.get_metric_history(parent.info.run_id, "sweep_done")
    # one point per job that ended, in each launch (step: jobs ended so far in that launch)
    assert sorted((m.step, m.value) for m in done) == [(1, 1), (1, 1), (2, 1), (2, 2)]
    plan = client.download_artifacts(parent.info.run_id, "plan.txt", str(sweep.folder))
    lines = Path(plan).read_text().splitlines()
    assert lines[1].startswith("#0 ea-p2-h2-dc2-s0 | model=ea | finished earlier (run ")
    assert lines[2].startswith("#1 vit-p2-h2-s0 | model=vit | new |")
    summary = client.download_artifacts(parent.info.run_id, "summary.txt", str(sweep.folder))
    assert "2 jobs: 1 finished earlier, 1 trained" in Path(summary).read_text()


def test_sweep_ends_with_its_report_on_its_run(sweep):
    """The report covers every job of the sweep run (both launches), is written into the last
    launch's folder and logged on the sweep run: no report run of its own."""
    runs = sweep.runs
    report = sweep.sweep_dir("vit-p2-h2-s0") / "report"
    assert sorted(p.name for p in report.iterdir()) == [
        "accuracy_vs_flops.png", "accuracy_vs_parameters.png", "comparison.csv",
        "differences.csv", "report.csv", "report.html", "report.md", "runs.csv"]
    table = pd.read_csv(report / "report.csv")
    assert list(table["model"]) == ["ea", "vit"] and list(table["n"]) == [1, 1]
    assert list(table["test_top1_mean"]) == pytest.approx(
        [runs["ea-p2-h2-dc2-s0"].data.metrics["test_top1"],
         runs["vit-p2-h2-s0"].data.metrics["test_top1"]])
    comparison = pd.read_csv(report / "comparison.csv")
    assert comparison["delta_top1"][0] == pytest.approx(
        table["test_top1_mean"][0] - table["test_top1_mean"][1])

    client = client_for(sweep.folder)
    experiment = client.get_experiment_by_name("eanet").experiment_id
    assert not client.search_runs([experiment], "tags.`eanet.run_type` = 'report'")
    parent = sweep.parent
    assert {"n_configurations", "n_failed", "n_runs"} <= set(parent.data.metrics)
    assert parent.data.metrics["n_runs"] == 2
    assert artifact_tree(client, parent.info.run_id) == [
        "plan.txt", "report", "report/accuracy_vs_flops.png", "report/accuracy_vs_parameters.png",
        "report/comparison.csv", "report/differences.csv", "report/report.csv",
        "report/report.html", "report/report.md", "report/runs.csv", "summary.txt"]
