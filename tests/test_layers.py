"""Layer shapes, normalisation, get_config round-trips, and .keras save/load with safe_mode=True."""
import numpy as np
import keras
import pytest

from conftest import require_fused_kernels
from eanet.config import AugmentationConfig, ModelConfig
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


@pytest.mark.parametrize("rate", [0.0, 0.2])
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
def test_external_attention_context_matches_op_by_op(rate, graph):
    """The fused op of EANet's scores → double normalisation → dropout → read-out, with its
    recomputing gradient, equals TensorFlow's own gradient of the op-by-op computation with the
    same keep-mask, eagerly and in a graph."""
    import tensorflow as tf

    require_fused_kernels()
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
