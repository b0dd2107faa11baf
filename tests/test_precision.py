"""trainer.matmul_precision: validated at start-up, applied once per TensorFlow process, and on a
CPU with bfloat16 matmul units it really rounds the float32 matmuls' inputs."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import compose_config
from eanet.config import ConfigError, validate
from eanet.training import precision

ROOT = Path(__file__).resolve().parents[1]


def test_an_unknown_matmul_precision_is_refused_at_start_up():
    with pytest.raises(ConfigError, match=r"trainer.matmul_precision='tf32'.*bfloat16, default"):
        validate(compose_config(["trainer.matmul_precision=tf32"]))


def test_a_second_value_in_one_tensorflow_process_is_refused(monkeypatch):
    monkeypatch.setattr(precision, "_tensorflow_matmul_precision", "bfloat16")
    assert precision.check_matmul_precision("bfloat16", "tensorflow") is None
    problem = precision.check_matmul_precision("default", "tensorflow")
    assert "once per process" in problem and "hydra/launcher=joblib" in problem
    assert precision.check_matmul_precision("default", "jax") is None  # JAX's can change
    with pytest.raises(ConfigError, match="trainer.matmul_precision=default"):
        validate(compose_config())


def test_the_environment_variable_may_not_contradict_the_setting(monkeypatch):
    monkeypatch.setattr(precision, "_tensorflow_matmul_precision", None)
    monkeypatch.setenv(precision.TF_FPMATH_ENV, "BF16")
    assert precision.check_matmul_precision("bfloat16", "tensorflow") is None
    assert precision.TF_FPMATH_ENV in precision.check_matmul_precision("default", "tensorflow")


def _has_bfloat16_matmul_units() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


@pytest.mark.skipif(not _has_bfloat16_matmul_units(),
                    reason="needs a CPU with AMX or AVX512-BF16 (elsewhere oneDNN keeps float32)")
@pytest.mark.parametrize("value", ["default", "bfloat16"])
def test_bfloat16_matmul_precision_rounds_the_inputs_of_float32_matmuls(value):
    # A fresh process: TensorFlow reads the switch once, at its first oneDNN matmul.
    script = textwrap.dedent(f"""
        import numpy as np
        from eanet.training.precision import set_matmul_precision
        import keras, tensorflow as tf
        set_matmul_precision({value!r})
        rng = np.random.default_rng(0)
        a = rng.standard_normal((8, 64, 64)).astype("float32")
        b = rng.standard_normal((8, 64, 64)).astype("float32")
        got = tf.matmul(a, b).numpy()
        exact = np.matmul(a.astype("float64"), b.astype("float64"))
        rounded = lambda x: tf.cast(tf.cast(x, tf.bfloat16), tf.float32).numpy().astype("float64")
        bf16 = np.matmul(rounded(a), rounded(b))
        print(got.dtype, np.abs(got - exact).max(), np.abs(got - bf16).max())
    """)
    env = {k: v for k, v in os.environ.items() if k != precision.TF_FPMATH_ENV}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                         check=True, env={**env, "TF_CPP_MIN_LOG_LEVEL": "2",
                                          "KERAS_BACKEND": "tensorflow"})
    dtype, to_exact, to_bf16 = out.stdout.split()
    assert dtype == "float32"
    if value == "bfloat16":  # float32 accumulation of bfloat16-rounded inputs
        assert float(to_bf16) < 1e-3 < float(to_exact)
    else:
        assert float(to_exact) < 1e-3 < float(to_bf16)
