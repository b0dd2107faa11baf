"""The sweep progress line: how many jobs a sweep has, and what the line says."""
from __future__ import annotations

from omegaconf import OmegaConf

from eanet.sweeps.callbacks import count_jobs, format_duration, progress_line

BASIC = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def sweep_config(task, sweeper=BASIC, params=None):
    return OmegaConf.create({"hydra": {"sweeper": {"_target_": sweeper, "params": params},
                                       "overrides": {"task": task}}})


def test_count_jobs_multiplies_the_swept_values():
    assert count_jobs(sweep_config(["model=ea,vit", "seed=0,1,2", "trainer.epochs=1"])) == 6
    assert count_jobs(sweep_config(["trainer.epochs=1"])) == 1
    assert count_jobs(sweep_config(["seed=range(4)"])) == 4
    assert count_jobs(sweep_config(["model=ea"], params={"seed": "0,1"})) == 2  # sweeper params


def test_count_jobs_is_unknown_for_other_sweepers_and_ranges_of_floats():
    assert count_jobs(sweep_config(["seed=0,1"], sweeper="hydra_plugins.optuna.OptunaSweeper")) is None
    assert count_jobs(sweep_config(["optimizer.learning_rate=interval(0.1,1)"])) is None


def test_progress_line():
    assert format_duration(65) == "1m05s" and format_duration(3725) == "1h02m05s"
    assert progress_line(1, 4, 2.0, 0) == "job 1 of 4 | elapsed 0m02s | 0 done"
    # 2 of 4 done in 60 s → 60 s to go
    assert progress_line(3, 4, 60.0, 2) == "job 3 of 4 | elapsed 1m00s | 2 done | ETA 1m00s"
    assert progress_line(3, None, 60.0, 2) == "job 3 | elapsed 1m00s | 2 done"
