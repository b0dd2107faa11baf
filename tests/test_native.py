"""eanet.models.native: the dropout-mask kernels draw TensorFlow's random stream bit for bit;
where the fused kernels cannot be built, a run goes on with TensorFlow's ops and says why
(docs/troubleshooting.md)."""
from __future__ import annotations

import logging

import keras
import numpy as np
import pytest
from conftest import require_fused_kernels

from eanet.models import native
from eanet.models.kernels import FastDropout, keep_mask_16bit


def _both_ways(monkeypatch, function):
    """function() with eanet's fused kernels, then with TensorFlow's ops (EANET_FUSED_KERNELS=0)."""
    monkeypatch.delenv(native.SWITCH_ENV, raising=False)
    require_fused_kernels()
    fused = function()
    monkeypatch.setenv(native.SWITCH_ENV, "0")
    return fused, function()


# Sizes around the kernel's chunk of 128 elements (16 Philox blocks), odd ones (half of the
# last 32-bit word unused), and an attention-sized one spread over threads.
@pytest.mark.parametrize("shape", [(1,), (3, 5), (127,), (2, 64), (129,), (7, 11, 13),
                                   (16, 256, 256)])
@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_fused_keep_mask_is_tensorflows_bit_for_bit(monkeypatch, shape, rate):
    import tensorflow as tf

    def mask():
        generator = keras.random.SeedGenerator(11)
        masks = [keep_mask_16bit(tf.constant(shape), rate, generator, tf.float32)[0].numpy()
                 for _ in range(2)]  # two draws: the generator's state moves on
        in_graph = keras.random.SeedGenerator(12)
        return tf.function(lambda: keep_mask_16bit(
            tf.constant(shape), rate, in_graph, tf.float32)[0])().numpy(), *masks

    (fused, *fused_draws), (reference, *reference_draws) = _both_ways(monkeypatch, mask)
    assert fused.dtype == bool and fused.shape == shape
    np.testing.assert_array_equal(fused, reference)
    for got, want in zip(fused_draws, reference_draws):
        np.testing.assert_array_equal(got, want)
    if fused.size > 10_000:
        assert abs(1 - fused.mean() - rate) < 0.01
        assert not np.array_equal(fused_draws[0], fused_draws[1])


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
def test_fused_dropout_gives_tensorflows_values_and_gradient(monkeypatch, graph):
    """FastDropout's one-pass op (mask drawn in the op and again for the gradient) equals its
    op-by-op TensorFlow form: the same kept elements, the same scaled values and gradient."""
    import tensorflow as tf

    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(0, 1, (4, 33, 17)), tf.float32)
    upstream = tf.constant(rng.normal(0, 1, (4, 33, 17)), tf.float32)

    def run():
        layer = FastDropout(0.3, seed=5)

        def step():
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
            return y, tape.gradient(y, x, upstream)

        return [t.numpy() for t in (tf.function(step) if graph else step)()]

    (y, dx), (want_y, want_dx) = _both_ways(monkeypatch, run)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(dx, want_dx)
    kept = want_y != 0
    assert 0.6 < kept.mean() < 0.8
    np.testing.assert_array_equal(dx[~kept], 0)
    np.testing.assert_allclose(dx[kept], upstream.numpy()[kept] * 65536 / (65536 - 19661), rtol=1e-6)


def test_fused_dropout_ops_step_aside_under_xla(monkeypatch):
    import tensorflow as tf

    monkeypatch.delenv(native.SWITCH_ENV, raising=False)
    require_fused_kernels()
    x = tf.ones((8, 16))
    layer = FastDropout(0.2, seed=1)

    def draw(x):
        return layer(x, training=True)

    def op_types(function):
        return {op.type for op in function.get_concrete_function(x).graph.get_operations()}

    assert "EanetDropout16" in op_types(tf.function(draw))
    xla = op_types(tf.function(draw, jit_compile=True))
    assert not {"EanetDropout16", "EanetKeepMask16"} & xla


def test_without_a_compiler_the_kernels_are_skipped_with_a_warning(tmp_path, monkeypatch, caplog):
    import tensorflow as tf

    monkeypatch.setattr(native, "_library", {})  # this process' loaded library, forgotten
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(native.SWITCH_ENV, raising=False)
    with caplog.at_level(logging.WARNING, logger=native.__name__):
        assert native.fused_ops_for(tf.float32) is None
    assert "not available" in caplog.text and "no-such-compiler" in caplog.text
    assert not list((tmp_path / "cache").glob("*.so"))


def test_the_switch_turns_them_off_and_bfloat16_never_uses_them(monkeypatch):
    import tensorflow as tf

    monkeypatch.setenv(native.SWITCH_ENV, "0")
    assert native.fused_ops() is None
    monkeypatch.delenv(native.SWITCH_ENV)
    assert native.fused_ops_for(tf.bfloat16) is None


@pytest.mark.parametrize("attention", ["self", "external"])
def test_whole_attention_ops_at_block_edges_match_tensorflow_and_repeat_bitwise(monkeypatch,
                                                                                 attention):
    """The fused whole-attention ops (csrc/fused_attention.cc) against TensorFlow's ops where
    their blocking has edges: self-attention rows per head not a multiple of its 64-row blocks
    (150 = 64 + 64 + 22, 3 heads), a batch (11) that the 8 partial weight-gradient sums split unevenly; with
    dropout. Outputs and every gradient agree, and a second run is bitwise the same."""
    import tensorflow as tf

    from eanet.models.kernels import external_attention_context, self_attention_context

    rng = np.random.default_rng(9)
    if attention == "self":
        shapes = [(11, 150, 3, 8), (11, 150, 8), (11, 150, 9)]
        out_shape = (11, 150, 3, 9)

        def attend(inputs, generator):
            return self_attention_context(*inputs, 0.2, generator)
    else:
        shapes = [(11, 50, 6), (6, 3 * 7), (3 * 7,), (3 * 7, 6)]
        out_shape = (11, 50, 6)

        def attend(inputs, generator):
            return external_attention_context(*inputs, 3, 1e-9, 0.2, generator)
    inputs = [tf.constant(rng.normal(0, 1, shape), tf.float32) for shape in shapes]
    upstream = tf.constant(rng.normal(0, 1, out_shape), tf.float32)

    def run_twice():
        @tf.function  # traced anew for each way: the switch is read while tracing
        def step(generator):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                out = attend(inputs, generator)
            return [out, *tape.gradient(out, inputs, upstream)]

        first, second = ([t.numpy() for t in step(keras.random.SeedGenerator(4))]
                         for _ in range(2))
        for a, b in zip(first, second):
            np.testing.assert_array_equal(a, b)
        return first

    fused, reference = _both_ways(monkeypatch, run_twice)
    for i, (got, want) in enumerate(zip(fused, reference)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        if not (attention == "external" and i == 3):  # the score bias' gradient is 0
            assert np.abs(want).max() > 1e-3


@pytest.mark.parametrize("shape", [(40, 33, 64), (3, 10)], ids=["blocks", "odd-width"])
def test_fused_layer_norm_matches_tensorflows_ops(monkeypatch, shape):
    """csrc/layer_norm.cc against layer_norm_last_axis' TensorFlow ops: output, dx and the
    dγ, dβ sums over all rows (split into fixed partial sums: bitwise the same on a rerun)."""
    import tensorflow as tf

    from eanet.models.kernels import layer_norm_last_axis

    rng = np.random.default_rng(2)
    x, upstream = (tf.constant(rng.normal(1, 2, shape), tf.float32) for _ in range(2))
    gamma, beta = (tf.constant(rng.normal(0, 1, shape[-1:]), tf.float32) for _ in range(2))

    def run():
        @tf.function
        def step():
            with tf.GradientTape() as tape:
                tape.watch([x, gamma, beta])
                y = layer_norm_last_axis(x, gamma, beta, 1e-5)
            return [y, *tape.gradient(y, [x, gamma, beta], upstream)]

        first, second = ([t.numpy() for t in step()] for _ in range(2))
        for a, b in zip(first, second):
            np.testing.assert_array_equal(a, b)
        return first

    fused, reference = _both_ways(monkeypatch, run)
    for name, got, want in zip(["y", "dx", "dgamma", "dbeta"], fused, reference):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=name)
        assert np.abs(want).max() > 1e-2, name


@pytest.mark.parametrize("training", [True, False])
def test_fused_gelu_then_dropout_matches_its_two_steps(monkeypatch, training):
    """csrc/gelu_dropout.cc against gelu_tanh then FastDropout (TensorFlow's ops): the same
    dropped elements (the same stream), the same values and gradient to float rounding."""
    import tensorflow as tf

    from eanet.models.kernels import gelu_then_dropout

    rng = np.random.default_rng(6)
    x, upstream = (tf.constant(rng.normal(0, 2, (6, 33, 70)), tf.float32) for _ in range(2))

    def run():
        dropout = FastDropout(0.25, seed=8)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = gelu_then_dropout(x, dropout, training)
            return [y, tape.gradient(y, x, upstream)]

        return [t.numpy() for t in step()]

    (y, dx), (want_y, want_dx) = _both_ways(monkeypatch, run)
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
