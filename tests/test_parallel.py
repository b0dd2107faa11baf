"""Parallel sweep jobs (hydra/launcher=joblib, 2 workers) into one fresh SQLite store lose nothing."""
from __future__ import annotations

import pytest

from conftest import client_for, metric_steps, run_eanet, training_runs

pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="pip install 'eanet[joblib]'")

EPOCHS = 2


def test_two_workers_into_one_sqlite_store_record_every_run_and_metric(tmp_path):
    result = run_eanet(tmp_path, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                       "seed=0,1", f"trainer.epochs={EPOCHS}", "tracking.log_model=false")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "database is locked" not in result.stdout + result.stderr
    client = client_for(tmp_path)
    assert [e.name for e in client.search_experiments()].count("eanet") == 1
    runs = training_runs(client)
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1"]
    for run in runs:
        assert run.info.status == "FINISHED"
        for key in ("loss", "top1", "val_loss", "val_top1", "learning_rate", "epoch_time_s"):
            assert metric_steps(client, run.info.run_id, key) == list(range(EPOCHS)), key
        assert {"test_top1", "best_val_top1", "param_count_total"} <= run.data.metrics.keys()
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "history.csv", "learning_curves.png"} <= artifacts
    assert "2 jobs: 2 trained" in result.stderr
    # One sweep run, the parent of both jobs' runs, its progress written from the workers
    [parent] = client.search_runs([runs[0].info.experiment_id], "tags.`eanet.run_type` = 'sweep'")
    assert parent.info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    assert parent.data.metrics["sweep_done"] == 2 and parent.data.metrics["sweep_running"] == 0
