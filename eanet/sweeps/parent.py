"""A sweep's parent MLflow run (eanet.tracking.sweep_run), from the sweep's side: its key, where
its jobs find it, its progress as jobs end, and its end.

- `sweep_key`: what a sweep computes — its overrides and sweeper params, less what only says where
  results go, how much is printed or how long the sweep may run (fingerprint.IGNORED, hydra.*,
  sweep.*). Relaunching the same command (another launcher, a budget added) finds the same key,
  so the same parent run: its jobs' runs keep their names and fingerprints and are skipped or
  resumed as before (eanet.sweeps.plan);
- `open_parent`: opens or reuses the parent of a sweep and writes its id into the sweep folder
  (`.progress/parent.json`), where every job reads it, in whichever process or machine it runs
  (eanet.tracking.opening tags its run with `mlflow.parentRunId`). The `SweepParent` callback
  calls it for every sweeper but eanet's tuning sweeper, which keeps a parent run of its own
  (tag eanet.tuning, eanet.sweeps.tune);
- `SweepParent`: the Hydra callback — opens the parent before the first job, updates its progress
  as each job ends (from the store, as the joblib launcher ends jobs in worker processes), and
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

from eanet.sweeps.folder import NOT_STARTED, PARENT_FILE, PROGRESS_DIR, parent_run_id, progress_dir
from eanet.sweeps.plan import IGNORED, JOB_RECORD
from eanet.tracking.tags import TAG_NOT_STARTED

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
    """Open (or reuse) the sweep's parent run and tell the sweep's jobs about it."""
    from eanet.tracking.sweep_run import open_sweep_run

    sweep_dir = Path(str(config.hydra.sweep.dir))
    name = "sweep-" + "-".join(sweep_dir.parts[-2:])
    run_id = open_sweep_run(config.tracking.tracking_uri, config.tracking.experiment_name,
                            sweep_key(config), name, str(sweep_dir),
                            " ".join(sweep_overrides(config)))
    folder = progress_dir(sweep_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PARENT_FILE).write_text(json.dumps({"run_id": run_id, "start": time.time(),
                                                  "total": total}))
    return run_id


def job_records(sweep_dir: Path) -> list[dict]:
    """What each job of this launch recorded (eanet.sweeps.callbacks.SweepSummary)."""
    records = []
    for file in Path(sweep_dir).glob(f"*/{JOB_RECORD}"):
        try:
            records.append(json.loads(file.read_text()))
        except ValueError:
            continue  # being written
    return records


def not_started(records: list[dict]) -> list[dict]:
    return [r for r in records if (r.get("outcome") or r.get("plan") or "").startswith(NOT_STARTED)]


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

    def log_plan(self, config: DictConfig, config_name: str, jobs: list[list[str]]) -> None:
        """The sweep's plan (eanet.sweeps.plan.sweep_plan, estimates from the store only) as
        plan.txt on the parent; never fails the sweep."""
        try:
            from eanet.sweeps.callbacks import compose_jobs
            from eanet.sweeps.plan import format_plan, sweep_plan
            from eanet.tracking.sweep_run import log_sweep_text

            plan = sweep_plan(list(zip(jobs, compose_jobs(config_name, jobs))),
                              time_steps=False, count_parameters=False)
            log_sweep_text(config.tracking.tracking_uri, self.run_id, format_plan(plan), "plan.txt")
        except Exception as error:  # noqa: BLE001 - the plan is information, not a check
            log.warning("no plan on the sweep run: %s: %s", type(error).__name__, error)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        run_id = parent_run_id(sweep_dir)
        if run_id is None:
            return
        try:
            update_progress(config, sweep_dir, run_id)
        except Exception as error:  # noqa: BLE001 - progress is information: never fail a job
            log.warning("sweep progress not recorded: %s: %s", type(error).__name__, error)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.end()
        atexit.unregister(self.end)

    def end(self) -> None:
        """End the parent: FINISHED if every job of the sweep finished (or had finished),
        FAILED if one failed, else KILLED (interrupted, or stopped by a budget)."""
        config, self.config = self.config, None
        if config is None:
            return  # ended already
        from eanet.sweeps.callbacks import sweep_summary
        from eanet.tracking.sweep_run import children_by_status, end_sweep_run, sweep_children

        sweep_dir = Path(str(config.hydra.sweep.dir))
        uri = config.tracking.tracking_uri
        try:
            records = job_records(sweep_dir)
            counts = children_by_status(sweep_children(uri, self.run_id))
            left = not_started(records)
            total = json.loads((progress_dir(sweep_dir) / PARENT_FILE).read_text())["total"]
            if counts["FAILED"] or any(r["status"] == "FAILED" for r in records):
                status = "FAILED"
            elif (left or counts["KILLED"] or counts["RUNNING"]
                  or any(r["status"] == "STOPPED" for r in records)
                  or (total is not None and len(records) < total)):
                status = "KILLED"
            else:
                status = "FINISHED"
            tags = {}
            if left:
                tags[TAG_NOT_STARTED] = "; ".join(
                    f"#{r['job_num']} {r['overrides']}" for r in sorted(left, key=lambda r: r["job_num"]))
            texts = {"summary.txt": sweep_summary(sweep_dir)} if records else {}
            end_sweep_run(uri, self.run_id, status, texts, tags)
            log.info("sweep run %s ended %s", self.run_id, status)
        except Exception as error:  # noqa: BLE001 - at exit: say it, never raise
            log.error("sweep run %s not ended: %s: %s", self.run_id, type(error).__name__, error)


def update_progress(config: DictConfig, sweep_dir: Path, run_id: str) -> None:
    """Done / failed / running / ETA on the parent, read from the store and the sweep folder."""
    from eanet.sweeps.plan import format_duration
    from eanet.tracking.sweep_run import children_by_status, log_sweep_progress, sweep_children

    uri = config.tracking.tracking_uri
    sweep = json.loads((progress_dir(sweep_dir) / PARENT_FILE).read_text())
    counts = children_by_status(sweep_children(uri, run_id))
    records = job_records(sweep_dir)
    ended = len({r["job_num"] for r in records if r["status"] != "STOPPED"}
                | {config.hydra.job.num})
    budget = len(not_started(records))
    total = sweep["total"]
    elapsed = time.time() - sweep["start"]
    metrics = {"sweep_done": counts["FINISHED"], "sweep_failed": counts["FAILED"] + counts["KILLED"],
               "sweep_running": counts["RUNNING"], "sweep_not_started": budget}
    parts = [f"{counts['FINISHED']} done", f"{metrics['sweep_failed']} failed",
             f"{counts['RUNNING']} running"]
    if budget:
        parts.append(f"{budget} not started (budget)")
    if total:
        metrics["sweep_jobs"] = total
        remaining = max(total - ended, 0)
        metrics["sweep_eta_s"] = elapsed / ended * remaining
        parts = [f"job {ended} of {total} ended", *parts,
                 f"ETA {format_duration(metrics['sweep_eta_s'])}"]
    log_sweep_progress(uri, run_id, ended, metrics, " | ".join(parts))
