"""The seed's input stage: per-channel normalisation, then random flip, rotation, contrast and
zoom (active only in training).

Keras marks RandomRotation and RandomZoom `supports_jit = False`, for TensorFlow, whose
image-transform op has no XLA kernel; one such layer makes Keras compile the whole model without
XLA on every backend (`model_supports_jit`), and on JAX that means the training step runs op by
op: the "augmentation stall" (docs/gpu.md). Their JAX computation (`map_coordinates`) compiles.
eanet's two subclasses below take the flag from eanet.models.speed.image_transforms_jit when they
are made, so a model loaded from a `.keras` file on JAX trains and predicts under jit like a
freshly built one. Same layers, same arithmetic, same weights.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import keras
import numpy as np
from keras import layers

from eanet.models.speed import image_transforms_jit

if TYPE_CHECKING:
    from eanet.config import AugmentationConfig

_FLOAT32_MAX = float(np.finfo(np.float32).max)
register = keras.saving.register_keras_serializable(package="eanet")


@register
class RandomRotation(layers.RandomRotation):
    """keras.layers.RandomRotation, XLA-compiled where the backend can (module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.supports_jit = image_transforms_jit(keras.backend.backend())


@register
class RandomZoom(layers.RandomZoom):
    """keras.layers.RandomZoom, XLA-compiled where the backend can (module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.supports_jit = image_transforms_jit(keras.backend.backend())


def build_augmentation(cfg: AugmentationConfig, mean: Sequence[float], variance: Sequence[float],
                       seed: Optional[int] = None) -> keras.Sequential:
    """Normalisation statistics come from the training split (the seed's `adapt`), passed in as
    numbers so the layer serializes with them. The random layers act only when training=True."""
    stages = [layers.Normalization(mean=list(mean), variance=list(variance), name="normalization")]
    if cfg.horizontal_flip:
        stages.append(layers.RandomFlip("horizontal", seed=seed, name="flip"))
    if cfg.rotation > 0:
        stages.append(RandomRotation(cfg.rotation, seed=seed, name="rotation"))
    if cfg.contrast > 0:
        # After the normalisation, Keras' default value_range=(0, 255) would clip away every
        # negative value in training (AugmentationConfig.contrast_clip says why it is off); the
        # widest float32 range makes the clip a no-op and stays valid JSON in the saved config.
        value_range = (0, 255) if cfg.contrast_clip else (-_FLOAT32_MAX, _FLOAT32_MAX)
        stages.append(layers.RandomContrast(cfg.contrast, value_range=value_range, seed=seed,
                                            name="contrast"))
    if cfg.zoom > 0:
        stages.append(RandomZoom(cfg.zoom, cfg.zoom, seed=seed, name="zoom"))
    return keras.Sequential(stages, name="augmentation")
