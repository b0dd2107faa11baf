"""A run's numeric precision: Keras' dtype policy (`trainer.precision`) and the precision inside
float32 matrix multiplications (`trainer.matmul_precision`).

`trainer.matmul_precision=bfloat16` keeps every tensor, weight and element-wise op in float32 and
lets only the matmul kernels round their float32 inputs to bfloat16, accumulating in float32:
the CPU counterpart of TF32 on NVIDIA GPUs (PyTorch's `set_float32_matmul_precision("medium")`,
JAX's `jax_default_matmul_precision`). On a CPU with AMX, oneDNN then runs TensorFlow's float32
matmuls on those units: EANet's (B, G·S, N) score and read-out matmuls faster, and none
of the casts and slower bfloat16 element-wise ops that `mixed_bfloat16` adds (docs/performance.md
has the measurements). On other CPUs oneDNN keeps float32 kernels, also on some that list
avx512_bf16 in /proc/cpuinfo (AMD EPYCs without AMX). So `effective_matmul_precision` asks the
library instead, with a probe matmul whose result shows how its inputs were rounded;
`set_matmul_precision` warns in one line where the switch has no effect, and the run records the
answer as the tag eanet.matmul_precision.effective. It changes numerics (inputs rounded to 8
mantissa bits), so it is off by default.

TensorFlow reads its switch (`TF_SET_ONEDNN_FPMATH_MODE`) once per process, at its first oneDNN
matmul: a later job in the same process cannot change it, so `check_matmul_precision` refuses
that at start-up (run such a sweep with a process per job, e.g. `hydra/launcher=joblib`). JAX's
setting can change at any time. Nothing here imports Keras, TensorFlow or JAX at module level:
config validation calls `check_matmul_precision`.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

log = logging.getLogger(__name__)

MATMUL_PRECISIONS = ("default", "bfloat16")  # trainer.matmul_precision
TF_FPMATH_ENV = "TF_SET_ONEDNN_FPMATH_MODE"  # read by TensorFlow's oneDNN matmuls, once

# The matmul precision this process' TensorFlow was given (None: not yet given by eanet).
_tensorflow_matmul_precision: Optional[str] = None
# What the probe found TensorFlow's matmuls do (fixed for the process once one has run).
_tensorflow_effective: Optional[str] = None
_warned_about: Optional[str] = None  # one warning per process and answer, not one per sweep job

# The probe: every entry 1 + 2**-9 + 2**-12, times ones, summed over PROBE_SIZE products. Inputs
# kept in float32 give PROBE_SIZE · (1 + 2**-9 + 2**-12) exactly; rounded to TensorFloat-32
# (10 mantissa bits) they lose the 2**-12, to bfloat16 (7 bits) also the 2**-9. The sums are
# exact in a float32 accumulator, so the result names the rounding.
PROBE_SIZE = 64
PROBE_ENTRY = 1 + 2**-9 + 2**-12
PROBE_RESULTS = {PROBE_SIZE * PROBE_ENTRY: "float32", PROBE_SIZE * (1 + 2**-9): "tensorfloat32",
                 float(PROBE_SIZE): "bfloat16"}


def matmul_precision_from_environment() -> str:
    """The matmul precision TensorFlow's oneDNN reads from the environment (TF_FPMATH_ENV)."""
    return "bfloat16" if os.environ.get(TF_FPMATH_ENV, "").upper() == "BF16" else "default"


def check_matmul_precision(value: str, backend: str) -> Optional[str]:
    """Why `value` cannot take effect in this process on `backend`, or None when it can."""
    if backend != "tensorflow":
        return None
    if _tensorflow_matmul_precision is not None and value != _tensorflow_matmul_precision:
        return (f"trainer.matmul_precision={value}, but this process' TensorFlow already runs its "
                f"matmuls with trainer.matmul_precision={_tensorflow_matmul_precision} (TensorFlow "
                f"reads {TF_FPMATH_ENV} once per process). Sweep it with a process per job "
                "(hydra/launcher=joblib) or keep one value per command")
    if _tensorflow_matmul_precision is None and TF_FPMATH_ENV in os.environ \
            and matmul_precision_from_environment() != value:
        return (f"trainer.matmul_precision={value} contradicts {TF_FPMATH_ENV}="
                f"{os.environ[TF_FPMATH_ENV]} in the environment: unset the variable and use "
                "trainer.matmul_precision=default|bfloat16")
    return None


def check_sweep_matmul_precisions(values: list[str], one_process: bool,
                                  backend: str) -> Optional[str]:
    """Why a sweep whose jobs ask for these matmul precisions cannot give each its own, or None:
    TensorFlow reads the setting once per process, so jobs sharing a process (Hydra's basic
    launcher) must share it. Checked before the first job, so no job runs in vain."""
    distinct = sorted(set(values))
    if backend != "tensorflow" or not one_process or len(distinct) < 2:
        return None
    return (f"trainer.matmul_precision takes {len(distinct)} values in this sweep "
            f"({', '.join(distinct)}), but hydra/launcher=basic runs every job in this one "
            f"process, whose TensorFlow reads {TF_FPMATH_ENV} once. Sweep it with a process per "
            "job (hydra/launcher=joblib) or keep one value per command")


def _probe_matmuls() -> str:
    """How the current Keras backend's float32 matmuls round their inputs, measured: "float32",
    "tensorfloat32" or "bfloat16" for a plain (2-D) and a batched matmul alike (Dense layers
    and attention), else both answers, e.g. "float32 (2-D) / bfloat16 (batched)"."""
    import contextlib

    import keras
    from keras import ops

    scope = contextlib.nullcontext()
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        scope = tf.init_scope()  # eager, also when asked while a tf.function is traced
    with scope:
        found = []
        for shape in ((PROBE_SIZE, PROBE_SIZE), (2, PROBE_SIZE, PROBE_SIZE)):
            a = ops.full(shape, PROBE_ENTRY, dtype="float32")
            out = float(ops.convert_to_numpy(ops.max(ops.matmul(a, ops.ones(shape, "float32")))))
            found.append(PROBE_RESULTS.get(out, f"unknown ({out!r})"))
    return found[0] if found[0] == found[1] else f"{found[0]} (2-D) / {found[1]} (batched)"


def effective_matmul_precision() -> str:
    """What the current Keras backend's float32 matmuls really do (`_probe_matmuls`): on
    TensorFlow measured once per process (its oneDNN reads the switch at its first matmul, so
    the answer cannot change afterwards), on JAX each time."""
    global _tensorflow_effective
    import keras

    if keras.backend.backend() != "tensorflow":
        return _probe_matmuls()
    if _tensorflow_effective is None:
        _tensorflow_effective = _probe_matmuls()
    return _tensorflow_effective


def set_matmul_precision(value: str) -> str:
    """Give the current Keras backend's float32 matmuls `value` ("default" or "bfloat16"), and
    return what they then do (effective_matmul_precision), with a warning where `bfloat16` has
    no effect here.

    Call before the run's first matmul: TensorFlow's oneDNN reads its switch once per process.
    """
    global _tensorflow_matmul_precision
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        problem = check_matmul_precision(value, backend)
        if problem:
            raise ValueError(problem)
        if value == "bfloat16":
            os.environ[TF_FPMATH_ENV] = "BF16"
        else:
            os.environ.pop(TF_FPMATH_ENV, None)
        _tensorflow_matmul_precision = value
    elif backend == "jax":
        import jax

        # None is JAX's own default (exact float32 on CPUs, TF32-class on recent NVIDIA GPUs).
        jax.config.update("jax_default_matmul_precision",
                          "bfloat16" if value == "bfloat16" else None)
    effective = effective_matmul_precision()
    if value == "bfloat16" and effective != "bfloat16" and effective != _warned_about:
        _warn_no_effect(effective)
    return effective


def _warn_no_effect(effective: str) -> None:
    global _warned_about
    _warned_about = effective
    log.warning("trainer.matmul_precision=bfloat16 has no effect on this machine: its float32 "
                "matmuls still compute in %s (no bfloat16 matmul kernels here, e.g. no AMX); the "
                "run is tagged eanet.matmul_precision.effective=%s", effective, effective)
