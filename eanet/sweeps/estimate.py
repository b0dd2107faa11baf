"""How long a configuration will train, before it does: what `plan=true` prints (eanet.sweeps.plan).

Two sources, and each estimate says which:

- the store: FINISHED training runs with the same model settings (every `model.*`, the image size,
  the batch size and precision), whose measured throughput (training images per second of `fit`,
  validation passes included) times the job's images gives its time;
- this machine: a few training steps of one configuration, timed (after the step is traced), give
  seconds per operation; every other configuration is scaled from it by its operations per image.
  Operations per image are the dense layers' (2 × trainable parameters × tokens: each token meets
  every weight of the patch embedding, the blocks and, once, the head: an upper bound there) plus
  self-attention's token-pair term (4 × tokens² × embedding_dim per block), so ViT's quadratic
  cost and EANet's linear one both show. An estimate, good to a factor of about two.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Optional

from eanet.config import Config, flatten

TRAIN_IMAGES = {"cifar100": 50_000}  # training images of each data set before the validation split
MATCHED_SETTINGS = ("data.image_size", "trainer.batch_size", "trainer.precision")


@dataclass
class Estimate:
    seconds: float
    source: str  # what it comes from, as the plan prints it


def images_per_epoch(cfg: Config) -> int:
    t, d = cfg.trainer, cfg.data
    if t.steps_per_epoch is not None:
        return t.steps_per_epoch * t.batch_size
    total = d.synthetic_train_size if d.name == "synthetic" else TRAIN_IMAGES.get(d.name, 50_000)
    if d.train_size is not None:
        total = min(total, d.train_size)
    return int(total * (1 - d.validation_split))


def operations_per_image(cfg: Config, trainable: int) -> float:
    """Multiply-adds ×2 of one image's forward pass, as the module's docstring counts them."""
    m = cfg.model
    tokens = (cfg.data.image_size // m.patch_size) ** 2
    operations = 2.0 * trainable * tokens
    if m.attention == "self":
        operations += 4.0 * tokens * tokens * m.embedding_dim * m.num_blocks
    return operations


def model_settings(cfg: Config) -> dict[str, str]:
    """The params (as MLflow holds them: strings) that a run must share to lend its speed."""
    from dataclasses import asdict

    flat = flatten({"model": asdict(cfg.model), "data": {"image_size": cfg.data.image_size},
                    "trainer": {"batch_size": cfg.trainer.batch_size,
                                "precision": cfg.trainer.precision}})
    return {k: str(v) for k, v in flat.items()}


def from_store(cfg: Config, finished) -> Optional[Estimate]:
    """From the FINISHED runs (`mlflow.search_runs`' DataFrame) with this model's settings."""
    if finished is None or finished.empty or "metrics.throughput_img_per_s" not in finished:
        return None
    same = finished
    for key, value in model_settings(cfg).items():
        column = f"params.{key}"
        if column not in same:
            return None
        same = same[same[column] == value]
    rates = same["metrics.throughput_img_per_s"].dropna()
    rates = rates[rates > 0]
    if rates.empty:
        return None
    seconds = images_per_epoch(cfg) * cfg.trainer.epochs / statistics.median(rates)
    return Estimate(seconds, f"from {len(rates)} finished run{'s' if len(rates) > 1 else ''}")


class StepTimer:
    """Seconds per operation on this machine, from a few timed steps of the first model asked
    about; then every configuration's time from its operations per image."""

    def __init__(self, steps: int = 3):
        self.steps = steps
        self.seconds_per_operation: Optional[float] = None
        self.timed: Optional[str] = None  # the run name of the configuration that was timed
        self.trace_seconds: Optional[float] = None  # its first step, traced and compiled

    def estimate(self, cfg: Config, model, trainable: int) -> Estimate:
        from eanet.config import run_name

        operations = operations_per_image(cfg, trainable)
        if self.seconds_per_operation is None:
            per_image = self._time(cfg, model)
            self.seconds_per_operation = per_image / operations
            self.timed = run_name(cfg)
        seconds = self.seconds_per_operation * operations * images_per_epoch(cfg) * cfg.trainer.epochs
        return Estimate(seconds, f"timed here ({self.steps} steps of {self.timed}, scaled)")

    def _time(self, cfg: Config, model) -> float:
        """Median seconds per image of a forward and backward pass with an optimizer update."""
        import keras
        import numpy as np

        from eanet.training.optimization import compile_model

        batch = cfg.trainer.batch_size  # a smaller one would overstate the per-image cost
        rng = np.random.default_rng(0)
        size = cfg.data.image_size
        x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
        y = keras.utils.to_categorical(rng.integers(0, cfg.data.num_classes, batch),
                                       cfg.data.num_classes)
        compile_model(model, cfg.optimizer, cfg.trainer, cfg.model.implementation)
        start = time.perf_counter()
        model.train_on_batch(x, y)  # traces the step: not a step's time, a job's start-up
        self.trace_seconds = time.perf_counter() - start
        times = []
        for _ in range(self.steps):
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - start)
        return statistics.median(times) / batch


# A job's time outside `fit` (data, model building, evaluation, logging) when neither the store
# nor a timed step can tell it; and the sweep's own start-up when the store has no earlier sweep.
DEFAULT_OVERHEAD_S = 10.0
DEFAULT_SWEEP_STARTUP_S = 15.0
# What a sweep adds around its jobs beyond their runs: each job's callbacks (progress, record,
# parent), and at the end the report and the parent's summary.
JOB_BOOKKEEPING_S = 0.5
SWEEP_WRAPUP_S = 1.5
FORWARD_SHARE = 1 / 3  # a forward pass' share of a training step (forward, backward, update)


def evaluated_images(cfg: Config) -> tuple[int, int]:
    """(validation images per epoch, test images) a job passes forward only."""
    t, d = cfg.trainer, cfg.data
    total = d.synthetic_train_size if d.name == "synthetic" else TRAIN_IMAGES.get(d.name, 50_000)
    if d.train_size is not None:
        total = min(total, d.train_size)
    validation = int(total * d.validation_split)
    if t.validation_steps is not None:
        validation = min(validation, t.validation_steps * t.batch_size)
    test = d.synthetic_test_size if d.name == "synthetic" else 10_000
    if d.test_size is not None:
        test = min(test, d.test_size)
    if t.test_steps is not None:
        test = min(test, t.test_steps * t.batch_size)
    return validation, test


def overhead_seconds(cfg: Config, finished, timer: Optional[StepTimer],
                     trainable: Optional[int]) -> tuple[float, str]:
    """A job's time beyond its training steps, and where that comes from: the median
    `job_overhead_s` of finished runs; else, from the timed step, its tracing (training,
    validation, test: three) and the forward passes of validation and test; else a default."""
    column = "metrics.job_overhead_s"
    if finished is not None and not finished.empty and column in finished:
        measured = finished[column].dropna()
        if not measured.empty:
            return float(statistics.median(measured)) + JOB_BOOKKEEPING_S, "start-up as measured"
    if timer is not None and timer.trace_seconds is not None and trainable is not None:
        validation, test = evaluated_images(cfg)
        per_image = timer.seconds_per_operation * operations_per_image(cfg, trainable)
        forward = per_image * FORWARD_SHARE * (validation * cfg.trainer.epochs + test)
        return 3 * timer.trace_seconds + forward + 1.0 + JOB_BOOKKEEPING_S, "start-up timed"
    return DEFAULT_OVERHEAD_S + JOB_BOOKKEEPING_S, "start-up by default"


def sweep_startup_seconds(parents) -> tuple[float, str]:
    """A sweep's own start-up (imports, composing and checking every job, loading the data)
    before its first job, and its wrap-up after the last: the median `sweep_startup_s` of earlier sweeps in the store, else how
    long this process took to get here, else a default."""
    column = "metrics.sweep_startup_s"
    if parents is not None and not parents.empty and column in parents:
        measured = parents[column].dropna()
        if not measured.empty:
            return float(statistics.median(measured)) + SWEEP_WRAPUP_S, "as earlier sweeps measured"
    age = process_age()
    if age is not None:
        return age + SWEEP_WRAPUP_S, "as this process took"
    return DEFAULT_SWEEP_STARTUP_S + SWEEP_WRAPUP_S, "by default"


def process_age() -> Optional[float]:
    """Seconds since this process started; None where /proc cannot tell."""
    from eanet.training.memory import process_age_s

    try:
        return process_age_s()
    except (OSError, ValueError, IndexError):
        return None
