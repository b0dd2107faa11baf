"""Loaders on tiny files written here in each supported format, including broken and hostile ones."""
import os
import pickle
import tarfile

import numpy as np
import pytest

from conftest import REAL_CIFAR
from eanet.config import DataConfig
from eanet.data import (DataError, channel_statistics, load_dataset, make_dataset, prepare_data,
                        split_validation)


def _official_batch(n, seed):
    """A batch in the official python format: channels-first rows of 3072 uint8, fine labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 100, n)
    data = images.transpose(0, 3, 1, 2).reshape(n, 3072)
    batch = {b"batch_label": b"training batch 1 of 1", b"fine_labels": labels.tolist(),
             b"coarse_labels": (labels // 5).tolist(), b"data": data,
             b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
    return pickle.dumps(batch, protocol=2), images, labels


def _write_folder(root):
    folder = root / "cifar-100-python"
    folder.mkdir()
    expected = {}
    for name, n in (("train", 20), ("test", 8)):
        raw, images, labels = _official_batch(n, seed=len(name))
        (folder / name).write_bytes(raw)
        expected[name] = (images, labels)
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [b"apple"] * 100}, protocol=2))
    return folder, expected


def _cfg(path, **kwargs):
    return DataConfig(name="cifar100", path=str(path), **kwargs)


def _assert_loaded(data, expected):
    np.testing.assert_array_equal(data.x_train, expected["train"][0])
    np.testing.assert_array_equal(data.y_train, expected["train"][1])
    np.testing.assert_array_equal(data.x_test, expected["test"][0])
    assert data.x_train.shape == (20, 32, 32, 3) and data.x_train.dtype == np.uint8


def test_extracted_folder(tmp_path):
    folder, expected = _write_folder(tmp_path)
    _assert_loaded(load_dataset(_cfg(folder), 0), expected)
    _assert_loaded(load_dataset(_cfg(tmp_path), 0), expected)  # the parent folder works too


def test_official_tarball(tmp_path):
    folder, expected = _write_folder(tmp_path)
    tarball = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(folder, arcname="cifar-100-python")
    _assert_loaded(load_dataset(_cfg(tarball), 0), expected)


def test_npz(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
              "y_train": rng.integers(0, 100, 20).astype(np.uint8),
              "x_test": rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
              "y_test": rng.integers(0, 100, 8).astype(np.uint8)}
    np.savez(tmp_path / "c.npz", **arrays)
    data = load_dataset(_cfg(tmp_path / "c.npz"), 0)
    np.testing.assert_array_equal(data.x_train, arrays["x_train"])
    np.testing.assert_array_equal(data.y_test, arrays["y_test"])


def test_npz_arrays_are_read_as_numpy_reads_them(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    np.savez_compressed(tmp_path / "c.npz", x_train=x, y_train=np.arange(20, dtype=np.uint8),
                        x_test=np.asfortranarray(x[:8]), y_test=np.arange(8).reshape(8, 1))
    data = load_dataset(_cfg(tmp_path / "c.npz"), 0)
    np.testing.assert_array_equal(data.x_train, x)
    np.testing.assert_array_equal(data.x_test, x[:8])  # a Fortran-ordered array
    assert data.y_test.tolist() == list(range(8)) and data.y_train.dtype == np.int64
    assert data.x_train.flags.writeable


def test_npz_object_arrays_are_refused(tmp_path):
    np.savez(tmp_path / "c.npz", x_train=np.array([{"code": "run me"}], dtype=object),
             y_train=np.zeros(1), x_test=np.zeros((1, 32, 32, 3), np.uint8), y_test=np.zeros(1))
    with pytest.raises(DataError, match="not a readable .npz.*pickle"):
        load_dataset(_cfg(tmp_path / "c.npz"), 0)


def test_subsets_are_seeded_draws(tmp_path):
    _, expected = _write_folder(tmp_path)
    a = load_dataset(_cfg(tmp_path, train_size=10, test_size=4), seed=3)
    b = load_dataset(_cfg(tmp_path, train_size=10, test_size=4), seed=3)
    assert a.x_train.shape[0] == 10 and a.x_test.shape[0] == 4
    np.testing.assert_array_equal(a.x_train, b.x_train)


def test_npz_missing_arrays_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "c.npz", x_train=np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match=r"lacks \['x_test', 'y_test', 'y_train'\]"):
        load_dataset(_cfg(tmp_path / "c.npz"), 0)


def test_truncated_npz_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "c.npz", x_train=np.zeros((50, 32, 32, 3), np.uint8))
    raw = (tmp_path / "c.npz").read_bytes()
    (tmp_path / "c.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset(_cfg(tmp_path / "c.npz"), 0)


def test_truncated_tarball_is_a_clear_error(tmp_path):
    folder, _ = _write_folder(tmp_path)
    tarball = tmp_path / "c.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(folder, arcname="cifar-100-python")
    raw = tarball.read_bytes()
    tarball.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(DataError, match="c.tar.gz"):
        load_dataset(_cfg(tarball), 0)


def test_malformed_batch_is_a_clear_error(tmp_path):
    folder, _ = _write_folder(tmp_path)
    (folder / "train").write_bytes(pickle.dumps({b"data": np.zeros((3, 100), np.uint8),
                                                 b"fine_labels": [0, 1, 2]}, protocol=2))
    with pytest.raises(DataError, match=r"expected 'data' as uint8 \(n, 3072\)"):
        load_dataset(_cfg(folder), 0)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder, _ = _write_folder(tmp_path)
    (folder / "train").write_bytes(pickle.dumps({b"data": _Exploit()}, protocol=2))
    with pytest.raises(DataError, match="refusing posix.system|refusing os.system"):
        load_dataset(_cfg(folder), 0)
    assert not (tmp_path / "pwned").exists()


def test_missing_path_says_how_to_point_at_a_copy(tmp_path):
    with pytest.raises(DataError, match="does not exist.*data.path="):
        load_dataset(_cfg(tmp_path / "nope.npz"), 0)


def test_offline_download_says_how_to_point_at_a_copy(monkeypatch):
    import keras

    def offline(**kwargs):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.datasets.cifar100, "load_data", offline)
    with pytest.raises(DataError, match="Could not download CIFAR-100.*data.path=.*EANET_DATA"):
        load_dataset(DataConfig(name="cifar100", path=None), 0)


def test_validation_split_is_shuffled_not_the_tail():
    from eanet.data import ImageDataset

    labels = np.repeat(np.arange(10), 100)  # sorted by class, like a class-by-class file
    images = np.zeros((1000, 4, 4, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(1000) % 256
    data = ImageDataset(images, labels, images[:10], labels[:10], 10, "test")
    splits = split_validation(data, 0.2, seed=0)
    assert len(splits.y_val) == 200 and len(splits.y_train) == 800
    assert len(np.unique(splits.y_val)) == 10  # every class, not the last two
    again = split_validation(data, 0.2, seed=0)
    np.testing.assert_array_equal(splits.y_val, again.y_val)


def test_channel_statistics_match_numpy():
    images = np.random.default_rng(0).integers(0, 256, (50, 8, 8, 3), dtype=np.uint8)
    mean, variance = channel_statistics(images)
    np.testing.assert_allclose(mean, images.reshape(-1, 3).mean(0))
    np.testing.assert_allclose(variance, images.reshape(-1, 3).astype(float).var(0))


def test_prepared_data_is_split_seeded_and_counted_on_the_training_split(tmp_path):
    _write_folder(tmp_path)
    cfg = _cfg(tmp_path, validation_split=0.25)
    prepared, again = prepare_data(cfg, 3), prepare_data(cfg, 3)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(again.splits, name), getattr(prepared.splits, name))
    assert len(prepared.splits.y_val) == 5 and len(prepared.splits.y_train) == 15
    assert (prepared.mean, prepared.variance) == channel_statistics(prepared.splits.x_train)


def test_pipeline_batches_one_hot_and_resizes():
    images = np.zeros((10, 8, 8, 3), np.uint8)
    labels = np.arange(10) % 4
    batches = list(make_dataset(images, labels, 4, batch_size=4, image_size=16, training=True,
                                seed=0))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    x, y = batches[0]
    assert x.shape == (4, 16, 16, 3) and x.dtype.name == "float32"
    assert y.shape == (4, 4) and float(y.numpy().sum()) == 4.0


@pytest.mark.parametrize("training", [True, False])
def test_pipeline_runs_without_the_autotuner_and_yields_the_same_batches(training):
    """Deleting an iterator waits for tf.data's autotuner thread, which sleeps up to a minute
    between passes: Keras deletes one at every validation after the first (experiments/performance/
    iterator_wait.md). The pipeline turns it off; what it yields must not change."""
    import tensorflow as tf

    images = np.random.default_rng(0).integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(40) % 4
    def pipeline():  # a fresh one each time: a seeded shuffle reshuffles on every iteration
        return make_dataset(images, labels, 4, batch_size=8, image_size=8, training=training,
                            seed=3)

    dataset = pipeline()
    assert dataset.options().autotune.enabled is False
    autotuned = tf.data.Options()
    autotuned.autotune.enabled = True
    with_autotuner = pipeline().with_options(autotuned)
    assert with_autotuner.options().autotune.enabled is True
    for (x, y), (x_tuned, y_tuned) in zip(dataset, with_autotuner, strict=True):
        np.testing.assert_array_equal(x.numpy(), x_tuned.numpy())
        np.testing.assert_array_equal(y.numpy(), y_tuned.numpy())


@pytest.mark.real_data
def test_real_cifar100_copy():
    if not REAL_CIFAR.exists():
        pytest.skip(f"the real CIFAR-100 copy is not at {REAL_CIFAR}")
    data = load_dataset(DataConfig(name="cifar100", path=str(REAL_CIFAR)), 0)
    assert data.x_train.shape == (50000, 32, 32, 3) and data.x_test.shape == (10000, 32, 32, 3)
    assert set(np.unique(data.y_train)) == set(range(100))
    mean, _ = channel_statistics(data.x_train)
    np.testing.assert_allclose(np.array(mean) / 255, [0.50707516, 0.48654887, 0.44091784], atol=1e-6)
