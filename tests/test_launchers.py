"""Sweeps on Hydra's launchers: every job logs to the same MLflow experiment and sweep, its run
nested under the sweep's parent run.

- Submitit's local executor (the SLURM launcher's twin, separate processes): a real 2-job sweep.
- SLURM: the `hydra/launcher=slurm` preset composes into Submitit's SLURM launcher (no cluster here).
- Ray: a real 2-job sweep on a local Ray instance, with a Python that has hydra-ray-launcher
  (EANET_RAY_PYTHON; the plugin pins cloudpickle<3, so it lives in its own environment).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import client_for, compose_config, store_uri, training_runs
from servers import run_sweep


def sweep_records(store: str) -> list:
    runs = training_runs(client_for(store), order_by="attributes.run_name ASC")
    assert runs, f"no training runs in experiment 'eanet' of {store}"
    return runs


def assert_one_sweep_of_two(runs: list, cwd: Path, store: str) -> None:
    assert [r.info.run_name for r in runs] == ["ea-p2-h2-dc2-s0", "ea-p2-h2-dc2-s1"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    (sweep,) = {r.data.tags["eanet.sweep_id"] for r in runs}
    assert (cwd / sweep / "multirun.yaml").is_file()  # the tag names the sweep's folder
    assert sorted(r.data.tags["eanet.job_num"] for r in runs) == ["0", "1"]
    # one sweep run, the parent of both, its progress written from the jobs' own processes
    [parent] = client_for(store).search_runs([runs[0].info.experiment_id],
                                             "tags.`eanet.run_type` = 'sweep'")
    assert parent.info.status == "FINISHED" and parent.data.tags["eanet.sweep_id"] == sweep
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    assert parent.data.metrics["sweep_done"] == 2


def test_submitit_local_sweep_logs_both_jobs_to_one_experiment(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="pip install 'eanet[slurm]' (hydra-submitit-launcher)")
    # MLflow's default store (./mlflow.db in the working directory): the jobs are other
    # processes started by Submitit, in the same working directory.
    result = run_sweep(tmp_path, "seed=0,1", "hydra/launcher=submitit_local",
                       "trainer.epochs=1", "tracking.log_model=false")
    runs = sweep_records(store_uri(tmp_path))
    assert_one_sweep_of_two(runs, tmp_path, store_uri(tmp_path))
    assert "Submitit" in result.stdout + result.stderr  # the launcher that ran them
    # each job ran in a process of its own (a Submitit job id each), and printed its progress line
    logs = sorted((tmp_path / runs[0].data.tags["eanet.sweep_id"] / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2 and logs[0].parent.name != logs[1].parent.name
    assert all(" of 2 | elapsed " in log.read_text() for log in logs)


def test_slurm_preset_composes_into_submitits_slurm_launcher(monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="pip install 'eanet[slurm]' (hydra-submitit-launcher)")
    monkeypatch.setenv("SLURM_PARTITION", "gpu")
    cfg = compose_config(["hydra/launcher=slurm", "tracking=server"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1
    assert launcher.account is None  # SLURM_ACCOUNT unset
    assert launcher.submitit_folder.endswith("/.submitit/%j")  # inside the sweep folder


def test_tracking_server_preset_reads_the_environment(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert compose_config(["tracking=server"]).tracking.tracking_uri == "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.lab:5000")
    assert compose_config(["tracking=server"]).tracking.tracking_uri == "http://mlflow.lab:5000"


RAY_PYTHON = os.environ.get("EANET_RAY_PYTHON")


@pytest.mark.skipif(not RAY_PYTHON, reason="set EANET_RAY_PYTHON to a Python with "
                    "`pip install 'eanet[ray]'` (hydra-ray-launcher pins cloudpickle<3: own venv)")
def test_ray_sweep_logs_both_jobs_to_one_experiment(tmp_path):
    store = store_uri(tmp_path)
    run_sweep(tmp_path, "seed=0,1", "hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2",
              "+hydra.launcher.ray.init.include_dashboard=false", "trainer.epochs=1",
              "tracking.log_model=false", f"tracking.tracking_uri={store}", python=RAY_PYTHON)
    assert_one_sweep_of_two(sweep_records(store), tmp_path, store)
