"""A run's model as an MLflow model that loads wherever MLflow loads models, on any backend.

MLflow's Keras flavor saves the model as `data/model.keras`, and its loader calls
`keras.saving.load_model` in a process that may never have imported eanet, where Keras cannot
find eanet's layers or optimizer. So the model is saved by that flavor and completed as MLflow's
custom flavors are:
- eanet's code travels with it (`code/eanet`, what MLflow's `code_paths` holds), and
  `mlflow.pyfunc.load_model` puts it on `sys.path`;
- its python_function flavor loads through this module (`loader_module`), whose import imports
  eanet, which registers eanet's Keras classes (eanet.saving); then MLflow's Keras loader runs.

How it loads, in a fresh Python with MLflow and Keras (and any backend):
- `mlflow.pyfunc.load_model(uri)`: nothing else needed; `.get_raw_model()` is the `keras.Model`;
- `mlflow.keras.load_model(uri)`: after `import eanet` (the Keras flavor's own loader adds no code);
- the `.keras` file (`<uri>/data/model.keras`): `keras.saving.load_model(path, safe_mode=True)`
  after `import eanet`, optimizer included.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import eanet

FLAVOR_NAME = "keras"  # what the MLflow UI lists: the model is MLflow's Keras flavor
CODE_DIR = "code"  # eanet's code, inside the MLflow model


def save_model(model, path: str, mlflow_model=None, **keras_flavor_args) -> None:
    """The MLflow model of a `keras.Model` in the empty folder `path` (the flavor API of
    `mlflow.models.Model.log`); `keras_flavor_args` (signature, pip_requirements, …) go to
    `mlflow.keras.save_model`."""
    import mlflow
    from mlflow.models import Model

    mlflow_model = mlflow_model if mlflow_model is not None else Model()
    mlflow.keras.save_model(model, path, mlflow_model=mlflow_model, **keras_flavor_args)
    shutil.copytree(Path(eanet.__file__).parent, Path(path, CODE_DIR, "eanet"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    environment = mlflow_model.flavors[mlflow.pyfunc.FLAVOR_NAME]["env"]
    mlflow.pyfunc.add_to_model(mlflow_model, loader_module=__name__, code=CODE_DIR,
                               conda_env=environment["conda"],
                               python_env=environment["virtualenv"])
    mlflow_model.save(str(Path(path, "MLmodel")))


def _load_pyfunc(path: str):
    """`mlflow.pyfunc.load_model`'s entry: MLflow's Keras model wrapper, now that eanet's Keras
    classes are registered."""
    from mlflow.keras import _load_pyfunc as load_keras_pyfunc

    return load_keras_pyfunc(path)
