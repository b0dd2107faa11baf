"""Readings of this process: its age, its peak resident memory and its GPUs' peak memory.

A training run logs its peaks (`peak_memory`, after `reset_peak_memory` at its start: sweep jobs
share a process); the benchmarks (eanet.bench.measure) read the same instruments.
"""
from __future__ import annotations

import os
import resource
from typing import Optional


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
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return [d for d in jax.devices() if d.platform == "gpu"]
    import tensorflow as tf

    return tf.config.list_logical_devices("GPU")


def reset_gpu_peak() -> None:
    """TensorFlow only: JAX's peak is over the process' life (measure in a fresh process)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    for device in gpu_devices():
        tf.config.experimental.reset_memory_stats(device.name)


def peak_gpu_mb() -> Optional[float]:
    """Peak GPU memory since the last reset (JAX: since the process started), or None without a
    GPU."""
    import keras

    devices = gpu_devices()
    if not devices:
        return None
    if keras.backend.backend() == "jax":
        return max((d.memory_stats() or {}).get("peak_bytes_in_use", 0) for d in devices) / 2**20
    import tensorflow as tf

    return max(tf.config.experimental.get_memory_info(d.name)["peak"] for d in devices) / 2**20
