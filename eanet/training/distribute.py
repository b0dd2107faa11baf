"""Training on several devices: TensorFlow's distribution strategies, chosen by `trainer.distribution`.

- `none`: TensorFlow's default strategy (one device, as without this module);
- `mirrored`: `tf.distribute.MirroredStrategy`, synchronous data parallelism — one model replica per
  visible GPU, gradients all-reduced every step. Without GPUs it mirrors over the logical CPU
  devices (one, unless the process split the CPU with `tf.config.set_logical_device_configuration`
  before TensorFlow initialised, which is how the tests run two replicas on a CPU).

`trainer.batch_size` is the batch of one replica: the input pipeline batches
`batch_size × replicas` images and Keras splits each batch across the replicas, so the per-device
work, learning rate and metrics mean what they mean on one device (metrics are aggregated over
the global batch by Keras).

These are TensorFlow strategies. On any other Keras backend (JAX) a job trains on one device:
`none` is `OneDevice` (no scope, one replica) and `mirrored` is refused at start-up by config
validation (eanet.validation) — pack several jobs per GPU instead (hydra/launcher=gpu_pack).
"""
from __future__ import annotations

import contextlib

from eanet.config import check_choice
from eanet.plugins import import_object
from eanet.training import DISTRIBUTIONS


class OneDevice:
    """What training asks of a strategy, for backends without tf.distribute: one replica, no scope."""

    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()


def default_strategy():
    import keras

    if keras.backend.backend() != "tensorflow":
        return OneDevice()
    import tensorflow as tf

    return tf.distribute.get_strategy()


def mirrored_strategy():
    import keras

    if keras.backend.backend() != "tensorflow":  # config validation refuses this earlier
        raise ValueError("trainer.distribution=mirrored needs Keras' TensorFlow backend. "
                         f"Received: KERAS_BACKEND={keras.backend.backend()}")
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices=devices)


def distribution_strategy(name: str):
    check_choice("trainer.distribution", name, DISTRIBUTIONS)
    return import_object(DISTRIBUTIONS[name], "trainer.distribution")()


def global_batch_size(per_replica: int, strategy) -> int:
    return per_replica * strategy.num_replicas_in_sync
