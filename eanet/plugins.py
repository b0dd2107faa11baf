"""Objects named by import path in the config: `"package.module.name"`.

eanet's registries hold import paths (`eanet.models.ATTENTION_TYPES`, `eanet.training.OPTIMIZERS`,
…), so a config is checked against their names without importing Keras; a user's own code is
named the same way from a YAML of the user's own config folder:

- an attention layer: `model.attention_layer: {_target_: my.module.MyAttention, <arguments>}`,
  built once per transformer block as `MyAttention(**arguments, name="attention_<i>")`;
- a data set: `data.loader: my.module.load`, called as `load(data.path)`.

The module is found as Python finds any: on `sys.path` (the working directory with `python -m`,
`PYTHONPATH`, or an installed package). Plain `importlib`: no Hydra is needed to build a model,
so a model logged to MLflow loads where Hydra is not installed.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from eanet.config import ConfigError

# What a failed import says about where the module must be.
WHERE_MODULES_ARE_FOUND = ("the module must be importable: on PYTHONPATH (e.g. "
                           "PYTHONPATH=/path/to/folder/holding/it) or installed (pip install -e .)")


class PluginError(ConfigError):
    """An import path that names nothing importable; the message names the setting."""


def import_object(path: str, setting: str) -> Any:
    """The object `path` names (`"package.module.name"`), imported; `setting` is the config key
    that named it, for the error (PluginError) when it cannot be found."""
    module_name, _, name = str(path).rpartition(".")
    if not module_name or not name:
        raise PluginError(f"Expected {setting} to be an import path, package.module.name. "
                          f"Received: {setting}={path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        missing = getattr(error, "name", None) or ""
        if missing and not (module_name == missing or module_name.startswith(missing + ".")):
            raise  # the module was found, but something it imports was not: its own error
        raise PluginError(f"Cannot import {module_name!r} named by {setting}={path}: "
                          f"{WHERE_MODULES_ARE_FOUND}") from None
    try:
        return getattr(module, name)
    except AttributeError:
        where = getattr(module, "__file__", None)
        raise PluginError(f"{setting}={path}: module {module_name!r}"
                          f"{f' ({where})' if where else ''} has no {name!r}") from None


def instantiate(spec: Mapping[str, Any], setting: str, **kwargs: Any) -> Any:
    """`spec["_target_"](**rest of spec, **kwargs)`: what a `{_target_: …, <arguments>}` node of
    the config builds. The arguments are passed as they are (no nested `_target_`)."""
    arguments = dict(spec)
    target = arguments.pop("_target_", None)
    if not isinstance(target, str):
        raise PluginError(f"Expected {setting}._target_: the import path of what to build "
                          f"(my.module.MyClass). Received: {setting}={dict(spec)}")
    return import_object(target, f"{setting}._target_")(**arguments, **kwargs)
