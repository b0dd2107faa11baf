"""A sweep's parent MLflow run (eanet.tracking.sweep_run), from the sweep's side: its key, where
its jobs find it, its progress as jobs end, and its end.

- `sweep_key`: what a sweep computes — its overrides and sweeper params, less what only says where
  results go, how much is printed or how long the sweep may run (eanet.config.NOT_COMPUTED, hydra.*,
  sweep.*). Relaunching the same command (another launcher, a budget added) finds the same key,
  so the same parent run: its jobs' runs keep their names and fingerprints and are skipped or
  resumed as before (eanet.sweeps.plan);
- `open_parent`: opens or reuses the parent of a sweep, starts its launch in the sweep's record
  (eanet.tracking.record: the jobs, their statuses and runs, the budget's places) and writes its
  id into the sweep folder (`.progress/parent.json`), where every job reads it, in whichever
  process or machine it runs (a run it trains is tagged `mlflow.parentRunId`). The `SweepParent` callback
  calls it for every sweeper but eanet's tuning sweeper, which keeps a parent run of its own
  (tag eanet.tuning, eanet.sweeps.tune);
- `SweepParent`: the Hydra callback — opens the parent before the first job, updates its progress
  as each job ends (from the record, as the joblib launcher ends jobs in worker processes), and
  ends it when the sweep ends (also at exit: Hydra skips `on_multirun_end` after a failed job).
"""
from __future__ import annotations

import atexit
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from eanet.config import NOT_COMPUTED
from eanet.sweeps.estimate import process_age
from eanet.tracking.record import JobStatus, SweepRecord, eta_seconds, parent_run_id, write_parent_file
from eanet.tracking.tags import TAG_NOT_STARTED

IGNORED = NOT_COMPUTED

log = logging.getLogger("eanet.sweep")

TUNE_SWEEPER = ".TuneSweeper"  # hydra/sweeper=tune, whose trials nest under a parent of its own


def _setting(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def sweep_overrides(config: DictConfig) -> list[str]:
    """The sweep's command-line overrides and its sweeper's params, as `key=value` strings."""
    params = config.hydra.sweeper.get("params") or {}
    return [*(f"{k}={v}" for k, v in params.items()), *config.hydra.overrides.task]


def sweep_key(config: DictConfig) -> str:
    """16 hex digits naming what the sweep computes (see the module's docstring)."""
    kept = sorted(o for o in sweep_overrides(config)
                  if not _setting(o).startswith(("hydra", *IGNORED)))
    sweeper = OmegaConf.to_container(config.hydra.sweeper, resolve=False)
    sweeper.pop("params", None)
    identity = {"overrides": kept, "sweeper": sweeper,
                "experiment": config.tracking.experiment_name}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def open_parent(config: DictConfig, total: Optional[int]) -> str:
    """Open (or reuse) the sweep's parent run, start this launch in its record, and tell the
    sweep's jobs about it."""
    from eanet.tracking.sweep_run import open_sweep_run

    sweep_dir = Path(str(config.hydra.sweep.dir))
    name = "sweep-" + "-".join(sweep_dir.parts[-2:])
    run_id = open_sweep_run(config.tracking.tracking_uri, config.tracking.experiment_name,
                            sweep_key(config), name, str(sweep_dir),
                            " ".join(sweep_overrides(config)))
    SweepRecord(config.tracking.tracking_uri, run_id).start_launch(total)
    write_parent_file(sweep_dir, run_id)
    return run_id


class SweepParent(Callback):
    """The parent run's life (see the module's docstring)."""

    def __init__(self) -> None:
        self.config: Optional[DictConfig] = None

    def on_multirun_start(self, config: DictConfig, config_name: Optional[str] = None,
                          **kwargs: Any) -> None:
        from eanet.sweeps.callbacks import job_overrides

        if str(config.hydra.sweeper.get("_target_", "")).endswith(TUNE_SWEEPER):
            return  # eanet's tuning sweeper opens and ends its own parent run (eanet.sweeps.tune)
        jobs = job_overrides(config) if config_name else None
        self.config = config
        self.run_id = open_parent(config, None if jobs is None else len(jobs))
        atexit.register(self.end)
        if jobs is not None:
            self.log_plan(config, config_name, jobs)
        # imports, composing and checking the jobs, this plan: what the next plan adds for it
        startup = process_age()
        if startup is not None:
            from eanet.tracking.sweep_run import log_sweep_metric

            log_sweep_metric(config.tracking.tracking_uri, self.run_id, "sweep_startup_s", startup)

    def log_plan(self, config: DictConfig, config_name: str, jobs: list[list[str]]) -> None:
        """The sweep's plan (eanet.sweeps.plan.sweep_plan, estimates from the store only) as
        plan.txt on the parent; never fails the sweep."""
        try:
            from eanet.sweeps.callbacks import compose_jobs
            from eanet.sweeps.plan import format_plan, sweep_plan
            from eanet.tracking.sweep_run import log_sweep_text

            plan = sweep_plan(list(zip(jobs, compose_jobs(config_name, jobs,
                                                          config.hydra.searchpath))),
                              time_steps=False, count_parameters=False)
            log_sweep_text(config.tracking.tracking_uri, self.run_id, format_plan(plan), "plan.txt")
        except Exception as error:  # noqa: BLE001 - the plan is information, not a check
            log.warning("no plan on the sweep run: %s: %s", type(error).__name__, error)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        run_id = parent_run_id(str(config.hydra.sweep.dir))
        if run_id is None:
            return
        try:
            update_progress(config, SweepRecord(config.tracking.tracking_uri, run_id))
        except Exception as error:  # noqa: BLE001 - progress is information: never fail a job
            log.warning("sweep progress not recorded: %s: %s", type(error).__name__, error)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.end()
        atexit.unregister(self.end)

    def end(self) -> None:
        """End the parent: FINISHED if every job of the launch has its result (trained, or
        finished earlier), FAILED if one failed, else KILLED (interrupted, or a budget)."""
        config, self.config = self.config, None
        if config is None:
            return  # ended already
        from eanet.sweeps.ending import sweep_summary
        from eanet.tracking.sweep_run import end_sweep_run

        sweep_dir = Path(str(config.hydra.sweep.dir))
        uri = config.tracking.tracking_uri
        try:
            record = SweepRecord(uri, self.run_id)
            launch, jobs = record.launch(), record.jobs()
            total = launch.get("total")
            statuses = [e.status for e in jobs.values()]
            if JobStatus.FAILED in statuses:
                status = "FAILED"
            elif (any(not s.has_result for s in statuses)
                  or (total is not None and len(jobs) < total)):
                status = "KILLED"
            else:
                status = "FINISHED"
            tags = {}
            left = sorted(n for n, e in jobs.items() if e.status == JobStatus.NOT_STARTED)
            if left:
                tags[TAG_NOT_STARTED] = "; ".join(f"#{n} {jobs[n].overrides}" for n in left)
            texts = {"summary.txt": sweep_summary(jobs, sweep_dir)} if jobs else {}
            end_sweep_run(uri, self.run_id, status, texts, tags)
            log.info("sweep run %s ended %s", self.run_id, status)
        except Exception as error:  # noqa: BLE001 - at exit: say it, never raise
            log.error("sweep run %s not ended: %s: %s", self.run_id, type(error).__name__, error)


def update_progress(config: DictConfig, record: SweepRecord) -> None:
    """Jobs ended, their outcomes and the ETA on the parent, from the sweep's record."""
    from eanet.sweeps.plan import format_duration
    from eanet.tracking.sweep_run import log_sweep_progress

    launch, jobs = record.launch(), record.jobs()
    current = [e for e in jobs.values() if e.launch == launch.get("id")]
    ended = sum(1 for e in current if e.status.ended)
    counts = {status: sum(1 for e in current if e.status == status) for status in JobStatus}
    total = launch.get("total")
    elapsed = time.time() - launch.get("start", time.time())
    metrics = {"sweep_done": counts[JobStatus.TRAINED] + counts[JobStatus.FINISHED_EARLIER],
               "sweep_failed": counts[JobStatus.FAILED],
               "sweep_running": counts[JobStatus.TRAINING] + counts[JobStatus.RUNNING_ELSEWHERE],
               "sweep_not_started": counts[JobStatus.NOT_STARTED]}
    parts = [f"{n} {status.value}" for status, n in counts.items() if n]
    eta = eta_seconds(elapsed, ended, total)
    if total:
        metrics["sweep_jobs"] = total
        parts.insert(0, f"job {ended} of {total} ended")
    if eta is not None:
        metrics["sweep_eta_s"] = eta
        parts.append(f"ETA {format_duration(eta)}")
    log_sweep_progress(config.tracking.tracking_uri, record.run_id, ended, metrics,
                       " | ".join(parts))
