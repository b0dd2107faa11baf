"""What sweeps and reports ask of the store: runs by fingerprint, by sweep, the latest sweep;
the report run beside them; the registration of a sweep's best model; a run's artifact file for a
study's record (eanet.report.record).

Every query goes through `mlflow.search_runs` / `MlflowClient.search_runs` with a filter on
eanet's tags (eanet.tracking.tags); a filter MLflow rejects becomes a `StoreError` naming it.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import mlflow
import pandas as pd
from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient

from eanet.tracking import StoreError
from eanet.tracking.store import experiment_id, local_store_path, use_store
from eanet.tracking.tags import (RUN_TYPE_REPORT, RUN_TYPE_TRAIN, TAG_FINGERPRINT,
                                 TAG_LEGACY_FINGERPRINT, TAG_MODEL_URI, TAG_RUN_ID, TAG_RUN_TYPE,
                                 TAG_SWEEP)

log = logging.getLogger(__name__)


def _literal(value: str) -> str:
    """A string as a quoted literal of MLflow's filter syntax."""
    return "'" + value.replace("'", "\\'") + "'"


def runs_with_fingerprint(tracking_uri: Optional[str], experiment_name: str,
                          fingerprint: str) -> list[Run]:
    """Active (not deleted) runs of this configuration, newest first; none in a fresh store."""
    use_store(tracking_uri)  # a fresh store's tables created under the store's lock
    client = MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    return client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{TAG_FINGERPRINT}` = {_literal(fingerprint)}",
        run_view_type=ViewType.ACTIVE_ONLY, order_by=["attributes.start_time DESC"])


def adopt_runs(run_ids: list[str], fp: str, legacy: str) -> None:
    """Runs recorded under the legacy fingerprint of a computation, tagged with its fingerprint
    (the legacy one kept beside it), so that every later lookup finds them directly."""
    client = MlflowClient()
    for run_id in run_ids:
        client.set_tag(run_id, TAG_LEGACY_FINGERPRINT, legacy)
        client.set_tag(run_id, TAG_FINGERPRINT, fp)


def runs_filter(run_ids: list[str]) -> str:
    """An MLflow filter selecting these runs (a sweep's record: eanet.tracking.record)."""
    if not run_ids:
        return "attributes.run_id = 'none'"
    return f"attributes.run_id IN ({', '.join(_literal(r) for r in run_ids)})"


def _existing_experiment_id(tracking_uri: Optional[str], experiment_name: str) -> Optional[str]:
    """The experiment's id, reading only: a local store that does not exist is not created, a
    missing experiment is None, an unreachable server a StoreError."""
    uri = tracking_uri or mlflow.get_tracking_uri()
    path = local_store_path(uri)
    if path is not None and not path.exists():
        return None
    use_store(tracking_uri)  # opening it creates a local store
    try:
        experiment = MlflowClient().get_experiment_by_name(experiment_name)
    except mlflow.exceptions.MlflowException as error:  # e.g. a tracking server that is down
        raise StoreError(f"Cannot read the tracking store {uri} "
                         f"(tracking.tracking_uri={tracking_uri}): {error.message}") from None
    return None if experiment is None else experiment.experiment_id


def read_training_runs(tracking_uri: Optional[str], experiment_name: str) -> pd.DataFrame:
    """Every active training run of an experiment (`mlflow.search_runs`' DataFrame), reading
    only; none when the store or the experiment does not exist."""
    experiment_id = _existing_experiment_id(tracking_uri, experiment_name)
    return pd.DataFrame() if experiment_id is None else search_training_runs(experiment_id)


def read_sweep_runs(tracking_uri: Optional[str], experiment_name: str) -> pd.DataFrame:
    """Every sweep's parent run of an experiment, reading only (as `read_training_runs`)."""
    from eanet.tracking.tags import RUN_TYPE_SWEEP

    experiment_id = _existing_experiment_id(tracking_uri, experiment_name)
    if experiment_id is None:
        return pd.DataFrame()
    return mlflow.search_runs([experiment_id], f"tags.`{TAG_RUN_TYPE}` = '{RUN_TYPE_SWEEP}'")


def search_training_runs(experiment_id: str, sweep: Optional[str] = None,
                         extra_filter: Optional[str] = None, **kwargs) -> pd.DataFrame:
    """Training runs of an experiment as `mlflow.search_runs`' DataFrame, optionally of one
    sweep and narrowed by a user's filter (ANDed)."""
    clauses = [f"tags.`{TAG_RUN_TYPE}` = '{RUN_TYPE_TRAIN}'"]
    if sweep is not None:
        clauses.append(f"tags.`{TAG_SWEEP}` = {_literal(sweep)}")
    if extra_filter:
        clauses.append(extra_filter)
    filter_string = " and ".join(clauses)
    try:
        frame = mlflow.search_runs([experiment_id], filter_string=filter_string, **kwargs)
    except mlflow.exceptions.MlflowException as error:
        raise StoreError(f"MLflow rejected the search {filter_string!r}: {error.message}") from None
    frame.attrs["filter"] = filter_string
    frame.attrs["store"] = mlflow.get_tracking_uri()
    return frame


def latest_sweep(experiment_id: str) -> Optional[str]:
    """The sweep id of the most recently started sweep (its parent run), else of the most
    recently started training run that belongs to a sweep."""
    from eanet.tracking.tags import RUN_TYPE_SWEEP

    parents = mlflow.search_runs([experiment_id], f"tags.`{TAG_RUN_TYPE}` = '{RUN_TYPE_SWEEP}'",
                                 order_by=["attributes.start_time DESC"], max_results=1,
                                 output_format="list")
    if parents and TAG_SWEEP in parents[0].data.tags:
        return parents[0].data.tags[TAG_SWEEP]
    frame = search_training_runs(experiment_id, order_by=["attributes.start_time DESC"])
    column = f"tags.{TAG_SWEEP}"
    sweeps = frame[column].dropna() if column in frame else pd.Series(dtype=str)
    return None if sweeps.empty else str(sweeps.iloc[0])


def sweep_record_runs(experiment_id: str, sweep: str) -> Optional[list[str]]:
    """The runs of a sweep's record (eanet.tracking.record: every job it covers, whichever sweep
    trained its run), found by the sweep id its parent run holds; None for a sweep with no
    record (recorded before sweeps kept one: select it by its runs' eanet.sweep_id tag)."""
    from eanet.tracking.record import SweepRecord, parent_run_id
    from eanet.tracking.tags import RUN_TYPE_SWEEP

    parent = parent_run_id(sweep) if Path(sweep).is_dir() else None
    if parent is None:
        found = mlflow.search_runs(
            [experiment_id], f"tags.`{TAG_RUN_TYPE}` = '{RUN_TYPE_SWEEP}' and "
                             f"tags.`{TAG_SWEEP}` = {_literal(sweep)}",
            order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
        parent = found[0].info.run_id if found else None
    if parent is None:
        return None
    record = SweepRecord(None, parent)
    return record.run_ids() if record.jobs() else None


def log_report_run(experiment_id: str, sweep: Optional[str], files: list[Path],
                   metrics: dict[str, float]) -> str:
    """A report run beside the runs it summarises, holding the report files as artifacts."""
    client = MlflowClient()
    tags = {TAG_RUN_TYPE: RUN_TYPE_REPORT}
    if sweep is not None:
        tags[TAG_SWEEP] = sweep
    name = f"report-{Path(sweep).name}" if sweep else "report"
    run = client.create_run(experiment_id, tags=tags, run_name=name)
    try:
        for key, value in metrics.items():
            client.log_metric(run.info.run_id, key, value)
        for path in files:
            client.log_artifact(run.info.run_id, str(path))
    except Exception:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def register_best_model(tracking_uri: Optional[str], run_ids: list[str], name: str,
                        sweep_id: str):
    """Register the model of the FINISHED run among `run_ids` (a sweep's record) with the highest
    best_val_top1 as `name`; returns the new ModelVersion, or None when none of them has a model."""
    use_store(tracking_uri)
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"{runs_filter(run_ids)} and attributes.status = 'FINISHED'",
        order_by=["metrics.best_val_top1 DESC"], output_format="list")
    runs = [r for r in runs if TAG_MODEL_URI in r.data.tags]
    if not runs:
        log.warning("no finished run with a model in sweep %s: nothing registered as %s",
                    sweep_id, name)
        return None
    best = runs[0]
    version = mlflow.register_model(
        best.data.tags[TAG_MODEL_URI], name,
        tags={TAG_SWEEP: sweep_id, TAG_RUN_ID: best.info.run_id,
              "best_val_top1": str(best.data.metrics.get("best_val_top1"))})
    log.info("registered %s (run %s, best_val_top1 %s) as %s version %s", best.info.run_name,
             best.info.run_id, best.data.metrics.get("best_val_top1"), name, version.version)
    return version


def download_run_file(run_id: str, artifact_path: str, folder: Path) -> Optional[Path]:
    """One artifact file of a run, copied into `folder`; None when the run has none (a run that
    failed before writing it)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path,
                                                        dst_path=str(folder)))
    except (mlflow.exceptions.MlflowException, OSError):
        return None


def run_metrics(tracking_uri: Optional[str], run_id: str) -> dict[str, float]:
    """The latest value of each metric of one run (a tuning sweep's best trial, eanet.sweeps.tune)."""
    use_store(tracking_uri)
    return dict(MlflowClient().get_run(run_id).data.metrics)
