"""eanet.models.native and the ops it builds: the dropout-mask kernels draw TensorFlow's random
stream bit for bit; each fused op equals its formula in TensorFlow's ops (values and gradients)
at the edges of its blocking, and repeats bitwise; zero sizes and wrong ranks never abort the
process; where the kernels cannot be built, a run goes on with Keras' ops and says why
(docs/troubleshooting.md)."""
from __future__ import annotations

import logging

import keras
import numpy as np
import pytest
from conftest import require_fused_kernels

from eanet.models import kernels, native


def reference_keep_mask(shape, rate, generator):
    """The 16-bit keep-mask in TensorFlow's ops: the uint32 words of stateless_uniform, each
    split into its two 16-bit halves, compared to the threshold."""
    import tensorflow as tf

    seed, threshold, _ = kernels.seed_threshold_scale(rate, generator)
    size = int(np.prod(shape))
    bits = tf.random.stateless_uniform(((size + 1) // 2,), seed=seed, minval=None, maxval=None,
                                       dtype=tf.uint32)
    halves = tf.reshape(tf.bitcast(bits, tf.uint16), (-1,))[:size]
    return tf.reshape(halves >= threshold, shape)


def twice_bitwise(function):
    """function()'s tensors as arrays, after checking a second call gives the same bits."""
    first, second = ([t.numpy() for t in function()] for _ in range(2))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    return first


# Sizes around the kernel's chunk of 128 elements (16 Philox blocks), odd ones (half of the
# last 32-bit word unused), and an attention-sized one spread over threads.
@pytest.mark.parametrize("shape", [(1,), (3, 5), (127,), (2, 64), (129,), (7, 11, 13),
                                   (16, 256, 256)])
@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_fused_keep_mask_is_tensorflows_bit_for_bit(shape, rate):
    import tensorflow as tf

    require_fused_kernels()

    def masks(draw):
        generator = keras.random.SeedGenerator(11)
        eager = [draw(generator).numpy() for _ in range(2)]  # the generator's state moves on
        in_graph = keras.random.SeedGenerator(12)
        return [tf.function(lambda: draw(in_graph))().numpy(), *eager]

    fused = masks(lambda g: kernels.keep_mask_16bit(tf.constant(shape), rate, g, tf.float32)[0])
    reference = masks(lambda g: reference_keep_mask(shape, rate, g))
    assert fused[0].dtype == bool and fused[0].shape == shape
    for got, want in zip(fused, reference):
        np.testing.assert_array_equal(got, want)
    if fused[1].size > 10_000:
        assert abs(1 - fused[1].mean() - rate) < 0.01
        assert not np.array_equal(fused[1], fused[2])


def test_without_a_compiler_the_kernels_are_skipped_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(native, "_library", {})  # this process' loaded library, forgotten
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger=native.__name__):
        assert native.fused_ops() is None
    assert "not available" in caplog.text and "no-such-compiler" in caplog.text
    assert not list((tmp_path / "cache").glob("*.so"))


@pytest.mark.parametrize("attention", ["self", "external"])
def test_whole_attention_ops_at_block_edges_match_the_formula_and_repeat_bitwise(attention):
    """The fused whole-attention ops (csrc/fused_attention.cc) where their blocking has edges:
    self-attention rows per head not a multiple of its 64-row blocks (150 = 64 + 64 + 22,
    3 heads), a batch (11) that the 8 partial weight-gradient sums split unevenly; with dropout.
    Outputs and every gradient agree with TensorFlow's gradient of the formula (the same mask),
    and a second run is bitwise the same."""
    import tensorflow as tf
    from test_kernels_property import (_external_attention_reference,
                                       _self_attention_reference)

    require_fused_kernels()
    rng = np.random.default_rng(9)
    if attention == "self":
        shapes, out_shape, mask_shape = ([(11, 150, 3, 8), (11, 150, 8), (11, 150, 9)],
                                         (11, 150, 3, 9), (11, 3 * 150, 150))

        def fused(inputs, generator):
            return kernels.self_attention_context(*inputs, 0.2, generator)

        def formula(inputs, keep, scale):
            return _self_attention_reference(*inputs, keep, scale)
    else:
        shapes, out_shape, mask_shape = ([(11, 50, 6), (6, 3 * 7), (3 * 7,), (3 * 7, 6)],
                                         (11, 50, 6), (11, 3 * 7, 50))

        def fused(inputs, generator):
            return kernels.external_attention_context(*inputs, 3, 1e-9, 0.2, generator)

        def formula(inputs, keep, scale):
            return _external_attention_reference(*inputs, 3, 1e-9, keep, scale)
    inputs = [tf.constant(rng.normal(0, 1, shape), tf.float32) for shape in shapes]
    upstream = tf.constant(rng.normal(0, 1, out_shape), tf.float32)

    def with_gradients(attend):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            out = attend()
        return [out, *tape.gradient(out, inputs, upstream)]

    step = tf.function(lambda generator: with_gradients(lambda: fused(inputs, generator)))
    received = twice_bitwise(lambda: step(keras.random.SeedGenerator(4)))
    keep, scale = kernels.keep_mask_16bit(tf.constant(mask_shape), 0.2,
                                          keras.random.SeedGenerator(4), tf.float32)
    expected = [t.numpy() for t in with_gradients(lambda: formula(inputs, keep, scale))]
    for i, (got, want) in enumerate(zip(received, expected)):
        if attention == "external" and i == 3:  # the score bias: exact 0 against rounding noise
            np.testing.assert_array_equal(got, 0)
            continue
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        assert np.abs(want).max() > 1e-3


@pytest.mark.parametrize("shape", [(40, 33, 64), (3, 10)], ids=["blocks", "odd-width"])
def test_fused_layer_norm_matches_keras_and_repeats_bitwise(shape):
    """csrc/layer_norm.cc against Keras' layer normalisation (TensorFlow's gradient of it):
    output, dx and the dγ, dβ sums over all rows (split into fixed partial sums: bitwise the
    same on a rerun)."""
    import tensorflow as tf

    require_fused_kernels()
    rng = np.random.default_rng(2)
    x, upstream = (tf.constant(rng.normal(1, 2, shape), tf.float32) for _ in range(2))
    gamma, beta = (tf.constant(rng.normal(0, 1, shape[-1:]), tf.float32) for _ in range(2))

    def with_gradients(norm):
        with tf.GradientTape() as tape:
            tape.watch([x, gamma, beta])
            y = norm(x, gamma, beta)
        return [y, *tape.gradient(y, [x, gamma, beta], upstream)]

    received = twice_bitwise(tf.function(
        lambda: with_gradients(lambda *a: kernels.layer_norm(*a, 1e-5))))
    expected = with_gradients(lambda x, g, b: keras.ops.layer_normalization(
        x, g, b, epsilon=1e-5))
    for name, got, want in zip(["y", "dx", "dgamma", "dbeta"], received, expected):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4, err_msg=name)
        assert np.abs(want.numpy()).max() > 1e-2, name


@pytest.mark.parametrize("training", [True, False])
def test_fused_gelu_then_dropout_matches_its_two_steps(training):
    """csrc/gelu_dropout.cc against TensorFlow's tanh GELU, then the reference mask: the same
    dropped elements, the same values and gradient to float rounding."""
    import tensorflow as tf

    require_fused_kernels()
    rng = np.random.default_rng(6)
    x, upstream = (tf.constant(rng.normal(0, 2, (6, 33, 70)), tf.float32) for _ in range(2))
    rate = 0.25 if training else 0.0
    keep = (reference_keep_mask(x.shape, rate, keras.random.SeedGenerator(8)) if training
            else tf.ones(x.shape, tf.bool))
    scale = 65536 / (65536 - 16384) if training else 1.0

    def with_gradient(gelu_dropout):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = gelu_dropout(x)
        return [y.numpy(), tape.gradient(y, x, upstream).numpy()]

    generator = keras.random.SeedGenerator(8) if training else None
    y, dx = with_gradient(tf.function(lambda x: kernels.gelu_dropout(x, rate, generator)))
    want_y, want_dx = with_gradient(lambda x: tf.where(
        keep, tf.nn.gelu(x, approximate=True) * scale, 0.0))
    # Below x = -3 GELU rounds to 0 either way (or not): it says nothing about the mask there.
    informative = x.numpy() > -3
    kept = want_y[informative] != 0
    np.testing.assert_array_equal(y[informative] != 0, kept)
    assert kept.mean() == 1.0 if not training else 0.7 < kept.mean() < 0.8
    np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-6)
    # gelu'(x) for x < -3 is 0.5 (1 + t) minus a term of the same size (t → −1): one ulp of
    # tanh there is ~1e-5 of a gradient whose scale is 1.
    np.testing.assert_allclose(dx, want_dx, rtol=1e-5, atol=5e-5)
    assert np.abs(want_dx).max() > 1


# Each case: (name, the fused computation, its formula in TensorFlow's ops), both returning
# tensors; the two must agree (empty results, zeros for sums over nothing), or the kernel fail
# with an error, never abort the process.
ZERO_SIZE_SCRIPT = r'''
import numpy as np
import keras, tensorflow as tf
from eanet.models import kernels, native

assert native.fused_ops() is not None, "no fused kernels"

def zeros(*shape):
    return tf.zeros(shape, tf.float32)

def grads(function, inputs):
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        out = function(*inputs)
    return [out, *tape.gradient(out, inputs, tf.ones_like(out))]

def generator():
    return keras.random.SeedGenerator(1)

def self_attention(b, n, h, d, m, v, rate):
    inputs = [zeros(b, n, h, d), zeros(b, m, d), zeros(b, m, v)]
    fused = lambda q, k, vv: kernels.self_attention_context(q, k, vv, rate, generator())
    formula = lambda q, k, vv: tf.einsum(
        "bhnm,bmv->bnhv", tf.nn.softmax(tf.einsum("bnhd,bmd->bhnm", q, k)), vv)
    return lambda: grads(fused, inputs), lambda: grads(formula, inputs)

def external_attention(b, n, d, groups, slots, rate):
    inputs = [zeros(b, n, d), zeros(d, groups * slots), zeros(groups * slots),
              zeros(groups * slots, d)]
    fused = lambda x, k, bias, r: kernels.external_attention_context(
        x, k, bias, r, groups, 1e-9, rate, generator())

    def formula(x, k, bias, r):
        scores = tf.reshape(tf.einsum("bnd,dk->bkn", x, k) + bias[:, None], (b, groups, slots, n))
        p = tf.nn.softmax(scores)
        q = tf.reshape(p / (1e-9 + tf.reduce_sum(p, axis=2, keepdims=True)), (b, groups * slots, n))
        return tf.einsum("bkn,kd->bnd", q, r)
    return lambda: grads(fused, inputs), lambda: grads(formula, inputs)

def elementwise(fused, formula, inputs):
    return lambda: grads(fused, inputs), lambda: grads(formula, inputs)

norm = lambda x, g, b: kernels.layer_norm(x, g, b, 1e-5)
keras_norm = lambda x, g, b: keras.ops.layer_normalization(x, g, b, epsilon=1e-5)
cases = {
    "self, no patches": self_attention(2, 0, 2, 3, 0, 3, 0.0),
    "self, no keys": self_attention(2, 5, 2, 3, 0, 3, 0.2),
    "self, empty batch": self_attention(0, 5, 2, 3, 5, 3, 0.2),
    "self, head width 0": self_attention(2, 5, 2, 0, 5, 3, 0.0),
    "external, no patches": external_attention(2, 0, 4, 2, 3, 0.2),
    "external, empty batch": external_attention(0, 5, 4, 2, 3, 0.0),
    "external, width 0": external_attention(2, 5, 0, 2, 3, 0.0),
    "external, no memory": external_attention(2, 5, 4, 2, 0, 0.0),
    "layer norm, no rows": elementwise(norm, keras_norm, [zeros(0, 4), zeros(4), zeros(4)]),
    "layer norm, width 0": elementwise(norm, keras_norm, [zeros(3, 0), zeros(0), zeros(0)]),
    "gelu dropout, empty": elementwise(lambda x: kernels.gelu_dropout(x, 0.3, generator()),
                                       lambda x: tf.nn.gelu(x, approximate=True), [zeros(4, 0)]),
    "keep mask, empty": (
        lambda: [kernels.keep_mask_16bit(tf.constant([3, 0]), 0.3, generator(), tf.float32)[0]],
        lambda: [tf.zeros((3, 0), tf.bool)]),
}

def run(case):
    try:
        return [t.numpy() for t in case()]
    except (tf.errors.OpError, ValueError) as error:
        return type(error).__name__

for name, (fused_case, formula_case) in cases.items():
    fused, reference = run(fused_case), run(formula_case)
    if not isinstance(fused, str):
        assert not isinstance(reference, str), (name, "the formula fails:", reference)
        assert len(fused) == len(reference), name
        for got, want in zip(fused, reference):
            assert got.shape == want.shape, (name, got.shape, want.shape)
            np.testing.assert_allclose(got, want, atol=1e-6, err_msg=name)
    print("ok", name, "error" if isinstance(fused, str) else "empty or equal", flush=True)

# Wrong ranks: a clear error from the shape function (graph) and the kernel (eager).
library = native.fused_ops()
keep = tf.zeros((1,), tf.bool)
wrong = {
    "self-attention query of rank 2": lambda: library.eanet_self_attention(
        zeros(2, 3), zeros(2, 3, 4), zeros(2, 3, 4), keep, use_keep=False),
    "external attention x of rank 2": lambda: library.eanet_external_attention(
        zeros(5, 4), zeros(4, 6), zeros(6, 4), keep, groups=2, epsilon=0.0, use_keep=False),
    "layer norm gamma of rank 2": lambda: library.eanet_layer_norm(
        zeros(3, 4), zeros(1, 4), zeros(4), epsilon=1e-5),
    "keep mask seed of 3": lambda: library.eanet_keep_mask16(
        tf.constant([4]), tf.constant([1, 2, 3]), threshold=10),
}
for name, call in wrong.items():
    for mode, function in (("graph", tf.function(call)), ("eager", call)):
        try:
            function()
        except (tf.errors.InvalidArgumentError, ValueError) as error:
            print("refused", mode, name, "|", str(error).splitlines()[0][:120], flush=True)
        else:
            raise AssertionError(f"{name} ({mode}) was not refused")
print("done")
'''


def test_zero_size_inputs_and_wrong_ranks_never_abort_the_process():
    """A zero-length patch, key, memory or batch axis gives what TensorFlow's ops give (empty
    results, or zeros for a sum over nothing) and a wrong rank a clear error, in the shape
    function and in the kernel, instead of an Eigen assertion that aborts the whole process
    (run in a subprocess, so an abort fails this test instead of ending pytest)."""
    import os
    import subprocess
    import sys

    require_fused_kernels()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"}
    done = subprocess.run([sys.executable, "-c", ZERO_SIZE_SCRIPT], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.count("ok ") == 12 and done.stdout.count("refused ") == 8
    assert done.stdout.rstrip().endswith("done")


def test_the_build_key_holds_the_compiler_its_flags_and_the_cpu(tmp_path, monkeypatch):
    """A library is reused only where it was built the same way for the same CPU: another
    compiler or version (`$CXX --version`), other flags, other CPU features each give another
    key, so another file (a library for a newer CPU would die of SIGILL on an older one)."""
    import tensorflow as tf

    def fake_compiler(name, version):
        path = tmp_path / name
        path.write_text(f'#!/bin/sh\n[ "$1" = --version ] && echo "{version}" && exit 0\n'
                        'echo "#define __FAKE_FEATURE__ 1"\n')
        path.chmod(0o755)
        return str(path)

    monkeypatch.setenv("CXX", fake_compiler("c++", "fake c++ 12.1"))
    key = native.build_key(tf)
    assert native.build_key(tf) == key  # stable
    assert "fake c++ 12.1" in native.compiler_identity(native.compiler())
    assert "__FAKE_FEATURE__" in native.cpu_features(native.compiler())
    monkeypatch.setenv("CXX", fake_compiler("c++", "fake c++ 12.2"))  # same path, new version
    newer = native.build_key(tf)
    assert newer != key
    monkeypatch.setattr(native, "COMPILE_FLAGS", (*native.COMPILE_FLAGS, "-ffast-math"))
    flagged = native.build_key(tf)
    assert flagged not in (key, newer)
    monkeypatch.setattr(native, "cpu_features", lambda cxx: "#define __AVX512F__ 1")
    assert native.build_key(tf) not in (key, newer, flagged)
    assert native.library_path(tf).name == f"eanet_kernels-{native.build_key(tf)}.so"


def _broken_cache(tmp_path, monkeypatch):
    """A cache folder (set as this process' cache) whose library for this key is not a library;
    returns its path and the real library this process loaded."""
    import tensorflow as tf

    require_fused_kernels()
    good = native.library_path(tf)  # the default cache's, loaded by require_fused_kernels
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "cache"))
    target = native.library_path(tf)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"\x7fELF truncated by a full disk")
    return target, good


REBUILD_SCRIPT = r"""
import shutil, sys
import tensorflow as tf
from eanet.models import native

builds = []
def build(tf, path):  # the rebuild: the real library, copied (compiling would take minutes)
    builds.append(path)
    shutil.copyfile(sys.argv[1], path)

native._build = build
library = native.fused_ops()
mask = library.eanet_keep_mask16(tf.constant([3, 5]), tf.constant([1, 2]), threshold=0)
print(len(builds), bool(tf.reduce_all(mask)))
"""


def test_a_cached_library_that_does_not_load_is_rebuilt(tmp_path, monkeypatch):
    """(In a fresh process: a second copy of the ops' library in one process would register
    every kernel twice.)"""
    import os
    import subprocess
    import sys

    target, good = _broken_cache(tmp_path, monkeypatch)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"}
    done = subprocess.run([sys.executable, "-c", REBUILD_SCRIPT, str(good)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["1", "True"]  # rebuilt once, and the rebuilt ops run
    assert target.read_bytes() == good.read_bytes()


def test_a_rebuilt_library_that_still_does_not_load_falls_back_with_one_warning(
        tmp_path, monkeypatch, caplog):
    target, _ = _broken_cache(tmp_path, monkeypatch)
    monkeypatch.setattr(native, "_library", {})  # this process' loaded library, forgotten
    builds = []
    monkeypatch.setattr(native, "_build",
                        lambda tf, path: (builds.append(path), path.write_bytes(b"still not")))
    with caplog.at_level(logging.WARNING, logger=native.__name__):
        assert native.fused_ops() is None
        assert native.fused_ops() is None  # asked again: no second attempt
    assert builds == [target]  # rebuilt once
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "not available" in warnings[0].getMessage()


def test_a_dropout_rate_that_would_keep_nothing_is_refused():
    """round(rate · 2**16) reaching 2**16 would keep no element and scale by 1 / 0."""
    from conftest import compose_config
    from eanet.config import ConfigError
    from eanet.validation import validate

    assert native.keep_threshold(1 - 2**-16) == 65535
    with pytest.raises(ValueError, match=r"rate=0.999995"):
        native.keep_threshold(0.999995)
    with pytest.raises(ConfigError, match=r"model.mlp_dropout below 1 - 2\*\*-17.*0.999995"):
        validate(compose_config(["model.mlp_dropout=0.999995"]))
    validate(compose_config(["model.mlp_dropout=0.99998"]))  # threshold 65535: one level kept
    with pytest.raises(ValueError, match="rate=0.999995"):
        kernels.seed_threshold_scale(0.999995, keras.random.SeedGenerator(1))
