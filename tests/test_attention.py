"""Every path of each attention (eanet.models.attention, chosen by eanet.models.speed) computes
its reference formula: the same outputs and the same gradient for the input and for every
weight. Runs on the backend Keras loads (`make test`: TensorFlow; `make test-jax`: JAX, where the
fused paths, C++ TensorFlow ops, are absent).
"""
from __future__ import annotations

import keras
import numpy as np
import pytest

from eanet.models.attention import (EXTERNAL_ATTENTION, SELF_ATTENTION, ExternalAttentionWeights,
                                    SelfAttentionWeights, external_attention, self_attention)
from eanet.models.layers import ExternalAttention, SelfAttention


def available(paths):
    """The paths of this backend: the fused ones only on TensorFlow (eanet.models.kernels)."""
    return [name for name in paths if keras.backend.backend() == "tensorflow" or name != "fused"]


def require_path(path):
    if path == "fused":
        from conftest import require_fused_kernels

        require_fused_kernels()


def value_and_gradients(function, inputs, upstream):
    """function(*inputs) and the gradient of <function(*inputs), upstream> for every input."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        inputs = [tf.constant(value) for value in inputs]
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            out = function(*inputs)
        grads = tape.gradient(out, inputs, output_gradients=tf.constant(upstream))
        return [out.numpy()] + [np.asarray(g) for g in grads]
    import jax

    out, pullback = jax.vjp(function, *inputs)
    return [np.asarray(out)] + [np.asarray(g) for g in pullback(upstream)]


def assert_same(received, expected, names):
    for name, got, want in zip(names, received, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4,
                                   atol=1e-5 * max(1.0, np.abs(want).max()), err_msg=name)


def random_weights(fields_and_shapes, rng):
    return [rng.normal(0, 0.5, shape).astype("float32") for shape in fields_and_shapes]


@pytest.mark.parametrize("path", available(EXTERNAL_ATTENTION))
def test_external_attention_paths_equal_the_reference(path):
    require_path(path)
    heads, head_dim, slots, dim, patches = 6, 4, 5, 8, 7  # G, d, S, D, N
    rng = np.random.default_rng(0)
    x, upstream = (rng.normal(0, 1, (2, patches, dim)).astype("float32") for _ in range(2))
    weights = random_weights([(dim, heads * head_dim), (heads * head_dim,), (head_dim, slots),
                              (slots,), (slots, head_dim), (head_dim,), (heads * head_dim, dim),
                              (dim,)], rng)
    dropout = keras.layers.Dropout(0.2)  # inference: identity for every implementation

    def attend(name):
        return lambda x, *w: external_attention(
            x, ExternalAttentionWeights(*w), heads=heads, epsilon=1e-9, dropout=dropout,
            training=False, path=name)

    expected = value_and_gradients(attend("reference"), [x, *weights], upstream)
    received = value_and_gradients(attend(path), [x, *weights], upstream)
    names = ["output", "dx", *(f"d{field}" for field in ExternalAttentionWeights._fields)]
    assert_same(received, expected, names)
    # Gradients far from trivial, except those of the biases the softmax over N cancels.
    cancelled = {"dinput_bias", "dkey_bias"}
    for name, want in zip(names, expected):
        assert (np.abs(want).max() > 1e-3) != (name in cancelled), name


@pytest.mark.parametrize("path", available(SELF_ATTENTION))
def test_self_attention_paths_equal_the_reference(path):
    require_path(path)
    heads, key_dim, dim, patches = 3, 4, 6, 5  # H, K, D, N
    rng = np.random.default_rng(1)
    x, upstream = (rng.normal(0, 1, (2, patches, dim)).astype("float32") for _ in range(2))
    weights = random_weights([(dim, heads, key_dim), (heads, key_dim)] * 3
                             + [(heads, key_dim, dim), (dim,)], rng)
    dropout = keras.layers.Dropout(0.2)

    def attend(name):
        return lambda x, *w: self_attention(x, SelfAttentionWeights(*w), dropout=dropout,
                                            training=False, path=name)

    expected = value_and_gradients(attend("reference"), [x, *weights], upstream)
    received = value_and_gradients(attend(path), [x, *weights], upstream)
    names = ["output", "dx", *(f"d{field}" for field in SelfAttentionWeights._fields)]
    assert_same(received, expected, names)
    for name, want in zip(names, expected):  # b_k: the softmax over the keys cancels it
        assert (np.abs(want).max() > 1e-3) != (name == "dkey_bias"), name


def test_self_attention_reference_is_keras_multi_head_attention():
    """The reference formula is the function of the seed's layer, Keras' MultiHeadAttention,
    on the same variables; in training too, given the same dropout layer (the same mask)."""
    layer = SelfAttention(embedding_dim=8, num_heads=2, attention_dropout=0.3,
                          implementation="reference")
    x = np.random.default_rng(2).normal(0, 1, (2, 5, 8)).astype("float32")
    layer(x)
    for weight in layer.weights:  # non-zero biases
        weight.assign(np.random.default_rng(3).normal(0, 0.5, weight.shape).astype("float32"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)),
                               keras.ops.convert_to_numpy(layer.attention(x, x)),
                               rtol=1e-5, atol=1e-6)
    mha = layer.attention
    outputs = []
    for compute in (lambda: mha(x, x, training=True),
                    lambda: self_attention(x, layer.attention_weights(), training=True,
                                           dropout=mha._dropout_layer, path="reference")):
        mha._dropout_layer.seed_generator.state.assign(np.array([5, 0]))  # the same mask
        outputs.append(keras.ops.convert_to_numpy(compute()))
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(outputs[0], keras.ops.convert_to_numpy(layer(x)))  # dropout acted


def test_external_attention_reference_double_normalises():
    """The attention map A of the reference: a distribution over the S memory slots for each
    patch and head (the L1 step, last), which it is not over the N patches (the softmax's
    normalisation, first, is undone by the L1 step)."""
    layer = ExternalAttention(embedding_dim=16, num_heads=2, dim_coefficient=2,
                              implementation="reference")
    x = np.random.default_rng(1).normal(size=(3, 9, 16)).astype("float32")
    layer(x)  # build
    maps = []

    def keep_map(attention, training=None):
        maps.append(keras.ops.convert_to_numpy(attention))
        return attention

    external_attention(x, layer.attention_weights(), heads=layer.total_heads, epsilon=1e-9,
                       dropout=keep_map, path="reference")
    [attention] = maps
    assert attention.shape == (3, 9, layer.total_heads, layer.memory_size)  # (B, N, G, S)
    assert attention.min() >= 0
    np.testing.assert_allclose(attention.sum(axis=-1), 1.0, rtol=1e-5)
    assert not np.allclose(attention.sum(axis=1), 1.0)


def test_unknown_implementation_is_refused_with_the_valid_values():
    with pytest.raises(ValueError, match="Unknown implementation 'fast'. Valid values: auto, reference"):
        ExternalAttention(16, 2, 2, implementation="fast")
    with pytest.raises(ValueError, match="Valid values: auto, reference"):
        SelfAttention(16, 2, implementation="folded")  # a speed path is chosen by auto, not by name
    with pytest.raises(ValueError, match="Unknown attention path 'folded'. Valid values: "
                                         "reference, fused"):
        self_attention(np.zeros((1, 2, 4), "float32"), None, dropout=None, path="folded")
