"""Measuring instruments shared by the benchmarks: step timers, memory readings, process clock.

Nothing here trains; `random_training` sets up what the step benchmarks (throughput, profile)
step through, and `eanet.bench` composes the rest into measurements.
"""
from __future__ import annotations

import statistics
import time
from typing import Optional

import keras

# The process' own readings, shared with training runs (which log their peak memory).
from eanet.training.memory import (current_rss_mb, gpu_devices, peak_gpu_mb, peak_memory,  # noqa: F401
                                   peak_rss_mb, process_age_s, reset_gpu_peak, reset_peak_memory,
                                   reset_peak_rss)


class StepTimer(keras.callbacks.Callback):
    """Per-batch wall time of training steps, as `../shared/bench/seed_throughput.py` measures it.

    `step_times[i]`: from on_train_batch_begin to on_train_batch_end of batch i (the compiled step,
    including taking its batch from the input pipeline). `gaps[i]`: from the end of batch i to the
    beginning of batch i+1 (Keras' loop and callbacks: time the device is not stepping).
    `cpu_times[i]`: the process' CPU time (all threads) during step i, which on a machine shared
    with other work says more about the step's cost than wall time does.
    `first_step_end_age_s`: process age when the first step finished.
    """

    def __init__(self):
        super().__init__()
        self.step_times: list[float] = []
        self.cpu_times: list[float] = []
        self.gaps: list[float] = []
        self.first_step_end_age_s: Optional[float] = None
        self._begin = self._end = None

    def on_train_batch_begin(self, batch, logs=None):
        self._begin = time.perf_counter()
        self._cpu_begin = time.process_time()
        if self._end is not None:
            self.gaps.append(self._begin - self._end)

    def on_train_batch_end(self, batch, logs=None):
        self._end = time.perf_counter()
        self.step_times.append(self._end - self._begin)
        self.cpu_times.append(time.process_time() - self._cpu_begin)
        if self.first_step_end_age_s is None:
            self.first_step_end_age_s = process_age_s()

    def on_epoch_end(self, epoch, logs=None):
        self._end = None  # the gap across epochs holds validation, not a step waiting

    def median_step_s(self, warmup: int) -> float:
        steady = self.step_times[warmup:]
        if not steady:
            raise ValueError(f"Expected more than warmup={warmup} timed steps. "
                             f"Received: {len(self.step_times)} steps")
        return statistics.median(steady)


def median(values) -> float:
    return statistics.median(values) if values else float("nan")


def random_training(cfg, steps: int, warmup: int):
    """The compiled model and training pipeline `train` builds for `cfg`, on (warmup + steps)
    batches of random uint8 images (the seed benchmark's input), from a fresh Keras session."""
    import numpy as np

    from eanet.training.train import build_training

    t, d = cfg.trainer, cfg.data
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.seed)
    n = t.batch_size * (steps + warmup)
    rng = np.random.default_rng(cfg.seed)
    x = rng.integers(0, 256, size=(n, d.image_size, d.image_size, 3), dtype=np.uint8)
    y = rng.integers(0, d.num_classes, size=(n,))
    return build_training(cfg, x, y, d.num_classes)
