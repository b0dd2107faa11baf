"""eanet's Keras classes, registered with Keras by importing the modules that define them.

Keras finds a saved model's custom classes (layers, the optimizer) only by the names
`@keras.saving.register_keras_serializable` gave them ("eanet>PatchExtract", "eanet>FusedAdamW"),
and a class has its name once its module has run. So a saved model loads after this import:

    import eanet.saving
    model = keras.saving.load_model("model.keras", safe_mode=True)

It imports Keras; `import eanet` alone does not (a run's config is checked before TensorFlow
loads: eanet.run). `mlflow.pyfunc.load_model` needs neither: the logged model's loader imports
this module (eanet.tracking.keras_model).

A model whose attention is a plug-in (docs/extending.md) holds a class of the user's module too:
`plugin_modules` names such modules, `copy_plugin_sources` puts their code beside eanet's in a
logged model, and `import_modules` registers their classes the same way, by importing them.
"""
from __future__ import annotations

import importlib
import importlib.util
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import eanet.models.augmentation  # noqa: F401 - RandomRotation, RandomZoom
import eanet.models.layers  # noqa: F401 - PatchExtract, PatchEmbedding, attentions, blocks, head
import eanet.training.optimization  # noqa: F401 - FusedAdamW, FusedAdam

# The modules that define eanet's serializable Keras objects, all imported above.
KERAS_OBJECT_MODULES = ("eanet.models.augmentation", "eanet.models.layers",
                        "eanet.training.optimization")


def _modules_in(config: Any) -> set[str]:
    """Every `module` of a registered (custom) class in a serialized Keras object."""
    found = set()
    if isinstance(config, dict):
        if config.get("registered_name") and isinstance(config.get("module"), str):
            found.add(config["module"])
        for value in config.values():
            found |= _modules_in(value)
    elif isinstance(config, (list, tuple)):
        for value in config:
            found |= _modules_in(value)
    return found


def plugin_modules(model) -> list[str]:
    """The modules other than Keras' and eanet's that define a class of `model`'s (a plug-in
    attention layer's): what must be imported before the saved model loads."""
    import keras

    modules = _modules_in(keras.saving.serialize_keras_object(model))
    return sorted(m for m in modules if m.split(".")[0] not in ("keras", "eanet"))


def _installed(top_level: str) -> bool:
    """Whether `top_level` comes from an installed distribution (pip), not a folder of code."""
    return top_level in metadata.packages_distributions()


def copy_plugin_sources(modules: Iterable[str], destination: Path) -> list[str]:
    """Copy the code of each module's top-level package (or single-file module) into
    `destination`, unless it is installed (then it must be installed where the model loads);
    returns the top-level names copied."""
    copied = []
    for top in sorted({m.split(".")[0] for m in modules}):
        spec = importlib.util.find_spec(top)
        if spec is None or _installed(top):
            continue
        if spec.submodule_search_locations:  # a package: its folder
            shutil.copytree(next(iter(spec.submodule_search_locations)), destination / top,
                            ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        elif spec.origin and spec.origin.endswith(".py"):
            destination.mkdir(parents=True, exist_ok=True)
            shutil.copy2(spec.origin, destination / f"{top}.py")
        else:
            continue
        copied.append(top)
    return copied


def import_modules(modules: Iterable[str]) -> None:
    """Import each module, which registers the Keras classes it defines."""
    for module in modules:
        importlib.import_module(module)
