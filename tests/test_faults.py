"""Failures are recorded and contained: a crashing or diverging job does not sink its sweep, and bad
input (a bad override, a missing data file, an unwritable store, a full disk) leaves the store as it was.
"""
from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.entities import ViewType

from conftest import TINY, client_for, compose_config, metric_steps, run_eanet, training_runs
from eanet.config_checks import validate
from eanet.data import DataError
from eanet.tracking import StoreError

# Job 1 of the sweep crashes after its first epoch, through the train.extra_callbacks seam.
CRASH_JOB_1 = """
import sys, keras, eanet.training.train
from hydra.core.hydra_config import HydraConfig

class Crash(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if HydraConfig.get().job.num == 1:
            raise RuntimeError("simulated crash in job 1")

eanet.training.train.extra_callbacks = lambda: [Crash()]
import runpy
runpy.run_module("eanet.run", run_name="__main__")  # as `python -m eanet.run` would
"""


def test_sweep_with_crash_and_nan_finishes_the_rest_and_exits_nonzero(tmp_path):
    # Job 0 is healthy, job 1 crashes, job 2 diverges (a learning rate of 1e30 overflows at once).
    # Hydra skips on_multirun_end after a failed job: the best model is registered all the same.
    result = run_eanet(tmp_path, "-m", "optimizer.learning_rate=0.001,0.002,1e30",
                       "trainer.epochs=2", "tracking.register_best_as=best", script=CRASH_JOB_1)
    assert result.returncode != 0
    runs = {r.data.params["optimizer.learning_rate"]: r for r in training_runs(client_for(tmp_path))}
    assert runs["0.001"].info.status == "FINISHED"
    assert runs["0.002"].info.status == "FAILED"
    assert runs["0.002"].data.tags["eanet.error"] == "RuntimeError: simulated crash in job 1"
    diverged = runs["1e+30"] if "1e+30" in runs else runs["1e30"]
    assert diverged.info.status == "FAILED"
    assert diverged.data.tags["eanet.error"].startswith("NonFiniteLossError: loss became")
    # Stopped at once: no epoch after the one where the loss broke was trained or logged.
    assert len(metric_steps(client_for(tmp_path), diverged.info.run_id)) <= 1
    # The end-of-sweep summary lists both failures with their errors.
    summary = result.stderr[result.stderr.index("eanet sweep"):]
    assert "3 jobs: 1 trained, 2 failed" in summary
    assert "RuntimeError: simulated crash in job 1" in summary
    assert "NonFiniteLossError: loss became" in summary
    [version] = client_for(tmp_path).search_model_versions("name = 'best'")
    assert version.tags["eanet.run_id"] == runs["0.001"].info.run_id
    [missing] = [line for line in result.stdout.splitlines() if "not among them" in line]
    assert "#1 failed" in missing and "#2 failed" in missing


def store_snapshot(folder: Path) -> dict:
    """Everything recorded in `folder`'s store: runs with their data, and artifact file hashes."""
    client = client_for(folder)
    snapshot = {"experiments": sorted((e.experiment_id, e.name, e.lifecycle_stage) for e in
                                      client.search_experiments(view_type=ViewType.ALL))}
    for run in client.search_runs([e[0] for e in snapshot["experiments"]],
                                  run_view_type=ViewType.ALL):
        info = run.info
        snapshot[info.run_id] = {
            "info": (info.status, info.start_time, info.end_time, info.lifecycle_stage),
            "params": run.data.params, "tags": run.data.tags,
            "metrics": {k: [(m.step, m.value, m.timestamp) for m in
                            client.get_metric_history(info.run_id, k)] for k in run.data.metrics},
        }
    artifacts = folder / "mlruns"
    snapshot["artifacts"] = {str(p.relative_to(artifacts)): hashlib.sha256(p.read_bytes()).hexdigest()
                             for p in sorted(artifacts.rglob("*")) if p.is_file()} \
        if artifacts.is_dir() else {}
    return snapshot


@pytest.fixture
def recorded_store(tracking_dir, tmp_path):
    """A store holding one finished run with params, metrics and an artifact; cwd = its folder."""
    uri = tracking_dir
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.set_experiment("eanet")
    with mlflow.start_run(experiment_id=experiment.experiment_id, run_name="earlier"):
        mlflow.log_params({"model.name": "ea", "seed": 0})
        for epoch in range(3):
            mlflow.log_metric("loss", 1.0 / (epoch + 1), step=epoch)
        mlflow.log_text("earlier result", "notes.txt")
    return tmp_path, uri


def test_bad_override_leaves_store_unchanged(recorded_store):
    folder, _ = recorded_store
    before = store_snapshot(folder)
    result = run_eanet(folder, "trainer.epochs=0")
    assert result.returncode != 0
    assert "trainer.epochs" in result.stderr
    unknown = run_eanet(folder, "trainer.epochz=3")
    assert unknown.returncode != 0 and "epochz" in unknown.stderr
    assert store_snapshot(folder) == before


def train_in_process(*overrides):
    from eanet.training.train import train

    cfg = compose_config([*TINY, *overrides])
    return train(validate(cfg), cfg)


def test_missing_data_file_leaves_store_unchanged(recorded_store):
    folder, uri = recorded_store
    before = store_snapshot(folder)
    with pytest.raises(DataError, match="data.path=.*does not exist"):
        train_in_process("data=cifar100", f"data.path={folder / 'missing.npz'}",
                         f"tracking.tracking_uri={uri}")
    assert store_snapshot(folder) == before


def test_unwritable_tracking_location_fails_before_training(recorded_store):
    folder, uri = recorded_store
    before = store_snapshot(folder)
    (folder / "a_file").write_text("not a folder")
    with pytest.raises(StoreError, match="tracking.tracking_uri=.*a_file"):
        train_in_process(f"tracking.tracking_uri=sqlite:///{folder / 'a_file' / 'mlflow.db'}")
    with pytest.raises(StoreError, match="tracking.checkpoint_dir="):
        train_in_process(f"tracking.tracking_uri={uri}",
                         f"tracking.checkpoint_dir={folder / 'a_file' / 'checkpoints'}")
    assert store_snapshot(folder) == before


def test_full_disk_fails_the_run_and_keeps_earlier_work(recorded_store, monkeypatch):
    folder, uri = recorded_store
    before = store_snapshot(folder)
    real_savez, calls = np.savez, []

    def savez_until_disk_full(file, **arrays):  # the second checkpoint hits a full disk mid-write
        calls.append(1)
        if len(calls) == 2:
            file.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_savez(file, **arrays)

    monkeypatch.setattr(np, "savez", savez_until_disk_full)
    with pytest.raises(OSError, match="No space left"):
        train_in_process(f"tracking.tracking_uri={uri}", "trainer.epochs=3")
    after = store_snapshot(folder)
    for key, value in before.items():  # everything recorded before is intact
        if key not in ("artifacts", "experiments"):
            assert after[key] == value
    assert before["artifacts"].items() <= after["artifacts"].items()
    failed = [r for r in training_runs(client_for(folder)) if r.info.run_name != "earlier"]
    assert [r.info.status for r in failed] == ["FAILED"]
    assert "No space left on device" in failed[0].data.tags["eanet.error"]
    # The first epoch's checkpoint survived the failed write of the second.
    [state] = (folder / "checkpoints").glob("*/state.npz")
    with np.load(state, allow_pickle=False) as archive:
        assert json.loads(str(archive["meta"]))["epoch"] == 0
