"""Forward FLOPs per image (eanet.models.flops): the seed models against a count by hand from
their layer shapes, each formula against the traced reference implementation, a plug-in
attention counted by tracing, and what cannot be counted named instead of counted as 0."""
from __future__ import annotations

import keras
import pytest

from conftest import compose_config
from eanet.models.flops import einsum_flops, forward_flops, traced_flops
from eanet.models.layers import ExternalAttention, SelfAttention
from eanet.models.model import build_augmentation, build_model
from eanet.validation import validate
from toy_attention import LinearAttention

# The seed's settings: 32×32 images, patch 2 → N = 256 patches of P²·3 = 12 values, D = 64,
# MLP 64, 8 blocks, 4 heads, dc = 4, 100 classes. A multiply-add is 2 FLOPs.
N, P2C, D, MLP, BLOCKS, HEADS, DC, CLASSES = 256, 12, 64, 64, 8, 4, 4, 100
EMBED = 2 * N * P2C * D  # patches → D
BLOCK_MLP = 2 * N * D * MLP + 2 * N * MLP * D
HEAD = 2 * D * CLASSES  # after average pooling
# External attention: G = H·dc = 16 heads of d = D/H = 16, S = D/dc = 16 memory slots.
G, d, S = HEADS * DC, D // HEADS, D // DC
EXTERNAL = (2 * N * D * (G * d)  # x W_in
            + 2 * N * G * d * S  # h M_k
            + 2 * N * G * S * d  # A M_v
            + 2 * N * (G * d) * D)  # W_out
# Self-attention: H = 4 heads of key_dim K = D (the seed's MultiHeadAttention(key_dim=D)).
K = D
SELF = (3 * 2 * N * D * HEADS * K  # Q, K, V
        + 2 * HEADS * N * N * K  # Q Kᵀ
        + 2 * HEADS * N * N * K  # P V
        + 2 * N * HEADS * K * D)  # W_o


def seed_model(name: str) -> keras.Model:
    cfg = validate(compose_config([f"model={name}"]))
    augmentation = build_augmentation(cfg.data.augmentation, [0.0] * 3, [1.0] * 3)
    return build_model(cfg.model, cfg.data.image_size, CLASSES, augmentation)


@pytest.mark.parametrize("name, attention", [("ea", EXTERNAL), ("vit", SELF)], ids=["ea", "vit"])
def test_seed_models_match_the_count_by_hand(name, attention):
    count = forward_flops(seed_model(name))
    assert count.total == EMBED + BLOCKS * (attention + BLOCK_MLP) + HEAD
    assert count.by_component == {"patch_embedding": EMBED, "attention": BLOCKS * attention,
                                  "mlp": BLOCKS * BLOCK_MLP, "head": HEAD}
    assert count.traced == [] and count.uncounted == []
    assert count.metrics()["flops_per_image"] == count.total


def test_seed_numbers():
    """What the README and the report quote: 0.202 and 0.839 GFLOPs per image."""
    assert EMBED + BLOCKS * (EXTERNAL + BLOCK_MLP) + HEAD == 201_732_608
    assert EMBED + BLOCKS * (SELF + BLOCK_MLP) + HEAD == 839_266_816


@pytest.mark.parametrize("layer, expected", [
    (ExternalAttention(D, HEADS, DC, implementation="reference"), EXTERNAL),
    (SelfAttention(D, HEADS, implementation="reference"), SELF),
], ids=["external", "self"])
def test_formulas_equal_the_traced_reference_implementation(layer, expected):
    layer.build((None, N, D))
    assert traced_flops(layer, (1, N, D)) == (expected, [])


def test_a_plug_in_attention_is_counted_by_tracing():
    """tests/toy_attention.py's linear attention, as conf/model YAML would name it."""
    cfg = validate(compose_config(["model=ea", "+model.attention_layer._target_="
                                   "toy_attention.LinearAttention",
                                   f"+model.attention_layer.embedding_dim={D}",
                                   f"+model.attention_layer.num_heads={HEADS}"]))
    count = forward_flops(build_model(cfg.model, 32, CLASSES))
    head_dim = D // HEADS
    linear = (2 * N * D * 3 * D  # qkv
              + 2 * N * HEADS * head_dim * head_dim  # Σ φ(k) vᵀ
              + 2 * N * HEADS * head_dim  # the normaliser
              + 2 * N * HEADS * head_dim * head_dim  # φ(q) · memory
              + 2 * N * D * D)  # output projection
    assert count.traced == [f"block_{i}/attention_{i}" for i in range(BLOCKS)]
    assert count.uncounted == []
    assert count.by_component["attention"] == BLOCKS * linear


class NestedFunction(keras.layers.Layer):
    """A layer whose product runs in a nested tf.function: a call the tracer does not enter."""

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], input_shape[-1]))

    def call(self, x):
        import tensorflow as tf

        return tf.function(lambda v: tf.matmul(v, self.kernel))(x)


def test_what_cannot_be_counted_is_named():
    layer = NestedFunction()
    layer.build((None, N, D))
    flops, missing = traced_flops(layer, (1, N, D))
    assert flops == 0 and missing and "PartitionedCall" in missing[0]

    inputs = keras.Input((N, D))
    count = forward_flops(keras.Model(inputs, NestedFunction(name="mystery")(inputs)))
    assert count.traced == ["mystery"] and count.uncounted[0].startswith("mystery: op ")
    assert "eanet.flops_uncounted" in count.tags()


def test_einsum_counts_every_index_once():
    assert einsum_flops("bnd,dk->bnk", [(1, 5, 3), (3, 7)]) == 2 * 5 * 3 * 7
    assert einsum_flops("...d,de->...e", [(2, 5, 3), (3, 7)]) == 2 * 2 * 5 * 3 * 7
