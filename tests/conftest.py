"""Shared test helpers: compose the real Hydra config, shrunk to a tiny model on tiny data."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest
from hydra import compose, initialize_config_dir

from eanet.config import register_configs

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
REAL_CIFAR = ROOT.parent / "shared" / "data" / "cifar100.npz"

# A model and data set small enough that a training step costs milliseconds.
TINY = [
    "data=synthetic", "data.image_size=8", "data.num_classes=4",
    "data.synthetic_train_size=64", "data.synthetic_test_size=32",
    "model.embedding_dim=16", "model.mlp_dim=16", "model.num_blocks=1", "model.num_heads=2",
    "model.dim_coefficient=2", "trainer.epochs=2", "trainer.batch_size=16", "trainer.verbose=0",
]

register_configs()


def compose_config(overrides=(), return_hydra_config=False):
    """The config `python -m eanet.run <overrides>` would see."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides),
                       return_hydra_config=return_hydra_config)


@pytest.fixture
def tracking_dir(tmp_path, monkeypatch):
    """A temporary working directory holding a fresh MLflow SQLite store; returns its URI."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"
