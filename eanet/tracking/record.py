"""A sweep's record: every job it covers, with its status and run, held by the sweep's parent run.

The parent run (eanet.sweeps.parent) is the record's one owner. Every process that runs a job of
the sweep — the sweep's own, a joblib worker, a Submitit or Ray job on another machine — writes
its job's entry there, and everything that reads a sweep reads it from there: the progress lines
and their ETA, the summary, the parent's final status, the report, best-model registration.

- one tag per job, `eanet.job.<num>` = {"status", "run_id", "fingerprint", "overrides", "error"},
  `status` a `JobStatus`, `launch` the launch that wrote it; `run_id` is the run that holds the job's result, whether this sweep
  trained it or found it finished (earlier, or by another sweep) or waited for another process;
- the current launch, `eanet.launch` = {"id", "start", "total"};
- the budget's places, write-once params `place.<launch id>.<k>` = job number, k < sweep.max_runs:
  MLflow refuses to change a param, so parallel jobs, on any machine, never take more places than
  there are.

The sweep folder keeps only `.progress/parent.json`, the parent run's id, for jobs to find it.
"""
from __future__ import annotations

import enum
import json
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from eanet.tracking.tags import TAG_JOB_PREFIX, TAG_LAUNCH

PROGRESS_DIR = ".progress"  # inside the sweep folder
PARENT_FILE = "parent.json"


class JobStatus(str, enum.Enum):
    """What a sweep job does or did. Decided once (eanet.sweeps.jobs.decide) for the run and for
    plan=true alike; the ones after TRAINING are written when the job ends."""
    NEW = "new"  # will train from epoch 0
    RESUME = "resume"  # will continue an interrupted run from its checkpoint
    FINISHED_EARLIER = "finished earlier"  # a FINISHED run of this computation exists: skipped
    RUNNING_ELSEWHERE = "running elsewhere"  # another process holds a live claim: waited for
    NOT_STARTED = "not started (budget)"  # the launch's budget was spent
    TRAINING = "training"  # claimed and training here (stays so if the job was interrupted)
    TRAINED = "trained"  # trained here, FINISHED
    FAILED = "failed"
    PRUNED = "pruned"  # a tuning trial its pruner stopped

    @property
    def has_result(self) -> bool:
        return self in (JobStatus.TRAINED, JobStatus.FINISHED_EARLIER)

    @property
    def ended(self) -> bool:
        """The job is over (as far as this launch is concerned)."""
        return self not in (JobStatus.NEW, JobStatus.RESUME, JobStatus.TRAINING,
                            JobStatus.RUNNING_ELSEWHERE)


@dataclass
class JobEntry:
    status: JobStatus
    overrides: str = ""
    run_id: Optional[str] = None
    fingerprint: Optional[str] = None
    error: Optional[str] = None
    launch: Optional[str] = None  # the launch that wrote it last (progress counts the current one)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "status": self.status.value})

    @classmethod
    def from_json(cls, text: str) -> JobEntry:
        data = json.loads(text)
        return cls(**{**data, "status": JobStatus(data["status"])})


def progress_dir(sweep_dir: str | Path) -> Path:
    return Path(sweep_dir) / PROGRESS_DIR


def parent_run_id(sweep_dir: str | Path) -> Optional[str]:
    """The parent run of the sweep writing into `sweep_dir`, if it has one."""
    try:
        return json.loads((progress_dir(sweep_dir) / PARENT_FILE).read_text())["run_id"]
    except (OSError, ValueError, KeyError):
        return None


def write_parent_file(sweep_dir: str | Path, run_id: str) -> None:
    folder = progress_dir(sweep_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PARENT_FILE).write_text(json.dumps({"run_id": run_id}))


def eta_seconds(elapsed: float, ended: int, total: Optional[int]) -> Optional[float]:
    """The sweep's time left from the rate of the jobs ended so far: the one ETA of a sweep."""
    if not total or not ended:
        return None
    return elapsed / ended * max(total - ended, 0)


class SweepRecord:
    """The record on the parent run `run_id` (see the module's docstring)."""

    def __init__(self, tracking_uri: Optional[str], run_id: str):
        from mlflow.tracking import MlflowClient

        from eanet.tracking.store import use_store

        use_store(tracking_uri)
        self.client = MlflowClient()
        self.run_id = run_id

    @classmethod
    def of_sweep(cls, tracking_uri: Optional[str], sweep_dir: str | Path) -> Optional[SweepRecord]:
        run_id = parent_run_id(sweep_dir)
        return None if run_id is None else cls(tracking_uri, run_id)

    def _tags(self) -> dict[str, str]:
        return self.client.get_run(self.run_id).data.tags

    def start_launch(self, total: Optional[int]) -> dict:
        launch = {"id": uuid.uuid4().hex[:12], "start": time.time(), "total": total}
        self.client.set_tag(self.run_id, TAG_LAUNCH, json.dumps(launch))
        return launch

    def launch(self) -> dict:
        return json.loads(self._tags().get(TAG_LAUNCH, "{}"))

    def jobs(self) -> dict[int, JobEntry]:
        return {int(k[len(TAG_JOB_PREFIX):]): JobEntry.from_json(v)
                for k, v in self._tags().items() if k.startswith(TAG_JOB_PREFIX)}

    def set_job(self, num: int, **fields) -> JobEntry:
        """Update job `num`'s entry with `fields` (a job writes only its own entry)."""
        tags = self._tags()
        current = tags.get(f"{TAG_JOB_PREFIX}{num}")
        entry = JobEntry.from_json(current) if current else JobEntry(JobStatus.NEW)
        for name, value in fields.items():
            if value is not None or name == "error":
                setattr(entry, name, value)
        entry.launch = json.loads(tags.get(TAG_LAUNCH, "{}")).get("id")
        if entry.error:
            entry.error = entry.error[:2000]
        self.client.set_tag(self.run_id, f"{TAG_JOB_PREFIX}{num}", entry.to_json())
        return entry

    def run_ids(self) -> list[str]:
        """The runs holding the sweep's results, each once (jobs may share a computation)."""
        return sorted({e.run_id for e in self.jobs().values() if e.run_id})

    def take_place(self, launch_id: str, max_runs: int, job_num: int) -> bool:
        """One of the launch's `max_runs` places for job `job_num` (kept on a retry)."""
        from mlflow.exceptions import MlflowException

        params = self.client.get_run(self.run_id).data.params
        keys = [f"place.{launch_id}.{k}" for k in range(max_runs)]
        if any(params.get(key) == str(job_num) for key in keys):
            return True
        for key in keys:
            if key in params:
                continue
            try:
                self.client.log_param(self.run_id, key, str(job_num))
                return True
            except MlflowException:
                if self.client.get_run(self.run_id).data.params.get(key) == str(job_num):
                    return True
        return False
