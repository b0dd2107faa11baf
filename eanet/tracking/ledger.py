"""Claims: before a job trains a computation it claims it, atomically, in the store it records to.

Every experiment has one ledger: a run named `ledger` (tag eanet.run_type=ledger) that its
experiment points to (experiment tag `eanet.ledger`). A claim is a param of that run,

    claim.<fingerprint>.<generation> = {"token": …, "host": …, "pid": …, "at": <time>}

and MLflow refuses to change a param's value, in a SQLite file as on a tracking server (the
params table's primary key), so of two jobs that log the same key at once exactly one succeeds:
that is the atomic step, and it works across machines that share a tracking server.

Liveness is a lease: the holder renews the ledger tag `lease.<fingerprint>.<generation>` (its
time of expiry, and the MLflow run it trains) every third of `tracking.lease_s` from a thread of
its own (`Lease`). A claim is live while its lease runs, or, before its first renewal, for
`lease_s` after it was taken. A dead claim — SIGKILL, a lost machine, an expired lease — is
taken over by claiming the next generation; a holder that finds a newer generation than its own
has lost its claim and stops (`Lease.lost`), so two processes never train one run. The clocks
of machines sharing a store must agree to well within the lease.

The ledger is created once per experiment: the process that creates the experiment
`<name>/.eanet-ledger` (experiment names are unique, so one process wins) creates the ledger run,
points the experiment at it, and deletes that marker experiment again (its name stays taken).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Optional

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from eanet.tracking import StoreError
from eanet.tracking.store import experiment_id, use_store
from eanet.tracking.tags import RUN_TYPE_LEDGER, TAG_LEDGER, TAG_RUN_TYPE

log = logging.getLogger(__name__)

LEDGER_MARKER = "/.eanet-ledger"  # appended to the experiment's name (see the module docstring)
LEDGER_WAIT_S = 60.0  # how long a process waits for another to finish creating the ledger


def _claim_key(fp: str, generation: int) -> str:
    return f"claim.{fp}.{generation}"


def _lease_key(fp: str, generation: int) -> str:
    return f"lease.{fp}.{generation}"


@dataclass
class ClaimState:
    """The newest claim of a computation, as the ledger holds it."""
    generation: int  # 0: never claimed
    live: bool
    run_id: Optional[str] = None  # the run its holder trains, once opened
    holder: str = ""  # host:pid of its holder
    until: Optional[float] = None  # when its lease runs out


def claim_state(fp: str, params: dict, tags: dict, now: float, lease_s: float) -> ClaimState:
    """The newest claim on `fp` among the ledger's `params` and `tags`, live or not at `now`."""
    prefix = f"claim.{fp}."
    generations = [int(k[len(prefix):]) for k in params if k.startswith(prefix)]
    if not generations:
        return ClaimState(0, live=False)
    generation = max(generations)
    claim = json.loads(params[_claim_key(fp, generation)])
    lease = json.loads(tags.get(_lease_key(fp, generation), "null") or "null")
    until = lease["until"] if lease else claim["at"] + lease_s
    return ClaimState(generation, live=until > now, run_id=(lease or {}).get("run_id"),
                      holder=claim.get("holder", ""), until=until)


class Ledger:
    """The claims of one experiment's computations."""

    def __init__(self, tracking_uri: Optional[str], experiment_name: str, lease_s: float):
        self.tracking_uri = tracking_uri
        self.lease_s = lease_s
        use_store(tracking_uri)
        self.client = MlflowClient()
        self.experiment_id = experiment_id(tracking_uri, experiment_name)
        self.run_id = self._ledger_run(experiment_name)

    def _ledger_run(self, experiment_name: str) -> str:
        found = self.client.get_experiment(self.experiment_id).tags.get(TAG_LEDGER)
        if found:
            return found
        marker = experiment_name + LEDGER_MARKER
        try:
            marker_id = self.client.create_experiment(marker)
        except MlflowException:  # another process creates the ledger: wait for its pointer
            deadline = time.time() + LEDGER_WAIT_S
            while time.time() < deadline:
                time.sleep(0.5)
                found = self.client.get_experiment(self.experiment_id).tags.get(TAG_LEDGER)
                if found:
                    return found
            raise StoreError(
                f"The claims ledger of experiment {experiment_name!r} was never finished: its "
                f"marker experiment {marker!r} exists but the experiment has no {TAG_LEDGER} "
                f"tag. Delete the marker for good (`mlflow gc --experiment-ids <its id>`) and "
                f"run again") from None
        run = self.client.create_run(self.experiment_id, run_name="ledger",
                                     tags={TAG_RUN_TYPE: RUN_TYPE_LEDGER})
        self.client.set_terminated(run.info.run_id, "FINISHED")  # a record, never a running job
        self.client.set_experiment_tag(self.experiment_id, TAG_LEDGER, run.info.run_id)
        self.client.delete_experiment(marker_id)
        return run.info.run_id

    def _read(self) -> tuple[dict[str, str], dict[str, str]]:
        data = self.client.get_run(self.run_id).data
        return data.params, data.tags

    def state(self, fp: str, now: Optional[float] = None) -> ClaimState:
        """The newest claim on `fp` and whether it is live."""
        params, tags = self._read()
        return claim_state(fp, params, tags, now or time.time(), self.lease_s)

    def claim(self, fp: str, over: int) -> Optional[Lease]:
        """Take generation `over + 1` of `fp` (`over`: the newest generation seen, dead or
        none); None if another process took it first."""
        generation = over + 1
        value = json.dumps({"token": uuid.uuid4().hex, "at": time.time(),
                            "holder": f"{socket.gethostname()}:{os.getpid()}"})
        try:
            self.client.log_param(self.run_id, _claim_key(fp, generation), value)
        except MlflowException:
            params, _ = self._read()
            if params.get(_claim_key(fp, generation)) != value:
                return None
            # written, though the answer was lost
        lease = Lease(self, fp, generation)
        lease.start()
        return lease


class Lease:
    """A claim this process holds: renewed from a thread from the moment it is taken (`start`)
    until the job ends (`release`: its lease set to expire now, so a relaunch need not wait)."""

    def __init__(self, ledger: Ledger, fp: str, generation: int):
        self.ledger, self.fp, self.generation = ledger, fp, generation
        self.run_id: Optional[str] = None
        self.lost = False  # a newer generation exists: another process took the claim over
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def renew(self, until: Optional[float] = None) -> None:
        until = time.time() + self.ledger.lease_s if until is None else until
        value = json.dumps({"until": until, "run_id": self.run_id})
        self.ledger.client.set_tag(self.ledger.run_id, _lease_key(self.fp, self.generation), value)

    def start(self) -> None:
        """Renew the lease from a thread of its own until `release`."""
        self.renew()
        self._thread = threading.Thread(target=self._keep, name=f"lease-{self.fp}", daemon=True)
        self._thread.start()

    def attach(self, run_id: str) -> None:
        """The MLflow run this claim trains (what a waiting job shows and then reads)."""
        self.run_id = run_id
        self.renew()

    def beat(self) -> bool:
        """Renew the lease, unless a newer generation exists: then the claim is lost (another
        process took it over after the lease ran out) and this returns False."""
        params, _ = self.ledger._read()
        if _claim_key(self.fp, self.generation + 1) in params:
            self.lost = True
            log.error("claim on %s taken over by another process: stopping", self.fp)
            return False
        self.renew()
        return True

    def _keep(self) -> None:
        while not self._stop.wait(self.ledger.lease_s / 3):
            try:
                if not self.beat():
                    return
            except Exception as error:  # noqa: BLE001 - a store hiccup: retry at the next beat
                log.warning("lease of %s not renewed: %s: %s", self.fp, type(error).__name__, error)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not self.lost:
            try:
                self.renew(until=0.0)
            except Exception as error:  # noqa: BLE001 - the lease then runs out by itself
                log.warning("claim on %s not released: %s", self.fp, error)


def read_claims(tracking_uri: Optional[str], experiment_name: str, lease_s: float):
    """`state(fp, now) -> ClaimState` over the experiment's ledger as it is now, reading only
    (plan=true): a store, experiment or ledger that does not exist yet holds no claims."""
    from eanet.tracking.store import local_store_path, resolved_uri

    empty = lambda fp, now: ClaimState(0, live=False)  # noqa: E731
    path = local_store_path(resolved_uri(tracking_uri))
    if path is not None and not path.exists():
        return empty
    use_store(tracking_uri)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name)
    ledger_id = experiment.tags.get(TAG_LEDGER) if experiment is not None else None
    if not ledger_id:
        return empty
    data = client.get_run(ledger_id).data
    return lambda fp, now: claim_state(fp, data.params, data.tags, now, lease_s)
