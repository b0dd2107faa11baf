"""eanet's models compute the seed's function: same weights in, same outputs (and gradients) out.

The seed (../shared/bench/seed_reference.py, the Keras example's model) is the reference. Its
weights are copied into eanet's model in order; shapes must match one to one, which also pins
the parameter counts and the weight order. Inference mode, because dropout and augmentation
draw different random numbers in the two implementations.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from eanet.config import AugmentationConfig, ModelConfig
from eanet.models.model import build_augmentation, build_model

ROOT = Path(__file__).resolve().parents[1]
SEED_REFERENCE = ROOT.parent / "shared" / "bench" / "seed_reference.py"
SEED_PARAMS = {"external": 361_380, "self": 623_268}


@pytest.fixture(scope="module")
def seed_reference():
    if not SEED_REFERENCE.is_file():
        pytest.skip(f"the seed implementation is not at {SEED_REFERENCE}; equivalence needs it")
    spec = importlib.util.spec_from_file_location("seed_reference", SEED_REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seed_and_eanet(seed_reference, attention: str):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 32, 32, 3)).astype("float32")
    keras.utils.set_random_seed(0)
    seed = seed_reference.get_model(f"{attention}_attention", x_adapt=images)
    normalization = seed.get_layer("data_augmentation").layers[0]
    mean = np.asarray(normalization.mean).reshape(-1).tolist()
    variance = np.asarray(normalization.variance).reshape(-1).tolist()
    ours = build_model(ModelConfig(attention=attention), 32, 100,
                       build_augmentation(AugmentationConfig(), mean, variance, seed=0))
    # Give the seed non-trivial weights everywhere (biases start at zero), then copy them over.
    for weight in seed.trainable_weights:
        weight.assign(rng.normal(0, 0.2, weight.shape).astype("float32"))
    assert [tuple(w.shape) for w in ours.trainable_weights] == \
        [tuple(w.shape) for w in seed.trainable_weights]
    for ours_weight, seed_weight in zip(ours.trainable_weights, seed.trainable_weights):
        ours_weight.assign(seed_weight)
    return seed, ours, images


@pytest.mark.parametrize("attention", ["external", "self"])
def test_same_parameters_and_outputs_as_the_seed(seed_reference, attention):
    seed, ours, images = seed_and_eanet(seed_reference, attention)
    trainable = sum(int(np.prod(w.shape)) for w in ours.trainable_weights)
    assert trainable == SEED_PARAMS[attention]

    expected = keras.ops.convert_to_numpy(seed(images, training=False))
    received = keras.ops.convert_to_numpy(ours(images, training=False))
    assert received.shape == (8, 100)
    np.testing.assert_allclose(received, expected, rtol=1e-4, atol=1e-6)
    assert not np.allclose(expected, expected[:1])  # the images are told apart, not a constant


@pytest.mark.parametrize("attention", ["external", "self"])
def test_same_gradients_as_the_seed(seed_reference, attention):
    """The folded projections (EANet) and the fused QKV projection (ViT) train the seed's
    variables exactly as the seed's graph would."""
    seed, ours, images = seed_and_eanet(seed_reference, attention)
    labels = keras.utils.to_categorical(np.arange(8) % 100, 100)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)

    def gradients(model):
        with tf.GradientTape() as tape:
            value = loss(labels, model(images, training=False))
        return [tf.convert_to_tensor(g).numpy()  # the embedding's gradient is IndexedSlices
                for g in tape.gradient(value, model.trainable_weights)]

    for received, expected in zip(gradients(ours), gradients(seed)):
        np.testing.assert_allclose(received, expected, rtol=1e-3,
                                    atol=1e-5 * max(1.0, np.abs(expected).max()))


@pytest.mark.parametrize("rate", [0.0, 0.2])
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
def test_self_attention_context_matches_op_by_op(rate, graph, attention_kernels):
    """The written-out, recomputing gradient of self-attention's scores → softmax → dropout →
    context equals TensorFlow's own gradient of the op-by-op computation with the same
    keep-mask, eagerly and in a graph (where the recomputation must survive the optimiser)."""
    from eanet.models.kernels import keep_mask_16bit, self_attention_context

    rng = np.random.default_rng(0)
    query, keys, values, upstream = (tf.constant(rng.normal(0, 1, shape), tf.float32) for shape in
                                     [(2, 5, 3, 4), (2, 5, 4), (2, 5, 6), (2, 5, 3, 6)])

    def stacked(t):  # (B, N, H, ·) → (B, H·N, ·): the heads along the rows
        return tf.reshape(tf.transpose(t, (0, 2, 1, 3)), (2, 3 * 5, -1))

    def interleaved(t):  # and back
        return tf.transpose(tf.reshape(t, (2, 3, 5, -1)), (0, 2, 1, 3))

    def op_by_op(q, k, v, generator):
        p = tf.nn.softmax(tf.matmul(stacked(q), k, transpose_b=True))
        if rate:
            keep, scale = keep_mask_16bit(tf.shape(p), rate, generator, p.dtype)
            p = tf.where(keep, p * scale, tf.zeros_like(p))
        return interleaved(tf.matmul(p, v))

    def fused(q, k, v, generator):
        return self_attention_context(q, k, v, rate, generator)

    def output_and_gradients(function):
        generator = keras.random.SeedGenerator(7)  # the same mask for both

        def run():
            with tf.GradientTape() as tape:
                tape.watch([query, keys, values])
                output = function(query, keys, values, generator)
            return output, tape.gradient(output, [query, keys, values], upstream)

        output, grads = (tf.function(run) if graph else run)()
        return [output.numpy()] + [g.numpy() for g in grads]

    expected, received = output_and_gradients(op_by_op), output_and_gradients(fused)
    for name, got, want in zip(["output", "dquery", "dkeys", "dvalues"], received, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)
        assert np.abs(want).max() > 1e-3, name  # not trivially zero
    without_dropout = interleaved(
        tf.matmul(tf.nn.softmax(tf.matmul(stacked(query), keys, transpose_b=True)), values))
    assert np.allclose(received[0], without_dropout.numpy(), atol=1e-6) == (rate == 0)


def test_self_attention_trains_like_keras_multi_head_attention():
    """Without dropout (the only random stream that differs), eanet's folded SelfAttention and
    Keras' MultiHeadAttention on the same variables follow the same training trajectory."""
    from eanet.config import OptimizerConfig, TrainerConfig
    from eanet.models.layers import SelfAttention
    from eanet.training.optimization import compile_model

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (64, 8, 8, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 4, 64), 4)
    x[y.argmax(1) == 1, :4] += 0.3  # something to learn
    cfg = ModelConfig(attention="self", embedding_dim=16, mlp_dim=16, num_blocks=2, num_heads=2,
                      attention_dropout=0.0, projection_dropout=0.0, mlp_dropout=0.0)
    losses = {}
    fast_call = SelfAttention.call
    try:
        for name in ("keras", "eanet"):
            if name == "keras":
                SelfAttention.call = lambda self, x, training=None: self.attention(x, x, training=training)
            else:
                SelfAttention.call = fast_call
            keras.utils.set_random_seed(0)
            model = build_model(cfg, 8, 4, None)
            compile_model(model, OptimizerConfig(), TrainerConfig())
            history = model.fit(x, y, epochs=4, batch_size=16, verbose=0, shuffle=False)
            losses[name] = history.history["loss"]
    finally:
        SelfAttention.call = fast_call
    np.testing.assert_allclose(losses["eanet"], losses["keras"], rtol=1e-4)
    assert losses["eanet"][-1] < losses["eanet"][0]
