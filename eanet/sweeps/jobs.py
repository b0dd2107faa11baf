"""Each computation trained once: the skip / wait / resume / new decision of a job, and its claim.

`decide` is the one decision, from what the store holds for the job's computation (its runs by
fingerprint, eanet.sweeps.identity, and the newest claim on it, eanet.tracking.ledger):

- a FINISHED run → FINISHED_EARLIER: nothing trains, the job gets that run's result (finished by
  this sweep before, or by another sweep);
- a live claim (another process trains it now) → RUNNING_ELSEWHERE: the job waits for it and
  then takes its result (or, if it died, takes the claim over);
- a KILLED, FAILED or RUNNING run with no live claim (interrupted, crashed, SIGKILLed) → RESUME
  that run from its checkpoint (eanet.training.checkpoint);
- none, or tracking.rerun=true → NEW.

`plan=true` (eanet.sweeps.plan) shows the same decision without claiming anything. The job's
side: `finished_earlier` skips a FINISHED computation reading only; `claim_job` (after the job
has loaded its data) decides again, waits while the claim is live, claims the computation
atomically, takes a place in the launch's budget (eanet.sweeps.budget), and writes the job's
entry in the sweep's record (eanet.tracking.record).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Optional

from omegaconf import DictConfig

from eanet.config import Config, run_name
from eanet.sweeps.identity import fingerprint, ignored_settings, legacy_fingerprint
from eanet.tracking.record import JobStatus, SweepRecord

log = logging.getLogger(__name__)


@dataclass
class StoredRun:
    """What the decision needs of a recorded run."""
    run_id: str
    status: str  # MLflow's: FINISHED, FAILED, KILLED, RUNNING
    result: Optional[float] = None  # best_val_top1 (else test_top1) of a FINISHED run


@dataclass
class Decision:
    status: JobStatus  # NEW, RESUME, FINISHED_EARLIER or RUNNING_ELSEWHERE
    run_id: Optional[str] = None  # the run to resume, found finished, or trained elsewhere
    result: Optional[float] = None


def decide(runs: list[StoredRun], claim_live: bool, claim_run_id: Optional[str],
           rerun: bool) -> Decision:
    """The decision for one computation (see the module's docstring); `runs` newest first."""
    finished = [r for r in runs if r.status == "FINISHED"]
    if finished and not rerun:
        return Decision(JobStatus.FINISHED_EARLIER, finished[0].run_id, finished[0].result)
    if claim_live:
        return Decision(JobStatus.RUNNING_ELSEWHERE, claim_run_id)
    unfinished = [r for r in runs if r.status in ("KILLED", "FAILED", "RUNNING")]
    if unfinished and not rerun:
        return Decision(JobStatus.RESUME, unfinished[0].run_id)
    return Decision(JobStatus.NEW)


def stored_run(run) -> StoredRun:
    metrics = run.data.metrics
    result = metrics.get("best_val_top1", metrics.get("test_top1"))
    return StoredRun(run.info.run_id, run.info.status, None if result is None else float(result))


@dataclass
class RunPlan:
    """What `train` does for this job."""
    fingerprint: str
    decision: Decision
    lease: Optional[object] = None  # eanet.tracking.ledger.Lease: this process' claim
    record: Optional[SweepRecord] = None
    job_num: Optional[int] = None
    tags: dict[str, str] = field(default_factory=dict)
    legacy_fingerprint: Optional[str] = None
    name: str = ""  # the run name and fingerprint, as the log shows the job
    overrides: Optional[str] = None  # the sweep job's own overrides

    @property
    def skip(self) -> bool:
        """Nothing to train: finished earlier, or not started (the budget)."""
        return self.decision.status in (JobStatus.FINISHED_EARLIER, JobStatus.NOT_STARTED)

    def finish_early(self, decision: Decision) -> None:
        self.decision = decision
        log.info("%s: skipped: FINISHED as run %s", self.name, decision.run_id)
        self.record_job(status=decision.status, run_id=decision.run_id,
                        fingerprint=self.fingerprint, overrides=self.overrides)

    @property
    def result(self) -> Optional[float]:
        return self.decision.result

    @property
    def run_id(self) -> Optional[str]:
        """The interrupted run to continue, if any."""
        return self.decision.run_id if self.decision.status == JobStatus.RESUME else None

    def record_job(self, **fields) -> None:
        if self.record is not None and self.job_num is not None:
            self.record.set_job(self.job_num, **fields)


def find_runs(cfg: Config, fp: str, legacy: str) -> list[StoredRun]:
    """This computation's active runs, newest first. A run recorded under its legacy fingerprint
    on the same backend is found again (and tagged with the new one); one on another backend is
    named and left alone."""
    from eanet.backend import configured_backend
    from eanet.tracking.search import adopt_runs, runs_with_fingerprint
    from eanet.tracking.tags import TAG_BACKEND

    t = cfg.tracking
    runs = runs_with_fingerprint(t.tracking_uri, t.experiment_name, fp)
    if not runs and legacy != fp:
        earlier = runs_with_fingerprint(t.tracking_uri, t.experiment_name, legacy)
        backend = configured_backend()
        same = [r for r in earlier if r.data.tags.get(TAG_BACKEND, "tensorflow") == backend]
        if same:
            adopt_runs([r.info.run_id for r in same], fp, legacy)
            log.info("%s: found again %d run(s) recorded under the earlier fingerprint %s",
                     run_name(cfg), len(same), legacy)
            runs = runs_with_fingerprint(t.tracking_uri, t.experiment_name, fp)
        elif earlier:
            log.info("%s: run %s has these settings but ran on backend %s, not %s: not reused",
                     run_name(cfg), earlier[0].info.run_id,
                     earlier[0].data.tags.get(TAG_BACKEND, "tensorflow"), backend)
    return [stored_run(r) for r in runs]


def sweep_job() -> tuple[Optional[SweepRecord], Optional[int], Optional[str]]:
    """(the sweep's record, this job's number, its overrides) in a sweep job with a parent run;
    (None, None, None) otherwise (a single run, a tuning trial)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None, None, None
    hydra = HydraConfig.get()
    from eanet.tracking.record import parent_run_id

    parent = parent_run_id(str(hydra.sweep.dir))
    if parent is None:
        return None, None, None
    return parent, hydra.job.num, " ".join(hydra.overrides.task)


def finished_earlier(cfg: Config, raw_cfg: DictConfig) -> RunPlan:
    """The job's plan, skipped already when its computation FINISHED (reading only, so that a
    job whose data turns out missing has written nothing); `claim_job` goes on from it."""
    from eanet.tracking.store import check_tracking_location
    from eanet.tracking.tags import TAG_FINGERPRINT, TAG_IGNORED

    t = cfg.tracking
    check_tracking_location(t.tracking_uri, t.checkpoint_dir)
    fp, legacy = fingerprint(raw_cfg), legacy_fingerprint(raw_cfg)
    tags = {TAG_FINGERPRINT: fp, TAG_IGNORED: ",".join(ignored_settings(raw_cfg))}
    parent, job_num, overrides = sweep_job()
    record = SweepRecord(t.tracking_uri, parent) if parent else None
    plan = RunPlan(fp, Decision(JobStatus.NEW), record=record, job_num=job_num, tags=tags,
                   legacy_fingerprint=legacy, name=f"{run_name(cfg)} [fingerprint {fp}]",
                   overrides=overrides)
    runs = find_runs(cfg, fp, legacy)
    decision = decide(runs, claim_live=False, claim_run_id=None, rerun=t.rerun)
    if decision.status == JobStatus.FINISHED_EARLIER:
        plan.finish_early(decision)
    return plan


def claim_job(plan: RunPlan, cfg: Config) -> None:
    """Decide, wait while another process trains this computation, then claim it (see the
    module's docstring): `plan` then holds the lease, or is skipped with its result."""
    from eanet.sweeps.budget import budget_refusal
    from eanet.tracking.ledger import Ledger

    t = cfg.tracking
    fp, name = plan.fingerprint, plan.name
    ledger = Ledger(t.tracking_uri, t.experiment_name, t.lease_s)
    waited = False
    while True:
        runs = find_runs(cfg, fp, plan.legacy_fingerprint)
        claim = ledger.state(fp)
        decision = decide(runs, claim.live, claim.run_id, t.rerun)
        plan.decision = decision
        if decision.status == JobStatus.FINISHED_EARLIER:
            plan.finish_early(decision)
            return
        if decision.status == JobStatus.RUNNING_ELSEWHERE:
            if not waited:
                log.info("%s: running elsewhere (%s, run %s): waiting for it", name,
                         claim.holder, claim.run_id)
                plan.record_job(status=decision.status, run_id=claim.run_id, fingerprint=fp,
                                overrides=plan.overrides)
                waited = True
            time.sleep(min(t.lease_s / 3, 10.0))
            continue
        lease = ledger.claim(fp, claim.generation)
        if lease is None:
            continue  # another process claimed it first: its claim is live now
        finished = [r for r in find_runs(cfg, fp, plan.legacy_fingerprint)
                    if r.status == "FINISHED"]
        if finished and not t.rerun:  # its holder finished while this job decided
            lease.release()
            continue
        refusal = budget_refusal(cfg, plan.record, plan.job_num)
        if refusal:
            lease.release()
            log.info("%s: %s", name, refusal)
            plan.decision = Decision(JobStatus.NOT_STARTED)
            plan.record_job(status=JobStatus.NOT_STARTED, fingerprint=fp,
                            overrides=plan.overrides, error=refusal)
            return
        verb = f"resumes run {decision.run_id}" if decision.run_id else "new run"
        log.info("%s: %s (claim %d)", name, verb, lease.generation)
        plan.lease = lease
        plan.record_job(status=JobStatus.TRAINING, run_id=decision.run_id, fingerprint=fp,
                        overrides=plan.overrides, error=None)
        return
