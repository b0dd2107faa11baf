"""The one door for speed: how each computation of a model runs, decided in one place.

A layer's `call` is the paper's formula. How each of its pieces is computed — the attention
(with its dropout), layer normalisation, the MLP's GELU (with the dropout after it) and the
optimizer's update — is `choose_speed_paths`' answer, from `model.implementation`, the Keras backend, the
device, the dtype policy and whether the step is XLA-compiled; nothing else in eanet branches on
those. `speed_paths` reads them from this process for a layer's call (eanet.models.attention,
eanet.models.elementwise, eanet.models.layers) and `run_speed_paths` for a run, which tags its
answer (eanet.implementation.*) and prints it once.

- "reference": plain Keras throughout: the formulas in keras.ops, `keras.layers.Dropout` and
  `LayerNormalization`, `ops.gelu`, `keras.optimizers.AdamW` / `Adam`.
- "auto" on TensorFlow, a CPU, outside XLA, where eanet's C++ kernels are built
  (eanet.models.native): "fused", one C++ op per direction for each attention call (scores to
  read-out, the (B, ·, N) tensors recomputed in the gradient instead of kept), for
  GELU-then-dropout and for layer normalisation, under the float32 policy (layer normalisation,
  which computes in float32, under every policy); anywhere else EANet's attention with its
  projections folded ("folded", keras.ops) and Keras' own layers. The optimizer: TensorFlow's
  fused Adam update on TensorFlow. The other dropouts are Keras' own everywhere.

docs/performance.md has what each path measured. tests/test_attention.py, test_elementwise and
test_optimization check every path against the reference, outputs and gradients.
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Callable, Optional

from eanet.models import IMPLEMENTATIONS

KERAS, FUSED = "keras", "fused"
# Each built-in attention (model.attention) in keras.ops, where its fused op does not run.
KERAS_FORMS = {"external": "folded", "self": "reference"}
PLUG_IN = "plug-in"  # an attention of the user's own (model.attention_layer): its own code


@dataclass(frozen=True)
class SpeedPaths:
    """How each piece is computed (tagged on a run as eanet.implementation.<piece>)."""
    attention: str  # reference | folded (EANet's projections folded, keras.ops) | fused | plug-in
    norm: str  # keras | fused
    gelu: str  # keras | fused (GELU and the dropout after it, one op)
    optimizer: str  # keras | fused

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        return " ".join(f"{piece}={path}" for piece, path in asdict(self).items())


def check_implementation(implementation: str) -> str:
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"Unknown implementation {implementation!r}. "
                         f"Valid values: {', '.join(IMPLEMENTATIONS)}")
    return implementation


def choose_speed_paths(implementation: str, attention: Optional[str], *, backend: str,
                       device: str, precision: str, xla: bool,
                       kernels: Callable[[], bool]) -> SpeedPaths:
    """The decision. `attention`: a key of KERAS_FORMS, else (None, a plug-in) the layer's own;
    `precision`: the dtype policy's name; `kernels()`: whether eanet's C++ kernels load here
    (asked only where they would run)."""
    check_implementation(implementation)
    own = attention in KERAS_FORMS
    if implementation == "reference":
        return SpeedPaths("reference" if own else PLUG_IN, KERAS, KERAS, KERAS)
    # The C++ ops are TensorFlow CPU kernels without an XLA lowering, written for float32.
    native = backend == "tensorflow" and device == "cpu" and not xla and kernels()
    float32 = native and precision == "float32"
    return SpeedPaths(
        attention=(FUSED if float32 else KERAS_FORMS[attention]) if own else PLUG_IN,
        norm=FUSED if native else KERAS,
        gelu=FUSED if float32 else KERAS,
        optimizer=FUSED if backend == "tensorflow" else KERAS)


def speed_paths(implementation: str, attention: Optional[str] = None,
                precision: Optional[str] = None, xla: Optional[bool] = None) -> SpeedPaths:
    """choose_speed_paths for this process: its Keras backend and device, `precision` (default:
    Keras' global dtype policy) and `xla` (default: whether an XLA-compiled function is being
    traced now)."""
    import keras

    from eanet.models import native

    backend = keras.backend.backend()
    return choose_speed_paths(
        implementation, attention, backend=backend, device=compute_device(backend),
        precision=precision or keras.config.dtype_policy().name,
        xla=inside_xla(backend) if xla is None else xla,
        kernels=lambda: native.fused_ops() is not None)


def run_speed_paths(implementation: str, attention: Optional[str], precision: str,
                    jit_compile: bool) -> SpeedPaths:
    """What a run's compiled model takes: `jit_compile` is the compiled model's own (Keras'
    resolved `model.jit_compile`), which on TensorFlow means XLA."""
    return speed_paths(implementation, attention, precision, xla=bool(jit_compile))


def image_transforms_jit(backend: str) -> bool:
    """Whether the augmentation's image transforms (RandomRotation, RandomZoom) can be
    XLA-compiled: TensorFlow's op for them has no XLA kernel; JAX's computation compiles."""
    return backend != "tensorflow"


@functools.lru_cache(maxsize=None)
def compute_device(backend: str) -> str:
    """The kind of device the backend computes on: cpu, gpu, tpu."""
    if backend == "tensorflow":
        import tensorflow as tf

        return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    if backend == "jax":
        import jax

        return jax.default_backend()
    return "cpu"


def inside_xla(backend: str) -> bool:
    """Whether TensorFlow is tracing an XLA-compiled function now (`tf.function(jit_compile=True)`,
    Keras' `jit_compile=True`). TensorFlow has no public API for it; this is the one place eanet
    reads `tensorflow.python`, checked in tests/test_speed_paths.py against the version named
    there. Should TensorFlow move it, the answer is True: the C++ ops stay out of any graph."""
    if backend != "tensorflow":
        return False
    try:
        from tensorflow.python.framework import ops as tf_ops
        from tensorflow.python.ops import control_flow_util
    except ImportError:
        return True
    graph = tf_ops.get_default_graph()
    return bool(getattr(control_flow_util, "GraphOrParentsInXlaContext", lambda g: True)(graph))
