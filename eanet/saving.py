"""eanet's Keras classes made known to Keras wherever eanet is imported, so that a saved model
loads: `import eanet` then `keras.saving.load_model("model.keras", safe_mode=True)`.

Keras finds a saved model's custom classes (layers, the optimizer) only by the names
`@keras.saving.register_keras_serializable` gave them ("eanet>PatchExtract", "eanet>FusedAdamW"),
and a class is registered only once its module has run. Importing those modules means importing
Keras and its backend, which `import eanet` must not do: config validation happens before Keras
loads (eanet.run). So `register_keras_objects` imports them as soon as Keras is imported: at once
if it already is, else right after the `import keras` that comes later, whoever makes it (the
user, MLflow's Keras flavor, eanet's own modules). When that `import keras` is made by an eanet
module half-way through its own import (layers.py's first lines), that module finishes first:
its classes cannot be imported half-defined.
"""
from __future__ import annotations

import importlib
import importlib.abc
import sys
import threading

# The modules that define eanet's serializable Keras objects (layers, optimizers).
KERAS_OBJECT_MODULES = ("eanet.models.kernels", "eanet.models.layers",
                        "eanet.training.optimization")


def register_keras_objects() -> None:
    """Register eanet's Keras classes now if Keras is imported, else once it is."""
    if "keras" in sys.modules:
        for module in KERAS_OBJECT_MODULES:
            importlib.import_module(module)
    elif not any(isinstance(finder, _RegisterWhenKerasLoads) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterWhenKerasLoads())


class _RegisterWhenKerasLoads(importlib.abc.MetaPathFinder):
    """Finds nothing itself: hands on the specs of `keras` and of eanet's modules, as the other
    finders find them, with loaders that report back once the module has run. When Keras is
    loaded and this thread is inside no eanet module's import, it registers eanet's classes and
    leaves `sys.meta_path`."""

    def __init__(self):
        self.importing = threading.local()  # .depth: eanet modules this thread is running

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras" and not fullname.startswith("eanet."):
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if finder is not self and find else None
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _ReportingLoader(spec.loader, self)
                return spec
        return None

    def running(self, step: int) -> None:
        self.importing.depth = getattr(self.importing, "depth", 0) + step

    def ran(self) -> None:
        if "keras" in sys.modules and getattr(self.importing, "depth", 0) == 0:
            try:
                sys.meta_path.remove(self)
            except ValueError:  # gone already: another thread registers
                return
            register_keras_objects()


class _ReportingLoader(importlib.abc.Loader):
    """A module's own loader; the finder is told when an eanet module starts and ends."""

    def __init__(self, loader: importlib.abc.Loader, finder: _RegisterWhenKerasLoads):
        self.loader = loader
        self.finder = finder

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        step = 0 if module.__name__ == "keras" else 1
        self.finder.running(step)
        try:
            self.loader.exec_module(module)
        finally:
            self.finder.running(-step)
            module.__loader__ = module.__spec__.loader = self.loader  # its own from now on
        self.finder.ran()

    def __getattr__(self, name):  # the rest of the loader protocol (resources, code, …)
        return getattr(self.loader, name)
