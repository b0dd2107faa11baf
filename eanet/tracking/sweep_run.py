"""A sweep is one MLflow run, the parent of its jobs' training runs (tag `mlflow.parentRunId`):
the MLflow UI's runs table shows it as one row that expands into its jobs.

- `open_sweep_run`: the parent of a sweep, found by its key (`eanet.sweep_key`: what the sweep
  computes, eanet.sweeps.parent.sweep_key) and reused, or created; RUNNING while jobs run;
- `log_sweep_progress`: done / failed / running / ETA, as metrics (one step per job that ended)
  and one readable tag, written from whichever process ran the job (the store is what they share);
- `end_sweep_run`: its files, summary and final status (FINISHED only if every job finished).

The sweep's own settings are tags (`eanet.overrides`, `eanet.sweep_id` of the latest launch):
params cannot change value, and a relaunch may add a budget.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from mlflow.entities import RunStatus, ViewType
from mlflow.tracking import MlflowClient

from eanet.tracking.search import _literal
from eanet.tracking.store import experiment_id, use_store
from eanet.tracking.tags import (RUN_TYPE_SWEEP, RUN_TYPE_TUNING, TAG_NOT_STARTED, TAG_OVERRIDES,
                                 TAG_PARENT, TAG_PROGRESS, TAG_RUN_TYPE, TAG_SWEEP, TAG_SWEEP_KEY,
                                 TAG_TUNING)

log = logging.getLogger(__name__)


def _client(tracking_uri: Optional[str]) -> MlflowClient:
    use_store(tracking_uri)
    return MlflowClient()


def open_sweep_run(tracking_uri: Optional[str], experiment_name: str, key: str, name: str,
                   sweep_id: str, overrides: str) -> str:
    """The id of the sweep's parent run: the newest active run with this key, set RUNNING
    again, or a new one named `name`."""
    return open_parent_run(tracking_uri, experiment_name, RUN_TYPE_SWEEP, TAG_SWEEP_KEY, key, name,
                           {TAG_SWEEP: sweep_id, TAG_OVERRIDES: overrides})


def open_parent_run(tracking_uri: Optional[str], experiment_name: str, run_type: str,
                    key_tag: str, key: str, name: str, tags: dict[str, str]) -> str:
    """A parent run found again by what it computes (`key_tag` = `key`, for a relaunch), set
    RUNNING with `tags` updated; else a new one named `name`. Sweeps (`RUN_TYPE_SWEEP`) and
    tuning sweeps (`RUN_TYPE_TUNING`, eanet.sweeps.tune) nest their jobs' runs under it."""
    exp_id = experiment_id(tracking_uri, experiment_name)
    client = _client(tracking_uri)
    found = client.search_runs(
        [exp_id], f"tags.`{TAG_RUN_TYPE}` = '{run_type}' and tags.`{key_tag}` = {_literal(key)}",
        run_view_type=ViewType.ACTIVE_ONLY, order_by=["attributes.start_time DESC"],
        max_results=1)
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        for tag, value in tags.items():
            client.set_tag(run_id, tag, value)
        log.info("%s run %s (%s) continued", run_type, run_id, found[0].info.run_name)
        return run_id
    run = client.create_run(exp_id, run_name=name,
                            tags={TAG_RUN_TYPE: run_type, key_tag: key, **tags})
    log.info("%s run %s (%s) in %s", run_type, run.info.run_id, name, client.tracking_uri)
    return run.info.run_id


def log_sweep_progress(tracking_uri: Optional[str], parent_run_id: str, step: int,
                       metrics: dict[str, float], line: str) -> None:
    """Progress metrics at `step` (jobs ended so far) and the readable `eanet.progress` tag."""
    client = _client(tracking_uri)
    for key, value in metrics.items():
        client.log_metric(parent_run_id, key, value, step=step)
    client.set_tag(parent_run_id, TAG_PROGRESS, line)


def log_sweep_metric(tracking_uri: Optional[str], parent_run_id: str, key: str,
                     value: float) -> None:
    _client(tracking_uri).log_metric(parent_run_id, key, value)


def log_sweep_text(tracking_uri: Optional[str], parent_run_id: str, text: str, file: str) -> None:
    _client(tracking_uri).log_text(parent_run_id, text, file)


def end_sweep_run(tracking_uri: Optional[str], parent_run_id: str, status: str,
                  texts: dict[str, str], tags: dict[str, str]) -> None:
    """Log `texts` ({artifact file: content}) and `tags` on the parent, then end it `status`.
    A budget's list of jobs not started goes when a relaunch leaves none."""
    client = _client(tracking_uri)
    for tag, value in tags.items():
        client.set_tag(parent_run_id, tag, value[:5000])
    if TAG_NOT_STARTED not in tags and TAG_NOT_STARTED in client.get_run(parent_run_id).data.tags:
        client.delete_tag(parent_run_id, TAG_NOT_STARTED)
    for file, text in texts.items():
        client.log_text(parent_run_id, text, file)
    client.set_terminated(parent_run_id, RunStatus.to_string(RunStatus.from_string(status)))


def log_report_files(parent_run_id: str, files: list[Path], metrics: dict[str, float]) -> None:
    """A sweep report's files (as artifacts, under report/) and summary metrics, on the parent."""
    client = MlflowClient()
    for key, value in metrics.items():
        client.log_metric(parent_run_id, key, value)
    for path in files:
        client.log_artifact(parent_run_id, str(path), "report")


def tuning_parent_run(tracking_uri: Optional[str], experiment_name: str, studies: str,
                      sweep: str) -> str:
    """The parent run of a tuning sweep's trials (MLflow nests them under it): the one holding
    `studies` (its studies' names) if a killed launch left it, else a new RUNNING one."""
    return open_parent_run(tracking_uri, experiment_name, RUN_TYPE_TUNING, TAG_TUNING, studies,
                           f"tune-{Path(sweep).name}", {TAG_SWEEP: sweep})


def end_tuning_parent_run(run_id: str, status: str, files: list[Path] = ()) -> None:
    """Attach the tuning summary to the parent run and end it with `status`."""
    client = MlflowClient()
    for path in files:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status)
