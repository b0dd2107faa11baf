"""Hydra callbacks: the sweep report at the end of every `python -m eanet.run -m …`.

Registered in conf/config.yaml under `hydra.callbacks.sweep_report`; turn it off with
`hydra.callbacks.sweep_report.enabled=false`. A report that fails is logged, never raised: the
sweep's runs are already in MLflow and `python -m eanet.report sweep=<dir>` can be run again.

Hydra skips `on_multirun_end` when a job failed (the sweeper re-raises the job's error first), so
the callback also counts finished jobs and reports after the last one when any job failed. Job
counting works with Hydra's in-process launcher; with other launchers (joblib, submitit) the
`on_job_end` hooks run elsewhere and a sweep with a failed job ends without a report.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def sweep_job_count(config: DictConfig) -> Optional[int]:
    """How many jobs the basic sweeper makes of this multirun config (None if it cannot tell)."""
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        params = config.hydra.sweeper.get("params") or {}
        arguments = [f"{key}={value}" for key, value in params.items()]
        arguments += list(config.hydra.overrides.task)
        overrides = OverridesParser.create().parse_overrides(arguments)
        return sum(len(batch) for batch in BasicSweeper.split_arguments(overrides, None))
    except Exception:  # another sweeper, a glob over config groups: fall back to on_multirun_end
        return None


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
        self.expected_jobs = sweep_job_count(config)

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
