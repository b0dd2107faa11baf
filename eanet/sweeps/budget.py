"""Budgets of one launch of a sweep: `sweep.max_runs=N` and `sweep.max_hours=H`.

A job that would train (a new run, or an interrupted one resumed: eanet.sweeps.jobs) first takes
a place in the launch's budget; with none left it does not start, and its entry in the sweep's
record says so (`JobStatus.NOT_STARTED`), as do the sweep's summary and its parent run. A job
whose computation FINISHED already is skipped and costs nothing. Relaunching the same sweep skips
what finished, so it continues with the jobs left, under a budget of its own.

The places are write-once params on the sweep's parent run (eanet.tracking.record), so parallel
jobs — worker processes, other machines — never take more places than there are.
"""
from __future__ import annotations

import time
from typing import Optional

from eanet.config import Config
from eanet.tracking.record import SweepRecord


def budget_refusal(cfg: Config, record: Optional[SweepRecord], job_num: Optional[int],
                   now: Optional[float] = None) -> Optional[str]:
    """Why the launch's budget keeps this job from training; None if it may (or if this is no
    job of a sweep with a parent run)."""
    budget = cfg.sweep
    if record is None or job_num is None or (budget.max_runs is None and budget.max_hours is None):
        return None
    launch = record.launch()
    if budget.max_hours is not None and launch.get("start") is not None:
        hours = ((now or time.time()) - float(launch["start"])) / 3600
        if hours >= budget.max_hours:
            return f"not started: sweep.max_hours={budget.max_hours} passed"
    if budget.max_runs is not None and not record.take_place(launch.get("id", ""),
                                                            budget.max_runs, job_num):
        return f"not started: sweep.max_runs={budget.max_runs} runs started"
    return None
