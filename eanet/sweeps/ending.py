"""What a sweep does when its jobs end (Hydra callbacks listed under `hydra.callbacks` in
conf/config.yaml), every one of them reading the sweep's record (eanet.tracking.record), so they
all select the same runs: the jobs it trained, found finished or waited for.

- `SweepSummary`: writes each job's final status into the record as it ends (in the process
  that ran it), and prints what every job did, with each failure's error, when the sweep ends;
- `SweepReport`: the sweep report (`eanet.report`) over the record's runs, written to
  `<sweep dir>/report` and logged on the sweep's parent run; `enabled=false` turns it off; a
  report that fails is logged, never raised;
- `RegisterBestModel`: registers the MLflow model of the best FINISHED run of the record
  (highest `best_val_top1`) as `tracking.register_best_as`, naming the jobs it could not
  consider.

Hydra skips `on_multirun_end` when a job failed (the sweeper re-raises the job's error), so the
report and the registration also run after the last job ends (counted in the sweep's process:
the in-process launcher), and the summary at exit.
"""
from __future__ import annotations

import atexit
import logging
import sys
from pathlib import Path
from typing import Any, Optional

from hydra.core.utils import JobReturn
from hydra.core.utils import JobStatus as HydraJobStatus
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from eanet.tracking.record import JobEntry, JobStatus, SweepRecord

log = logging.getLogger("eanet.sweep")


def _record(config: DictConfig) -> Optional[SweepRecord]:
    return SweepRecord.of_sweep(config.tracking.tracking_uri, str(config.hydra.sweep.dir))


class AfterLastJob(Callback):
    """`finish(config)` once: when the sweep ends, or after its last job if one failed."""

    def __init__(self) -> None:
        self.expected_jobs: Optional[int] = None
        self.jobs_done = self.jobs_failed = 0
        self.finished = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from eanet.sweeps.callbacks import count_jobs

        self.expected_jobs = count_jobs(config)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        self.jobs_done += 1
        self.jobs_failed += job_return.status == HydraJobStatus.FAILED
        if self.jobs_failed and self.jobs_done == self.expected_jobs:
            self._finish(config)  # on_multirun_end will not come

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish(config)

    def _finish(self, config: DictConfig) -> None:
        if not self.finished:
            self.finished = True
            self.finish(config)

    def finish(self, config: DictConfig) -> None:
        raise NotImplementedError


class RegisterBestModel(AfterLastJob):
    def finish(self, config: DictConfig) -> None:
        name = config.tracking.get("register_best_as")
        record = _record(config)
        if not name or record is None:
            return
        from eanet.tracking.search import register_best_model

        jobs = record.jobs()
        missing = [f"#{n} {e.status.value}" for n, e in sorted(jobs.items())
                   if not e.status.has_result]
        if missing:
            log.warning("registering the best of the finished jobs as %s; not among them: %s",
                        name, ", ".join(missing))
        try:
            register_best_model(config.tracking.tracking_uri, record.run_ids(), name,
                                str(config.hydra.sweep.dir))
        except Exception as error:  # noqa: BLE001 - never fail a finished sweep over it
            log.error("best model not registered as %s: %s: %s", name, type(error).__name__, error)


class SweepReport(AfterLastJob):
    """Runs `eanet.report.sweep_report` over the record's runs."""

    def __init__(self, enabled: bool = True, out: Optional[str] = None,
                 baseline: str = "vit") -> None:
        super().__init__()
        self.enabled = enabled
        self.out = out  # null: <sweep dir>/report
        self.baseline = baseline  # the model every other one is compared with (comparison.csv)

    def finish(self, config: DictConfig) -> None:
        if not self.enabled:
            return
        try:
            self.report(config)
        except Exception as error:  # never fail a finished sweep over its report
            log.error("Sweep report failed: %s: %s. Retry with: python -m eanet.report sweep=%s",
                      type(error).__name__, error, config.hydra.sweep.dir)

    def report(self, config: DictConfig) -> None:
        from eanet.report.cli import ReportConfig, report_metrics, sweep_report
        from eanet.report.files import display_table
        from eanet.tracking.search import runs_filter
        from eanet.tracking.sweep_run import log_report_files

        sweep = str(config.hydra.sweep.dir)
        record = _record(config)
        cfg = ReportConfig(sweep=sweep, experiment_name=config.tracking.experiment_name,
                           tracking_uri=config.tracking.tracking_uri,
                           out=self.out or f"{sweep}/report", log_to_mlflow=record is None,
                           baseline=self.baseline)
        if record is not None:  # every job of the sweep, whichever sweep trained its run
            cfg.sweep, cfg.filter = None, runs_filter(record.run_ids())
        report = sweep_report(cfg)
        if record is not None:
            log_report_files(record.run_id, report.files, report_metrics(report.table))
            report.run_id = record.run_id
        log.info("Sweep report (%d runs, swept: %s):\n%s", len(report.runs),
                 ", ".join(report.axes) or "model only",
                 display_table(report.table).to_string(index=False))
        if not report.comparison.empty:
            log.info("Models vs %s:\n%s", cfg.baseline,
                     display_table(report.comparison).to_string(index=False))
        if report.verdicts:
            log.info("Verdict:\n%s", "\n".join(report.verdicts))
        log.info("Sweep report written to %s/ and logged to MLflow run %s", report.out,
                 report.run_id)


class SweepSummary(Callback):
    """Each job's final status into the record; the list of every job when the sweep ends."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.config = config
        atexit.register(self.report)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        hydra = job_return.hydra_cfg.hydra
        if hydra.mode != RunMode.MULTIRUN:
            return
        record = _record(config)
        if record is None:
            return
        entry = record.jobs().get(hydra.job.num)
        status = entry.status if entry else JobStatus.NEW
        fields: dict[str, Any] = {"overrides": " ".join(job_return.overrides or [])}
        if job_return.status == HydraJobStatus.FAILED:
            error = job_return._return_value
            optuna = sys.modules.get("optuna")  # a tuning trial its pruner stopped
            pruned = optuna is not None and isinstance(error, optuna.TrialPruned)
            fields["status"] = JobStatus.PRUNED if pruned else JobStatus.FAILED
            fields["error"] = (str(error) if isinstance(error, CompactHydraException) or pruned
                               else f"{type(error).__name__}: {error}")
        elif status == JobStatus.TRAINING:  # ended without an error but not marked trained
            fields["status"] = JobStatus.TRAINED
        record.set_job(hydra.job.num, **fields)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.report()
        atexit.unregister(self.report)

    def report(self) -> None:
        record = _record(self.config)
        if record is not None:
            print(sweep_summary(record.jobs(), Path(str(self.config.hydra.sweep.dir))),
                  file=sys.stderr, flush=True)


def sweep_summary(jobs: dict[int, JobEntry], sweep_dir: Path) -> str:
    """A readable account of a sweep's jobs, from its record."""
    entries = sorted(jobs.items())
    shared = set.intersection(*(set(e.overrides.split()) for _, e in entries)) \
        if len(entries) > 1 else set()
    counts: dict[str, int] = {}
    for _, entry in entries:
        kind = "interrupted" if entry.status == JobStatus.TRAINING else entry.status.value
        counts[kind] = counts.get(kind, 0) + 1
    lines = [f"eanet sweep {sweep_dir}: {len(entries)} jobs: "
             + ", ".join(f"{n} {kind}" for kind, n in counts.items())]
    for num, entry in entries:
        status = "interrupted" if entry.status == JobStatus.TRAINING else entry.status.value
        own = " ".join(o for o in entry.overrides.split() if o not in shared)
        what = entry.error or (f"run {entry.run_id}" if entry.run_id else "")
        lines.append(f"  #{num} {status:<17} {own or '(no overrides)'} — {what}")
    return "\n".join(lines)
