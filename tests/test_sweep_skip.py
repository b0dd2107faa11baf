"""Re-launching a sweep skips configurations that FINISHED; a deleted run's configuration re-runs."""
from __future__ import annotations

from fault_tools import client_for, run_eanet, training_runs

SWEEP = ["-m", "seed=0,1,2,3", "trainer.epochs=1", "tracking.log_model=false"]


def record(runs) -> dict[str, tuple]:
    """fingerprint → (run id, start time, end time, status)."""
    return {r.data.tags["eanet.fingerprint"]: (r.info.run_id, r.info.start_time, r.info.end_time,
                                               r.info.status) for r in runs}


def test_relaunched_sweep_skips_finished_and_reruns_only_deleted(tmp_path):
    client = client_for(tmp_path)
    first = run_eanet(tmp_path, *SWEEP)
    assert first.returncode == 0, first.stderr[-3000:]
    before = record(training_runs(client))
    assert len(before) == 4  # four configurations, four fingerprints
    assert {status for *_, status in before.values()} == {"FINISHED"}

    # Same command: nothing trains, every run is untouched, the log says why.
    second = run_eanet(tmp_path, *SWEEP)
    assert second.returncode == 0, second.stderr[-3000:]
    assert record(training_runs(client)) == before
    assert second.stdout.count("skipped: FINISHED as run") == 4
    assert "4 jobs, 4 completed, 0 failed" in second.stderr

    # Delete one run: only its configuration trains again, into a new run.
    deleted_fp, (deleted_id, *_) = sorted(before.items())[0]
    client.delete_run(deleted_id)
    third = run_eanet(tmp_path, *SWEEP)
    assert third.returncode == 0, third.stderr[-3000:]
    after = record(training_runs(client))
    assert after.keys() == before.keys()
    assert {fp for fp in after if after[fp] != before[fp]} == {deleted_fp}
    assert after[deleted_fp][0] != deleted_id and after[deleted_fp][3] == "FINISHED"
    assert third.stdout.count("skipped: FINISHED as run") == 3


def test_rerun_setting_trains_again(tmp_path):
    client = client_for(tmp_path)
    overrides = ["trainer.epochs=1", "tracking.log_model=false"]
    assert run_eanet(tmp_path, *overrides).returncode == 0
    forced = run_eanet(tmp_path, *overrides, "tracking.rerun=true")
    assert forced.returncode == 0, forced.stderr[-3000:]
    runs = training_runs(client)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags["eanet.fingerprint"] for r in runs}) == 1  # same configuration
