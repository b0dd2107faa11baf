"""Sweeps that lose nothing: config fingerprints and the skip-or-resume decision of each job.

Every training run carries `eanet.fingerprint`, a hash of its resolved config minus the settings
that cannot change the result (`IGNORED`). Before training, `plan_run` looks the fingerprint up in
the experiment:

- a FINISHED run → skip: nothing trains, the sweep gets that run's result;
- a KILLED, FAILED or RUNNING run (interrupted, crashed, or killed so hard it could not say) →
  resume it: same MLflow run, from its last checkpoint (`eanet.training.checkpoint`), or from epoch 0;
- none, or `tracking.rerun=true` → a new run.

Deleting a run in MLflow (`mlflow runs delete` or the UI) makes its configuration train again.
What was decided is written into the job's output folder (`eanet_job.json`), where the
`SweepSummary` callback (eanet.sweeps.callbacks) reads it when the sweep ends.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from eanet.config import Config, flatten, run_name

log = logging.getLogger(__name__)

JOB_RECORD = "eanet_job.json"  # in each job's output folder: what the job did (SweepSummary)

# Settings that say where things go or how much is printed, never what is computed.
IGNORED = ("tracking.", "trainer.verbose", "data.path", "quiet")
# Settings added after runs were recorded, left out at the value that computes what runs did
# before they existed: those runs keep their fingerprints (still skipped or resumed, not redone).
ADDED_LATER = {"trainer.matmul_precision": "default", "data.augmentation.contrast_clip": True}


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

    @property
    def skip(self) -> bool:
        return self.result is not None


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
    log.info("%s [fingerprint %s]: %s", run_name(cfg), fp, outcome)
    record_job_outcome(outcome)
    return plan


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
