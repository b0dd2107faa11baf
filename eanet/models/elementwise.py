"""Layer normalisation and the MLP's GELU-then-dropout, each one function of a Keras layer's
weights and settings, computed by the path eanet.models.speed chose:

- "keras": the layer's own call (`keras.layers.LayerNormalization`, `keras.layers.Dropout`) and
  Keras' tanh-approximated `ops.gelu`, as the seed's MLP;
- "fused": one C++ op per direction (eanet.models.kernels): the same function; the dropout after
  the GELU draws 16 random bits per element instead of 32 (the same rate to within 2**-17 and
  the same expectation, another random stream).

The layers stay Keras' own whichever path runs, so a saved model holds only Keras' classes for
them and the same weights. The other dropouts are always Keras' own: a fused op for them alone
did not pay (docs/performance.md).
"""
from __future__ import annotations

from keras import layers, ops

from eanet.models import kernels
from eanet.models.speed import FUSED


def layer_norm(layer: layers.LayerNormalization, x, path: str):
    """layer(x): normalised over the last axis (the only axis eanet's blocks normalise), in
    float32 under every dtype policy, as Keras does."""
    if path != FUSED:
        return layer(x)
    y = kernels.layer_norm(ops.cast(x, "float32"), ops.cast(layer.gamma, "float32"),
                           ops.cast(layer.beta, "float32"), layer.epsilon)
    return ops.cast(y, layer.compute_dtype)


def gelu_then_dropout(x, layer: layers.Dropout, training, path: str):
    """layer(gelu(x), training=training), the GELU tanh-approximated as the seed's `ops.gelu`
    (Keras' "gelu" string would be the exact erf form)."""
    if path != FUSED or layer.noise_shape is not None:
        return layer(ops.gelu(x, approximate=True), training=training)
    active = bool(training) and layer.rate > 0
    return kernels.gelu_dropout(x, layer.rate if active else 0.0,
                                layer.seed_generator if active else None)
