"""Claims (eanet.tracking.ledger) and the one decision a job makes (eanet.sweeps.jobs.decide):
atomic across processes, live while renewed, taken over when dead. No TensorFlow here."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

from conftest import ROOT, store_uri, subprocess_env
from eanet.sweeps.jobs import StoredRun, decide
from eanet.tracking.record import JobStatus
from eanet.tracking.ledger import Ledger, claim_state

# Each process: wait at a file barrier, open the ledger (the first creates it), try to claim
# generation 1 of one fingerprint, print whether it got it.
CLAIMANT = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from eanet.tracking.ledger import Ledger

    folder, me, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    (folder / f"ready{me}").touch()
    while len(list(folder.glob("ready*"))) < count:
        time.sleep(0.005)
    ledger = Ledger(f"sqlite:///{folder}/mlflow.db", "eanet", lease_s=30)
    lease = ledger.claim("f" * 16, 0)
    print(json.dumps({"won": lease is not None, "ledger": ledger.run_id}))
    if lease is not None:
        lease.release()
""")


def test_of_processes_claiming_at_once_exactly_one_wins(tmp_path):
    count = 4
    processes = [subprocess.Popen([sys.executable, "-c", CLAIMANT, str(tmp_path), str(i),
                                   str(count)], cwd=ROOT, env=subprocess_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(count)]
    answers = []
    for process in processes:
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err[-3000:]
        answers.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(a["won"] for a in answers) == 1
    assert len({a["ledger"] for a in answers}) == 1  # one ledger, created once


def test_a_claim_is_live_while_renewed_and_taken_over_when_dead(tmp_path):
    uri = store_uri(tmp_path)
    ledger = Ledger(uri, "eanet", lease_s=1.0)
    fp = "a" * 16
    assert ledger.state(fp).generation == 0 and not ledger.state(fp).live
    first = ledger.claim(fp, 0)
    assert first is not None and ledger.claim(fp, 0) is None  # generation 1 is taken
    first.attach("run-1")
    time.sleep(1.5)  # longer than the lease: the renewing thread keeps it live
    state = ledger.state(fp)
    assert state.live and state.generation == 1 and state.run_id == "run-1"
    first._stop.set()  # the holder dies without a word (SIGKILL): no more renewals
    first._thread.join()
    time.sleep(1.2)
    assert not ledger.state(fp).live
    second = ledger.claim(fp, 1)
    assert second is not None and second.generation == 2
    # The first holder, were it still alive, sees the newer generation and stops training
    # (eanet.training.faults.StopWhenClaimLost) instead of renewing.
    assert first.beat() is False and first.lost
    assert ledger.state(fp).generation == 2
    second.release()
    assert not ledger.state(fp).live  # released: a relaunch need not wait for the lease


def test_claim_state_before_the_first_renewal_counts_from_the_claim():
    claim = json.dumps({"token": "t", "at": 100.0, "holder": "h:1"})
    params = {f"claim.{'b' * 16}.1": claim}
    assert claim_state("b" * 16, params, {}, now=105.0, lease_s=10).live
    assert not claim_state("b" * 16, params, {}, now=111.0, lease_s=10).live
    renewed = {f"lease.{'b' * 16}.1": json.dumps({"until": 200.0, "run_id": "r"})}
    state = claim_state("b" * 16, params, renewed, now=150.0, lease_s=10)
    assert state.live and state.run_id == "r" and state.holder == "h:1"


def test_one_decision_for_every_case():
    done = StoredRun("r1", "FINISHED", 0.4)
    killed = StoredRun("r2", "KILLED")
    assert decide([done, killed], claim_live=True, claim_run_id="r3", rerun=False).status \
        == JobStatus.FINISHED_EARLIER
    assert decide([killed], True, "r2", False).status == JobStatus.RUNNING_ELSEWHERE
    resume = decide([killed], False, None, False)
    assert resume.status == JobStatus.RESUME and resume.run_id == "r2"
    assert decide([], False, None, False).status == JobStatus.NEW
    assert decide([done], False, None, rerun=True).status == JobStatus.NEW
    assert decide([done], True, "r9", rerun=True).status == JobStatus.RUNNING_ELSEWHERE
