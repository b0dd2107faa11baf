"""trainer.distribution=mirrored: two replicas on a CPU split into two logical devices.

The split must happen before TensorFlow initialises, so the run happens in a subprocess that
splits the CPU and then calls the ordinary Hydra entry point.
"""
from __future__ import annotations

import pytest

from conftest import TINY, client_for, compose_config, run_eanet, run_python, training_runs
from eanet.config import ConfigError
from eanet.validation import validate

# Split the CPU, then run `python -m eanet.run <overrides>` in the same process.
TWO_CPU_DEVICES = """
import runpy
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
runpy.run_module("eanet.run", run_name="__main__", alter_sys=True)
"""


def test_unknown_distribution_is_rejected_naming_the_valid_ones():
    with pytest.raises(ConfigError, match=r"trainer.distribution='tpu'.*mirrored, none"):
        validate(compose_config([*TINY, "trainer.distribution=tpu"]))


def test_mirrored_training_on_two_replicas_is_recorded_like_any_run(tmp_path):
    # 80 images → 64 train / 16 validation, 32 test: every first batch splits evenly over the
    # 2 replicas (Keras 3.15 builds the model from the replicas' mean of the first batch of
    # fit/evaluate, which fails when a split smaller than one global batch splits unevenly)
    result = run_eanet(tmp_path, "trainer.distribution=mirrored", "data.synthetic_train_size=80",
                       "trainer.epochs=1", "trainer.batch_size=8", script=TWO_CPU_DEVICES)
    assert result.returncode == 0, result.stderr[-6000:]

    client = client_for(tmp_path)  # MLflow's default store in the command's working directory
    (run,) = training_runs(client)
    assert run.info.status == "FINISHED" and run.info.run_name == "ea-p2-h2-dc2-s0"
    assert run.data.tags["eanet.replicas"] == "2"
    assert run.data.params["trainer.distribution"] == "mirrored"
    assert run.data.params["trainer.batch_size"] == "8"  # per replica ...
    assert run.data.params["trainer.global_batch_size"] == "16"  # ... so 16 images per step
    metrics = run.data.metrics
    for key in ("loss", "top1", "val_top1", "test_top1", "best_val_top1", "param_count_total"):
        assert key in metrics
    assert 0.0 <= metrics["test_top1"] <= 1.0 and metrics["loss"] > 0
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "history.csv", "learning_curves.png"} <= top
    assert run.data.tags["eanet.model_uri"].startswith("models:/")  # the model, logged once


FUSED_ADAMW_ON_TWO_REPLICAS = """
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np

from eanet.training.optimization import FusedAdamW


def train(optimizer_class):
    rng = np.random.default_rng(0)
    with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope():
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5), keras.layers.Dense(3)])
        model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
        model.compile(optimizer=optimizer_class(learning_rate=0.01, weight_decay=0.1), loss="mse")
    x, y = rng.normal(size=(64, 6)).astype("float32"), rng.normal(size=(64, 3)).astype("float32")
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    replicas = [[r.numpy() for r in w.value.values] for w in model.trainable_variables]
    assert all(np.array_equal(v[0], v[1]) for v in replicas), "the replicas diverged"
    return [v[0] for v in replicas]


fused, reference = train(FusedAdamW), train(keras.optimizers.AdamW)
for a, b in zip(fused, reference):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
print("same updates on both replicas")
"""


def test_fused_adamw_updates_each_replica_like_keras_adamw():
    """FusedAdamW addresses each replica's own variables (tf.distribute's update context)."""
    result = run_python("-c", FUSED_ADAMW_ON_TWO_REPLICAS, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "same updates on both replicas" in result.stdout
