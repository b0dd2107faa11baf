"""CIFAR-10 and CIFAR-100 as data set loaders: `load(path) → (x_train, y_train, x_test, y_test)`,
uint8 images (n, 32, 32, 3) and integer labels (n,) — the contract of `data.loader`
(eanet.data.load_arrays, docs/extending.md); conf/data/cifar10.yaml names `load_cifar10` exactly
as a user's YAML names a loader of their own.

Without a path, Keras' own download (`keras.datasets`); with one, a local copy: the official
python-version tarball (`cifar-10-python.tar.gz`, `cifar-100-python.tar.gz`), its extracted
folder, or an `.npz` holding x_train, y_train, x_test, y_test. The official batches are pickles;
they are read with an unpickler that admits only what that format contains, so a hostile file
cannot run code.
"""
from __future__ import annotations

import io
import os
import pickle
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from eanet.data import DataError

if TYPE_CHECKING:
    from eanet.config import DataConfig

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_train, y_train, x_test, y_test


@dataclass(frozen=True)
class CifarFormat:
    """Where one CIFAR variant keeps its python-version batches."""
    title: str  # CIFAR-10
    folder: str  # the tarball's top folder
    train_batches: tuple[str, ...]
    test_batch: str
    label_key: str  # the batch's key holding the labels wanted
    keras_module: str  # keras.datasets.<this>
    hint: str  # how to point eanet at a local copy


CIFAR10 = CifarFormat(
    "CIFAR-10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test_batch", "labels", "cifar10",
    "Point eanet at a local copy with data.path=/path/to/copy: the official "
    "cifar-10-python.tar.gz, its extracted cifar-10-batches-py/ folder, or an .npz with x_train, "
    "y_train, x_test, y_test.")
CIFAR100 = CifarFormat(
    "CIFAR-100", "cifar-100-python", ("train",), "test", "fine_labels", "cifar100",
    "Point eanet at a local copy with data.path=/path/to/copy (or the EANET_DATA environment "
    "variable, or `make run DATA=/path/to/copy`): the official cifar-100-python.tar.gz, its "
    "extracted cifar-100-python/ folder, or an .npz with x_train, y_train, x_test, y_test.")


def load_cifar10(path: Optional[str] = None) -> Arrays:
    """CIFAR-10: 50,000 train / 10,000 test images of 10 classes."""
    return load_cifar(CIFAR10, path)


def load_cifar100(path: Optional[str] = None) -> Arrays:
    """CIFAR-100 with its 100 fine labels: 50,000 train / 10,000 test images."""
    return load_cifar(CIFAR100, path)


def cifar100_dataset(cfg: DataConfig, seed: int) -> Arrays:
    """The built-in `data.name=cifar100` (eanet.data.DATASETS): CIFAR-100 from `data.path`."""
    return load_cifar100(cfg.path)


def load_cifar(variant: CifarFormat, path: Optional[str]) -> Arrays:
    if not path:  # None, or an empty environment variable
        (x_train, y_train), (x_test, y_test) = _from_keras(variant)
    else:
        where = Path(os.path.expanduser(path)).resolve()
        if not where.exists():
            raise DataError(f"data.path={path} does not exist. {variant.hint}")
        if where.is_dir():
            (x_train, y_train), (x_test, y_test) = _from_folder(variant, where)
        elif where.suffix == ".npz":
            (x_train, y_train), (x_test, y_test) = read_npz(where)
        else:
            (x_train, y_train), (x_test, y_test) = _from_tarball(variant, where)
    return x_train, y_train.reshape(-1), x_test, y_test.reshape(-1)


def _from_keras(variant: CifarFormat) -> tuple:
    import keras

    try:
        module = getattr(keras.datasets, variant.keras_module)
        if variant is CIFAR100:
            return module.load_data(label_mode="fine")
        return module.load_data()
    except Exception as error:  # offline, proxy, truncated cache…
        raise DataError(f"Could not download {variant.title} through Keras "
                        f"({type(error).__name__}: {error}). {variant.hint}") from None


# --- the official python version ---------------------------------------------------------------

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


def read_cifar_batch(raw: bytes, where: str,
                     label_key: str = "fine_labels") -> tuple[np.ndarray, np.ndarray]:
    """One python-version batch: (uint8 images (n, 32, 32, 3), int64 labels (n,))."""
    try:
        batch = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as error:  # truncated, hostile or not a pickle at all
        raise DataError(f"{where} is not a valid CIFAR python batch: {error}") from None
    if not isinstance(batch, dict):
        raise DataError(f"{where}: expected a dict, found {type(batch).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or label_key not in batch:
        raise DataError(f"{where}: expected keys 'data' and '{label_key}', found {sorted(batch)}")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key])
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise DataError(f"{where}: expected 'data' as uint8 (n, 3072), found {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise DataError(f"{where}: {data.shape[0]} images but {labels.shape[0]} labels")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # channels-first rows → NHWC
    return np.ascontiguousarray(images), labels.astype(np.int64)


def _joined(batches: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if len(batches) == 1:
        return batches[0]
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


def _from_tarball(variant: CifarFormat, path: Path) -> tuple:
    try:
        with tarfile.open(path, "r:*") as archive:
            def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
                try:
                    raw = archive.extractfile(f"{variant.folder}/{name}").read()
                except KeyError:
                    raise DataError(f"{path} has no {variant.folder}/{name}: is it the "
                                    f"{variant.title} python version?") from None
                return read_cifar_batch(raw, f"{path}:{name}", variant.label_key)

            return (_joined([batch(name) for name in variant.train_batches]),
                    batch(variant.test_batch))
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DataError(f"{path} is not a readable tar archive: {error}") from None


def _from_folder(variant: CifarFormat, path: Path) -> tuple:
    folder = path / variant.folder if (path / variant.folder).is_dir() else path

    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        file = folder / name
        if not file.is_file():
            raise DataError(f"{folder} has no '{name}' file: expected the extracted "
                            f"{variant.folder} folder ({', '.join(variant.train_batches)}, "
                            f"{variant.test_batch})")
        return read_cifar_batch(file.read_bytes(), str(file), variant.label_key)

    return _joined([batch(name) for name in variant.train_batches]), batch(variant.test_batch)


# --- .npz ----------------------------------------------------------------------------------------

NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
NPY_READ_CHUNK = 16 << 20  # bytes per read: few rounds of Python, little memory besides the array


def _read_npy(file, where: str) -> np.ndarray:
    """One .npy array from an open file, read into place in 16 MB pieces.

    np.load reads an array of an .npz in 256 KB pieces, a round of Python each; here a few rounds
    read CIFAR-100, with little memory besides the array. Object arrays (which need pickle) are
    refused, as with `allow_pickle=False`.
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


def read_npz(path: Path) -> tuple:
    """((x_train, y_train), (x_test, y_test)) from an .npz holding those four arrays."""
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
