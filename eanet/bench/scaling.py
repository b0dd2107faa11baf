"""External vs self-attention as the number of patches N grows: the paper's O(dSN) vs O(dN²).

For each model (`bench.scaling.models`: conf/model options, ea and vit or any other) and image
size (N = (image_size / patch_size)²) a fresh process builds the model a run would train at that
size and measures, per image: the forward pass (inference), the
training step, and the training step's peak resident memory above the warmed-up process (the
traced graph and the optimizer state excluded). Fresh processes
because a process' peak memory only ever grows. Growth exponents are slopes of
least-squares lines in log-log (numpy.polyfit): ~1 is linear in N, ~2 quadratic. Fixed costs
(embedding, head, optimizer) flatten the small-N end, so the slope between the two largest
points is reported too.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from eanet.config import Config, ModelConfig

SCALING_COLUMNS = ["model", "attention", "image_size", "num_patches", "forward_ms_per_image",
                   "train_ms_per_image", "train_peak_mb", "train_peak_mb_per_image", "process_peak_rss_mb"]
QUANTITIES = ("forward_ms_per_image", "train_ms_per_image", "train_peak_mb_per_image")


def measure_point(cfg: Config, model: ModelConfig, image_size: int) -> dict[str, Any]:
    """One (model, image size) point; meant to run in its own process."""
    import keras

    from eanet.training.train import build_compiled_model
    from eanet.bench.measure import peak_rss_mb
    from eanet.models.model import count_parameters

    s = cfg.bench.scaling
    point_cfg = dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, image_size=image_size),
        model=dataclasses.replace(model, patch_size=s.patch_size))
    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    x = rng.integers(0, 256, (s.batch_size, image_size, image_size, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, cfg.data.num_classes, s.batch_size),
                                   cfg.data.num_classes)
    classifier = build_compiled_model(point_cfg, [127.5] * 3, [5000.0] * 3, cfg.data.num_classes)

    def median_ms(step) -> float:
        times = []
        for _ in range(s.warmup + s.steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        return 1000 * statistics.median(times[s.warmup:]) / s.batch_size

    forward = median_ms(lambda: classifier.predict_on_batch(x))
    for _ in range(s.warmup):  # trace the training step; its graph stays in the baseline
        classifier.train_on_batch(x, y)
    with RssSampler() as sampler:
        train = median_ms(lambda: classifier.train_on_batch(x, y))
    peak_mb = sampler.peak_mb - sampler.baseline_mb
    return {"measurement": "scaling", "model": model.name, "attention": model.attention,
            "image_size": image_size,
            "patch_size": s.patch_size, "num_patches": (image_size // s.patch_size) ** 2,
            "batch": s.batch_size, "trainable_params": count_parameters(classifier)["trainable"],
            "forward_ms_per_image": round(forward, 3), "train_ms_per_image": round(train, 3),
            "train_peak_mb": round(peak_mb, 1),
            "train_peak_mb_per_image": round(peak_mb / s.batch_size, 2),
            "process_peak_rss_mb": round(peak_rss_mb(), 1)}


class RssSampler:
    """Peak resident memory above the level at entry, sampled every millisecond by a thread.

    TensorFlow releases the GIL while it computes, so the sampler sees the step's peak. Only
    meaningful when freed tensors go back to the OS: the child process runs with a fixed glibc
    mmap threshold (`MALLOC_ENV`), so large tensors are mmapped and unmapped when freed.
    """

    def __enter__(self):
        import threading

        from eanet.bench.measure import current_rss_mb

        self._read = current_rss_mb
        self.baseline_mb = self.peak_mb = current_rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.001):
            self.peak_mb = max(self.peak_mb, self._read())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False


# glibc would otherwise raise its mmap threshold after the first large free and keep later
# tensors in its heap, hiding a step's peak from the RSS.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def _point_in_child(cfg: Config, model: ModelConfig, image_size: int, queue) -> None:
    try:
        queue.put(measure_point(cfg, model, image_size))
    except BaseException as error:  # report, never hang the parent
        queue.put({"error": f"{type(error).__name__}: {error}"})


def _result_of(child, queue) -> dict:
    import queue as queues

    while True:
        try:
            return queue.get(timeout=2)
        except queues.Empty:
            if not child.is_alive():  # died without a word (killed, out of memory)
                return {"error": f"the measuring process exited with code {child.exitcode}"}


def measure_scaling(cfg: Config, models: list[ModelConfig]) -> tuple[list[dict], list[dict]]:
    """All points (each in a fresh spawned process) and the fitted exponents per model."""
    from eanet.bench.records import emit

    s = cfg.bench.scaling
    context = multiprocessing.get_context("spawn")
    os.environ.update(MALLOC_ENV)  # read by the children's allocator at their start
    points = []
    for model in models:
        for image_size in s.image_sizes:
            num_patches = (image_size // s.patch_size) ** 2
            if model.attention == "self" and num_patches > s.max_self_attention_patches:
                continue
            queue = context.Queue()
            child = context.Process(target=_point_in_child, args=(cfg, model, image_size, queue),
                                    daemon=True)
            child.start()
            point = _result_of(child, queue)
            child.join()
            if "error" in point:
                raise RuntimeError(f"scaling point {model.name} at image_size={image_size} "
                                   f"failed: {point['error']}")
            emit(point)
            points.append(point)
    return points, fit_exponents(points)


def fit_exponents(points: list[dict]) -> list[dict]:
    fits = []
    for model in dict.fromkeys(p["model"] for p in points):
        rows = sorted((p for p in points if p["model"] == model), key=lambda p: p["num_patches"])
        if len(rows) < 2:
            continue
        n = np.log([p["num_patches"] for p in rows])
        for quantity in QUANTITIES:
            values = np.array([p[quantity] for p in rows], dtype=float)
            if np.any(values <= 0):
                continue  # memory below the RSS sampler's resolution at small sizes
            slope = np.polyfit(n, np.log(values), 1)[0]
            last = (np.log(values[-1]) - np.log(values[-2])) / (n[-1] - n[-2])
            fits.append({"measurement": "scaling_fit", "model": model,
                         "attention": rows[0]["attention"],
                         "quantity": quantity, "exponent": round(float(slope), 3),
                         "exponent_last_two": round(float(last), 3),
                         "points": len(rows), "max_patches": rows[-1]["num_patches"]})
    return fits


def plot_scaling(points: list[dict], fits: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exponent = {(f["model"], f["quantity"]): f["exponent"] for f in fits}
    panels = (("forward_ms_per_image", "forward, ms per image"),
              ("train_ms_per_image", "training step, ms per image"),
              ("train_peak_mb_per_image", "training peak memory, MB per image"))
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 4.5))
    for ax, (quantity, label) in zip(axes, panels):
        for model in dict.fromkeys(p["model"] for p in points):
            rows = sorted((p for p in points if p["model"] == model and p[quantity] > 0),
                          key=lambda p: p["num_patches"])
            if not rows:
                continue
            fitted = exponent.get((model, quantity))
            name = (f"{model} ({rows[0]['attention']} attention)"
                    + (f", slope {fitted:.2f}" if fitted else ""))
            ax.loglog([p["num_patches"] for p in rows], [p[quantity] for p in rows], "o-",
                      label=name, base=2)
        ax.set(xlabel="patches N", ylabel=label, title=label)
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.suptitle(f"{' vs '.join(dict.fromkeys(p['model'] for p in points))}: cost as patches grow")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
