"""Which Keras backend a run uses, known without importing Keras (config validation is Keras-free).

Keras reads its backend once, when first imported: the `KERAS_BACKEND` environment variable,
else `"backend"` in `$KERAS_HOME/keras.json` (default `~/.keras/keras.json`), else TensorFlow.
`configured_backend` answers the same question the same way. `choose_backend` (run when eanet is
imported) covers a machine that has JAX but no TensorFlow — a GPU node with a JAX+CUDA image is
the common case — where Keras' default would fail at `import keras`: unless KERAS_BACKEND says
otherwise, eanet then picks JAX.

What differs by backend: TensorFlow feeds training through tf.data and has the fused CPU kernels
(eanet.models.speed decides where they run) and `trainer.distribution=mirrored`; any other
backend feeds numpy batches (eanet.array_batches) and uses Keras' own ops, with one device per job.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Optional

DEFAULT_BACKEND = "tensorflow"  # Keras' own default


def _keras_json_backend() -> Optional[str]:
    home = os.environ.get("KERAS_HOME") or str(Path.home() / ".keras")
    try:
        return json.loads((Path(home) / "keras.json").read_text()).get("backend")
    except (OSError, ValueError, AttributeError):
        return None


def configured_backend() -> str:
    """The backend `import keras` will load in this process (as Keras decides it)."""
    return os.environ.get("KERAS_BACKEND") or _keras_json_backend() or DEFAULT_BACKEND


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def choose_backend() -> None:
    """Where TensorFlow is not installed but JAX is, and KERAS_BACKEND does not say otherwise,
    use JAX (before Keras loads). keras.json's `"backend": "tensorflow"` does not count as a
    choice: Keras writes it there by itself on its first import."""
    if os.environ.get("KERAS_BACKEND") or configured_backend() != "tensorflow":
        return
    if not installed("tensorflow") and installed("jax"):
        os.environ["KERAS_BACKEND"] = "jax"
