"""Fingerprints name what a configuration computes — the settings its model, optimizer and data
read, and the Keras backend — and nothing else; the sweep summary reads the sweep's record."""
from __future__ import annotations

import copy

import pytest
from omegaconf import OmegaConf

from conftest import compose_config
from eanet.sweeps.ending import sweep_summary
from eanet.sweeps.identity import (ADDED_LATER, fingerprint, ignored_settings,
                                   legacy_fingerprint)
from eanet.tracking.record import JobEntry, JobStatus


def test_fingerprint_ignores_where_things_go_but_not_what_is_computed():
    base = fingerprint(compose_config())
    assert len(base) == 16 and base == fingerprint(compose_config())
    for same in (["tracking.tracking_uri=sqlite:///elsewhere.db"], ["tracking.rerun=true"],
                 ["tracking.checkpoint_dir=/tmp/ckpt"], ["trainer.verbose=2"],
                 ["data.path=/data/cifar100.npz"], ["tracking.experiment_name=other"],
                 ["sweep.max_runs=2"], ["plan=true"], ["quiet=true"], ["tracking.lease_s=5"],
                 ["optimizer.momentum=0.5"],  # AdamW reads no momentum
                 ["data.synthetic_train_size=10"]):  # only the synthetic set reads it
        assert fingerprint(compose_config(same)) == base, same
    for different in (["model.patch_size=4"], ["seed=1"], ["optimizer.learning_rate=0.01"],
                      ["trainer.epochs=3"], ["model=vit"], ["data.augmentation.zoom=0.0"],
                      ["trainer.matmul_precision=bfloat16"], ["model.dim_coefficient=2"],
                      ["model.projection_dropout=0.1"],
                      ["data.augmentation.contrast_clip=true"], ["model.implementation=reference"]):
        assert fingerprint(compose_config(different)) != base, different


def test_settings_a_model_ignores_leave_its_identity_alone():
    """ViT's attention declares it reads neither dim_coefficient nor projection_dropout
    (SelfAttention.ignored_settings): ViT runs differing only there are one computation."""
    vit = fingerprint(compose_config(["model=vit"]))
    for same in (["model.dim_coefficient=1"], ["model.dim_coefficient=2"],
                 ["model.projection_dropout=0.0"]):
        assert fingerprint(compose_config(["model=vit", *same])) == vit, same
    assert fingerprint(compose_config(["model=vit", "model.attention_dropout=0.0"])) != vit
    assert "model.dim_coefficient" in ignored_settings(compose_config(["model=vit"]))
    assert "model.dim_coefficient" not in ignored_settings(compose_config(["model=ea"]))
    assert "optimizer.momentum" not in ignored_settings(compose_config(["optimizer=sgd"]))


def test_the_backend_is_part_of_the_identity():
    cfg = compose_config()
    assert fingerprint(cfg, backend="tensorflow") != fingerprint(cfg, backend="jax")


@pytest.mark.parametrize("key, before_value", sorted(ADDED_LATER.items()))
def test_a_setting_added_later_keeps_the_legacy_fingerprints_of_runs_recorded_before_it(
        key, before_value):
    """Runs recorded before a setting existed computed what its ADDED_LATER value computes: a
    config with that value has the legacy fingerprint of the same config without the key, so
    those runs are still found (eanet.sweeps.jobs.find_runs), not trained again."""
    value = "null" if before_value is None else str(before_value).lower()
    cfg = OmegaConf.to_container(compose_config([f"{key}={value}"]), resolve=True)
    *parents, leaf = key.split(".")
    before = copy.deepcopy(cfg)
    section = before
    for name in parents:
        section = section[name]
    assert section.pop(leaf) == before_value
    assert legacy_fingerprint(before) == legacy_fingerprint(cfg)


def test_sweep_summary_lists_each_job_and_each_failure(tmp_path):
    jobs = {
        0: JobEntry(JobStatus.FINISHED_EARLIER, "trainer=quick seed=0", run_id="abc"),
        1: JobEntry(JobStatus.FAILED, "trainer=quick seed=1", run_id="def",
                    error="NonFiniteLossError: loss became nan at epoch 0, batch 1"),
        2: JobEntry(JobStatus.TRAINING, "trainer=quick seed=2", run_id="ghi"),
        3: JobEntry(JobStatus.NOT_STARTED, "trainer=quick seed=3",
                    error="not started: sweep.max_runs=3 runs started"),
    }
    lines = sweep_summary(jobs, tmp_path).splitlines()
    assert lines[0].endswith("4 jobs: 1 finished earlier, 1 failed, 1 interrupted, "
                             "1 not started (budget)")
    assert lines[1:] == [
        "  #0 finished earlier  seed=0 — run abc",
        "  #1 failed            seed=1 — NonFiniteLossError: loss became nan at epoch 0, batch 1",
        "  #2 interrupted       seed=2 — run ghi",
        "  #3 not started (budget) seed=3 — not started: sweep.max_runs=3 runs started",
    ]
