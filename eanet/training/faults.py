"""Guards that turn faults into clear, recorded endings instead of lost or corrupted work.

- `StopOnNonFiniteLoss`: a NaN or infinite loss raises at once (Keras' TerminateOnNaN only stops
  quietly, and the run would look FINISHED); `TrackedRun` records it as FAILED with the reason.
- `StopWhenClaimLost`: another process took this job's claim over (its lease had run out:
  eanet.tracking.ledger), so this one stops instead of training the same run twice.

SIGTERM ending a run KILLED is eanet.training.signals; the store's own guards (an unwritable
store, the lock of a fresh SQLite store) are in eanet.tracking.store.
"""
from __future__ import annotations

import math

import keras


class NonFiniteLossError(ArithmeticError):
    """The training loss became NaN or infinite: the run diverged."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raise `NonFiniteLossError` on the first batch whose loss is NaN or infinite.

    `async_safe`: on backends that allow it (JAX; never TensorFlow), Keras runs this check on a
    helper thread, so reading the loss does not stop the host from dispatching the next step
    while the GPU works; an error then surfaces a step or two later, still within its epoch.
    """

    async_safe = True

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"loss became {float(loss)} at epoch {self.epoch}, batch {batch}: training "
                "diverged (a smaller optimizer.learning_rate usually helps)")



class ClaimLostError(RuntimeError):
    """Another process took over this job's claim on its computation."""


class StopWhenClaimLost(keras.callbacks.Callback):
    """Raise `ClaimLostError` at the first batch after the lease's thread saw its claim taken."""

    def __init__(self, lease):
        super().__init__()
        self.lease = lease

    def on_train_batch_end(self, batch, logs=None):
        if self.lease.lost:
            raise ClaimLostError("another process took this run's claim over (its lease ran "
                                 "out): stopped so that the run is not trained twice")
