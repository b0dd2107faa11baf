"""Helpers for the fault tests: run `python -m eanet.run` in a subprocess, read and snapshot a store."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]

# conftest.TINY as command-line overrides, plus a shorter schedule for the sweep tests.
from conftest import TINY  # noqa: E402

# Training runs only: every sweep also records a report run (eanet.run_type=report).
TRAINING_RUNS = "tags.`eanet.run_type` = 'train'"


def eanet_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "PYTEST_CURRENT_TEST")}
    env.update(PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="ignore")
    return env


def eanet_command(*overrides: str, script: str | None = None) -> list[str]:
    """`python -m eanet.run TINY… overrides…`, or `python -c script` that ends by calling main."""
    head = [sys.executable, "-c", script] if script else [sys.executable, "-m", "eanet.run"]
    flags = [o for o in overrides if o.startswith("-")]  # -m must precede the overrides
    return [*head, *flags, *TINY, *(o for o in overrides if not o.startswith("-"))]


def run_eanet(cwd: Path, *overrides: str, script: str | None = None, timeout: int = 600):
    return subprocess.run(eanet_command(*overrides, script=script), cwd=cwd, env=eanet_env(),
                          capture_output=True, text=True, timeout=timeout)


def start_eanet(cwd: Path, *overrides: str, log: Path) -> subprocess.Popen:
    """In its own process group, so signals sent to it never reach pytest; output to `log`."""
    with open(log, "w") as output:  # a file, not a pipe: a full pipe would stall the run
        return subprocess.Popen(eanet_command(*overrides), cwd=cwd, env=eanet_env(),
                                stdout=output, stderr=subprocess.STDOUT, start_new_session=True)


def client_for(folder: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")


def training_runs(client: MlflowClient, experiment: str = "eanet") -> list:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], TRAINING_RUNS, run_view_type=ViewType.ACTIVE_ONLY,
                              order_by=["attributes.start_time ASC"])


def metric_steps(client: MlflowClient, run_id: str, key: str = "loss") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


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
