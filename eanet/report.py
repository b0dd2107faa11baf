"""Sweep reports: `python -m eanet.report` turns a sweep's MLflow runs into tables and plots.

    python -m eanet.report                                  the latest sweep in experiment "eanet"
    python -m eanet.report sweep=multirun/2026-11-25/14-03-00 out=reports/patch
    python -m eanet.report sweep=null experiment=eanet-grid           every training run of it
    python -m eanet.report "filter='params.model.patch_size = \\"4\\"'"    a filter on top

Reads the training runs (tag eanet.run_type=train) with `mlflow.search_runs`, builds the tables
of `eanet.results`, writes report.csv (one row per configuration), comparison.csv (EANet vs
ViT), runs.csv (the runs used), report.md and PNG plots into `out`, prints the main table, and
logs the same files as artifacts of a report run (tag eanet.run_type=report) in the same
experiment. The Hydra callback `eanet.callbacks.SweepReport` calls `sweep_report` at the end of
every `python -m eanet.run -m …` sweep.
"""
from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlparse

import hydra
import pandas as pd
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from eanet import results
from eanet.report_files import write_files

log = logging.getLogger(__name__)

# The tags eanet.tracking writes (not imported from there: it loads Keras, a report needs none).
TAG_RUN_TYPE = "eanet.run_type"
TAG_SWEEP = "eanet.sweep_id"
RUN_TYPE_TRAIN, RUN_TYPE_REPORT = "train", "report"


class ReportError(RuntimeError):
    """Why no report can be made (no runs, no store, no metric); printed without a traceback."""


@dataclass
class ReportConfig:
    # Which runs: a sweep id (the sweep's hydra.sweep.dir, as the eanet.sweep_id tag holds it),
    # "latest" (the sweep of the newest training run), or null (every training run).
    sweep: Optional[str] = "latest"
    experiment: str = "eanet"  # MLflow experiment name (tracking.experiment_name of the runs)
    filter: Optional[str] = None  # extra MLflow filter string, ANDed to the selection
    # Output folder. null: <sweep dir>/report when that folder exists here, else reports/<name>.
    out: Optional[str] = None
    tracking_uri: Optional[str] = None  # null: MLFLOW_TRACKING_URI, else ./mlflow.db
    metric: str = "test_top1"  # the accuracy plotted; the report fails if no run has it
    log_to_mlflow: bool = True  # log the files as artifacts of a report run


@dataclass
class Report:
    """What `sweep_report` made: the tables, the folder they were written to, the report run."""
    sweep: Optional[str]
    axes: list[str]
    runs: pd.DataFrame
    table: pd.DataFrame
    comparison: pd.DataFrame
    out: Path
    files: list[Path]
    run_id: Optional[str]


def register_configs() -> None:
    ConfigStore.instance().store(name="report_schema", node=ReportConfig)


def check_store(tracking_uri: Optional[str]) -> str:
    """Point MLflow at the store and make sure it exists (MLflow would create an empty one)."""
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    uri = mlflow.get_tracking_uri()
    parsed = urlparse(uri)
    if uri.startswith("sqlite:///"):
        path = unquote(uri[len("sqlite:///"):])  # sqlite:///rel.db or sqlite:////abs/path.db
    elif parsed.scheme in ("file", ""):
        path = unquote(parsed.path)
    else:
        return uri  # a tracking server: connection errors surface at the first request
    if path != ":memory:" and not Path(path).exists():
        raise ReportError(f"Tracking store not found: {uri} ({Path(path).resolve()} does not "
                          "exist). Run the report where the sweep ran, or pass tracking_uri=…")
    return uri


def _experiment_id(name: str) -> str:
    import mlflow
    from mlflow.tracking import MlflowClient

    try:
        experiment = MlflowClient().get_experiment_by_name(name)
    except mlflow.exceptions.MlflowException as error:  # e.g. a tracking server that is down
        raise ReportError(f"Cannot read the tracking store {_uri()}: {error.message}") from None
    if experiment is None:
        names = sorted(e.name for e in MlflowClient().search_experiments())
        raise ReportError(f"Unknown experiment={name!r} in {_uri()}. "
                          f"Valid values: {', '.join(names) or '(none: the store is empty)'}")
    return experiment.experiment_id


def _uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def _search(experiment_id: str, filter_string: str, **kwargs) -> pd.DataFrame:
    import mlflow

    try:
        return mlflow.search_runs([experiment_id], filter_string=filter_string, **kwargs)
    except mlflow.exceptions.MlflowException as error:
        raise ReportError(f"MLflow rejected the search {filter_string!r}: {error.message}") from None


def latest_sweep(experiment_id: str) -> str:
    """The sweep id of the most recently started training run that belongs to a sweep."""
    frame = _search(experiment_id, f"tags.`{TAG_RUN_TYPE}` = '{RUN_TYPE_TRAIN}'",
                    order_by=["attributes.start_time DESC"])
    column = f"tags.{TAG_SWEEP}"
    sweeps = frame[column].dropna() if column in frame else pd.Series(dtype=str)
    if sweeps.empty:
        raise ReportError("No training run in this experiment belongs to a sweep "
                          "(python -m eanet.run -m …). Use sweep=null to report on every run.")
    return str(sweeps.iloc[0])


def select_runs(cfg: ReportConfig, experiment_id: str) -> tuple[Optional[str], pd.DataFrame]:
    """The training runs the report covers, as `mlflow.search_runs` returns them."""
    sweep = cfg.sweep
    if sweep == "latest":
        sweep = latest_sweep(experiment_id)
    clauses = [f"tags.`{TAG_RUN_TYPE}` = '{RUN_TYPE_TRAIN}'"]
    if sweep is not None:
        clauses.append(f"tags.`{TAG_SWEEP}` = '{sweep}'")
    if cfg.filter:
        clauses.append(cfg.filter)
    frame = _search(experiment_id, " and ".join(clauses))
    if frame.empty:
        raise ReportError(f"No training runs match in experiment {cfg.experiment!r} of {_uri()}: "
                          f"{' and '.join(clauses)}")
    return sweep, frame


def _ordered_params(runs: pd.DataFrame) -> list[str]:
    """Param names, model settings first (the reader's first question), then the rest."""
    names = [c[len("params."):] for c in runs.columns if c.startswith("params.")]
    return sorted(names, key=lambda n: (not n.startswith("model."), n))


def default_out(sweep: Optional[str], experiment: str) -> Path:
    if sweep is not None and Path(sweep).is_dir():
        return Path(sweep) / "report"
    name = Path(sweep).name if sweep else experiment
    return Path("reports") / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def sweep_report(cfg: ReportConfig) -> Report:
    """Select the runs, build the tables, write the files, log them to MLflow; return it all."""
    check_store(cfg.tracking_uri)
    experiment_id = _experiment_id(cfg.experiment)
    sweep, frame = select_runs(cfg, experiment_id)
    metric_column = f"metrics.{cfg.metric}"
    if metric_column not in frame or frame[metric_column].isna().all():
        available = sorted(c[len("metrics."):] for c in frame.columns
                           if c.startswith("metrics.") and frame[c].notna().any())
        raise ReportError(f"Metric {cfg.metric!r} is missing from every one of the {len(frame)} "
                          f"selected runs. Metrics they have: {', '.join(available) or 'none'}")

    params = _ordered_params(frame)
    runs = results.typed_runs(frame)
    if results.MODEL not in runs:
        raise ReportError(f"The selected runs have no {results.MODEL!r} param: not eanet training runs?")
    axes = results.swept_settings(runs, params)
    table = results.configuration_table(runs, axes)
    comparison = results.model_comparison(runs, table, axes)

    out = Path(cfg.out) if cfg.out else default_out(sweep, cfg.experiment)
    title = f"sweep {sweep}" if sweep else f"experiment {cfg.experiment}"
    files = write_files(out, runs, table, comparison, axes, cfg.metric, title,
                        selection=cfg.filter)
    run_id = log_report(experiment_id, sweep, out, files, table) if cfg.log_to_mlflow else None
    return Report(sweep, axes, runs, table, comparison, out, files, run_id)


def log_report(experiment_id: str, sweep: Optional[str], out: Path, files: list[Path],
               table: pd.DataFrame) -> str:
    """A report run beside the runs it summarises, holding the report files as artifacts."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    tags = {TAG_RUN_TYPE: RUN_TYPE_REPORT}
    if sweep is not None:
        tags[TAG_SWEEP] = sweep
    name = f"report-{Path(sweep).name}" if sweep else "report"
    run = client.create_run(experiment_id, tags=tags, run_name=name)
    try:
        client.log_metric(run.info.run_id, "n_configurations", len(table))
        client.log_metric(run.info.run_id, "n_runs", int(table["n"].sum()))
        client.log_metric(run.info.run_id, "n_failed", int(table["n_failed"].sum()))
        for path in files:
            client.log_artifact(run.info.run_id, str(path))
    except Exception:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
def main(cfg: DictConfig) -> None:
    typed: ReportConfig = OmegaConf.to_object(cfg)
    try:
        report = sweep_report(typed)
    except ReportError as error:
        sys.exit(f"eanet.report: {error}")
    scope = f"sweep {report.sweep}" if report.sweep else f"experiment {typed.experiment}"
    print(f"{len(report.runs)} training runs of {scope}; swept settings: "
          f"{', '.join(report.axes) or 'none (model only)'}")
    from eanet.report_files import display_table

    print(display_table(report.table).to_string(index=False))
    if not report.comparison.empty:
        print()
        print(display_table(report.comparison).to_string(index=False))
    print(f"\nreport written to {report.out}/"
          + (f", logged to MLflow run {report.run_id}" if report.run_id else ""))


if __name__ == "__main__":
    main()
