"""A run's model as an MLflow model that loads wherever MLflow loads models, on any backend.

MLflow's Keras flavor saves the model as `data/model.keras`, and its loader calls
`keras.saving.load_model` in a process that may never have imported eanet, where Keras cannot
find eanet's layers or optimizer. So the model is saved by that flavor and completed as MLflow's
custom flavors are:
- eanet's code travels with it (`code/eanet`, what MLflow's `code_paths` holds), and
  `mlflow.pyfunc.load_model` puts it on `sys.path`;
- so does the code of a plug-in attention's module (eanet.saving.plugin_modules; not that of an
  installed package, which must be installed where the model loads), named in the flavor's
  `keras_modules`;
- its python_function flavor loads through this module (`loader_module`), which imports
  eanet.saving and those modules, registering their Keras classes; then MLflow's Keras loader
  runs, and `predict` prints no progress bar.

How it loads, in a fresh Python with MLflow and Keras (and any backend):
- `mlflow.pyfunc.load_model(uri)`: nothing else needed; `.get_raw_model()` is the `keras.Model`;
- `mlflow.keras.load_model(uri)`: after `import eanet.saving` (and a plug-in's own module: the
  Keras flavor's own loader adds no code);
- the `.keras` file (`<uri>/data/model.keras`): `keras.saving.load_model(path, safe_mode=True)`
  after the same imports, optimizer included.
"""
from __future__ import annotations

import functools
import shutil
from pathlib import Path

from mlflow.keras.load import KerasModelWrapper

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
    from eanet.saving import copy_plugin_sources, plugin_modules

    mlflow.keras.save_model(model, path, mlflow_model=mlflow_model, **keras_flavor_args)
    shutil.copytree(Path(eanet.__file__).parent, Path(path, CODE_DIR, "eanet"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    modules = plugin_modules(model)
    copy_plugin_sources(modules, Path(path, CODE_DIR))
    environment = mlflow_model.flavors[mlflow.pyfunc.FLAVOR_NAME]["env"]
    mlflow.pyfunc.add_to_model(mlflow_model, loader_module=__name__, code=CODE_DIR,
                               conda_env=environment["conda"],
                               python_env=environment["virtualenv"], keras_modules=modules)
    mlflow_model.save(str(Path(path, "MLmodel")))


def _load_pyfunc(path: str):
    """`mlflow.pyfunc.load_model`'s entry: MLflow's Keras model wrapper, once eanet's Keras
    classes and a plug-in's are registered, predicting without a progress bar."""
    from mlflow.keras import _load_pyfunc as load_keras_pyfunc
    from mlflow.models import Model
    from mlflow.pyfunc import FLAVOR_NAME as PYFUNC

    from eanet.saving import import_modules

    flavor = Model.load(str(Path(path, "MLmodel"))).flavors[PYFUNC]
    import_modules(flavor.get("keras_modules", []))
    loaded = load_keras_pyfunc(path)
    return QuietKerasModel(loaded.model, loaded.signature, loaded.save_exported_model)


class QuietKerasModel(KerasModelWrapper):
    """MLflow's Keras pyfunc wrapper, whose `predict` calls `model.predict(data)` with Keras'
    progress bar: here without it."""

    def get_model_call_method(self):
        if self.save_exported_model:
            return self.model.serve
        return functools.partial(self.model.predict, verbose=0)
