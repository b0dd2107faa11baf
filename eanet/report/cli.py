"""Sweep reports: `python -m eanet.report` (eanet/report/__main__.py) turns a sweep's MLflow runs into tables and plots.

    python -m eanet.report                                  the latest sweep in experiment "eanet"
    python -m eanet.report sweep=multirun/2026-11-25/14-03-00 out=reports/patch
    python -m eanet.report sweep=null experiment_name=eanet-grid      every training run of it
    python -m eanet.report "filter='params.model.patch_size = \\"4\\"'"    a filter on top
    python -m eanet.report "sweeps=[multirun/a,multirun/b]"          several sweeps at once
    python -m eanet.report sweep=null "experiment_names=[eanet,eanet-grid]"   several experiments

Reads the training runs (tag eanet.run_type=train) through `eanet.tracking.search`, builds the
tables of `eanet.report.tables`, writes report.csv (one row per configuration), comparison.csv (every
model against the `baseline` model, ViT by default, each Δ with its 95% interval), differences.csv
(every metric's Δ, interval, method and verdict: eanet.report.stats), runs.csv (the runs used),
report.md, report.html (the same page, self-contained) and PNG plots into `out`, prints the main
table, the verdicts and which sweeps it read, and logs the same files as artifacts of a report run
(tag eanet.run_type=report) in the same experiment. The Hydra callback
`eanet.sweeps.ending.SweepReport` calls `sweep_report` at the end of every
`python -m eanet.run -m …` sweep.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import pandas as pd
from hydra.core.config_store import ConfigStore

from eanet.report import tables as results
from eanet.report.files import verdict_lines, write_files
from eanet.tracking import StoreError
from eanet.tracking.tags import TAG_SWEEP

log = logging.getLogger(__name__)


class ReportError(RuntimeError):
    """Why no report can be made (no runs, no store, no metric); printed without a traceback."""


@dataclass
class ReportConfig:
    # Which runs: a sweep id (the sweep's hydra.sweep.dir, as the eanet.sweep_id tag holds it),
    # "latest" (the sweep of the newest training run), or null (every training run).
    sweep: Optional[str] = "latest"
    # MLflow experiment (tracking.experiment_name of the runs). Not `experiment`: on the command
    # line that is the conf/experiment/ config group.
    experiment_name: str = "eanet"
    # Several at once, read together into one report (each list, when given, replaces its single
    # form above): sweep ids ("latest" allowed), and experiments; `filter` applies to every one.
    sweeps: list[str] = field(default_factory=list)
    experiment_names: list[str] = field(default_factory=list)
    filter: Optional[str] = None  # extra MLflow filter string, ANDed to the selection
    # Output folder. null: <sweep dir>/report when that folder exists here, else reports/<name>.
    out: Optional[str] = None
    tracking_uri: Optional[str] = None  # null: MLFLOW_TRACKING_URI, else ./mlflow.db
    metric: str = "test_top1"  # the accuracy plotted; the report fails if no run has it
    # comparison.csv: every other model against this one (model.name), for the same other settings
    baseline: str = "vit"
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
    differences: pd.DataFrame = field(default_factory=pd.DataFrame)  # every metric, every pair
    sources: list[str] = field(default_factory=list)  # what was read: sweeps and their run counts
    verdicts: list[str] = field(default_factory=list)  # the verdict lines on `metric`


def register_configs() -> None:
    ConfigStore.instance().store(name="report_schema", node=ReportConfig)


def select_runs(cfg: ReportConfig, experiment_id: str) -> tuple[Optional[str], pd.DataFrame]:
    """The training runs the report covers, as `mlflow.search_runs` returns them."""
    from eanet.tracking.search import (latest_sweep, runs_filter, search_training_runs,
                                       sweep_record_runs)

    sweep = cfg.sweep
    if sweep == "latest":
        sweep = latest_sweep(experiment_id)
        if sweep is None:
            raise ReportError("No training run in this experiment belongs to a sweep "
                              "(python -m eanet.run -m …). Use sweep=null to report on every run.")
    recorded = sweep_record_runs(experiment_id, sweep) if sweep is not None else None
    if recorded is not None:  # every job of the sweep, whichever sweep trained its run
        clauses = " and ".join(c for c in (runs_filter(recorded), cfg.filter) if c)
        frame = search_training_runs(experiment_id, None, clauses)
    else:
        frame = search_training_runs(experiment_id, sweep, cfg.filter)
    if frame.empty:
        raise ReportError(f"No training runs match in experiment {cfg.experiment_name!r} of "
                          f"{frame.attrs['store']}: {frame.attrs['filter']}")
    return sweep, frame


def select_all(cfg: ReportConfig) -> tuple[list[str], Optional[str], pd.DataFrame]:
    """The training runs of every experiment and sweep the config names (`select_runs` for each
    pair, the frames stacked): the experiments' ids, the one sweep read (None when several or
    none), the runs. A sweep found in none of the experiments is an error naming it."""
    from eanet.tracking.store import existing_experiment_id

    experiments = cfg.experiment_names or [cfg.experiment_name]
    sweeps = cfg.sweeps or [cfg.sweep]
    ids, frames, found, reads = [], [], {}, []
    for name in experiments:
        ids.append(existing_experiment_id(cfg.tracking_uri, name, setting="experiment_name"))
        for sweep in sweeps:
            one = replace(cfg, experiment_name=name, sweep=sweep)
            try:
                read, frame = select_runs(one, ids[-1])
            except ReportError as error:
                found.setdefault(sweep, error)
                continue
            found[sweep] = read
            reads.append(read)
            frames.append(frame)
    missing = [error for error in found.values() if isinstance(error, ReportError)]
    if missing:
        raise missing[0] if len(experiments) == 1 else ReportError(
            f"{missing[0]} (in none of the experiments {', '.join(experiments)})")
    frame = pd.concat(frames, ignore_index=True).drop_duplicates("run_id")
    return ids, (reads[0] if len(set(reads)) == 1 else None), frame


def sources(frame: pd.DataFrame, experiments: list[str]) -> list[str]:
    """What a report read, for its reader: each sweep (eanet.sweep_id) with its runs, runs of no
    sweep, and the experiments when several."""
    column = f"tags.{TAG_SWEEP}"
    sweeps = (frame[column].fillna("(no sweep)") if column in frame
              else pd.Series("(no sweep)", index=frame.index))
    counts = sweeps.value_counts(sort=False).sort_index()
    def runs(count: int) -> str:
        return f"{count} run{'s' if count != 1 else ''}"

    lines = [f"sweep `{sweep}` ({runs(count)})" if sweep != "(no sweep)" else
             f"{runs(count)} of no sweep" for sweep, count in counts.items()]
    if len(experiments) > 1:
        lines.append(f"experiments {', '.join(experiments)}")
    return lines


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
    try:
        experiment_ids, sweep, frame = select_all(cfg)
    except StoreError as error:  # no store, an unknown experiment, a filter MLflow rejects
        raise ReportError(str(error)) from None
    metric_column = f"metrics.{cfg.metric}"
    finished = frame["status"] == "FINISHED" if "status" in frame else frame.index == frame.index
    if not finished.any():  # every run failed, was pruned or is running: a table of counts
        frame = frame.assign(**{metric_column: frame.get(metric_column, float("nan"))})
    elif metric_column not in frame or frame[metric_column].isna().all():
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
    comparison = results.model_comparison(runs, table, axes, cfg.baseline)
    differences = results.metric_differences(runs, comparison, axes)
    comparison = results.with_intervals(comparison, differences)
    models = sorted(table["model"].astype(str).unique())
    if len(models) > 1 and cfg.baseline not in models:
        log.warning("No comparison.csv: baseline=%r is not among the models of these runs. "
                    "Valid values: %s", cfg.baseline, ", ".join(models))

    experiments = cfg.experiment_names or [cfg.experiment_name]
    read = sources(frame, experiments)
    out = Path(cfg.out) if cfg.out else default_out(sweep, "+".join(experiments))
    sweep_ids = frame.get(f"tags.{TAG_SWEEP}", pd.Series(dtype=object)).dropna().unique()
    title = (f"sweep {sweep}" if sweep else f"sweep {sweep_ids[0]}" if len(sweep_ids) == 1
             else f"{len(sweep_ids)} sweeps" if len(sweep_ids) > 1
             else f"experiment {', '.join(experiments)}")
    files = write_files(out, runs, table, comparison, axes, cfg.metric, title,
                        selection=cfg.filter, differences=differences, sources=read)
    run_id = (log_report(experiment_ids[0], sweep, files, table) if cfg.log_to_mlflow
              else None)
    return Report(sweep, axes, runs, table, comparison, out, files, run_id, differences, read,
                  verdict_lines(differences, cfg.metric))


def log_report(experiment_id: str, sweep: Optional[str], files: list[Path],
               table: pd.DataFrame) -> str:
    """A report run beside the runs it summarises (eanet.tracking.search.log_report_run)."""
    from eanet.tracking.search import log_report_run

    return log_report_run(experiment_id, sweep, files, report_metrics(table))


def report_metrics(table: pd.DataFrame) -> dict[str, float]:
    """The report's summary metrics (on its report run, or on the sweep run it belongs to)."""
    return {"n_configurations": len(table), "n_runs": int(table["n"].sum()),
            "n_failed": int(table["n_failed"].sum())}


register_configs()
