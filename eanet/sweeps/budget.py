"""Budgets of one launch of a sweep: `sweep.max_runs=N` and `sweep.max_hours=H`.

A job that would train (a new run, or an interrupted one resumed: eanet.sweeps.plan) first takes a
place in the budget; with none left it does not start, and says so in its outcome ("not started
(budget: …)"), which the sweep's summary and its parent run list (eanet.sweeps.parent). A job
whose configuration FINISHED already is skipped and costs nothing. Relaunching the same sweep
skips what finished, so it continues with the jobs left, under a budget of its own.

Jobs run in the sweep's process, in worker processes (joblib) or on other machines (Submitit):
the places taken are files in the sweep folder (`.progress/started-<job>`), counted under a lock
on that folder, so that parallel jobs never take more places than there are.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import time
from pathlib import Path
from typing import Iterator, Optional

from eanet.config import SweepConfig
from eanet.sweeps.folder import NOT_STARTED, PARENT_FILE, progress_dir


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "budget.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def launch_start(folder: Path) -> Optional[float]:
    """When this launch of the sweep began (its parent run's file, else SweepProgress'), if known."""
    for name in (PARENT_FILE, "sweep.json"):
        try:
            return float(json.loads((folder / name).read_text())["start"])
        except (OSError, ValueError, KeyError):
            continue
    return None


def take_place(budget: SweepConfig, sweep_dir: str | Path, job_num: int,
               now: Optional[float] = None) -> Optional[str]:
    """Take this job's place in the budget; None if it may start, else why not (its outcome)."""
    if budget.max_runs is None and budget.max_hours is None:
        return None
    folder = progress_dir(sweep_dir)
    with _locked(folder):
        mine = folder / f"started-{job_num}"
        if mine.exists():  # a launcher's retry of the same job: its place is kept
            return None
        if budget.max_runs is not None:
            started = len(list(folder.glob("started-*")))
            if started >= budget.max_runs:
                return f"{NOT_STARTED}: sweep.max_runs={budget.max_runs} runs started)"
        if budget.max_hours is not None:
            start = launch_start(folder)
            hours = ((now or time.time()) - start) / 3600 if start is not None else 0.0
            if hours >= budget.max_hours:
                return f"{NOT_STARTED}: sweep.max_hours={budget.max_hours} passed)"
        mine.write_text("")
    return None
