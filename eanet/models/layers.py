"""Keras layers of EANet (Guo et al., 2021, "Beyond Self-attention: External Attention using Two
Linear Layers for Visual Tasks") and of its ViT baseline.

Every layer is registered for serialization and has a `get_config`, so a saved `.keras` model
loads with `safe_mode=True`. Shapes: B batch, H/W image height/width, P patch size,
N = (H/P)*(W/P) patches, D embedding_dim, S memory size, G heads of external attention.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from eanet.models.attention import (ExternalAttentionWeights, SelfAttentionWeights,
                                    external_attention, self_attention)
from eanet.models.elementwise import gelu_then_dropout, layer_norm
from eanet.models.speed import check_implementation, speed_paths

register = keras.saving.register_keras_serializable(package="eanet")


@register
class PatchExtract(layers.Layer):
    """(B, H, W, C) images → (B, N, P*P*C) flattened non-overlapping patches.

    Same ordering as `keras.ops.image.extract_patches` (row-major patches, each patch flattened
    as (row, column, channel)), done with a reshape and a transpose instead of a convolution.
    """

    def __init__(self, patch_size: int, **kwargs):
        super().__init__(**kwargs)
        if patch_size <= 0:
            raise ValueError(f"Expected patch_size > 0. Received: patch_size={patch_size}")
        self.patch_size = patch_size

    def call(self, images):
        _, height, width, channels = images.shape
        p = self.patch_size
        rows, cols = height // p, width // p
        x = ops.reshape(images, (-1, rows, p, cols, p, channels))  # (B, H/P, P, W/P, P, C)
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))  # (B, H/P, W/P, P, P, C)
        return ops.reshape(x, (-1, rows * cols, p * p * channels))  # (B, N, P*P*C)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        p = self.patch_size
        return (batch, (height // p) * (width // p), p * p * channels)

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size}


@register
class PatchEmbedding(layers.Layer):
    """(B, N, P*P*C) patches → (B, N, D): a linear projection plus a learned position embedding."""

    def __init__(self, num_patches: int, embedding_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.num_patches = num_patches
        self.embedding_dim = embedding_dim
        self.projection = layers.Dense(embedding_dim, name="projection")
        self.position_embedding = layers.Embedding(num_patches, embedding_dim, name="position")

    def build(self, input_shape):
        self.projection.build(input_shape)
        self.position_embedding.build((self.num_patches,))

    def call(self, patches):
        positions = ops.arange(self.num_patches)  # (N,)
        return self.projection(patches) + self.position_embedding(positions)  # (B, N, D)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.embedding_dim)

    def get_config(self):
        return {**super().get_config(), "num_patches": self.num_patches,
                "embedding_dim": self.embedding_dim}


@register
class ExternalAttention(layers.Layer):
    """Multi-head external attention: two small learnable memories instead of keys/values from x.

    The seed's (and the paper's) multi-head form: project to D*dc, split into G = num_heads*dc
    heads of width d = D // num_heads, attend to a key memory M_k of S = D // dc slots shared by
    all heads, double-normalise (softmax over the patches, then L1 over the memory slots), read
    the value memory M_v, merge the heads and project back to D, then dropout:

        h = heads of (x W_in + b_in),   out = dropout((DoubleNorm(h M_k + b_k) M_v + b_v) W_out + b_out).

    Cost O(N*S*D): linear in N. The computation is eanet.models.attention.external_attention,
    by the path eanet.models.speed chooses for `implementation` ("auto": the fastest here;
    "reference": the formula above in keras.ops). The variables are the seed's four Dense
    layers', in its order.
    """

    ignored_settings = ()  # it reads every model setting (see SelfAttention)

    def __init__(self, embedding_dim: int, num_heads: int, dim_coefficient: int = 4,
                 attention_dropout: float = 0.0, projection_dropout: float = 0.0,
                 epsilon: float = 1e-9, implementation: str = "auto", **kwargs):
        super().__init__(**kwargs)
        if embedding_dim % num_heads:
            raise ValueError("Expected embedding_dim divisible by num_heads. Received: "
                             f"embedding_dim={embedding_dim}, num_heads={num_heads}")
        if embedding_dim % dim_coefficient:
            raise ValueError("Expected embedding_dim divisible by dim_coefficient. Received: "
                             f"embedding_dim={embedding_dim}, dim_coefficient={dim_coefficient}")
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.dim_coefficient = dim_coefficient
        self.attention_dropout = attention_dropout
        self.projection_dropout = projection_dropout
        self.epsilon = epsilon
        self.implementation = check_implementation(implementation)

        self.total_heads = num_heads * dim_coefficient  # G
        self.head_dim = embedding_dim // num_heads  # d = D*dc / G
        self.memory_size = embedding_dim // dim_coefficient  # S
        self.input_projection = layers.Dense(embedding_dim * dim_coefficient, name="input_projection")
        self.memory_key = layers.Dense(self.memory_size, name="memory_key")  # M_k: d → S
        self.memory_value = layers.Dense(self.head_dim, name="memory_value")  # M_v: S → d
        self.output_projection = layers.Dense(embedding_dim, name="output_projection")
        self.attention_dropout_layer = layers.Dropout(attention_dropout)
        self.projection_dropout_layer = layers.Dropout(projection_dropout)

    def build(self, input_shape):
        batch, num_patches, _ = input_shape
        self.input_projection.build(input_shape)
        heads_shape = (batch, num_patches, self.total_heads, self.head_dim)
        self.memory_key.build(heads_shape)
        self.memory_value.build((batch, num_patches, self.total_heads, self.memory_size))
        self.output_projection.build((batch, num_patches, self.embedding_dim * self.dim_coefficient))

    def attention_weights(self) -> ExternalAttentionWeights:
        """W_in, M_k, M_v, W_out and their biases, in the compute dtype."""
        return ExternalAttentionWeights(*(
            ops.cast(weight, self.compute_dtype) for dense in
            (self.input_projection, self.memory_key, self.memory_value, self.output_projection)
            for weight in (dense.kernel, dense.bias)))

    def call(self, x, training=None):
        path = speed_paths(self.implementation, "external", self.dtype_policy.name).attention
        x = external_attention(x, self.attention_weights(), heads=self.total_heads,
                               epsilon=self.epsilon, dropout=self.attention_dropout_layer,
                               training=training, path=path)
        return self.projection_dropout_layer(x, training=training)  # (B, N, D)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "embedding_dim": self.embedding_dim,
                "num_heads": self.num_heads, "dim_coefficient": self.dim_coefficient,
                "attention_dropout": self.attention_dropout,
                "projection_dropout": self.projection_dropout, "epsilon": self.epsilon,
                "implementation": self.implementation}


@register
class SelfAttention(layers.Layer):
    """ViT's multi-head self-attention, as in the seed: MultiHeadAttention(key_dim=D) on (x, x),

        P_h = dropout(softmax((x W_q,h + b_q,h)(x W_k,h + b_k,h)ᵀ / √K)),
        out = Σ_h P_h (x W_v,h + b_v,h) W_o,h + b_o.

    Cost O(N²·D): quadratic in N. The variables are those of a `keras.layers.MultiHeadAttention`
    sublayer (same names, shapes and order as the seed's, so its weights load); the computation
    is eanet.models.attention.self_attention, by the path eanet.models.speed chooses for
    `implementation` ("auto": the fastest here; "reference": the formula above in keras.ops).
    """

    # Model settings (eanet.config.ModelConfig) this attention does not read: the run identity
    # (eanet.sweeps.identity) and the report leave them out, so ViT runs that differ only in them
    # are one computation.
    ignored_settings = ("dim_coefficient", "projection_dropout")

    def __init__(self, embedding_dim: int, num_heads: int, attention_dropout: float = 0.0,
                 implementation: str = "auto", **kwargs):
        super().__init__(**kwargs)
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.attention_dropout = attention_dropout
        self.implementation = check_implementation(implementation)
        self.attention = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embedding_dim,
                                                   dropout=attention_dropout, name="attention")
        # The dropout of the attention probabilities (the sublayer only holds the variables).
        self.probability_dropout = layers.Dropout(attention_dropout, name="probability_dropout")

    def build(self, input_shape):
        self.attention.build(input_shape, input_shape)

    def attention_weights(self) -> SelfAttentionWeights:
        """W_q, W_k, W_v, W_o and their biases, in the compute dtype."""
        mha = self.attention
        return SelfAttentionWeights(*(
            ops.cast(weight, self.compute_dtype) for dense in
            (mha.query_dense, mha.key_dense, mha.value_dense, mha.output_dense)
            for weight in (dense.kernel, dense.bias)))

    def call(self, x, training=None):
        path = speed_paths(self.implementation, "self", self.dtype_policy.name).attention
        return self_attention(x, self.attention_weights(), dropout=self.probability_dropout,
                              training=training, path=path)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "embedding_dim": self.embedding_dim,
                "num_heads": self.num_heads, "attention_dropout": self.attention_dropout,
                "implementation": self.implementation}


@register
class TransformerBlock(layers.Layer):
    """Pre-norm transformer block: x + Attention(LN(x)), then x + MLP(LN(x)) with a GELU MLP.

    `attention` is any layer mapping (B, N, D) → (B, N, D); it is serialized with the block.
    """

    def __init__(self, attention: layers.Layer, embedding_dim: int, mlp_dim: int,
                 mlp_dropout: float = 0.0, implementation: str = "auto", **kwargs):
        super().__init__(**kwargs)
        if isinstance(attention, dict):  # from get_config
            attention = keras.saving.deserialize_keras_object(attention)
        self.embedding_dim = embedding_dim
        self.mlp_dim = mlp_dim
        self.mlp_dropout = mlp_dropout
        self.implementation = check_implementation(implementation)
        # Sub-layers in the order they act, so the weights list in the seed's order too.
        self.attention_norm = layers.LayerNormalization(epsilon=1e-5, name="attention_norm")
        self.attention = attention
        self.mlp_norm = layers.LayerNormalization(epsilon=1e-5, name="mlp_norm")
        self.mlp_hidden = layers.Dense(mlp_dim, name="mlp_hidden")
        self.mlp_output = layers.Dense(embedding_dim, name="mlp_output")
        self.mlp_hidden_dropout = layers.Dropout(mlp_dropout)
        self.mlp_output_dropout = layers.Dropout(mlp_dropout)

    def build(self, input_shape):
        self.attention_norm.build(input_shape)
        if not self.attention.built:  # a deserialized attention layer arrives built
            self.attention.build(input_shape)
        self.mlp_norm.build(input_shape)
        self.mlp_hidden.build(input_shape)
        self.mlp_output.build((*input_shape[:-1], self.mlp_dim))

    def call(self, x, training=None):
        paths = speed_paths(self.implementation, precision=self.dtype_policy.name)
        x = x + self.attention(layer_norm(self.attention_norm, x, paths.norm), training=training)
        h = self.mlp_hidden(layer_norm(self.mlp_norm, x, paths.norm))
        h = gelu_then_dropout(h, self.mlp_hidden_dropout, training, paths.gelu)  # tanh GELU
        return x + self.mlp_output_dropout(self.mlp_output(h), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(),
                "attention": keras.saving.serialize_keras_object(self.attention),
                "embedding_dim": self.embedding_dim, "mlp_dim": self.mlp_dim,
                "mlp_dropout": self.mlp_dropout, "implementation": self.implementation}


@register
class ClassifierHead(layers.Layer):
    """(B, N, D) → (B, num_classes) probabilities: global average pooling over patches + softmax.

    Always float32, so top-k and the loss stay exact under a mixed-precision policy.
    """

    def __init__(self, num_classes: int, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.pool = layers.GlobalAveragePooling1D(dtype=self.dtype_policy)
        self.classifier = layers.Dense(num_classes, activation="softmax", name="classifier",
                                       dtype=self.dtype_policy)

    def build(self, input_shape):
        self.classifier.build((input_shape[0], input_shape[-1]))

    def call(self, x):
        return self.classifier(self.pool(ops.cast(x, self.compute_dtype)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}
