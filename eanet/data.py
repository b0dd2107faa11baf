"""Data sets and the input pipeline.

CIFAR-100 comes from Keras' own download by default, or from a local copy (`data.path`): the
official python-format tarball `cifar-100-python.tar.gz`, its extracted folder, or an `.npz` with
x_train/y_train/x_test/y_test. The official format is a pickle; it is read with an unpickler that
admits only what that format contains, so a hostile file cannot run code.
"""
from __future__ import annotations

import contextlib
import io
import os
import pickle
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from eanet.config import check_choice

if TYPE_CHECKING:
    from eanet.config import DataConfig


class DataError(RuntimeError):
    """A data set that cannot be loaded; the message says why and what to do."""


LOCAL_COPY_HINT = (
    "Point eanet at a local copy with data.path=/path/to/copy (or the EANET_DATA environment "
    "variable, or `make run DATA=/path/to/copy`): the official cifar-100-python.tar.gz, its "
    "extracted cifar-100-python/ folder, or an .npz with x_train, y_train, x_test, y_test."
)


@dataclass
class ImageDataset:
    """uint8 images (n, H, W, 3) and integer labels (n,) for the train and test splits."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    source: str  # where it came from, for the tracking record


# --- CIFAR-100 ---------------------------------------------------------------------------------

class _CifarUnpickler(pickle.Unpickler):
    """Admits only the globals a CIFAR python-format batch needs: a numpy uint8 array in a dict."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing {module}.{name}: a CIFAR batch contains only numpy arrays and lists")
        return super().find_class(module, name)


def _read_cifar_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as error:  # truncated, hostile or not a pickle at all
        raise DataError(f"{where} is not a valid CIFAR-100 python batch: {error}") from None
    if not isinstance(batch, dict):
        raise DataError(f"{where}: expected a dict, found {type(batch).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "fine_labels" not in batch:
        raise DataError(f"{where}: expected keys 'data' and 'fine_labels', found {sorted(batch)}")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["fine_labels"])
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise DataError(f"{where}: expected 'data' as uint8 (n, 3072), found {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise DataError(f"{where}: {data.shape[0]} images but {labels.shape[0]} labels")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # channels-first rows → NHWC
    return np.ascontiguousarray(images), labels.astype(np.int64)


def _cifar_from_tarball(path: Path) -> tuple:
    try:
        with tarfile.open(path, "r:*") as archive:
            def member(name: str) -> bytes:
                try:
                    return archive.extractfile(f"cifar-100-python/{name}").read()
                except KeyError:
                    raise DataError(f"{path} has no cifar-100-python/{name}: is it the CIFAR-100 "
                                    "python version?") from None
            return (_read_cifar_batch(member("train"), f"{path}:train"),
                    _read_cifar_batch(member("test"), f"{path}:test"))
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DataError(f"{path} is not a readable tar archive: {error}") from None


def _cifar_from_folder(path: Path) -> tuple:
    folder = path / "cifar-100-python" if (path / "cifar-100-python").is_dir() else path
    splits = []
    for name in ("train", "test"):
        file = folder / name
        if not file.is_file():
            raise DataError(f"{folder} has no '{name}' file: expected the extracted "
                            "cifar-100-python folder (files train, test, meta)")
        splits.append(_read_cifar_batch(file.read_bytes(), str(file)))
    return tuple(splits)


NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
NPY_READ_CHUNK = 16 << 20  # bytes per read: few rounds of Python, little memory besides the array


def _read_npy(file, where: str) -> np.ndarray:
    """One .npy array from an open file, read into place in 16 MB pieces.

    np.load reads an array of an .npz in 256 KB pieces, a round of Python each; here a few rounds
    read CIFAR-100, with little memory besides the array. Object arrays (which need pickle) are refused, as with
    `allow_pickle=False`.
    """
    version = np.lib.format.read_magic(file)
    if version not in ((1, 0), (2, 0)):  # (3, 0): unicode field names; numpy's own reader
        return np.lib.format.read_array(file, allow_pickle=False)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, fortran_order, dtype = read_header(file)
    if dtype.hasobject:
        raise ValueError(f"{where} holds Python objects, which can only be loaded with pickle")
    array = np.empty(shape, dtype, order="F" if fortran_order else "C")
    buffer = memoryview(array.reshape(-1, order="A")).cast("B")
    done = 0
    while done < len(buffer):
        read = file.readinto(buffer[done:done + NPY_READ_CHUNK])
        if not read:
            raise EOFError(f"{where} ends after {done} of its {len(buffer)} bytes of data")
        done += read
    return array


def _cifar_from_npz(path: Path) -> tuple:
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name[:-len(".npy")]: name for name in archive.namelist()
                       if name.endswith(".npy")}
            missing = set(NPZ_ARRAYS) - set(members)
            if missing:
                raise DataError(f"{path} lacks {sorted(missing)}; expected "
                                f"{', '.join(NPZ_ARRAYS)} (found {sorted(members)})")
            arrays = {}
            for key in NPZ_ARRAYS:
                with archive.open(members[key]) as file:
                    arrays[key] = _read_npy(file, f"{path}:{key}")
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise DataError(f"{path} is not a readable .npz file: {error}") from None
    splits = []
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"].reshape(-1)
        if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
            raise DataError(f"{path}: expected x_{split} as uint8 (n, H, W, 3), "
                            f"found {x.dtype} {x.shape}")
        if y.shape != (x.shape[0],):
            raise DataError(f"{path}: {x.shape[0]} images in x_{split} but {y.shape[0]} labels")
        splits.append((x, y.astype(np.int64)))
    return tuple(splits)


def _cifar_from_keras() -> tuple:
    import keras

    try:
        return keras.datasets.cifar100.load_data(label_mode="fine")
    except Exception as error:  # offline, proxy, truncated cache…
        raise DataError(f"Could not download CIFAR-100 through Keras ({type(error).__name__}: "
                        f"{error}). {LOCAL_COPY_HINT}") from None


def load_cifar100(cfg: DataConfig, seed: int) -> ImageDataset:
    if not cfg.path:  # None, or an empty EANET_DATA
        (x_train, y_train), (x_test, y_test) = _cifar_from_keras()
        source = "keras.datasets.cifar100"
    else:
        path = Path(os.path.expanduser(cfg.path)).resolve()
        if not path.exists():
            raise DataError(f"data.path={cfg.path} does not exist. {LOCAL_COPY_HINT}")
        if path.is_dir():
            loader = _cifar_from_folder
        elif path.suffix == ".npz":
            loader = _cifar_from_npz
        else:
            loader = _cifar_from_tarball
        (x_train, y_train), (x_test, y_test) = loader(path)
        source = str(path)
    y_train, y_test = y_train.reshape(-1), y_test.reshape(-1)
    for split, labels in (("train", y_train), ("test", y_test)):
        if labels.size and (labels.min() < 0 or labels.max() >= cfg.num_classes):
            raise DataError(f"{source}: {split} labels span {labels.min()}..{labels.max()}, "
                            f"outside 0..{cfg.num_classes - 1} (data.num_classes={cfg.num_classes})")
    return ImageDataset(x_train, y_train, x_test, y_test, cfg.num_classes, source)


# --- synthetic ---------------------------------------------------------------------------------

def load_synthetic(cfg: DataConfig, seed: int) -> ImageDataset:
    """A small learnable data set for smoke runs: each class is a fixed random template plus noise."""
    rng = np.random.default_rng(seed)
    size = cfg.image_size
    templates = rng.uniform(0, 255, (cfg.num_classes, size, size, 3))

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, cfg.num_classes, n)
        images = templates[labels] + rng.normal(0, 40, (n, size, size, 3))
        return np.clip(images, 0, 255).astype(np.uint8), labels

    (x_train, y_train), (x_test, y_test) = sample(cfg.synthetic_train_size), sample(cfg.synthetic_test_size)
    return ImageDataset(x_train, y_train, x_test, y_test, cfg.num_classes, "synthetic")


# data.name → loader(cfg, seed) → ImageDataset
DATASETS: dict[str, Callable[[DataConfig, int], ImageDataset]] = {
    "cifar100": load_cifar100,
    "synthetic": load_synthetic,
}


def load_dataset(cfg: DataConfig, seed: int) -> ImageDataset:
    check_choice("data.name", cfg.name, DATASETS)
    data = DATASETS[cfg.name](cfg, seed)
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
