"""Re-launching a sweep skips configurations that FINISHED and re-runs a deleted run's
configuration; `tracking.rerun=true` trains a finished configuration again."""
from __future__ import annotations

from conftest import TINY, client_for, compose_config, run_eanet, training_runs
from eanet.config import validate
from eanet.training.train import train

SWEEP = ["-m", "seed=0,1", "trainer.epochs=1", "tracking.log_model=false"]


def record(runs) -> dict[str, tuple]:
    """fingerprint → (run id, start time, end time, status)."""
    return {r.data.tags["eanet.fingerprint"]: (r.info.run_id, r.info.start_time, r.info.end_time,
                                               r.info.status) for r in runs}


def test_relaunched_sweep_skips_finished_and_reruns_only_deleted(tmp_path):
    client = client_for(tmp_path)
    first = run_eanet(tmp_path, *SWEEP)
    assert first.returncode == 0, first.stderr[-3000:]
    before = record(training_runs(client))
    assert len(before) == 2  # two configurations, two fingerprints
    assert {status for *_, status in before.values()} == {"FINISHED"}

    # Delete one run, then the same command: only the deleted run's configuration trains again,
    # into a new run; the other is skipped, untouched, and the log says why.
    deleted_fp, (deleted_id, *_) = sorted(before.items())[0]
    client.delete_run(deleted_id)
    second = run_eanet(tmp_path, *SWEEP)
    assert second.returncode == 0, second.stderr[-3000:]
    after = record(training_runs(client))
    assert after.keys() == before.keys()
    assert {fp for fp in after if after[fp] != before[fp]} == {deleted_fp}
    assert after[deleted_fp][0] != deleted_id and after[deleted_fp][3] == "FINISHED"
    assert second.stdout.count("skipped: FINISHED as run") == 1
    assert "2 jobs: 1 trained, 1 finished earlier" in second.stderr


def test_rerun_setting_trains_again(tracking_dir):
    def run(*overrides):
        cfg = compose_config([*TINY, "trainer.epochs=1", "tracking.log_model=false",
                              f"tracking.tracking_uri={tracking_dir}", *overrides])
        train(validate(cfg), cfg)

    run()
    run()  # skipped: FINISHED
    assert len(training_runs(client_for(tracking_dir))) == 1
    run("tracking.rerun=true")
    runs = training_runs(client_for(tracking_dir))
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags["eanet.fingerprint"] for r in runs}) == 1  # same configuration
