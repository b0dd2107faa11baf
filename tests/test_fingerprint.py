"""Fingerprints name what a configuration computes; the sweep summary reads the jobs' records."""
from __future__ import annotations

import copy
import json

import pytest
from omegaconf import OmegaConf

from conftest import compose_config
from eanet.sweeps.callbacks import sweep_summary
from eanet.sweeps.plan import ADDED_LATER, fingerprint


def test_fingerprint_ignores_where_things_go_but_not_what_is_computed():
    base = fingerprint(compose_config())
    assert len(base) == 16 and base == fingerprint(compose_config())
    for same in (["tracking.tracking_uri=sqlite:///elsewhere.db"], ["tracking.rerun=true"],
                 ["tracking.checkpoint_dir=/tmp/ckpt"], ["trainer.verbose=2"],
                 ["data.path=/data/cifar100.npz"], ["tracking.experiment_name=other"]):
        assert fingerprint(compose_config(same)) == base, same
    for different in (["model.patch_size=4"], ["seed=1"], ["optimizer.learning_rate=0.01"],
                      ["trainer.epochs=3"], ["model=vit"], ["data.augmentation.zoom=0.0"],
                      ["trainer.matmul_precision=bfloat16"],
                      ["data.augmentation.contrast_clip=true"], ["model.implementation=reference"]):
        assert fingerprint(compose_config(different)) != base, different


@pytest.mark.parametrize("key, before_value", sorted(ADDED_LATER.items()))
def test_a_setting_added_later_keeps_the_fingerprints_of_runs_recorded_before_it(key, before_value):
    """Runs recorded before a setting existed computed what its ADDED_LATER value computes
    (trainer.matmul_precision=default; data.augmentation.contrast_clip=true, Keras 3's clip): a
    config with that value has the fingerprint of the same config without the key, so those runs
    are still skipped or resumed, not trained again."""
    value = "null" if before_value is None else str(before_value).lower()
    cfg = OmegaConf.to_container(compose_config([f"{key}={value}"]),
                                 resolve=True)
    *parents, leaf = key.split(".")
    before = copy.deepcopy(cfg)
    section = before
    for name in parents:
        section = section[name]
    assert section.pop(leaf) == before_value
    assert fingerprint(before) == fingerprint(cfg)


def test_sweep_summary_lists_each_job_and_each_failure(tmp_path):
    records = [
        {"job_num": 0, "overrides": "trainer=quick seed=0", "status": "COMPLETED",
         "outcome": "skipped: FINISHED as run abc", "error": None},
        {"job_num": 1, "overrides": "trainer=quick seed=1", "status": "FAILED", "outcome": "new",
         "error": "NonFiniteLossError: loss became nan at epoch 0, batch 1"},
        {"job_num": 2, "overrides": "trainer=quick seed=2", "status": "STOPPED",
         "outcome": "interrupted before it ended", "error": None},
    ]
    for record in records:
        (tmp_path / str(record["job_num"])).mkdir()
        (tmp_path / str(record["job_num"]) / "eanet_job.json").write_text(json.dumps(record))
    lines = sweep_summary(tmp_path).splitlines()
    assert lines[0].endswith("3 jobs, 1 completed, 2 failed or stopped")
    assert lines[1:] == [
        "  #0 COMPLETED seed=0 — skipped: FINISHED as run abc",
        "  #1 FAILED    seed=1 — NonFiniteLossError: loss became nan at epoch 0, batch 1",
        "  #2 STOPPED   seed=2 — interrupted before it ended",
    ]
