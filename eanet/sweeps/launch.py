"""One launch of a tuning sweep (eanet.sweeps.tune): how many trials it may still ask, and why it
stopped asking.

- Its budget, `sweep.max_runs` (trials launched) and `sweep.max_hours` (hours since the launch
  began), is kept here, by the sweeper, not by the trials' jobs: no trial is asked past it, so
  none is left asked and not started; the same command continues.
- A study whose trials fail `max_consecutive_failures` times in a row in this launch (diverged,
  crashed) stops asking; the other studies go on. A relaunch tries it again.
- A trial whose job started nothing (`train` returned None: a budget of the job's own) is asked
  again by the next launch; this one stops.

Each stop is one line in the log; `status` is how the sweep's parent run ends.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Optional

from eanet.sweeps.study import Study, TrialOutcome

log = logging.getLogger("eanet.tune")


@dataclass
class Launch:
    n_trials: int  # per study
    max_consecutive_failures: int
    max_runs: Optional[int] = None
    max_hours: Optional[float] = None
    start: float = field(default_factory=time.time)
    launched: int = 0  # trials launched so far
    failures: dict[str, int] = field(default_factory=dict)  # study → failed trials in a row
    stopped: dict[str, str] = field(default_factory=dict)  # study → why it asks no more
    not_started: Optional[str] = None  # a trial its job did not start

    def spent(self) -> Optional[str]:
        """Why the launch may ask no more trials (its budget), or None."""
        if self.not_started:
            return self.not_started
        if self.max_runs is not None and self.launched >= self.max_runs:
            return f"sweep.max_runs={self.max_runs} reached ({self.launched} trials launched)"
        if self.max_hours is not None and (time.time() - self.start) / 3600 >= self.max_hours:
            return f"sweep.max_hours={self.max_hours} passed"
        return None

    def planned(self, studies: list[Study]) -> int:
        """How many trials this launch will run if nothing stops it."""
        left = sum(max(self.n_trials - s.counted(), 0) for s in studies)
        return left if self.max_runs is None else min(left, self.max_runs)

    def room(self, n_jobs: int) -> int:
        """How many trials the next batch may hold."""
        if self.spent():
            return 0
        return n_jobs if self.max_runs is None else min(n_jobs, self.max_runs - self.launched)

    def asking(self, studies: list[Study]) -> list[Study]:
        """The studies still asking for trials."""
        return [s for s in studies if s.name not in self.stopped]

    def record(self, found: Study, outcome: TrialOutcome, what: str, number: int) -> None:
        """A trial of `found` ended `outcome` (`what`: a few words on it)."""
        if outcome == TrialOutcome.INTERRUPTED:
            self.not_started = f"trial {number} of {found.name} was not started"
            return
        if outcome != TrialOutcome.FAILED:
            self.failures[found.name] = 0
            return
        failed = self.failures[found.name] = self.failures.get(found.name, 0) + 1
        if failed >= self.max_consecutive_failures and found.counted() < self.n_trials:
            self.stopped[found.name] = what
            log.error("study %s stopped at %d of %d trials: %d in a row failed "
                      "(hydra.sweeper.max_consecutive_failures=%d), the last %s",
                      found.name, found.counted(), self.n_trials, failed,
                      self.max_consecutive_failures, what)

    def say_why_stopped(self, studies: list[Study]) -> None:
        """One line when a budget left studies short of their n_trials."""
        short = [f"{s.name} {s.counted()} of {self.n_trials}" for s in self.asking(studies)
                 if s.counted() < self.n_trials]
        if short:
            log.warning("tuning stopped: %s; trials done: %s; the same command continues",
                        self.spent(), ", ".join(short))

    def status(self, studies: list[Study]) -> str:
        """The parent run's ending: FINISHED when every study has its n_trials and a best
        trial, KILLED when a budget stopped the launch before, else FAILED."""
        if self.stopped:
            return "FAILED"
        if any(s.counted() < self.n_trials for s in studies):
            return "KILLED"
        if any(not s.outcomes()[TrialOutcome.COMPLETE] for s in studies):
            return "FAILED"
        return "FINISHED"
