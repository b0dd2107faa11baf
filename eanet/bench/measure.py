"""Measuring instruments shared by the benchmarks: step timers, memory readings, process clock.

Nothing here trains; `random_training` sets up what the step benchmarks (throughput, profile)
step through, and `eanet.bench` composes the rest into measurements.
"""
from __future__ import annotations

import os
import resource
import statistics
import time
from typing import Optional

import keras


def process_age_s() -> float:
    """Seconds since this process started (Linux /proc), i.e. since the command was typed."""
    with open("/proc/self/stat") as f:
        # Field 22 is the start time in clock ticks after boot; the command name (field 2) may
        # contain spaces, so count fields from the closing parenthesis.
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far: VmHWM, the high-water mark of its memory.

    Not ru_maxrss, which a process started by fork + exec inherits from its parent.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Restart VmHWM from the current resident memory (Linux's clear_refs), so that the next
    `peak_rss_mb` is the peak since now, not the process' (sweep jobs share a process); False
    where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def reset_peak_memory() -> None:
    """Start the peaks `peak_memory` reads afresh: resident memory, and TensorFlow's GPUs."""
    reset_peak_rss()
    reset_gpu_peak()


def peak_memory() -> dict[str, float]:
    """peak_rss_mb, and peak_gpu_mb where there is a GPU: what a training run logs."""
    peaks = {"peak_rss_mb": peak_rss_mb()}
    gpu = peak_gpu_mb()
    if gpu is not None:
        peaks["peak_gpu_mb"] = gpu
    return peaks


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def gpu_devices() -> list:
    """The GPUs of Keras' backend: TensorFlow's logical GPUs, or JAX's GPU devices."""
    if keras.backend.backend() == "jax":
        import jax

        return [d for d in jax.devices() if d.platform == "gpu"]
    import tensorflow as tf

    return tf.config.list_logical_devices("GPU")


def reset_gpu_peak() -> None:
    """TensorFlow only: JAX's peak is over the process' life (measure in a fresh process)."""
    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    for device in gpu_devices():
        tf.config.experimental.reset_memory_stats(device.name)


def peak_gpu_mb() -> Optional[float]:
    """Peak GPU memory since the last reset (JAX: since the process started), or None without a
    GPU."""
    devices = gpu_devices()
    if not devices:
        return None
    if keras.backend.backend() == "jax":
        return max((d.memory_stats() or {}).get("peak_bytes_in_use", 0) for d in devices) / 2**20
    import tensorflow as tf

    return max(tf.config.experimental.get_memory_info(d.name)["peak"] for d in devices) / 2**20


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
