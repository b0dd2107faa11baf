"""Layer shapes, normalisation, get_config round-trips, and .keras save/load with safe_mode=True."""
import numpy as np
import keras
import pytest

from eanet.config import AugmentationConfig, ModelConfig
from eanet.models.kernels import FastDropout, FastLayerNormalization, double_normalization
from eanet.models.layers import (ClassifierHead, ExternalAttention, PatchEmbedding, PatchExtract,
                                 SelfAttention, TransformerBlock)
from eanet.models.model import build_augmentation, build_model


def test_patch_extract_matches_keras_extract_patches():
    images = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    ours = PatchExtract(2)(images)
    reference = keras.ops.reshape(keras.ops.image.extract_patches(images, 2), (2, -1, 12))
    assert ours.shape == (2, 16, 12)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours),
                                  keras.ops.convert_to_numpy(reference))


def test_patch_embedding_shape_and_position_parameters():
    layer = PatchEmbedding(num_patches=16, embedding_dim=8)
    out = layer(np.zeros((3, 16, 12), "float32"))
    assert out.shape == (3, 16, 8)
    assert layer.count_params() == 12 * 8 + 8 + 16 * 8  # projection + bias + positions


def test_external_attention_shape_and_sizes():
    layer = ExternalAttention(embedding_dim=64, num_heads=4, dim_coefficient=4)
    out = layer(np.random.default_rng(0).random((2, 16, 64)).astype("float32"))
    assert out.shape == (2, 16, 64)
    assert (layer.total_heads, layer.head_dim, layer.memory_size) == (16, 16, 16)
    # in 64→256, M_k 16→16, M_v 16→16, out 256→64 (each with bias)
    assert layer.count_params() == (64 * 256 + 256) + (16 * 16 + 16) * 2 + (256 * 64 + 64)


def test_double_normalization_gradient_matches_op_by_op():
    import tensorflow as tf

    scores = tf.constant(np.random.default_rng(2).normal(size=(2, 3, 4, 5)) * 3, tf.float32)
    upstream = tf.constant(np.random.default_rng(3).normal(size=(2, 3, 4, 5)), tf.float32)

    def op_by_op(s):
        p = tf.nn.softmax(s, axis=-1)
        return p / (1e-9 + tf.reduce_sum(p, axis=2, keepdims=True))

    grads = []
    for normalize in (op_by_op, lambda s: double_normalization(s, 1e-9)):
        with tf.GradientTape() as tape:
            tape.watch(scores)
            out = normalize(scores)
        grads.append((out.numpy(), tape.gradient(out, scores, output_gradients=upstream).numpy()))
    np.testing.assert_allclose(grads[1][0], grads[0][0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grads[1][1], grads[0][1], rtol=1e-4, atol=1e-6)
    assert np.abs(grads[0][1]).max() > 1e-3  # the gradient is not trivially zero


@pytest.mark.parametrize("rate", [0.0, 0.2])
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
def test_external_attention_context_matches_op_by_op(rate, graph, attention_kernels):
    """The written-out, recomputing gradient of EANet's scores → double normalisation → dropout
    → read-out equals TensorFlow's own gradient of the op-by-op computation with the same
    keep-mask, eagerly and in a graph (where the recomputation must survive the optimiser)."""
    import tensorflow as tf

    from eanet.models.kernels import external_attention_context, keep_mask_16bit

    groups, slots, dim, patches = 3, 4, 5, 7
    rng = np.random.default_rng(4)
    x, kernel, bias, read, upstream = (
        tf.constant(rng.normal(0, 1, shape), tf.float32) for shape in
        [(2, patches, dim), (dim, groups * slots), (groups * slots,), (groups * slots, dim),
         (2, patches, dim)])

    def op_by_op(x, kernel, bias, read, generator):
        scores = tf.matmul(tf.transpose(kernel), tf.transpose(x, (0, 2, 1))) + bias[:, None]
        p = tf.nn.softmax(tf.reshape(scores, (2, groups, slots, patches)), axis=-1)
        q = tf.reshape(p / (1e-9 + tf.reduce_sum(p, axis=2, keepdims=True)), (2, -1, patches))
        if rate:
            keep, scale = keep_mask_16bit(tf.shape(q), rate, generator, q.dtype)
            q = tf.where(keep, q * scale, tf.zeros_like(q))
        return tf.transpose(tf.matmul(tf.transpose(read), q), (0, 2, 1))  # (2, patches, dim)

    def fused(x, kernel, bias, read, generator):
        return external_attention_context(x, kernel, bias, read, groups, 1e-9, rate, generator)

    inputs = [x, kernel, bias, read]

    def output_and_gradients(function):
        generator = keras.random.SeedGenerator(7)  # the same mask for both

        def run():
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                output = function(*inputs, generator)
            return output, tape.gradient(output, inputs, upstream)

        output, grads = (tf.function(run) if graph else run)()
        return [output.numpy()] + [g.numpy() for g in grads]

    expected, received = output_and_gradients(op_by_op), output_and_gradients(fused)
    names = ["output", "dx", "dscore_kernel", "dscore_bias", "dread_kernel"]
    for name, got, want in zip(names, received, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg=name)
        # The score bias is constant along N, which the softmax over N cancels: its gradient is
        # rounding noise around 0 both ways; every other gradient must be far from trivial.
        assert np.abs(want).max() > (0 if name == "dscore_bias" else 1e-3), name
    assert np.allclose(received[0], fused(*inputs, None).numpy() if rate == 0 else
                       op_by_op(*inputs, keras.random.SeedGenerator(8)).numpy()) == (rate == 0)


@pytest.mark.parametrize("kwargs, message", [
    ({"embedding_dim": 64, "num_heads": 5}, "divisible by num_heads"),
    ({"embedding_dim": 64, "num_heads": 4, "dim_coefficient": 3}, "divisible by dim_coefficient"),
])
def test_external_attention_rejects_impossible_sizes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ExternalAttention(**kwargs)


def _roundtrip(layer):
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    return clone


def test_get_config_roundtrips():
    _roundtrip(PatchExtract(4))
    _roundtrip(PatchEmbedding(16, 8))
    _roundtrip(ExternalAttention(32, 4, 2, 0.1, 0.2))
    _roundtrip(SelfAttention(32, 4, 0.1))
    _roundtrip(ClassifierHead(10))
    block = _roundtrip(TransformerBlock(ExternalAttention(16, 2, 2), 16, 32, 0.1))
    assert isinstance(block.attention, ExternalAttention)
    assert block.attention.dim_coefficient == 2


@pytest.mark.parametrize("attention", ["external", "self"])
def test_keras_file_roundtrip_safe_mode(tmp_path, attention):
    cfg = ModelConfig(attention=attention, embedding_dim=16, mlp_dim=16, num_blocks=2,
                      num_heads=2, dim_coefficient=2)
    augmentation = build_augmentation(AugmentationConfig(), [120.0, 110.0, 100.0],
                                      [3000.0, 2800.0, 2600.0])
    model = build_model(cfg, image_size=8, num_classes=5, augmentation=augmentation)
    images = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 3)).astype("float32")
    expected = model.predict(images, verbose=0)

    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), expected)
    assert loaded.count_params() == model.count_params()


def test_layer_normalization_matches_keras_with_gradients():
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(4).normal(size=(2, 5, 8)) * 3 + 1, tf.float32)
    upstream = tf.constant(np.random.default_rng(5).normal(size=(2, 5, 8)), tf.float32)
    ours, theirs = FastLayerNormalization(epsilon=1e-5), keras.layers.LayerNormalization(epsilon=1e-5)
    for layer in (ours, theirs):
        layer.build(x.shape)
        layer.gamma.assign(np.linspace(0.5, 2.0, 8).astype("float32"))
        layer.beta.assign(np.linspace(-1.0, 1.0, 8).astype("float32"))
    results = []
    for layer in (ours, theirs):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
        grads = tape.gradient(y, [x, layer.gamma, layer.beta], output_gradients=upstream)
        results.append([y.numpy()] + [g.numpy() for g in grads])
    for mine, reference in zip(*results):
        np.testing.assert_allclose(mine, reference, rtol=1e-4, atol=1e-5)
    assert [w.shape for w in ours.weights] == [w.shape for w in theirs.weights]


def test_dropout_rate_scale_and_seed(attention_kernels):
    x = np.ones((64, 256, 16), "float32")
    layer = FastDropout(0.2, seed=7)
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    kept = y != 0
    assert abs(1 - kept.mean() - 0.2) < 0.005  # drop probability is the rate
    np.testing.assert_allclose(y[kept], 65536 / (65536 - 13107), rtol=1e-6)  # kept ones scaled
    assert abs(y.mean() - 1.0) < 0.01  # expectation preserved
    again = keras.ops.convert_to_numpy(FastDropout(0.2, seed=7)(x, training=True))
    np.testing.assert_array_equal(y, again)  # same seed, same mask
    assert not np.array_equal(kept, keras.ops.convert_to_numpy(layer(x, training=True)) != 0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)
    odd = keras.ops.convert_to_numpy(layer(np.ones((3, 5), "float32"), training=True))
    assert odd.shape == (3, 5)  # an odd number of elements uses half of the last draw


def test_fused_kernels_run_on_the_cpu_and_step_aside_under_xla(attention_kernels):
    """The fused attention op is in the graph exactly when the kernels are on; an XLA-compiled function
    (which cannot hold it) gets TensorFlow's ops instead, with the same result."""
    import tensorflow as tf

    from eanet.models.kernels import external_attention_context

    rng = np.random.default_rng(5)
    x, kernel, bias, read = (tf.constant(rng.normal(0, 1, shape), tf.float32) for shape in
                             [(2, 7, 5), (5, 12), (12,), (12, 5)])

    def attend(x):
        return external_attention_context(x, kernel, bias, read, 3, 1e-9, 0.0, None)

    def op_types(function):
        return {op.type for op in function.get_concrete_function(x).graph.get_operations()}

    plain, xla = tf.function(attend), tf.function(attend, jit_compile=True)
    assert ("EanetExternalAttention" in op_types(plain)) == (attention_kernels == "fused")
    assert ("EanetNormalizedDropout" in op_types(plain)) == (attention_kernels == "normalization")
    assert not {op for op in op_types(xla) if op.startswith("Eanet")}
    np.testing.assert_allclose(xla(x).numpy(), plain(x).numpy(), rtol=1e-5, atol=1e-6)


def test_written_out_gelu_gives_tensorflows_values_and_gradient():
    import tensorflow as tf

    from eanet.models.kernels import gelu_tanh

    x = tf.constant(np.random.default_rng(6).normal(0, 3, (64, 16)), tf.float32)
    upstream = tf.constant(np.random.default_rng(7).normal(0, 1, (64, 16)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours, tensorflows = gelu_tanh(x), tf.nn.gelu(x, approximate=True)
    np.testing.assert_array_equal(ours.numpy(), tensorflows.numpy())  # the same forward ops
    np.testing.assert_allclose(tape.gradient(ours, x, upstream).numpy(),
                               tape.gradient(tensorflows, x, upstream).numpy(), rtol=1e-5, atol=1e-5)
