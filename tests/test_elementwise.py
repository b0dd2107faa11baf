"""eanet.models.elementwise: layer normalisation and GELU-then-dropout by each path of
eanet.models.speed. "keras" is the Keras layer's own call; "fused" (C++ ops, TensorFlow on a
CPU) computes the same function: equal outputs and gradients, and dropout at the same rate and
expectation from its 16-bit stream (its bits against TensorFlow's: tests/test_native.py)."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import require_fused_kernels
from eanet.models.elementwise import gelu_then_dropout, layer_norm


def with_gradients(function, inputs, upstream):
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        out = function(*inputs)
    return [out.numpy(), *(g.numpy() for g in tape.gradient(out, inputs, upstream))]


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_fused_layer_norm_equals_keras_with_gradients(policy):
    require_fused_kernels()
    x = tf.constant(np.random.default_rng(4).normal(size=(2, 5, 8)) * 3 + 1, tf.float32)
    upstream = tf.constant(np.random.default_rng(5).normal(size=(2, 5, 8)), tf.float32)
    layer = keras.layers.LayerNormalization(epsilon=1e-5, dtype=policy)
    layer.build(x.shape)
    layer.gamma.assign(np.linspace(0.5, 2.0, 8).astype("float32"))
    layer.beta.assign(np.linspace(-1.0, 1.0, 8).astype("float32"))
    inputs = [x, layer.gamma.value, layer.beta.value]  # the tf.Variables
    fused = with_gradients(lambda x, *_: layer_norm(layer, x, "fused"), inputs, upstream)
    plain = with_gradients(lambda x, *_: layer_norm(layer, x, "keras"), inputs, upstream)
    tolerance = 1e-4 if policy == "float32" else 1e-2  # the output cast to bfloat16
    for name, got, want in zip(["y", "dx", "dgamma", "dbeta"], fused, plain):
        np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance, err_msg=name)


def test_fused_gelu_dropout_rate_scale_and_seed():
    """The 16-bit mask: the drop probability is the rate, kept elements are scaled so the
    expectation is kept, a generator seeded alike gives the same mask and moves on."""
    require_fused_kernels()
    x = np.full((64, 256, 16), 3.0, "float32")  # gelu(3) ≈ 2.9964
    layer = keras.layers.Dropout(0.2, seed=7)

    def drop(layer, training=True):
        return keras.ops.convert_to_numpy(gelu_then_dropout(x, layer, training, "fused"))

    y, plain = drop(layer), drop(layer, training=False)
    kept = y != 0
    assert abs(1 - kept.mean() - 0.2) < 0.005  # drop probability is the rate
    np.testing.assert_allclose(y[kept], plain[kept] * 65536 / (65536 - 13107), rtol=1e-6)
    assert abs(y.mean() / plain.mean() - 1.0) < 0.01  # expectation preserved
    np.testing.assert_array_equal(y, drop(keras.layers.Dropout(0.2, seed=7)))  # same seed
    assert not np.array_equal(kept, drop(layer) != 0)  # the generator moves on


@pytest.mark.parametrize("path", ["keras", "fused"])
def test_gelu_then_dropout_at_inference_is_kerass_tanh_gelu(path):
    if path == "fused":
        require_fused_kernels()
    x = tf.constant(np.random.default_rng(6).normal(0, 3, (64, 16)), tf.float32)
    upstream = tf.constant(np.random.default_rng(7).normal(0, 1, (64, 16)), tf.float32)
    layer = keras.layers.Dropout(0.3, seed=1)
    got = with_gradients(lambda x: gelu_then_dropout(x, layer, False, path), [x], upstream)
    want = with_gradients(lambda x: keras.ops.gelu(x, approximate=True), [x], upstream)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5)
    trained = keras.ops.convert_to_numpy(gelu_then_dropout(x, layer, True, path))
    assert 0.6 < (trained != 0).mean() < 0.8  # dropped out at the rate in training
