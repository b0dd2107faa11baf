"""`python -m eanet.run -m … plan=true`: one line per job (run name, overrides, the decision its
job would make — eanet.sweeps.jobs.decide —, trainable parameters, estimated time and its source)
and the total, then exit 0 having written nothing: the store byte-identical, no sweep folder, no
store where there was none.

The store's runs are made by hand (a FINISHED EANet run with a measured throughput, an interrupted
ViT run with a checkpoint after its first epoch): what the plan reads, without training anything.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import TINY, client_for, compose_config, run_eanet, store_uri
from eanet.config import flatten
from eanet.sweeps.plan import format_plan, sweep_plan, fingerprint

THROUGHPUT = 102.0  # images per second of the finished EANet run
JOBS = [["model=ea", "seed=0"], ["model=ea", "seed=1"], ["model=vit", "seed=0"],
        ["model=vit", "seed=1"]]


def job_config(overrides: list[str], *extra: str):
    return compose_config([*TINY, *overrides, *extra])


def record_run(client, experiment_id: str, overrides: list[str], status: str, **metrics) -> str:
    """A training run as eanet records one (tags, params), with only the given metrics."""
    from mlflow.entities import Param

    raw = job_config(overrides)
    run = client.create_run(experiment_id, tags={"eanet.run_type": "train",
                                                 "eanet.fingerprint": fingerprint(raw)})
    params = flatten(OmegaConf.to_container(raw, resolve=True))
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` with the hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_plan_lists_every_job_and_writes_nothing(tmp_path):
    client = client_for(tmp_path)
    experiment = client.create_experiment("eanet")
    finished = record_run(client, experiment, JOBS[0], "FINISHED", throughput_img_per_s=THROUGHPUT,
                          job_overhead_s=4.5)
    killed = record_run(client, experiment, JOBS[2], "KILLED")
    checkpoint = tmp_path / "checkpoints" / killed / "state.npz"  # checkpoints are keyed by run
    checkpoint.parent.mkdir(parents=True)
    np.savez(checkpoint, meta=np.array(json.dumps({"epoch": 0, "run_id": "x"})))
    before = snapshot(tmp_path)

    result = run_eanet(tmp_path, "-m", "model=ea,vit", "seed=0,1", "plan=true")
    assert result.returncode == 0, result.stderr[-3000:]
    assert snapshot(tmp_path) == before  # the store (mlflow.db, mlruns/) byte for byte
    assert not (tmp_path / "multirun").exists()

    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("every job: "))
    header, rows, total = lines[start], lines[start + 1:start + 5], lines[start + 5]
    assert "trainer.epochs=2" in header and "plan=true" in header.lower()
    fields = [[f.strip() for f in row.split("|")] for row in rows]
    assert [f[:3] for f in fields] == [
        ["#0 ea-p2-h2-dc2-s0", "model=ea seed=0", f"finished earlier (run {finished})"],
        ["#1 ea-p2-h2-dc2-s1", "model=ea seed=1", "new"],
        ["#2 vit-p2-h2-s0", "model=vit seed=0", f"resume (run {killed} at epoch 1)"],
        ["#3 vit-p2-h2-s1", "model=vit seed=1", "new"]]
    assert [f[3] for f in fields] == ["2,356 trainable"] * 2 + ["3,300 trainable"] * 2
    assert fields[0][4] == "- (nothing to train)"
    # 51 training images (64 less the validation split) x 2 epochs at the finished run's speed,
    # plus the job's time outside training as the finished run measured it, plus the bookkeeping
    assert fields[1][4] == "0m06s (from 1 finished run; start-up as measured)"
    # ViT has no finished run: steps timed on this machine, one epoch left of two
    assert fields[2][4].endswith("(timed here (3 steps of vit-p2-h2-s0, scaled); start-up as measured)")
    assert fields[3][4].endswith("(timed here (3 steps of vit-p2-h2-s0, scaled); start-up as measured)")
    assert total.startswith("total: 4 jobs (1 finished earlier, 2 new, 1 resume); estimated ")
    assert finished  # the run the plan skips


def test_plan_without_a_store_creates_none_and_marks_the_budget(tmp_path):
    uri = store_uri(tmp_path / "absent")
    jobs = [(o, job_config(o, f"tracking.tracking_uri={uri}", "sweep.max_runs=3")) for o in JOBS]
    plans = sweep_plan(jobs, time_steps=False, count_parameters=False)
    assert not (tmp_path / "absent").exists()
    assert [p.status_text for p in plans] == ["new"] * 3 + [
        "not started (budget) (sweep.max_runs=3)"]
    assert [p.name for p in plans] == ["ea-p2-h2-dc2-s0", "ea-p2-h2-dc2-s1", "vit-p2-h2-s0",
                                       "vit-p2-h2-s1"]
    text = format_plan(plans)
    assert "no estimate: no finished run with these model settings" in text
    assert text.splitlines()[-1] == ("total: 4 jobs (3 new, 1 not started (budget)); estimated "
                                     "time 0m00s + 3 jobs without an estimate")


@pytest.mark.parametrize("setting", ["sweep.max_runs=0", "sweep.max_hours=-1",
                                     "tracking.system_metrics_interval_s=0"])
def test_bad_budgets_fail_naming_the_setting(setting):
    from eanet.config import ConfigError
    from eanet.config_checks import validate

    with pytest.raises(ConfigError, match=setting.split("=")[0].replace(".", r"\.")):
        validate(compose_config([setting]))


def test_jobs_composed_once_per_group_choice_equal_hydras_composition():
    """eanet.sweeps.callbacks.compose_jobs: the value overrides set on one composition give each
    job the config Hydra composes for it."""
    from hydra import compose, initialize_config_dir

    from conftest import CONF_DIR
    from eanet.sweeps.callbacks import compose_jobs

    jobs = [[*TINY, "model=vit", "model.patch_size=4", "optimizer.learning_rate=0.01"],
            [*TINY, "model=ea", "model.patch_size=4", "seed=3", "+experiment=grid"],
            [*TINY, "model=ea", "model.patch_size=2", "data.path=null", "quiet=true"]]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        fast = compose_jobs("config", jobs)
        assert [OmegaConf.to_container(c, resolve=True) for c in fast] == [
            OmegaConf.to_container(compose("config", overrides=job), resolve=True) for job in jobs]
    assert fast[0].optimizer.learning_rate == 0.01 and fast[1].tracking.experiment_name == "eanet-grid"


def test_plan_shows_a_shared_computation_and_a_claim_held_elsewhere(tmp_path):
    """ViT ignores dim_coefficient: its second job is the first one's computation. A live claim
    (another process training it now) is shown as such: the job will wait for it."""
    from eanet.tracking.ledger import Ledger

    uri = store_uri(tmp_path)
    jobs = [["model=ea", "model.dim_coefficient=1"], ["model=vit", "model.dim_coefficient=1"],
            ["model=ea", "model.dim_coefficient=2"], ["model=vit", "model.dim_coefficient=2"]]
    configs = [(o, job_config(o, f"tracking.tracking_uri={uri}")) for o in jobs]
    lease = Ledger(uri, "eanet", lease_s=60).claim(fingerprint(configs[0][1]), 0)
    try:
        plans = sweep_plan(configs, time_steps=False, count_parameters=False)
    finally:
        lease.release()
    assert [p.status.value for p in plans] == ["running elsewhere", "new", "new",
                                               "finished earlier"]
    assert plans[0].status_text.endswith(": waits for it)")
    assert plans[3].detail == "as job #1"


def test_budget_places_by_runs_and_by_hours(tmp_path):
    """eanet.sweeps.budget: places are write-once params on the sweep's parent run, so jobs in
    other processes or machines count them too; a launcher's retry of a job keeps its place."""
    from eanet.config import Config, SweepConfig
    from eanet.sweeps.budget import budget_refusal
    from eanet.tracking.record import SweepRecord

    client = client_for(tmp_path)
    parent = client.create_run(client.create_experiment("eanet")).info.run_id
    record = SweepRecord(store_uri(tmp_path), parent)
    launch = record.start_launch(total=3)

    def refusal(budget: SweepConfig, job: int, now=None):
        return budget_refusal(Config(sweep=budget), record, job, now=now)

    runs = SweepConfig(max_runs=2)
    assert [refusal(runs, job) for job in range(3)] == [
        None, None, "not started: sweep.max_runs=2 runs started"]
    assert refusal(runs, 1) is None  # a retry keeps its place
    hours = SweepConfig(max_hours=0.5)
    assert refusal(hours, 0, now=launch["start"] + 1799) is None
    assert refusal(hours, 1, now=launch["start"] + 1800) == \
        "not started: sweep.max_hours=0.5 passed"
    assert budget_refusal(Config(sweep=SweepConfig()), None, None) is None  # no budget
