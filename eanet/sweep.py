"""Sweeps that lose nothing: config fingerprints, skip-or-resume decisions, the failure summary.

Every training run carries `eanet.fingerprint`, a hash of its resolved config minus the settings
that cannot change the result (`IGNORED`). Before training, `plan_run` looks the fingerprint up in
the experiment:

- a FINISHED run → skip: nothing trains, the sweep gets that run's result;
- a KILLED, FAILED or RUNNING run (interrupted, crashed, or killed so hard it could not say) →
  resume it: same MLflow run, from its last checkpoint (`eanet.checkpoint`), or from epoch 0;
- none, or `tracking.rerun=true` → a new run.

Deleting a run in MLflow (`mlflow runs delete` or the UI) makes its configuration train again.
`SweepSummary` is a Hydra callback that lists, when a multirun ends, what every job did and the
error of every job that failed.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from eanet.config import Config
from eanet.faults import check_tracking_location, store_lock
from eanet.tracking import flatten, run_name

log = logging.getLogger(__name__)

TAG_FINGERPRINT = "eanet.fingerprint"
TAG_RESUMED = "eanet.resumed_at_epoch"

# Settings that say where things go or how much is printed, never what is computed.
IGNORED = ("tracking.", "trainer.verbose", "data.path", "quiet")

# What `plan_run` decided for the job running in this process, for `SweepSummary`.
_job_outcome: Optional[str] = None


def fingerprint(raw_cfg: DictConfig | dict) -> str:
    """16 hex digits identifying what a configuration computes."""
    tree = OmegaConf.to_container(raw_cfg, resolve=True) if isinstance(raw_cfg, DictConfig) \
        else raw_cfg
    kept = {k: v for k, v in flatten(tree).items()
            if not any(k == p or k.startswith(p) for p in IGNORED)}
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
    global _job_outcome
    import mlflow
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    t = cfg.tracking
    check_tracking_location(t.tracking_uri, t.checkpoint_dir)
    fp = fingerprint(raw_cfg)
    plan = RunPlan(fp, Path(t.checkpoint_dir) / fp, tags={TAG_FINGERPRINT: fp})
    if t.tracking_uri:
        mlflow.set_tracking_uri(t.tracking_uri)
    with store_lock(t.tracking_uri):  # a fresh store's tables are created by one job only
        client = MlflowClient()
        experiment = client.get_experiment_by_name(t.experiment_name)
    runs = [] if experiment is None else client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{TAG_FINGERPRINT}` = '{fp}'",
        run_view_type=ViewType.ACTIVE_ONLY, order_by=["attributes.start_time DESC"])
    finished = [r for r in runs if r.info.status == "FINISHED"]
    unfinished = [r for r in runs if r.info.status in ("KILLED", "FAILED", "RUNNING")]
    if t.rerun:
        _job_outcome = "new (tracking.rerun=true)"
    elif finished:
        run = finished[0]
        metrics = run.data.metrics
        plan.result = float(metrics.get("best_val_top1", metrics.get("test_top1", float("nan"))))
        _job_outcome = f"skipped: FINISHED as run {run.info.run_id}"
    elif unfinished:
        run = unfinished[0]
        plan.run_id = run.info.run_id
        _job_outcome = f"resumed run {plan.run_id} (was {run.info.status})"
    else:
        _job_outcome = "new"
    log.info("%s [fingerprint %s]: %s", run_name(cfg), fp, _job_outcome)
    return plan


def sync_epoch_metrics(epoch_metrics: list[dict[str, float]]) -> None:
    """Log to the active run the checkpointed epochs that MLflow lacks (never one twice).

    An interruption between writing an epoch's checkpoint and logging its metrics leaves such a
    gap; a resumed run fills it before training on.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    run_id = mlflow.active_run().info.run_id
    logged = {m.step for m in MlflowClient().get_metric_history(run_id, "loss")}
    for epoch, metrics in enumerate(epoch_metrics):
        if epoch not in logged:
            mlflow.log_metrics(metrics, step=epoch)
    if epoch_metrics:
        mlflow.set_tag(TAG_RESUMED, str(len(epoch_metrics)))


class SweepSummary(Callback):
    """Lists every job of a multirun when it ends: what it did, and the error of each failure.

    Each job writes `eanet_job.json` into its output folder (in whichever process ran it, so the
    joblib launcher works too); the summary reads them back. Hydra stops before `on_multirun_end`
    when a job failed (and exits non-zero), so the summary is also registered to print at exit.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        atexit.register(self.report)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Record the job as unfinished; `on_job_end` overwrites that unless Ctrl-C came first."""
        global _job_outcome
        from hydra.core.hydra_config import HydraConfig

        _job_outcome = None
        hydra = HydraConfig.get()
        record = {"job_num": hydra.job.num, "overrides": " ".join(hydra.overrides.task),
                  "status": "STOPPED", "outcome": "interrupted before it ended", "error": None}
        (Path(hydra.runtime.output_dir) / "eanet_job.json").write_text(json.dumps(record))

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        hydra = job_return.hydra_cfg.hydra
        if hydra.mode != RunMode.MULTIRUN:
            return
        failed = job_return.status == JobStatus.FAILED
        error = job_return._return_value if failed else None
        record = {
            "job_num": hydra.job.num,
            "overrides": " ".join(job_return.overrides or []),
            "status": "FAILED" if failed else "COMPLETED",
            "outcome": _job_outcome,
            "error": f"{type(error).__name__}: {error}" if failed else None,
        }
        (Path(hydra.runtime.output_dir) / "eanet_job.json").write_text(json.dumps(record))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.report()
        atexit.unregister(self.report)

    def report(self) -> None:
        print(sweep_summary(self.sweep_dir), file=sys.stderr, flush=True)


def sweep_summary(sweep_dir: Path) -> str:
    """A readable account of the jobs recorded under a multirun folder."""
    records = []
    for file in Path(sweep_dir).glob("*/eanet_job.json"):
        records.append(json.loads(file.read_text()))
    records.sort(key=lambda r: r["job_num"] if r["job_num"] is not None else -1)
    failed = [r for r in records if r["status"] != "COMPLETED"]
    # Show what tells the jobs apart, not the overrides they all share.
    shared = set.intersection(*(set(r["overrides"].split()) for r in records)) \
        if len(records) > 1 else set()
    lines = [f"eanet sweep {sweep_dir}: {len(records)} jobs, {len(records) - len(failed)} "
             f"completed, {len(failed)} failed or stopped"]
    for r in records:
        what = r["error"] if r["status"] == "FAILED" else r["outcome"] or "done"
        own = " ".join(o for o in r["overrides"].split() if o not in shared)
        lines.append(f"  #{r['job_num']} {r['status']:<9} {own or '(no overrides)'} — {what}")
    return "\n".join(lines)
