"""Re-launching a sweep skips configurations that FINISHED and re-runs a deleted run's
configuration; `tracking.rerun=true` trains a finished configuration again."""
from __future__ import annotations

from conftest import TINY, client_for, compose_config, run_eanet, training_runs
from eanet.config_checks import validate
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


def test_a_run_recorded_under_the_legacy_fingerprint_is_found_again(tracking_dir, caplog):
    """Stores recorded before the backend and ignored settings counted keep working: a FINISHED
    run under the legacy fingerprint on the same backend is skipped (and tagged with the new
    fingerprint); one recorded on another backend is named in one line and not reused."""
    import logging

    from eanet.sweeps.identity import fingerprint, legacy_fingerprint

    caplog.set_level(logging.INFO, logger="eanet.sweeps.jobs")
    client = client_for(tracking_dir)
    experiment = client.create_experiment("eanet")
    cfg = compose_config([*TINY, "trainer.epochs=1", "tracking.log_model=false",
                          f"tracking.tracking_uri={tracking_dir}"])
    old = client.create_run(experiment, tags={"eanet.run_type": "train",
                                              "eanet.fingerprint": legacy_fingerprint(cfg)})
    client.log_metric(old.info.run_id, "best_val_top1", 0.25)
    client.set_terminated(old.info.run_id, "FINISHED")
    assert train(validate(cfg), cfg) == 0.25  # skipped: nothing trained
    assert "found again 1 run(s) recorded under the earlier fingerprint" in caplog.text
    tags = client.get_run(old.info.run_id).data.tags
    assert tags["eanet.fingerprint"] == fingerprint(cfg)
    assert tags["eanet.fingerprint.legacy"] == legacy_fingerprint(cfg)
    assert len(training_runs(client)) == 1

    other = compose_config([*TINY, "trainer.epochs=1", "tracking.log_model=false", "seed=5",
                            f"tracking.tracking_uri={tracking_dir}"])
    jax_run = client.create_run(experiment, tags={"eanet.run_type": "train", "eanet.backend": "jax",
                                                  "eanet.fingerprint": legacy_fingerprint(other)})
    client.set_terminated(jax_run.info.run_id, "FINISHED")
    caplog.clear()
    train(validate(other), other)
    assert f"run {jax_run.info.run_id} has these settings but ran on backend jax" in caplog.text
    assert len(training_runs(client)) == 3  # trained anew beside it
