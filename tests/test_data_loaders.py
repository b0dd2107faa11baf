"""A data set is a loader named by `data.loader` (eanet.data.load_arrays): CIFAR-10 is one, read
here from small files written in the official formats (python-version batches in a folder or a
tarball, an .npz), and trained on end to end through conf/data/cifar10.yaml; a loader's arrays
are checked, and a wrong one is named."""
from __future__ import annotations

import pickle
import sys
import tarfile
import types

import numpy as np
import pytest

from conftest import client_for, compose_config, run_eanet, training_runs
from eanet.cifar import load_cifar10
from eanet.config import DataConfig
from eanet.config_checks import validate
from eanet.data import DataError, load_dataset
from eanet.plugins import PluginError
from eanet.validation import validate as validate_all

TRAIN_BATCH, TEST = 6, 8  # images per training batch (five of them) and in the test batch


def _batch(n: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A CIFAR-10 python-version batch: channels-first rows of 3072 uint8, `labels`."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    batch = {b"batch_label": b"a batch", b"labels": labels.tolist(),
             b"data": images.transpose(0, 3, 1, 2).reshape(n, 3072),
             b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
    return pickle.dumps(batch, protocol=2), images, labels


def write_cifar10(root) -> tuple:
    """cifar-10-batches-py/ under `root`, as the official tarball extracts; returns the folder
    and the arrays it holds."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    train = []
    for i in range(1, 6):
        raw, images, labels = _batch(TRAIN_BATCH, seed=i)
        (folder / f"data_batch_{i}").write_bytes(raw)
        train.append((images, labels))
    raw, x_test, y_test = _batch(TEST, seed=0)
    (folder / "test_batch").write_bytes(raw)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"cat"] * 10}, protocol=2))
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return folder, (x_train, y_train, x_test, y_test)


def _assert_equal(loaded, expected):
    for got, want in zip(loaded, expected):
        np.testing.assert_array_equal(got, want)
    assert loaded[0].shape == (5 * TRAIN_BATCH, 32, 32, 3) and loaded[0].dtype == np.uint8


def test_cifar10_from_its_folder_and_its_tarball(tmp_path):
    folder, expected = write_cifar10(tmp_path)
    _assert_equal(load_cifar10(str(folder)), expected)
    _assert_equal(load_cifar10(str(tmp_path)), expected)  # the folder holding it works too
    tarball = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(folder, arcname="cifar-10-batches-py")
    _assert_equal(load_cifar10(str(tarball)), expected)


def test_cifar10_from_an_npz(tmp_path):
    _, (x_train, y_train, x_test, y_test) = write_cifar10(tmp_path)
    np.savez(tmp_path / "c10.npz", x_train=x_train, y_train=y_train.reshape(-1, 1),
             x_test=x_test, y_test=y_test)
    _assert_equal(load_cifar10(str(tmp_path / "c10.npz")), (x_train, y_train, x_test, y_test))


def test_cifar10_missing_batch_and_offline_download_say_what_to_do(tmp_path, monkeypatch):
    folder, _ = write_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="has no 'data_batch_3' file"):
        load_cifar10(str(folder))
    import keras

    def offline():
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(DataError, match="Could not download CIFAR-10 .*data.path=.*"
                                        "cifar-10-python.tar.gz"):
        load_cifar10(None)


def test_the_cifar10_yaml_names_its_loader_as_a_plugin_would():
    cfg = validate(compose_config(["data=cifar10"]))
    assert (cfg.data.name, cfg.data.loader, cfg.data.num_classes) == (
        "cifar10", "eanet.cifar.load_cifar10", 10)


def test_cifar10_trains_through_data_loader(tmp_path):
    """`python -m eanet.run data=cifar10 data.path=<copy>` on small official-format files."""
    folder, _ = write_cifar10(tmp_path)
    result = run_eanet(tmp_path, "data=cifar10", f"data.path={folder}", "data.image_size=8",
                       "model.embedding_dim=16", "model.mlp_dim=16", "model.num_blocks=1",
                       "model.num_heads=2", "model.dim_coefficient=2", "trainer.epochs=1",
                       "trainer.batch_size=8", "trainer.verbose=0", tiny=False,
                       env={"TF_CPP_MIN_LOG_LEVEL": None, "PYTHONWARNINGS": None})
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = training_runs(client_for(tmp_path))
    assert run.data.params["data.loader"] == "eanet.cifar.load_cifar10"
    assert run.data.params["data.num_classes"] == "10"
    assert f"data {folder}: 24 train / 6 val / 8 test images" in result.stdout
    # the run's model URI ends the run; TensorFlow and MLflow said nothing (library_logs=false)
    assert result.stdout.strip().splitlines()[-1].endswith(
        f"logged model: {run.data.tags['eanet.model_uri']}")
    assert result.stderr == ""


# --- the loader contract --------------------------------------------------------------------

@pytest.fixture
def loader_module(monkeypatch):
    """A module `my_loaders` whose functions the tests set."""
    module = types.ModuleType("my_loaders")
    monkeypatch.setitem(sys.modules, "my_loaders", module)
    return module


def _arrays(n=10, classes=3, size=8):
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), rng.integers(0, classes, n),
            rng.integers(0, 256, (4, size, size, 3), dtype=np.uint8), rng.integers(0, classes, 4))


def test_a_loader_gets_data_path_and_its_arrays_become_the_data_set(loader_module):
    seen = []
    loader_module.load = lambda path: seen.append(path) or _arrays()
    data = load_dataset(DataConfig(name="mine", loader="my_loaders.load", path="/some/where",
                                   num_classes=3), seed=0)
    assert seen == ["/some/where"] and data.source == "/some/where"
    assert data.x_train.shape == (10, 8, 8, 3) and data.y_test.dtype == np.int64
    data = load_dataset(DataConfig(name="mine", loader="my_loaders.load", num_classes=3), 0)
    assert data.source == "my_loaders.load"  # no path: what made it


@pytest.mark.parametrize("returned, message", [
    (lambda: _arrays()[:3], r"returned tuple; expected the four arrays"),
    (lambda: (np.zeros((2, 8, 8)), np.zeros(2, int), *_arrays()[2:]),
     r"expected x_train as RGB images \(n, H, W, 3\)"),
    (lambda: (*_arrays()[:3], np.zeros(3, int)), r"expected y_test as 4 integer labels"),
    (lambda: (*_arrays()[:3], np.array([0, 1, 2, 7])), r"test labels span 0\.\.7, outside 0\.\.2"),
])
def test_a_loaders_wrong_arrays_are_named(loader_module, returned, message):
    loader_module.load = lambda path: returned()
    with pytest.raises(DataError, match=message):
        load_dataset(DataConfig(name="mine", loader="my_loaders.load", num_classes=3), 0)


def test_a_loader_that_cannot_be_imported_names_the_setting(loader_module):
    with pytest.raises(PluginError, match=r"Cannot import 'nowhere\.at_all' named by "
                                          r"data\.loader=nowhere\.at_all\.load.*PYTHONPATH"):
        load_dataset(DataConfig(name="mine", loader="nowhere.at_all.load"), 0)
    with pytest.raises(PluginError, match=r"data\.loader=my_loaders\.lod: module 'my_loaders'"):
        load_dataset(DataConfig(name="mine", loader="my_loaders.lod"), 0)


@pytest.mark.parametrize("override", ["data.loader=load", "data.loader='my loaders.load'"])
def test_a_loader_that_is_no_import_path_fails_validation(override):
    from eanet.config import ConfigError

    with pytest.raises(ConfigError, match=r"Expected data\.loader to be the import path"):
        validate(compose_config([override]))


def test_a_data_set_with_a_loader_needs_no_registry_name():
    from eanet.config import ConfigError

    cfg = validate_all(compose_config(["data.name=mine", "data.loader=my_loaders.load"]))
    assert cfg.data.name == "mine"
    with pytest.raises(ConfigError, match="Unknown data.name='mine'. Valid values: cifar100, "
                                          "synthetic"):
        validate_all(compose_config(["data.name=mine"]))
