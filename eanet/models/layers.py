"""Keras layers of EANet (Guo et al., 2021, "Beyond Self-attention: External Attention using Two
Linear Layers for Visual Tasks") and of its ViT baseline.

Every layer is registered for serialization and has a `get_config`, so a saved `.keras` model
loads with `safe_mode=True`. Shapes: B batch, H/W image height/width, P patch size,
N = (H/P)*(W/P) patches, D embedding_dim, S memory size, G heads of external attention.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from eanet.models.kernels import (FastDropout, FastLayerNormalization, double_normalization,
                                  external_attention_context, gelu_then_dropout,
                                  self_attention_context)

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
    the value memory M_v, merge the heads and project back to D. Cost O(N*S*D): linear in N.
    The four projections are applied as two folded matrices (see `folded_weights`): same
    parameters, same function, about 1.2x less CPU time per training step.
    """

    def __init__(self, embedding_dim: int, num_heads: int, dim_coefficient: int = 4,
                 attention_dropout: float = 0.0, projection_dropout: float = 0.0,
                 epsilon: float = 1e-9, **kwargs):
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

        self.total_heads = num_heads * dim_coefficient  # G
        self.head_dim = embedding_dim // num_heads  # d = D*dc / G
        self.memory_size = embedding_dim // dim_coefficient  # S
        self.input_projection = layers.Dense(embedding_dim * dim_coefficient, name="input_projection")
        self.memory_key = layers.Dense(self.memory_size, name="memory_key")  # M_k: d → S
        self.memory_value = layers.Dense(self.head_dim, name="memory_value")  # M_v: S → d
        self.output_projection = layers.Dense(embedding_dim, name="output_projection")
        self.attention_dropout_layer = FastDropout(attention_dropout)
        self.projection_dropout_layer = FastDropout(projection_dropout)

    def build(self, input_shape):
        batch, num_patches, _ = input_shape
        self.input_projection.build(input_shape)
        heads_shape = (batch, num_patches, self.total_heads, self.head_dim)
        self.memory_key.build(heads_shape)
        self.memory_value.build((batch, num_patches, self.total_heads, self.memory_size))
        self.output_projection.build((batch, num_patches, self.embedding_dim * self.dim_coefficient))

    def normalize(self, scores):
        """Double normalisation of (B, G, S, N) scores, in float32 (eps 1e-9 underflows in fp16).

        Softmax over the patch axis N (the last axis: no transposes) makes each memory slot a
        distribution over patches; the L1 step over the S slots (axis 2) then makes each
        patch's weights sum to 1. Forward and backward are written out as one function
        (`double_normalization`): TensorFlow's own gradient of the two steps keeps and re-reads
        more (B, G, S, N) tensors; this one reuses the softmax p and the result q only.
        """
        attention = double_normalization(ops.cast(scores, "float32"), self.epsilon)
        return ops.cast(attention, self.compute_dtype)

    def folded_weights(self):
        """The four projections as two: (D → G*S) to the scores, (G*S → D) from the attention.

        Linear maps compose, so projecting to the heads and then to the key memory M_k is one
        matrix, W_in·M_k per head; reading the value memory M_v and projecting back is one
        matrix, M_v·W_out per head. Same parameters and same function, but the (B, N, G, d)
        head tensors, and the two matmuls on them, are never computed.
        """
        g, d, s, dim = self.total_heads, self.head_dim, self.memory_size, self.embedding_dim
        cast = lambda w: ops.cast(w, self.compute_dtype)  # noqa: E731
        w_in = ops.reshape(cast(self.input_projection.kernel), (dim * g, d))
        m_k = cast(self.memory_key.kernel)  # (d, S)
        score_kernel = ops.reshape(ops.matmul(w_in, m_k), (dim, g * s))  # (D, G*S)
        score_bias = ops.reshape(  # b_in·M_k + b_k per head → (G*S,)
            ops.matmul(ops.reshape(cast(self.input_projection.bias), (g, d)), m_k)
            + cast(self.memory_key.bias), (g * s,))
        m_v = cast(self.memory_value.kernel)  # (S, d)
        w_out = ops.reshape(cast(self.output_projection.kernel), (g, d, dim))
        read_kernel = ops.reshape(ops.matmul(m_v, w_out), (g * s, dim))  # (G*S, D)
        read_bias = (cast(self.output_projection.bias)  # b_out + Σ_g b_v·W_out[g] → (D,)
                     + ops.matmul(cast(self.memory_value.bias), ops.sum(w_out, axis=0)))
        return score_kernel, score_bias, read_kernel, read_bias

    def call(self, x, training=None):
        _, num_patches, _ = x.shape
        g, s = self.total_heads, self.memory_size
        score_kernel, score_bias, read_kernel, read_bias = self.folded_weights()
        if keras.backend.backend() == "tensorflow":
            # Scores → double normalisation → dropout → read-out as one kernel whose gradient
            # recomputes the (B, G, S, N) tensors instead of keeping them.
            dropout = bool(training) and self.attention_dropout > 0
            x = external_attention_context(
                x, score_kernel, score_bias, read_kernel, g, self.epsilon,
                self.attention_dropout if dropout else 0.0,
                self.attention_dropout_layer.seed_generator if dropout else None) + read_bias
            return self.projection_dropout_layer(x, training=training)
        # Patches on the last axis, so the softmax over them needs no transpose of the large
        # (B, G, S, N) tensors; only the small (B, N, D) input and output are transposed.
        x_t = ops.transpose(x, (0, 2, 1))  # (B, D, N)
        scores = ops.matmul(ops.transpose(score_kernel), x_t)  # (B, G*S, N)
        scores = scores + ops.reshape(score_bias, (g * s, 1))
        attention = self.normalize(ops.reshape(scores, (-1, g, s, num_patches)))  # (B, G, S, N)
        attention = self.attention_dropout_layer(attention, training=training)
        attention = ops.reshape(attention, (-1, g * s, num_patches))  # (B, G*S, N)
        x_t = ops.matmul(ops.transpose(read_kernel), attention)  # (B, D, N)
        x = ops.transpose(x_t, (0, 2, 1)) + read_bias  # (B, N, D)
        return self.projection_dropout_layer(x, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "embedding_dim": self.embedding_dim,
                "num_heads": self.num_heads, "dim_coefficient": self.dim_coefficient,
                "attention_dropout": self.attention_dropout,
                "projection_dropout": self.projection_dropout, "epsilon": self.epsilon}


@register
class SelfAttention(layers.Layer):
    """ViT's multi-head self-attention, as in the seed: MultiHeadAttention(key_dim=D) on (x, x).

    The variables are those of a `keras.layers.MultiHeadAttention` sublayer (same names, shapes
    and order as the seed's, so its weights load). On TensorFlow the layer computes the same
    function with the projections folded, as ExternalAttention does: per head h,
        scores_h = (x W_q,h + b_q)(x W_k,h + b_k)ᵀ / √K  →  (x A_h + u_h) xᵀ / √K,
            A_h = W_q,h W_k,hᵀ (D×D), u_h = W_k,h b_q,h,
    because the terms constant along the keys cancel in the softmax over them; and
        out = Σ_h P_h (x W_v,h + b_v,h) W_o,h + b_o  =  Σ_h [P_h x, P_h 1] M_h + b_o,
            M_h = [W_v,h W_o,h ; b_v,h W_o,h] ((D+1)×D),
    so the key and value projections (D → H·K each, K = D = 64 in the seed: a quarter of a
    block's forward FLOPs) are never computed, and the scores read x itself, shared by the
    heads. Scores, softmax, dropout and context are one kernel with a written-out gradient
    that recomputes the (B, H, N, N) tensors instead of keeping them
    (`self_attention_context`). Other backends call the sublayer. Cost O(N²·D): quadratic in N.
    """

    def __init__(self, embedding_dim: int, num_heads: int, attention_dropout: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.attention_dropout = attention_dropout
        self.attention = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embedding_dim,
                                                   dropout=attention_dropout, name="attention")
        # The attention probabilities' dropout on the fast path (the sublayer's own is unused there).
        self.probability_dropout = FastDropout(attention_dropout, name="probability_dropout")

    def build(self, input_shape):
        self.attention.build(input_shape, input_shape)

    def call(self, x, training=None):
        if keras.backend.backend() != "tensorflow":
            return self.attention(x, x, training=training)
        mha, h = self.attention, self.num_heads
        n, d = x.shape[1], x.shape[2]
        cast = lambda w: ops.cast(w, self.compute_dtype)  # noqa: E731
        w_q, w_k, w_v = (cast(t.kernel) for t in (mha.query_dense, mha.key_dense, mha.value_dense))
        b_q, b_v = cast(mha.query_dense.bias), cast(mha.value_dense.bias)
        w_o, b_o = cast(mha.output_dense.kernel), cast(mha.output_dense.bias)  # (H, K, D), (D,)
        k = w_q.shape[-1]
        # scores_h[i, j] = (x_i A_h + u_h) · x_j / sqrt(K), up to terms constant in j, which the
        # softmax over j cancels: A_h = W_q,h W_k,h^T (D, D), u_h = W_k,h b_q,h (D,).
        a = ops.einsum("dhk,ehk->dhe", w_q, w_k)  # (D, H, D)
        u = ops.einsum("ehk,hk->he", w_k, b_q)  # (H, D)
        scale = ops.cast(1.0 / float(k) ** 0.5, x.dtype)
        query = (ops.reshape(ops.matmul(x, ops.reshape(a, (d, h * d))), (-1, n, h, d)) + u) * scale
        # out = Σ_h P_h (x W_v,h + b_v,h) W_o,h + b_o = Σ_h [P_h x, rowsum P_h] M_h + b_o with
        # M_h = [W_v,h W_o,h ; b_v,h W_o,h] (D+1, D): a column of ones carries the rowsums.
        x1 = ops.concatenate([x, ops.ones_like(x[..., :1])], axis=-1)  # (B, N, D+1)
        # [P_h x, P_h 1] for all heads at once, P_h = dropout(softmax(scores_h)): (B, N, H, D+1).
        dropout = bool(training) and self.attention_dropout > 0
        context = self_attention_context(
            query, x, x1, self.attention_dropout if dropout else 0.0,
            self.probability_dropout.seed_generator if dropout else None)
        context = ops.reshape(context, (-1, n, h * (d + 1)))
        m = ops.concatenate([ops.einsum("dhk,hke->hde", w_v, w_o),
                             ops.einsum("hk,hke->he", b_v, w_o)[:, None, :]], axis=1)  # (H, D+1, D)
        # b_k cannot change the output (the softmax over keys cancels it); the seed's graph gives it
        # a gradient of rounding noise around 0, this one an exact 0 (so it still trains alike).
        b_o = b_o + 0.0 * ops.sum(cast(mha.key_dense.bias))
        return ops.matmul(context, ops.reshape(m, (h * (d + 1), -1))) + b_o

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "embedding_dim": self.embedding_dim,
                "num_heads": self.num_heads, "attention_dropout": self.attention_dropout}


@register
class TransformerBlock(layers.Layer):
    """Pre-norm transformer block: x + Attention(LN(x)), then x + MLP(LN(x)) with a GELU MLP.

    `attention` is any layer mapping (B, N, D) → (B, N, D); it is serialized with the block.
    """

    def __init__(self, attention: layers.Layer, embedding_dim: int, mlp_dim: int,
                 mlp_dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(attention, dict):  # from get_config
            attention = keras.saving.deserialize_keras_object(attention)
        self.embedding_dim = embedding_dim
        self.mlp_dim = mlp_dim
        self.mlp_dropout = mlp_dropout
        # Sub-layers in the order they act, so the weights list in the seed's order too.
        self.attention_norm = FastLayerNormalization(epsilon=1e-5, name="attention_norm")
        self.attention = attention
        self.mlp_norm = FastLayerNormalization(epsilon=1e-5, name="mlp_norm")
        self.mlp_hidden = layers.Dense(mlp_dim, name="mlp_hidden")
        self.mlp_output = layers.Dense(embedding_dim, name="mlp_output")
        self.mlp_hidden_dropout = FastDropout(mlp_dropout)
        self.mlp_output_dropout = FastDropout(mlp_dropout)

    def build(self, input_shape):
        self.attention_norm.build(input_shape)
        if not self.attention.built:  # a deserialized attention layer arrives built
            self.attention.build(input_shape)
        self.mlp_norm.build(input_shape)
        self.mlp_hidden.build(input_shape)
        self.mlp_output.build((*input_shape[:-1], self.mlp_dim))

    def call(self, x, training=None):
        x = x + self.attention(self.attention_norm(x), training=training)
        # tanh-approximated GELU, as the seed's `ops.gelu` (Keras' "gelu" string is the exact erf form),
        # then dropout; on TensorFlow's CPU one fused op (`gelu_then_dropout`: same values, less kept).
        h = self.mlp_hidden(self.mlp_norm(x))
        h = gelu_then_dropout(h, self.mlp_hidden_dropout, training)
        return x + self.mlp_output_dropout(self.mlp_output(h), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(),
                "attention": keras.saving.serialize_keras_object(self.attention),
                "embedding_dim": self.embedding_dim, "mlp_dim": self.mlp_dim,
                "mlp_dropout": self.mlp_dropout}


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
