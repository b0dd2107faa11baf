"""Loading never runs code from a file: .keras models load with safe_mode=True, a model carrying a
Lambda is refused, the CIFAR pickle reader refuses anything but arrays, checkpoints hold no pickles."""
from __future__ import annotations

import os
import pickle

import keras
import numpy as np
import pytest

from conftest import TINY, compose_config
from eanet.training.checkpoint import TrainingCheckpoint
from eanet.config_checks import validate
from eanet.cifar import read_cifar_batch
from eanet.data import DataError
from eanet.models.model import build_augmentation, build_model
from eanet.training.optimization import compile_model


def tiny_model():
    cfg = validate(compose_config(TINY))
    augmentation = build_augmentation(cfg.data.augmentation, [0.0] * 3, [1.0] * 3, seed=0)
    return cfg, compile_model(build_model(cfg.model, 8, 4, augmentation), cfg.optimizer,
                              cfg.trainer)


def test_eanet_model_loads_in_safe_mode(tmp_path):
    _, model = tiny_model()
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)


def test_model_with_lambda_is_refused(tmp_path):
    # A tampered file: a Lambda whose bytecode would run on load (here harmless: a marker file).
    marker = tmp_path / "pwned"
    inputs = keras.Input((4,))
    payload = eval(f"lambda x: (open({str(marker)!r}, 'w'), x)[1]")  # no closure: a literal path
    outputs = keras.layers.Lambda(payload)(inputs)
    keras.Model(inputs, outputs).save(tmp_path / "tampered.keras")
    marker.unlink()  # building the model ran the lambda; loading must not
    with pytest.raises(ValueError, match="(?i)lambda|unsafe|safe_mode"):
        keras.saving.load_model(tmp_path / "tampered.keras", safe_mode=True)
    assert not marker.exists()


class _RunsCode:
    def __reduce__(self):
        return os.system, ("echo pwned",)


def test_cifar_reader_refuses_code_in_pickle():
    raw = pickle.dumps({b"data": _RunsCode(), b"fine_labels": [0]}, protocol=2)
    with pytest.raises(DataError, match="refusing .*system"):
        read_cifar_batch(raw, "evil-batch")


def test_cifar_reader_reads_the_real_format():
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    raw = pickle.dumps({b"data": data, b"fine_labels": [3, 7]}, protocol=2)
    images, labels = read_cifar_batch(raw, "batch")
    assert images.shape == (2, 32, 32, 3) and labels.tolist() == [3, 7]


def test_checkpoint_round_trip_restores_weights_optimizer_and_rng(tmp_path):
    _, model = tiny_model()
    x = np.random.default_rng(0).uniform(0, 255, (16, 8, 8, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(16) % 4, 4)
    checkpoint = TrainingCheckpoint(tmp_path)
    checkpoint.restore(model, "run-a")  # nothing saved yet: starts at epoch 0
    model.fit(x, y, epochs=1, verbose=0, callbacks=[checkpoint])
    expected_draw = np.random.random()

    _, fresh = tiny_model()
    assert TrainingCheckpoint(tmp_path).restore(fresh, "run-b") == 0  # another run's checkpoint
    restored = TrainingCheckpoint(tmp_path)
    assert restored.restore(fresh, "run-a") == 1
    for a, b in zip(model.variables + model.optimizer.variables,
                    fresh.variables + fresh.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert np.random.random() == expected_draw
    assert list(restored.history) == ["loss", "top1", "top5"]
