"""Hydra callbacks for sweeps (listed under `hydra.callbacks` in conf/config.yaml).

- `SweepProgress`: a line as each sweep job starts and ends — job k of N, time since the sweep
  started, jobs done, and an ETA from the rate so far — on top of Keras' per-epoch progress bar
  (or instead of it, with `quiet=true`).
- `PrepareTrackingStore`: before any job starts, creates the MLflow store and experiment once, in
  the sweep's process. Parallel jobs (joblib, Submitit, Ray) that find neither race to create the
  SQLite tables (alembic "Online migration expected to match one row" seen here with Submitit);
  an unreachable tracking server fails the sweep at once instead of in every job.
- `SweepReport`: the sweep report (`eanet.report`) at the end of every multirun, written to
  `<sweep dir>/report` and logged to MLflow; `hydra.callbacks.sweep_report.enabled=false` turns it
  off. A report that fails is logged, never raised. Hydra skips `on_multirun_end` when a job
  failed (the sweeper re-raises the job's error first), so it also counts finished jobs and reports
  after the last one; that counting needs the in-process launcher.
- `RegisterBestModel`: when the sweep ends, registers the MLflow model of its best finished run
  (highest `best_val_top1`) in MLflow's model registry as `tracking.register_best_as`.

Hydra calls `on_job_*` in the process that runs the job: the sweep's own process with the basic
launcher, a worker process with joblib, Ray or Submitit (possibly on another machine). So the two
callbacks share nothing in memory with the sweep's process: the sweep's start time and size and
the jobs done are small files in the sweep folder (which every launcher's jobs write to anyway).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Optional

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

log = logging.getLogger("eanet.sweep")

PROGRESS_DIR = ".progress"  # inside the sweep folder


def count_jobs(config: DictConfig) -> Optional[int]:
    """How many jobs the basic sweeper will launch for this sweep's overrides; None if unknown
    (another sweeper, or overrides only a config loader can expand, such as glob choices)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = str(config.hydra.sweeper.get("_target_", ""))
    if not sweeper.endswith("BasicSweeper"):
        return None
    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    try:
        overrides = OverridesParser.create().parse_overrides(arguments)
    except Exception:  # noqa: BLE001 - an estimate only: never fail a sweep over a progress line
        return None
    total = 1
    for override in overrides:
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                return None
            total *= len(list(override.sweep_string_iterator()))
    return total


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def progress_line(job: int, total: Optional[int], elapsed: float, done: int) -> str:
    """e.g. `job 2 of 4 | elapsed 1m05s | 1 done | ETA 3m15s` (job counts from 1)."""
    parts = [f"job {job} of {total}" if total else f"job {job}", f"elapsed {format_duration(elapsed)}",
             f"{done} done"]
    if total and done:
        parts.append(f"ETA {format_duration(elapsed / done * max(total - done, 0))}")
    return " | ".join(parts)


class SweepProgress(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.sweep.dir)) / PROGRESS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        total = count_jobs(config)
        (folder / "sweep.json").write_text(json.dumps({"start": time.time(), "total": total}))
        log.info("sweep of %s jobs into %s", total if total else "an unknown number of",
                 config.hydra.sweep.dir)

    def _state(self, config: DictConfig) -> Optional[tuple[Path, dict]]:
        if config.hydra.mode != RunMode.MULTIRUN:
            return None
        folder = Path(str(config.hydra.sweep.dir)) / PROGRESS_DIR
        try:
            return folder, json.loads((folder / "sweep.json").read_text())
        except (OSError, ValueError):
            return None  # started without on_multirun_start (e.g. a launcher's own re-run)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        state = self._state(config)
        if state:
            folder, sweep = state
            done = len(list(folder.glob("done-*")))
            log.info("start %s", progress_line(config.hydra.job.num + 1, sweep["total"],
                                               time.time() - sweep["start"], done))

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        state = self._state(config)
        if state:
            folder, sweep = state
            (folder / f"done-{config.hydra.job.num}").write_text(job_return.status.name)
            done = len(list(folder.glob("done-*")))
            log.info("end (%s) %s", job_return.status.name.lower(),
                     progress_line(config.hydra.job.num + 1, sweep["total"],
                                   time.time() - sweep["start"], done))


class PrepareTrackingStore(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from eanet.tracking import experiment_id

        experiment_id(config.tracking)


class RegisterBestModel(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        name = config.tracking.get("register_best_as")
        if name:
            register_best_model(config.tracking, str(config.hydra.sweep.dir), name)


def register_best_model(tracking: DictConfig, sweep_id: str, name: str):
    """Register the model of the sweep's finished run with the highest best_val_top1 as `name`;
    returns the new ModelVersion, or None when no finished run of the sweep logged a model."""
    import mlflow

    from eanet.lineage import TAG_MODEL_URI
    from eanet.tracking import TAG_SWEEP, experiment_id

    exp_id = experiment_id(tracking)
    sweep_literal = sweep_id.replace("'", "\\'")
    runs = mlflow.search_runs(
        [exp_id], filter_string=f"tags.`{TAG_SWEEP}` = '{sweep_literal}' and "
                                f"attributes.status = 'FINISHED'",
        order_by=["metrics.best_val_top1 DESC"], output_format="list")
    runs = [r for r in runs if TAG_MODEL_URI in r.data.tags]
    if not runs:
        log.warning("no finished run with a model in sweep %s: nothing registered as %s",
                    sweep_id, name)
        return None
    best = runs[0]
    version = mlflow.register_model(
        best.data.tags[TAG_MODEL_URI], name,
        tags={TAG_SWEEP: sweep_id, "eanet.run_id": best.info.run_id,
              "best_val_top1": str(best.data.metrics.get("best_val_top1"))})
    log.info("registered %s (run %s, best_val_top1 %s) as %s version %s", best.info.run_name,
             best.info.run_id, best.data.metrics.get("best_val_top1"), name, version.version)
    return version


class SweepReport(Callback):
    """Runs `eanet.report.sweep_report` for the sweep that just ended."""

    def __init__(self, enabled: bool = True, out: Optional[str] = None) -> None:
        self.enabled = enabled
        self.out = out  # null: <sweep dir>/report
        self.expected_jobs: Optional[int] = None
        self.jobs_done = 0
        self.jobs_failed = 0
        self.reported = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.expected_jobs = count_jobs(config)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        self.jobs_done += 1
        self.jobs_failed += job_return.status == JobStatus.FAILED
        if self.jobs_failed and self.jobs_done == self.expected_jobs:
            self.report(config)  # on_multirun_end will not come: the sweeper re-raises the failure

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.report(config)

    def report(self, config: DictConfig) -> None:
        if not self.enabled or self.reported:
            return
        self.reported = True
        try:
            from eanet.report import ReportConfig, sweep_report
            from eanet.report_files import display_table

            sweep = str(config.hydra.sweep.dir)  # the eanet.sweep_id tag of this sweep's runs
            cfg = ReportConfig(sweep=sweep, experiment=config.tracking.experiment_name,
                               tracking_uri=config.tracking.tracking_uri,
                               out=self.out or f"{sweep}/report")
            report = sweep_report(cfg)
            log.info("Sweep report (%d runs, swept: %s):\n%s", len(report.runs),
                     ", ".join(report.axes) or "model only",
                     display_table(report.table).to_string(index=False))
            if not report.comparison.empty:
                log.info("EANet vs ViT:\n%s",
                         display_table(report.comparison).to_string(index=False))
            log.info("Sweep report written to %s/ and logged to MLflow run %s", report.out,
                     report.run_id)
        except Exception as error:  # never fail a finished sweep over its report
            log.error("Sweep report failed: %s: %s. Retry with: python -m eanet.report sweep=%s",
                      type(error).__name__, error, config.hydra.sweep.dir)
