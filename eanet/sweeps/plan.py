"""Sweeps that lose nothing: config fingerprints and the skip-or-resume decision of each job.

Every training run carries `eanet.fingerprint`, a hash of its resolved config minus the settings
that cannot change the result (`IGNORED`). Before training, `plan_run` looks the fingerprint up in
the experiment:

- a FINISHED run → skip: nothing trains, the sweep gets that run's result;
- a KILLED, FAILED or RUNNING run (interrupted, crashed, or killed so hard it could not say) →
  resume it: same MLflow run, from its last checkpoint (`eanet.training.checkpoint`), or from epoch 0;
- none, or `tracking.rerun=true` → a new run;

and a job that would train but finds its sweep's budget spent does not start (eanet.sweeps.budget).

Deleting a run in MLflow (`mlflow runs delete` or the UI) makes its configuration train again.
What was decided is written into the job's output folder (`eanet_job.json`), where the
`SweepSummary` callback (eanet.sweeps.callbacks) reads it when the sweep ends.

`sweep_plan` / `format_plan` make the same decision for every job of a sweep before it starts,
reading only (`plan=true`, the `SweepPlan` callback; also plan.txt on the sweep's run): status,
trainable parameters (the model built) and estimated training time (eanet.sweeps.estimate).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from eanet.config import NOT_COMPUTED, Config, flatten, run_name

log = logging.getLogger(__name__)

JOB_RECORD = "eanet_job.json"  # in each job's output folder: what the job did (SweepSummary)

# Settings that say where things go or how much is printed, never what is computed.
IGNORED = NOT_COMPUTED
# Settings added after runs were recorded, left out at the value that computes what runs did
# before they existed: those runs keep their fingerprints (still skipped or resumed, not redone).
ADDED_LATER = {"trainer.matmul_precision": "default", "data.augmentation.contrast_clip": True,
               "model.attention_layer": None, "model.implementation": "auto"}


def fingerprint(raw_cfg: DictConfig | dict) -> str:
    """16 hex digits identifying what a configuration computes."""
    tree = OmegaConf.to_container(raw_cfg, resolve=True) if isinstance(raw_cfg, DictConfig) \
        else raw_cfg
    kept = {k: v for k, v in flatten(tree).items()
            if not any(k == p or k.startswith(p) for p in IGNORED)
            and not (k in ADDED_LATER and v == ADDED_LATER[k])}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class RunPlan:
    fingerprint: str
    checkpoint_dir: Path
    run_id: Optional[str] = None  # an interrupted run to continue
    result: Optional[float] = None  # set when the configuration already FINISHED: skip it
    tags: dict[str, str] = field(default_factory=dict)
    not_started: Optional[str] = None  # why a sweep's budget keeps it from starting

    @property
    def skip(self) -> bool:
        return self.result is not None or self.not_started is not None


def plan_run(cfg: Config, raw_cfg: DictConfig) -> RunPlan:
    """Decide between skip, resume and new for this configuration; only reads the store."""
    from eanet.tracking.search import runs_with_fingerprint
    from eanet.tracking.store import check_tracking_location
    from eanet.tracking.tags import TAG_FINGERPRINT

    t = cfg.tracking
    check_tracking_location(t.tracking_uri, t.checkpoint_dir)
    fp = fingerprint(raw_cfg)
    plan = RunPlan(fp, Path(t.checkpoint_dir) / fp, tags={TAG_FINGERPRINT: fp})
    runs = runs_with_fingerprint(t.tracking_uri, t.experiment_name, fp)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    unfinished = [r for r in runs if r.info.status in ("KILLED", "FAILED", "RUNNING")]
    if t.rerun:
        outcome = "new (tracking.rerun=true)"
    elif finished:
        run = finished[0]
        metrics = run.data.metrics
        plan.result = float(metrics.get("best_val_top1", metrics.get("test_top1", float("nan"))))
        outcome = f"skipped: FINISHED as run {run.info.run_id}"
    elif unfinished:
        run = unfinished[0]
        plan.run_id = run.info.run_id
        outcome = f"resumed run {plan.run_id} (was {run.info.status})"
    else:
        outcome = "new"
    if not plan.skip:
        plan.not_started = budget_refusal(cfg)
        outcome = plan.not_started or outcome
    log.info("%s [fingerprint %s]: %s", run_name(cfg), fp, outcome)
    record_job_outcome(outcome)
    return plan


def budget_refusal(cfg: Config) -> Optional[str]:
    """Why the sweep's budget (sweep.max_runs, sweep.max_hours) keeps this job from training;
    None if it may (or if this is no sweep job)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    from eanet.sweeps.budget import take_place

    hydra = HydraConfig.get()
    return take_place(cfg.sweep, str(hydra.sweep.dir), hydra.job.num)


def record_job_outcome(outcome: str) -> None:
    """Write what this sweep job does into its record (a no-op outside a Hydra multirun)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    path = Path(HydraConfig.get().runtime.output_dir) / JOB_RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # a single run, or a launcher that ran no on_job_start
    record["plan"] = outcome  # SweepSummary's on_job_end makes it the job's outcome
    path.write_text(json.dumps(record))


# --- plan=true: what a sweep would do and cost, before it does anything -----------------------

@dataclass
class JobPlan:
    job_num: int
    name: str
    overrides: list[str]
    status: str  # finished / resumable at epoch k / new / not started (budget)
    trainable: Optional[int]
    seconds: Optional[float]  # estimated training time left; None: unknown, or nothing to train
    source: str  # where the estimate comes from


def checkpointed_epochs(checkpoint_dir: str, fp: str) -> int:
    """Epochs a configuration's checkpoint holds (eanet.training.checkpoint), 0 if none."""
    import numpy as np

    path = Path(checkpoint_dir) / fp / "state.npz"
    try:
        with np.load(path, allow_pickle=False) as archive:
            return int(json.loads(str(archive["meta"]))["epoch"]) + 1
    except (OSError, ValueError, KeyError):
        return 0


def sweep_plan(jobs: list[tuple[list[str], DictConfig]], time_steps: bool = True,
               count_parameters: bool = True) -> list[JobPlan]:
    """Each job's (overrides, composed config) planned: its status by fingerprint in the store
    (read only: a missing store is not created), trainable parameters (its model built), and its
    training time (eanet.sweeps.estimate: the store's runs, else timed steps if `time_steps`)."""
    from eanet.sweeps.estimate import StepTimer, from_store
    from eanet.tracking.search import read_training_runs
    from eanet.tracking.tags import TAG_FINGERPRINT
    from eanet.validation import validate

    plans: list[JobPlan] = []
    stores: dict[tuple, object] = {}
    built: dict[str, tuple] = {}
    timer = StepTimer()
    to_train = 0
    for num, (overrides, raw) in enumerate(jobs):
        cfg = validate(raw)
        t = cfg.tracking
        where = (t.tracking_uri, t.experiment_name)
        if where not in stores:
            stores[where] = read_training_runs(*where)
        runs = stores[where]
        fp = fingerprint(raw)
        column = f"tags.{TAG_FINGERPRINT}"
        mine = runs[runs[column] == fp] if column in runs else runs.iloc[0:0]
        statuses = set(mine["status"]) if "status" in mine else set()
        done = 0
        if not t.rerun and "FINISHED" in statuses:
            status = "finished"
        elif not t.rerun and statuses & {"KILLED", "FAILED", "RUNNING"}:
            done = checkpointed_epochs(t.checkpoint_dir, fp)
            status = f"resumable at epoch {done}"
        else:
            status = "new"
        if status != "finished":
            to_train += 1
            if cfg.sweep.max_runs is not None and to_train > cfg.sweep.max_runs:
                status = f"not started (budget: sweep.max_runs={cfg.sweep.max_runs})"
        trainable = model = None
        if count_parameters:
            model, trainable = _built(cfg, built)
        seconds, source = None, "nothing to train"
        if status == "new" or status.startswith("resumable"):
            finished = runs[runs["status"] == "FINISHED"] if "status" in runs else None
            estimate = from_store(cfg, finished)
            if estimate is None and time_steps and model is not None:
                estimate = timer.estimate(cfg, model, trainable)
            if estimate is None:
                source = "no estimate: no finished run with these model settings"
            else:
                remaining = max(cfg.trainer.epochs - done, 0) / cfg.trainer.epochs
                seconds, source = estimate.seconds * remaining, estimate.source
        plans.append(JobPlan(num, run_name(cfg), list(overrides), status, trainable, seconds,
                             source))
    return plans


def _built(cfg: Config, cache: dict) -> tuple:
    """(model, trainable parameters) of cfg's model, built once per model settings."""
    from eanet.sweeps.estimate import model_settings

    key = json.dumps(model_settings(cfg), sort_keys=True) + str(cfg.data.num_classes)
    if key not in cache:
        from eanet.models.model import build_model, count_parameters

        # without the input stage (normalisation, augmentation): it has no trainable weights
        model = build_model(cfg.model, cfg.data.image_size, cfg.data.num_classes)
        cache[key] = (model, count_parameters(model)["trainable"])
    return cache[key]


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def format_plan(plans: list[JobPlan]) -> str:
    """One line per job (run name, its own overrides, status, trainable parameters, estimated
    training time and where it comes from), the overrides all jobs share, and the total."""

    shared = set.intersection(*(set(p.overrides) for p in plans)) if len(plans) > 1 else set()
    lines = []
    if shared:
        lines.append(f"every job: {' '.join(o for o in plans[0].overrides if o in shared)}")
    for p in plans:
        own = " ".join(o for o in p.overrides if o not in shared) or "(no overrides)"
        params = f"{p.trainable:,} trainable" if p.trainable is not None else "parameters not counted"
        time_left = format_duration(p.seconds) if p.seconds is not None else "-"
        lines.append(f"#{p.job_num} {p.name} | {own} | {p.status} | {params} | {time_left} "
                     f"({p.source})")
    counts: dict[str, int] = {}
    for p in plans:
        kind = p.status.split(" (")[0].split(" at ")[0]
        counts[kind] = counts.get(kind, 0) + 1
    known = [p.seconds for p in plans if p.seconds is not None]
    unknown = sum(1 for p in plans if p.seconds is None and p.source.startswith("no estimate"))
    total = f"total: {len(plans)} jobs ({', '.join(f'{n} {k}' for k, n in counts.items())}); " \
            f"estimated training time {format_duration(sum(known))}"
    if unknown:
        total += f" + {unknown} jobs without an estimate"
    lines.append(total)
    return "\n".join(lines)
