"""Data sets and the input pipeline: a data set's four arrays → a seeded validation split, the
training split's statistics → batches for `fit` and `evaluate`.

A data set is a loader, `load(path) → (x_train, y_train, x_test, y_test)`: named by import path
in `data.loader` (a user's own, or eanet.cifar's CIFAR-10, conf/data/cifar10.yaml), or, with
`data.loader: null`, one of the built-ins in `DATASETS` by `data.name`. Whatever loads them,
the arrays are checked here (shapes, labels against `data.num_classes`) before anything trains.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from eanet.config import check_choice

if TYPE_CHECKING:
    from eanet.config import DataConfig


class DataError(RuntimeError):
    """A data set that cannot be loaded; the message says why and what to do."""


@dataclass
class ImageDataset:
    """uint8 images (n, H, W, 3) and integer labels (n,) for the train and test splits."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    source: str  # where it came from, for the tracking record


def load_synthetic(cfg: DataConfig, seed: int) -> tuple:
    """A small learnable data set for smoke runs: each class is a fixed random template plus noise."""
    rng = np.random.default_rng(seed)
    size = cfg.image_size
    templates = rng.uniform(0, 255, (cfg.num_classes, size, size, 3))

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, cfg.num_classes, n)
        images = templates[labels] + rng.normal(0, 40, (n, size, size, 3))
        return np.clip(images, 0, 255).astype(np.uint8), labels

    (x_train, y_train), (x_test, y_test) = sample(cfg.synthetic_train_size), sample(cfg.synthetic_test_size)
    return x_train, y_train, x_test, y_test


# data.name → a built-in data set (data.loader: null): the import path of a function
# (DataConfig, seed) → (x_train, y_train, x_test, y_test), resolved only when data loads.
DATASETS: dict[str, str] = {
    "cifar100": "eanet.cifar.cifar100_dataset",
    "synthetic": "eanet.data.load_synthetic",
}


def _source(cfg: DataConfig) -> str:
    """Where the data came from, for the run's record: the local copy, else what downloaded or
    made it."""
    if cfg.path:
        return str(Path(os.path.expanduser(cfg.path)).resolve())
    if cfg.loader is not None:
        return cfg.loader
    return {"cifar100": "keras.datasets.cifar100"}.get(cfg.name, cfg.name)


def load_arrays(cfg: DataConfig, seed: int) -> ImageDataset:
    """The data set `cfg` names, checked: `data.loader(data.path)` or the built-in `data.name`."""
    from eanet.plugins import import_object

    if cfg.loader is None:
        check_choice("data.name", cfg.name, DATASETS)
        load = import_object(DATASETS[cfg.name], "data.name")
        arrays, what = load(cfg, seed), f"data.name={cfg.name}"
    else:
        load = import_object(cfg.loader, "data.loader")
        arrays, what = load(cfg.path), f"data.loader={cfg.loader}"
    return checked_dataset(arrays, cfg.num_classes, what, _source(cfg))


def checked_dataset(arrays: Any, num_classes: int, what: str, source: str) -> ImageDataset:
    """The loader's (x_train, y_train, x_test, y_test) as an ImageDataset, or DataError saying
    what is wrong with them: images (n, H, W, 3), one integer label in 0..num_classes-1 each."""
    if not isinstance(arrays, Sequence) or len(arrays) != 4:
        raise DataError(f"{what} returned {type(arrays).__name__}; expected the four arrays "
                        f"(x_train, y_train, x_test, y_test)")
    x_train, y_train, x_test, y_test = (np.asarray(a) for a in arrays)
    splits = []
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.ndim != 4 or x.shape[-1] != 3 or not np.issubdtype(x.dtype, np.number):
            raise DataError(f"{what}: expected x_{split} as RGB images (n, H, W, 3) of pixel "
                            f"values in [0, 255] (uint8), found {x.dtype} {x.shape}")
        y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{what}: expected y_{split} as {len(x)} integer labels (n,), one "
                            f"per image, found {y.dtype} {y.shape}")
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise DataError(f"{source}: {split} labels span {y.min()}..{y.max()}, outside "
                            f"0..{num_classes - 1} (data.num_classes={num_classes})")
        splits += [x, y.astype(np.int64)]
    return ImageDataset(*splits, num_classes, source)


def load_dataset(cfg: DataConfig, seed: int) -> ImageDataset:
    """The data set, reduced to `data.train_size` / `data.test_size` seeded draws if asked."""
    data = load_arrays(cfg, seed)
    rng = np.random.default_rng(seed)
    if cfg.train_size is not None and cfg.train_size < len(data.y_train):
        keep = rng.permutation(len(data.y_train))[: cfg.train_size]
        data.x_train, data.y_train = data.x_train[keep], data.y_train[keep]
    if cfg.test_size is not None and cfg.test_size < len(data.y_test):
        keep = rng.permutation(len(data.y_test))[: cfg.test_size]
        data.x_test, data.y_test = data.x_test[keep], data.y_test[keep]
    return data


# --- splits and pipeline -----------------------------------------------------------------------

@dataclass
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def split_validation(data: ImageDataset, validation_split: float, seed: int) -> Splits:
    """Hold out a validation split from a seeded shuffle of the training set.

    Never the tail: some copies of CIFAR (and any data set written class by class) are sorted,
    and the seed's `validation_split=0.2` in `fit` would then validate on a few classes only.
    """
    order = np.random.default_rng(seed).permutation(len(data.y_train))
    num_val = int(round(len(order) * validation_split))
    val, train = order[:num_val], order[num_val:]
    if len(train) == 0:
        raise DataError(f"data.validation_split={validation_split} leaves no training images "
                        f"out of {len(order)}")
    return Splits(data.x_train[train], data.y_train[train], data.x_train[val], data.y_train[val],
                  data.x_test, data.y_test)


def channel_statistics(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and variance of the images: the seed's `Normalization.adapt`.

    uint8 images go through each channel's histogram of its 256 values, counted in cache-sized
    chunks: exact, and much faster than summing float copies of CIFAR's 120M values."""
    pixels = images.reshape(-1, images.shape[-1])
    if pixels.dtype != np.uint8:  # e.g. float images: the direct way
        values = pixels.astype(np.float64)
        return values.mean(0).tolist(), values.var(0).tolist()
    counts = np.zeros((pixels.shape[-1], 256), dtype=np.int64)
    for start in range(0, len(pixels), 1 << 20):
        chunk = pixels[start:start + (1 << 20)]
        for channel in range(pixels.shape[-1]):
            counts[channel] += np.bincount(chunk[:, channel], minlength=256)
    levels = np.arange(256, dtype=np.float64)
    mean = counts @ levels / len(pixels)
    variance = (counts * (levels - mean[:, None]) ** 2).sum(1) / len(pixels)
    return mean.tolist(), variance.tolist()


@dataclass
class TrainingData:
    """What a run trains and evaluates on: the data set, its seeded validation split, and the
    training split's per-channel statistics (the model's normalisation constants)."""
    data: ImageDataset
    splits: Splits
    mean: list[float]
    variance: list[float]


def prepare_data(cfg: DataConfig, seed: int) -> TrainingData:
    """Load the data set, split off the validation images, and compute the statistics."""
    with _small_pages():
        data = load_dataset(cfg, seed)
        splits = split_validation(data, cfg.validation_split, seed)
    mean, variance = channel_statistics(splits.x_train)
    return TrainingData(data, splits, mean, variance)


@contextlib.contextmanager
def _small_pages() -> Iterator[None]:
    """New numpy arrays in ordinary 4 KB pages, not transparent huge pages, within the block.

    numpy asks Linux for huge pages for every array of 4 MB or more (`madvise(MADV_HUGEPAGE)`);
    where the kernel must find, compact or (in a VM that hands free memory back to its host) fetch
    2 MB blocks, first touching them is slow: preparing CIFAR-100's 500 MB of loaded and split
    arrays took between two and three times as long. The arrays are read once,
    into TensorFlow's own tensors, so huge pages buy nothing here. (numpy's own switch for this is
    the environment variable NUMPY_MADVISE_HUGEPAGE=0, read when numpy is imported.)
    """
    switch = getattr(np._core.multiarray, "_set_madvise_hugepage", None)
    if switch is None:  # a numpy without it
        yield
        return
    previous = switch(False)
    try:
        yield
    finally:
        switch(previous)


def model_inputs(images: np.ndarray, image_size: int) -> np.ndarray:
    """Images as the pipeline feeds them to the model: float32, resized to `image_size` when their
    size differs (e.g. the sample a logged model's signature is inferred on)."""
    x = images.astype(np.float32)
    if x.shape[1] != image_size or x.shape[2] != image_size:
        from eanet.array_batches import resize_images

        x = resize_images(x, image_size)
    return x


def make_dataset(images: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int,
                 image_size: int, training: bool, seed: int, repeat: bool = False):
    """(float32 images, one-hot labels) batches for `fit`/`evaluate`: a tf.data pipeline on
    Keras' TensorFlow backend, numpy batches (eanet.array_batches.ArrayBatches, no TensorFlow)
    on any other.

    One-hot because the seed's loss is categorical cross-entropy with label smoothing. Training
    data is reshuffled every epoch (seeded); resizing happens only when data.image_size differs.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        from eanet.array_batches import ArrayBatches

        return ArrayBatches(images, labels, num_classes, batch_size, image_size, training, seed,
                            repeat)
    return _tf_dataset(images, labels, num_classes, batch_size, image_size, training, seed,
                       repeat)


def _tf_dataset(images, labels, num_classes, batch_size, image_size, training, seed, repeat):
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if training:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    resize = images.shape[1] != image_size or images.shape[2] != image_size

    def prepare(x, y):
        x = tf.cast(x, tf.float32)
        if resize:
            x = tf.image.resize(x, (image_size, image_size))
        return x, tf.one_hot(y, num_classes)

    dataset = dataset.batch(batch_size).map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    # tf.data's autotuner off: deleting an iterator waits for the autotuner's thread, which sleeps
    # between passes for a period that doubles up to a minute. Keras deletes the validation
    # iterator at every epoch's validation after the first and the training one when `fit`
    # returns: on a small CPU those waits were a large part of a short epoch (experiments/
    # performance/iterator_wait.md). AUTOTUNE then means fixed defaults (map: one call per core;
    # prefetch: a buffer grown when the model waits), ample for a step of seconds.
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)
