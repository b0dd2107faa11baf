"""Interrupted runs end KILLED (or stay RUNNING after SIGKILL) and resume in the same MLflow run.

One run is interrupted twice, SIGTERM then SIGKILL, each after a completed epoch, and re-launched
with the same command each time; it must finish with one point per epoch for every metric.
"""
from __future__ import annotations

import signal
import time
from pathlib import Path

from conftest import (checkpointed_epoch, client_for, metric_steps, run_eanet, start_eanet,
                      training_runs)

EPOCHS = 5
LEASE_S = 2  # the job's claim on its computation (eanet.tracking.ledger) lives this long unrenewed
# Epochs of 12 steps: long enough to interrupt mid-epoch, short enough for CI.
SCHEDULE = [f"trainer.epochs={EPOCHS}", "trainer.steps_per_epoch=12", f"tracking.lease_s={LEASE_S}"]
PER_EPOCH = ["loss", "top1", "top5", "val_loss", "val_top1", "val_top5", "learning_rate",
             "epoch_time_s"]


def interrupt_after_epoch(folder: Path, epoch: int, signum: int) -> str:
    """Start the run, send `signum` once `epoch` is checkpointed; return its output."""
    log = folder / f"interrupted-{signal.Signals(signum).name}.log"
    process = start_eanet(folder, *SCHEDULE, log=log)
    deadline = time.monotonic() + 400
    while checkpointed_epoch(folder) < epoch:
        assert process.poll() is None, f"run ended before epoch {epoch}:\n{log.read_text()}"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.2)
    process.send_signal(signum)
    process.wait(timeout=120)
    assert process.returncode != 0, log.read_text()
    return log.read_text()


def test_sigterm_then_sigkill_then_resume_completes_history(tmp_path):
    client = client_for(tmp_path)

    # SIGTERM (a scheduler stopping the job): the run ends KILLED with the reason.
    interrupt_after_epoch(tmp_path, 0, signal.SIGTERM)
    [run] = training_runs(client)
    assert run.info.status == "KILLED"
    assert "SIGTERM" in run.data.tags["eanet.error"]
    first_stop = checkpointed_epoch(tmp_path)
    # The signal can land between an epoch's checkpoint and its metrics (the test polls for the
    # checkpoint, and MLflow is slower under load): that epoch is then logged on resume.
    assert metric_steps(client, run.info.run_id) in (list(range(first_stop + 1)),
                                                     list(range(first_stop)))

    # Same command: resumes the same run; SIGKILL cannot be caught, so MLflow still says RUNNING.
    interrupt_after_epoch(tmp_path, first_stop + 1, signal.SIGKILL)
    [again] = training_runs(client)
    assert again.info.run_id == run.info.run_id
    assert again.info.status == "RUNNING"
    second_stop = checkpointed_epoch(tmp_path)
    assert second_stop > first_stop
    # A kill between an epoch's checkpoint and its metrics can leave that last epoch unlogged.
    steps = metric_steps(client, run.info.run_id)
    assert steps in (list(range(second_stop + 1)), list(range(second_stop)))

    # Same command again: the SIGKILLed job's claim is taken over once its lease has run out (no
    # renewal since the kill), then the run resumes after the last checkpointed epoch and finishes.
    killed_at = time.time()
    finished = run_eanet(tmp_path, *SCHEDULE)
    assert finished.returncode == 0, finished.stderr[-3000:]
    [claimed] = [line for line in finished.stdout.splitlines() if "(claim " in line]
    assert f"resumes run {run.info.run_id} (claim 3)" in claimed  # launches 1 and 2 held 1 and 2
    assert time.time() - killed_at >= LEASE_S
    assert f"resuming run {run.info.run_id} after epoch {second_stop}" in finished.stdout
    [done] = training_runs(client)
    assert done.info.run_id == run.info.run_id
    assert done.info.status == "FINISHED"
    assert "eanet.error" not in done.data.tags  # the SIGTERM no longer describes this run
    for key in PER_EPOCH:  # every epoch exactly once
        assert metric_steps(client, run.info.run_id, key) == list(range(EPOCHS)), key
    assert len(client.get_metric_history(run.info.run_id, "param_count_total")) == 1
    assert "test_top1" in done.data.metrics and "best_val_top1" in done.data.metrics
    history = Path(client.download_artifacts(run.info.run_id, "history.csv", str(tmp_path)))
    assert len(history.read_text().strip().splitlines()) == 1 + EPOCHS
    assert not (tmp_path / "checkpoints" / run.info.run_id).exists()  # keyed by run, removed
