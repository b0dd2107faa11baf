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
