"""Model assembly: images → augmentation → patches → embedding → transformer blocks → classifier.

The attention type is the only difference between EANet and its ViT baseline; it comes from the
`ATTENTION_TYPES` registry, or, for any other attention, from the model config's own
`attention_layer` (`_target_` and arguments, conf/model/*.yaml; docs/extending.md). At the seed configuration
(32×32 images, patch 2, D=64, 8 blocks, 4 heads, dc=4, 100 classes) EANet has 361,380 trainable
parameters and ViT 623,268.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

import keras
import numpy as np
from keras import layers

from eanet.config import check_choice
from eanet.models import ATTENTION_TYPES
from eanet.models.augmentation import build_augmentation  # noqa: F401 - the model's input stage
from eanet.models.layers import (ClassifierHead, ExternalAttention, PatchEmbedding, PatchExtract,
                                 SelfAttention, TransformerBlock)
from eanet.plugins import import_object, instantiate

if TYPE_CHECKING:
    from eanet.config import ModelConfig


def external_attention(cfg: ModelConfig, name: str) -> layers.Layer:
    return ExternalAttention(cfg.embedding_dim, cfg.num_heads, cfg.dim_coefficient,
                             cfg.attention_dropout, cfg.projection_dropout,
                             implementation=cfg.implementation, name=name)


def self_attention(cfg: ModelConfig, name: str) -> layers.Layer:
    return SelfAttention(cfg.embedding_dim, cfg.num_heads, cfg.attention_dropout,
                         implementation=cfg.implementation, name=name)


def attention_factory(cfg: ModelConfig) -> Callable[[str], layers.Layer]:
    """What builds one block's attention layer from its name: `model.attention_layer` (its
    `_target_` class called with the node's other keys as keyword arguments, and `name=`) when
    the config gives one, else the built-in `model.attention` of eanet.models.ATTENTION_TYPES."""
    if cfg.attention_layer is not None:
        return lambda name: instantiate(cfg.attention_layer, "model.attention_layer", name=name)
    check_choice("model.attention", cfg.attention, ATTENTION_TYPES)
    build = import_object(ATTENTION_TYPES[cfg.attention], "model.attention")
    return lambda name: build(cfg, name)


def build_model(cfg: ModelConfig, image_size: int, num_classes: int,
                augmentation: Optional[keras.Sequential] = None) -> keras.Model:
    """The classifier for `image_size`×`image_size` RGB images (float pixels in [0, 255])."""
    make_attention = attention_factory(cfg)
    num_patches = (image_size // cfg.patch_size) ** 2

    images = keras.Input((image_size, image_size, 3), name="images")
    x = augmentation(images) if augmentation is not None else images
    x = PatchExtract(cfg.patch_size, name="patches")(x)  # (B, N, P*P*3)
    x = PatchEmbedding(num_patches, cfg.embedding_dim, name="patch_embedding")(x)  # (B, N, D)
    for i in range(cfg.num_blocks):
        attention = make_attention(f"attention_{i}")
        if i == 0 and cfg.attention_layer is not None:
            check_attention_shape(attention, num_patches, cfg.embedding_dim)
        x = TransformerBlock(attention, cfg.embedding_dim,
                             cfg.mlp_dim, cfg.mlp_dropout, cfg.implementation,
                             name=f"block_{i}")(x)
    probabilities = ClassifierHead(num_classes, name="head")(x)  # (B, num_classes)
    return keras.Model(images, probabilities, name=f"{cfg.name}_classifier")


def check_attention_shape(attention: layers.Layer, num_patches: int, embedding_dim: int) -> None:
    """A plug-in attention must map (batch, patches, embedding_dim) to the same shape."""
    from eanet.plugins import PluginError

    if not isinstance(attention, layers.Layer):
        raise PluginError(f"Expected model.attention_layer._target_ to build a keras Layer. "
                          f"Received: {type(attention).__name__}")
    patches = keras.KerasTensor((None, num_patches, embedding_dim))
    shape = tuple(attention(patches).shape)
    if shape != (None, num_patches, embedding_dim):
        raise PluginError(f"Expected the attention layer {type(attention).__name__} "
                          f"(model.attention_layer) to map (batch, patches, embedding_dim) = "
                          f"(None, {num_patches}, {embedding_dim}) to the same shape. "
                          f"Received: {shape}")


def _count(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


def count_parameters(model: keras.Model) -> dict[str, int]:
    """Parameter counts, total and by component: the comparison EANet is about.

    `attention`, `mlp` and `norm` sum over all blocks; the components add up to `trainable`.
    """
    counts = {"total": _count(model.weights), "trainable": _count(model.trainable_weights),
              "non_trainable": _count(model.non_trainable_weights),
              "patch_embedding": 0, "attention": 0, "mlp": 0, "norm": 0, "head": 0}
    for layer in model.layers:
        if isinstance(layer, PatchEmbedding):
            counts["patch_embedding"] += _count(layer.trainable_weights)
        elif isinstance(layer, TransformerBlock):
            counts["attention"] += _count(layer.attention.trainable_weights)
            counts["mlp"] += _count(layer.mlp_hidden.trainable_weights
                                    + layer.mlp_output.trainable_weights)
            counts["norm"] += _count(layer.attention_norm.trainable_weights
                                     + layer.mlp_norm.trainable_weights)
        elif isinstance(layer, ClassifierHead):
            counts["head"] += _count(layer.trainable_weights)
    return counts
