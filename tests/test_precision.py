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
from eanet.config import ConfigError
from eanet.validation import validate
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


@pytest.mark.parametrize("value", ["default", "bfloat16"])
def test_the_matmul_precision_a_run_reports_is_what_its_matmuls_do(value):
    """Green on every CPU kind: the probe's answer (what the run is tagged with) is checked
    against an independent measurement, random plain and batched matmuls compared with exact
    and with bfloat16-rounded inputs. Where bfloat16 is asked for but the CPU has no bfloat16
    matmul kernels (AVX2-only CPUs, AMD EPYCs that list avx512_bf16 but get float32 from
    oneDNN), one warning line says so; where it works (AMX Xeons) the matmuls really round."""
    # A fresh process: TensorFlow reads the switch once, at its first oneDNN matmul.
    script = textwrap.dedent(f"""
        import logging
        import numpy as np
        from eanet.training.precision import set_matmul_precision
        import keras, tensorflow as tf
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        print(set_matmul_precision({value!r}))
        rng = np.random.default_rng(0)
        rounded = lambda x: tf.cast(tf.cast(x, tf.bfloat16), tf.float32).numpy().astype("float64")
        for shape in [(64, 64), (8, 64, 64)]:
            a, b = (rng.standard_normal(shape).astype("float32") for _ in range(2))
            got = tf.matmul(a, b).numpy()
            exact = np.matmul(a.astype("float64"), b.astype("float64"))
            bf16 = np.matmul(rounded(a), rounded(b))
            print(got.dtype, np.abs(got - exact).max(), np.abs(got - bf16).max())
    """)
    env = {k: v for k, v in os.environ.items() if k != precision.TF_FPMATH_ENV}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                         check=True, env={**env, "TF_CPP_MIN_LOG_LEVEL": "2",
                                          "KERAS_BACKEND": "tensorflow"})
    effective, *measured = out.stdout.strip().splitlines()
    # "bfloat16", or one answer per kind where they differ: "float32 (2-D) / bfloat16 (batched)"
    parts = [part.split(" (")[0] for part in effective.split(" / ")]
    answers = parts if len(parts) == 2 else parts * 2  # (2-D, batched)
    for answer, line in zip(answers, measured):
        dtype, to_exact, to_bf16 = line.split()
        assert dtype == "float32"
        if answer == "bfloat16":  # float32 accumulation of bfloat16-rounded inputs
            assert value == "bfloat16"
            assert float(to_bf16) < 1e-3 < float(to_exact)
        else:
            assert answer == "float32"
            assert float(to_exact) < 1e-3 < float(to_bf16)
    warnings = [line for line in out.stderr.splitlines() if "has no effect" in line]
    assert len(warnings) == (1 if value == "bfloat16" and effective != "bfloat16" else 0)
    if warnings:
        assert f"eanet.matmul_precision.effective={effective}" in warnings[0]


def test_the_probe_names_each_rounding_of_its_inputs():
    """The probe's three outcomes are the exact float32 sums of its rounded inputs."""
    import numpy as np

    entry = np.float32(precision.PROBE_ENTRY)
    assert float(entry) == precision.PROBE_ENTRY  # exact in float32
    for mantissa_bits, name in [(23, "float32"), (10, "tensorfloat32"), (7, "bfloat16")]:
        step = 2.0 ** -mantissa_bits  # entry is in [1, 2): its rounding to that many bits
        rounded = np.float32(np.round(precision.PROBE_ENTRY / step) * step)
        total = np.sum(np.full(precision.PROBE_SIZE, rounded, np.float32), dtype=np.float32)
        assert precision.PROBE_RESULTS[float(total)] == name
