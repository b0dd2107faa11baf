"""A third attention for the extension test: linear attention (Katharopoulos et al., 2020,
"Transformers are RNNs"), defined outside eanet and used by conf/model YAML alone.

    out_n = φ(q_n) · Σ_m φ(k_m) v_mᵀ / (φ(q_n) · Σ_m φ(k_m)),   φ(x) = elu(x) + 1

Cost O(N·d²) in the number of patches N, as external attention's O(N·S·d), against
self-attention's O(N²·d).
"""
from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="eanet_tests")
class LinearAttention(layers.Layer):
    """(B, N, D) → (B, N, D): multi-head linear attention with an output projection."""

    def __init__(self, embedding_dim: int, num_heads: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if embedding_dim % num_heads:
            raise ValueError("Expected embedding_dim divisible by num_heads. "
                             f"Received: embedding_dim={embedding_dim}, num_heads={num_heads}")
        self.embedding_dim, self.num_heads, self.dropout_rate = embedding_dim, num_heads, dropout
        self.qkv = layers.Dense(3 * embedding_dim, name="qkv")
        self.output_projection = layers.Dense(embedding_dim, name="output")
        self.dropout = layers.Dropout(dropout)

    def build(self, input_shape):
        self.qkv.build(input_shape)
        self.output_projection.build(input_shape)

    def call(self, x, training=None):
        batch, patches = ops.shape(x)[0], ops.shape(x)[1]
        head_dim = self.embedding_dim // self.num_heads
        qkv = ops.reshape(self.qkv(x), (batch, patches, 3, self.num_heads, head_dim))
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, N, H, d)
        q, k = ops.elu(q) + 1.0, ops.elu(k) + 1.0  # φ
        memory = ops.einsum("bmhd,bmhe->bhde", k, v)  # Σ_m φ(k_m) v_mᵀ: (B, H, d, d)
        normaliser = ops.einsum("bnhd,bhd->bnh", q, ops.sum(k, axis=1))  # (B, N, H)
        out = ops.einsum("bnhd,bhde->bnhe", q, memory) / (normaliser[..., None] + 1e-6)
        out = ops.reshape(out, (batch, patches, self.embedding_dim))
        return self.dropout(self.output_projection(out), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "embedding_dim": self.embedding_dim,
                "num_heads": self.num_heads, "dropout": self.dropout_rate}
