"""A run's model loads where its users load it and gives the probabilities the training process
computed (to 1e-5), each case in a fresh Python that has imported nothing of eanet beforehand:

- the MLflow model (`eanet.model_uri`) with `mlflow.pyfunc.load_model`, from the copy of eanet's
  code it carries (eanet.tracking.keras_model);
- the same with `mlflow.keras.load_model`, after `import eanet.saving`;
- its `.keras` file with `keras.saving.load_model(path, safe_mode=True)` after
  `import eanet.saving`, optimizer included; and that import alone has registered every Keras
  class eanet defines (by importing the modules that define them), no hydra-core needed;
- across backends, under `make test-jax` (JAX without TensorFlow): a model trained on JAX loads
  on TensorFlow (the Python of `.venv`, or EANET_TF_PYTHON), one trained on TensorFlow on JAX.

One tiny run per backend, trained by a fresh Python (`TRAIN`), is shared by the cases.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, client_for, run_python, store_uri, training_runs

ON_JAX_WITHOUT_TENSORFLOW = (importlib.util.find_spec("tensorflow") is None
                             and importlib.util.find_spec("jax") is not None)
TENSORFLOW_PYTHON = Path(os.environ.get("EANET_TF_PYTHON", ROOT / ".venv" / "bin" / "python"))
BACKEND = {"KERAS_BACKEND": "jax" if ON_JAX_WITHOUT_TENSORFLOW else "tensorflow"}
TENSORFLOW = {"KERAS_BACKEND": "tensorflow"}

# argv: folder (holding images.npy; gets mlflow.db and expected.npy). A tiny run, trained as
# `python -m eanet.run` trains it; the probabilities its model gives the images, saved just
# before the model is logged.
TRAIN = """
import sys
from pathlib import Path
import numpy as np
sys.path.insert(0, "{tests}")
from conftest import TINY, compose_config, store_uri
from eanet.config_checks import validate
from eanet.tracking import lineage
from eanet.training.train import train

folder = Path(sys.argv[1])
images = np.load(folder / "images.npy")
log_model = lineage.log_model_with_signature

def log_model_after_predicting(model, sample):
    np.save(folder / "expected.npy", model.predict(images, verbose=0))
    return log_model(model, sample)

lineage.log_model_with_signature = log_model_after_predicting
raw = compose_config([*TINY, "trainer.epochs=1", f"tracking.tracking_uri={{store_uri(folder)}}"])
train(validate(raw), raw)
""".format(tests=ROOT / "tests")

# argv: model URI, images.npy, output .npy. Prints the file eanet was imported from.
LOAD_PYFUNC = """
import sys
import numpy as np
import mlflow
assert not [m for m in sys.modules if m.split(".")[0] == "eanet"]
model = mlflow.pyfunc.load_model(sys.argv[1])
np.save(sys.argv[3], np.asarray(model.predict(np.load(sys.argv[2]))))
assert not [m for m in sys.modules if m.split(".")[0] in ("hydra", "omegaconf")]
print(sys.modules["eanet"].__file__)
"""

LOAD_MLFLOW_KERAS = """
import sys
import numpy as np
import eanet.saving
import mlflow
model = mlflow.keras.load_model(sys.argv[1])
np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))
"""

# argv: model.keras, images.npy, output .npy. Prints JSON: the optimizer, and the Keras classes
# defined in eanet.models and eanet.training that `import eanet.saving` had not registered.
LOAD_KERAS_FILE = """
import importlib, inspect, json, pkgutil, sys
import numpy as np
import eanet.saving
import keras
registered = dict(keras.saving.get_custom_objects())
model = keras.saving.load_model(sys.argv[1], safe_mode=True)
np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))
bases = (keras.layers.Layer, keras.Model, keras.optimizers.Optimizer, keras.losses.Loss,
         keras.metrics.Metric, keras.optimizers.schedules.LearningRateSchedule)
classes = set()
for package in ("eanet.models", "eanet.training"):
    for module in pkgutil.iter_modules(importlib.import_module(package).__path__, package + "."):
        classes.update(c for _, c in inspect.getmembers(importlib.import_module(module.name),
                                                        inspect.isclass)
                       if issubclass(c, bases) and c.__module__.startswith("eanet."))
unregistered = [c.__qualname__ for c in classes
                if registered.get(keras.saving.get_registered_name(c)) is not c]
print(json.dumps({"optimizer": type(model.optimizer).__name__,
                  "iterations": int(model.optimizer.iterations), "classes": len(classes),
                  "unregistered": unregistered}))
"""


def _trained_run(folder: Path, python: Path, env: dict) -> dict:
    """A tiny run trained by `python` into `folder`: its model's URI, the path of its `.keras`
    file, the images and the probabilities the training process gave them."""
    import mlflow

    folder.mkdir()
    images = np.random.default_rng(0).uniform(0, 255, (5, 8, 8, 3)).astype(np.float32)
    np.save(folder / "images.npy", images)
    trained = run_python("-c", TRAIN, str(folder), cwd=folder, env=env, python=str(python))
    assert trained.returncode == 0, trained.stderr[-3000:]
    client = client_for(folder)
    [run] = training_runs(client)
    uri = run.data.tags["eanet.model_uri"]
    logged = client.get_logged_model(uri.removeprefix("models:/"))
    keras_file = mlflow.artifacts.download_artifacts(f"{logged.artifact_location}/data/model.keras",
                                                     dst_path=str(folder))
    requirements = mlflow.artifacts.download_artifacts(
        f"{logged.artifact_location}/requirements.txt", dst_path=str(folder))
    # the optimizer class the run's speed door chose (eanet.models.speed: fused where the C++
    # kernels run, Keras' AdamW elsewhere), which its .keras file must bring back
    fused = run.data.tags.get("eanet.implementation.optimizer") == "fused"
    return {"folder": folder, "uri": uri, "keras_file": keras_file,
            "optimizer": "FusedAdamW" if fused else "AdamW",
            "requirements": Path(requirements).read_text(),
            "expected": np.load(folder / "expected.npy")}


@pytest.fixture(scope="module")
def run_here(tmp_path_factory) -> dict:
    """A run trained on this environment's backend."""
    return _trained_run(tmp_path_factory.mktemp("loading") / "here", Path(sys.executable),
                        BACKEND)


@pytest.fixture(scope="module")
def tensorflow_python() -> Path:
    if not TENSORFLOW_PYTHON.exists():
        message = f"no TensorFlow environment at {TENSORFLOW_PYTHON} (EANET_TF_PYTHON)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return TENSORFLOW_PYTHON


def _load(script: str, run: dict, model: str, python: Path = Path(sys.executable),
          env: dict = BACKEND) -> tuple[np.ndarray, str]:
    """Run a loading script in a fresh Python (its cwd outside the checkout), against `run`'s
    store; returns the probabilities it computed and what it printed."""
    out = run["folder"] / f"probabilities-{len(list(run['folder'].glob('probabilities-*')))}.npy"
    loaded = run_python("-c", script, model, str(run["folder"] / "images.npy"), str(out),
                        cwd=run["folder"], python=str(python),
                        env={**env, "MLFLOW_TRACKING_URI": store_uri(run["folder"])})
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    probabilities = np.load(out)
    assert probabilities.shape == run["expected"].shape == (5, 4)  # (n, classes)
    np.testing.assert_allclose(probabilities, run["expected"], atol=1e-5)
    return probabilities, loaded.stdout


def _check_keras_file(run: dict, python: Path = Path(sys.executable), env: dict = BACKEND):
    _, printed = _load(LOAD_KERAS_FILE, run, str(run["keras_file"]), python, env)
    report = json.loads(printed.strip().splitlines()[-1])
    assert report["optimizer"] == run["optimizer"] and report["iterations"] > 0  # trained state
    assert report["classes"] >= 9 and report["unregistered"] == []


def test_the_mlflow_model_loads_with_pyfunc_from_its_own_code(run_here):
    _, printed = _load(LOAD_PYFUNC, run_here, run_here["uri"])
    [line] = printed.strip().splitlines()  # predict printed no progress bar
    # eanet came from the model's code/ folder, not from an installed eanet or this checkout
    assert Path(line).parents[1].name == "code"
    assert "keras==" in run_here["requirements"] and "hydra" not in run_here["requirements"]


def test_the_mlflow_model_loads_with_mlflow_keras_after_import_eanet_saving(run_here):
    _load(LOAD_MLFLOW_KERAS, run_here, run_here["uri"])


def test_the_keras_file_loads_in_safe_mode_with_its_optimizer(run_here):
    _check_keras_file(run_here)


needs_jax_without_tensorflow = pytest.mark.skipif(
    not ON_JAX_WITHOUT_TENSORFLOW, reason="runs under `make test-jax`, with .venv's TensorFlow")


@needs_jax_without_tensorflow
def test_a_model_trained_on_jax_loads_on_tensorflow(run_here, tensorflow_python):
    _load(LOAD_PYFUNC, run_here, run_here["uri"], tensorflow_python, TENSORFLOW)
    _check_keras_file(run_here, tensorflow_python, TENSORFLOW)


@needs_jax_without_tensorflow
def test_a_model_trained_on_tensorflow_loads_on_jax(run_here, tensorflow_python):
    run = _trained_run(run_here["folder"].parent / "on-tensorflow", tensorflow_python, TENSORFLOW)
    _load(LOAD_PYFUNC, run, run["uri"])
    _check_keras_file(run)
