"""plan=true: what a sweep would do and cost, before it does anything.

`sweep_plan` makes, for every job of a sweep, the decision its job would make
(eanet.sweeps.jobs.decide: finished earlier, running elsewhere, resume, new; the budget's
not started), reading only: no store, ledger or run is created. With it each job's trainable
parameters (the model built) and estimated time (eanet.sweeps.estimate), which includes each
job's start-up; `format_plan` prints it (also plan.txt on the sweep's run).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from eanet.config import Config, run_name
from eanet.sweeps.identity import fingerprint  # noqa: F401 - the run identity, where plans use it
from eanet.tracking.record import JobStatus

log = logging.getLogger(__name__)


# --- plan=true: what a sweep would do and cost, before it does anything -----------------------

@dataclass
class JobPlan:
    job_num: int
    name: str
    overrides: list[str]
    status: JobStatus
    detail: str  # e.g. "run 1a2b…", "at epoch 3", "as job #2", the budget's reason
    trainable: Optional[int]
    seconds: Optional[float]  # estimated time left, start-up included; None: unknown or nothing
    source: str  # where the estimate comes from

    @property
    def status_text(self) -> str:
        return f"{self.status.value} ({self.detail})" if self.detail else self.status.value


def checkpointed_epochs(checkpoint_dir: str, run_id: Optional[str]) -> int:
    """Epochs a run's checkpoint holds (eanet.training.checkpoint), 0 if none."""
    import numpy as np

    from eanet.training.checkpoint import STATE_FILE

    if run_id is None:
        return 0
    try:
        with np.load(Path(checkpoint_dir) / run_id / STATE_FILE, allow_pickle=False) as archive:
            return int(json.loads(str(archive["meta"]))["epoch"]) + 1
    except (OSError, ValueError, KeyError):
        return 0


def _stored_runs(runs, fp: str, legacy: str, backend: str) -> list:
    """The runs of a computation in `read_training_runs`' DataFrame, newest first, as
    eanet.sweeps.jobs.find_runs would find them (legacy fingerprints on the same backend)."""
    import pandas as pd

    from eanet.sweeps.jobs import StoredRun
    from eanet.tracking.tags import TAG_BACKEND, TAG_FINGERPRINT

    column = f"tags.{TAG_FINGERPRINT}"
    if column not in runs:
        return []
    mine = runs[runs[column] == fp]
    if mine.empty:
        backends = runs.get(f"tags.{TAG_BACKEND}", pd.Series("tensorflow", index=runs.index))
        mine = runs[(runs[column] == legacy) & (backends.fillna("tensorflow") == backend)]
    found = []
    for _, row in mine.iterrows():
        result = row.get("metrics.best_val_top1")
        if result is None or pd.isna(result):
            result = row.get("metrics.test_top1")
        found.append(StoredRun(row["run_id"], row["status"],
                               None if result is None or pd.isna(result) else float(result)))
    return found


def sweep_plan(jobs: list[tuple[list[str], DictConfig]], time_steps: bool = True,
               count_parameters: bool = True) -> list[JobPlan]:
    """Each job's (overrides, composed config) planned: the decision its job would make
    (eanet.sweeps.jobs.decide, reading only: a missing store is not created), trainable
    parameters (its model built), and its time (eanet.sweeps.estimate: the store's runs, else
    timed steps if `time_steps`)."""
    import time

    from eanet.backend import configured_backend
    from eanet.sweeps.estimate import StepTimer, from_store, overhead_seconds
    from eanet.sweeps.identity import legacy_fingerprint
    from eanet.sweeps.jobs import decide
    from eanet.tracking.ledger import read_claims
    from eanet.tracking.search import read_training_runs
    from eanet.validation import validate

    plans: list[JobPlan] = []
    stores: dict[tuple, tuple] = {}
    built: dict[str, tuple] = {}
    planned: dict[str, int] = {}  # fingerprint → the job of this sweep that trains it
    timer = StepTimer()
    backend, now = configured_backend(), time.time()
    to_train = 0
    for num, (overrides, raw) in enumerate(jobs):
        cfg = validate(raw)
        t = cfg.tracking
        where = (t.tracking_uri, t.experiment_name)
        if where not in stores:
            stores[where] = (read_training_runs(*where), read_claims(*where, t.lease_s))
        runs, claims = stores[where]
        fp = fingerprint(raw)
        claim = claims(fp, now)
        decision = decide(_stored_runs(runs, fp, legacy_fingerprint(raw), backend), claim.live,
                          claim.run_id, t.rerun)
        status, done = decision.status, 0
        detail = f"run {decision.run_id}" if decision.run_id else ""
        if status == JobStatus.RUNNING_ELSEWHERE:
            detail = f"{claim.holder}, run {claim.run_id}: waits for it"
        if status in (JobStatus.NEW, JobStatus.RESUME) and fp in planned:
            # the same computation as an earlier job of this sweep: it waits for it, or skips it
            status, detail = JobStatus.FINISHED_EARLIER, f"as job #{planned[fp]}"
        elif status in (JobStatus.NEW, JobStatus.RESUME):
            planned[fp] = num
            if status == JobStatus.RESUME:
                done = checkpointed_epochs(t.checkpoint_dir, decision.run_id)
                detail = f"run {decision.run_id} at epoch {done}"
            to_train += 1
            if cfg.sweep.max_runs is not None and to_train > cfg.sweep.max_runs:
                status, detail = JobStatus.NOT_STARTED, f"sweep.max_runs={cfg.sweep.max_runs}"
        trainable = model = None
        if count_parameters:
            model, trainable = _built(cfg, built, whole=time_steps and timer.timed is None)
        seconds, source = None, "nothing to train"
        if status in (JobStatus.NEW, JobStatus.RESUME):
            finished = runs[runs["status"] == "FINISHED"] if "status" in runs else None
            estimate = from_store(cfg, finished)
            if estimate is None and time_steps and (model is not None or timer.timed):
                estimate = timer.estimate(cfg, model, trainable)
            if estimate is None:
                source = "no estimate: no finished run with these model settings"
            else:
                remaining = max(cfg.trainer.epochs - done, 0) / cfg.trainer.epochs
                overhead, how = overhead_seconds(cfg, finished, timer if time_steps else None,
                                                 trainable)
                seconds = estimate.seconds * remaining + overhead
                source = f"{estimate.source}; {how}"
        plans.append(JobPlan(num, run_name(cfg), list(overrides), status, detail, trainable,
                             seconds, source))
    return plans


def _built(cfg: Config, cache: dict, whole: bool) -> tuple:
    """(model, trainable parameters) of cfg's model, once per model settings. The count comes
    from the model built with one and with two blocks — the blocks are identical, so N blocks
    hold (count(2) − count(1)) × (N − 1) more than one — at a fraction of building N; the whole
    model is built only when `whole` (the one configuration whose steps are timed)."""
    from dataclasses import replace

    from eanet.models.model import build_model, count_parameters
    from eanet.sweeps.estimate import model_settings

    key = json.dumps(model_settings(cfg), sort_keys=True) + str(cfg.data.num_classes)
    if key not in cache:
        # without the input stage (normalisation, augmentation): it has no trainable weights
        def trainable(blocks: int) -> int:
            small = build_model(replace(cfg.model, num_blocks=blocks), cfg.data.image_size,
                                cfg.data.num_classes)
            return count_parameters(small)["trainable"]

        one, two = trainable(1), trainable(2)
        cache[key] = (None, one + (two - one) * (cfg.model.num_blocks - 1))
    model, count = cache[key]
    if whole and model is None:
        model = build_model(cfg.model, cfg.data.image_size, cfg.data.num_classes)
        cache[key] = (model, count)
    return model, count


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def sweep_startup(jobs: list[tuple[list[str], DictConfig]]) -> tuple[float, str]:
    """The sweep's start-up before its first job (eanet.sweeps.estimate.sweep_startup_seconds),
    from the earlier sweeps of the first job's store."""
    from eanet.sweeps.estimate import sweep_startup_seconds
    from eanet.tracking.search import read_sweep_runs

    tracking = jobs[0][1].tracking if jobs else None
    parents = read_sweep_runs(tracking.tracking_uri, tracking.experiment_name) if tracking else None
    return sweep_startup_seconds(parents)


def format_plan(plans: list[JobPlan], startup: Optional[tuple[float, str]] = None) -> str:
    """One line per job (run name, its own overrides, status, trainable parameters, estimated
    time and where it comes from), the overrides all jobs share, and the total with the sweep's
    own start-up (`startup`: seconds and their source)."""

    shared = set.intersection(*(set(p.overrides) for p in plans)) if len(plans) > 1 else set()
    lines = []
    if shared:
        lines.append(f"every job: {' '.join(o for o in plans[0].overrides if o in shared)}")
    for p in plans:
        own = " ".join(o for o in p.overrides if o not in shared) or "(no overrides)"
        params = f"{p.trainable:,} trainable" if p.trainable is not None else "parameters not counted"
        time_left = format_duration(p.seconds) if p.seconds is not None else "-"
        lines.append(f"#{p.job_num} {p.name} | {own} | {p.status_text} | {params} | {time_left} "
                     f"({p.source})")
    counts: dict[str, int] = {}
    for p in plans:
        counts[p.status.value] = counts.get(p.status.value, 0) + 1
    known = [p.seconds for p in plans if p.seconds is not None]
    unknown = sum(1 for p in plans if p.seconds is None and p.source.startswith("no estimate"))
    seconds = sum(known) + (startup[0] if startup and known else 0.0)
    total = f"total: {len(plans)} jobs ({', '.join(f'{n} {k}' for k, n in counts.items())}); " \
            f"estimated time {format_duration(seconds)}"
    if startup and known:
        total += f" (the sweep's start-up and wrap-up {format_duration(startup[0])} {startup[1]} included)"
    if unknown:
        total += f" + {unknown} jobs without an estimate"
    lines.append(total)
    return "\n".join(lines)
