"""EANet's external attention and ViT's self-attention as functions of their input and weights.

Each attention is one function with one meaning, the pattern of `keras.ops.dot_product_attention`
and its `flash_attention` switch: the reference, the paper's formula in plain `keras.ops` (the
same on every backend), and faster computations of the same function behind the same call, by
`path`, eanet.models.speed's choice (`SpeedPaths.attention`):

- "reference": the formula as written; every backend.
- "folded" (external attention): the projections folded, in keras.ops; every backend.
- "fused": the projections folded and the core, scores to read-out, as one C++ op per
  direction (eanet.models.kernels; TensorFlow on a CPU).

tests/test_attention.py checks every path against the reference: outputs and every gradient.
Shapes: B batch, N patches, D embedding_dim; external attention: G = num_heads*dc heads of
width d = D // num_heads, S = D // dc memory slots; self-attention: H heads of width K.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from keras import ops

from eanet.models import kernels


def _check_path(path: str, paths) -> str:
    if path not in paths:
        raise ValueError(f"Unknown attention path {path!r}. Valid values: {', '.join(paths)}")
    return path


# ---- external attention (Guo et al., 2021) ----

class ExternalAttentionWeights(NamedTuple):
    input_kernel: Any  # W_in (D, G*d): the projection to the heads
    input_bias: Any  # (G*d,)
    key_memory: Any  # M_k (d, S)
    key_bias: Any  # (S,)
    value_memory: Any  # M_v (S, d)
    value_bias: Any  # (d,)
    output_kernel: Any  # W_out (G*d, D): the heads merged and projected back
    output_bias: Any  # (D,)


def external_attention_reference(x, w: ExternalAttentionWeights, *, heads: int, epsilon: float,
                                 dropout, training=None):
    """The paper's multi-head external attention, (B, N, D) → (B, N, D):

        h = heads of (x W_in + b_in),   A = DoubleNorm(h M_k + b_k),   out = (A M_v + b_v) W_out + b_out,
        DoubleNorm: softmax over the N patches, then L1 over the S memory slots (+ epsilon).

    The normalisation is computed in float32 (epsilon = 1e-9 underflows in float16); `dropout`
    (a Keras Dropout layer) acts on the attention map A.
    """
    _, patches, _ = x.shape
    head_dim = w.key_memory.shape[0]
    h = ops.reshape(ops.matmul(x, w.input_kernel) + w.input_bias,
                    (-1, patches, heads, head_dim))  # (B, N, G, d)
    scores = ops.cast(ops.matmul(h, w.key_memory) + w.key_bias, "float32")  # (B, N, G, S)
    attention = ops.softmax(scores, axis=1)  # over the patches
    attention = attention / (epsilon + ops.sum(attention, axis=-1, keepdims=True))  # over S
    attention = dropout(ops.cast(attention, x.dtype), training=training)
    out = ops.matmul(attention, w.value_memory) + w.value_bias  # (B, N, G, d)
    out = ops.reshape(out, (-1, patches, heads * head_dim))  # (B, N, G*d)
    return ops.matmul(out, w.output_kernel) + w.output_bias  # (B, N, D)


def fold_external_attention(w: ExternalAttentionWeights, heads: int):
    """The four projections as two: (D → G*S) to the scores, (G*S → D) from the attention.

    Linear maps compose: projecting to the heads and then to the key memory M_k is one matrix,
    W_in·M_k per head; reading the value memory M_v and projecting back is one matrix, M_v·W_out
    per head. Same parameters, same function, but the (B, N, G, d) head tensors, and the two
    matmuls on them, are never computed. Returns score_kernel (D, G*S), score_bias (G*S,),
    read_kernel (G*S, D), read_bias (D,).
    """
    dim, head_dim, slots = w.output_kernel.shape[1], w.key_memory.shape[0], w.key_memory.shape[1]
    w_in = ops.reshape(w.input_kernel, (dim * heads, head_dim))
    score_kernel = ops.reshape(ops.matmul(w_in, w.key_memory), (dim, heads * slots))
    score_bias = ops.reshape(  # b_in·M_k + b_k per head
        ops.matmul(ops.reshape(w.input_bias, (heads, head_dim)), w.key_memory) + w.key_bias,
        (heads * slots,))
    w_out = ops.reshape(w.output_kernel, (heads, head_dim, dim))
    read_kernel = ops.reshape(ops.matmul(w.value_memory, w_out), (heads * slots, dim))
    # b_out + Σ_g b_v·W_out[g]
    read_bias = w.output_bias + ops.matmul(w.value_bias, ops.sum(w_out, axis=0))
    return score_kernel, score_bias, read_kernel, read_bias


def external_attention_folded(x, w: ExternalAttentionWeights, *, heads: int, epsilon: float,
                              dropout, training=None):
    """The reference with the projections folded (fold_external_attention), in keras.ops.

    The patches sit on the last axis, so the softmax over them needs no transpose of the large
    (B, G, S, N) tensors; only the small (B, N, D) input and output are transposed.
    """
    _, patches, _ = x.shape
    slots = w.key_memory.shape[1]
    score_kernel, score_bias, read_kernel, read_bias = fold_external_attention(w, heads)
    x_t = ops.transpose(x, (0, 2, 1))  # (B, D, N)
    scores = ops.matmul(ops.transpose(score_kernel), x_t)  # (B, G*S, N)
    scores = ops.reshape(scores + ops.reshape(score_bias, (heads * slots, 1)),
                         (-1, heads, slots, patches))  # (B, G, S, N)
    attention = ops.softmax(ops.cast(scores, "float32"), axis=-1)  # over the patches
    attention = attention / (epsilon + ops.sum(attention, axis=2, keepdims=True))  # over S
    attention = dropout(ops.cast(attention, x.dtype), training=training)
    attention = ops.reshape(attention, (-1, heads * slots, patches))  # (B, G*S, N)
    out_t = ops.matmul(ops.transpose(read_kernel), attention)  # (B, D, N)
    return ops.transpose(out_t, (0, 2, 1)) + read_bias  # (B, N, D)


def external_attention_fused(x, w: ExternalAttentionWeights, *, heads: int, epsilon: float,
                             dropout, training=None):
    """The folded form with scores → double normalisation → dropout → read-out as one C++ op
    per direction, whose gradient recomputes the (B, G, S, N) tensors instead of keeping them
    (kernels.external_attention_context; a 16-bit keep-mask from `dropout`'s seed generator)."""
    score_kernel, score_bias, read_kernel, read_bias = fold_external_attention(w, heads)
    active = bool(training) and dropout.rate > 0
    return kernels.external_attention_context(
        x, score_kernel, score_bias, read_kernel, heads, epsilon,
        dropout.rate if active else 0.0, dropout.seed_generator if active else None) + read_bias


EXTERNAL_ATTENTION = {"reference": external_attention_reference,
                      "folded": external_attention_folded, "fused": external_attention_fused}


def external_attention(x, weights: ExternalAttentionWeights, *, heads: int, epsilon: float,
                       dropout, training=None, path: str = "reference"):
    """EANet's external attention (external_attention_reference's formula), computed by `path`,
    a key of EXTERNAL_ATTENTION. `dropout`: the attention map's Keras Dropout layer."""
    return EXTERNAL_ATTENTION[_check_path(path, EXTERNAL_ATTENTION)](
        x, weights, heads=heads, epsilon=epsilon, dropout=dropout, training=training)


# ---- self-attention (Vaswani et al., 2017), as Keras' MultiHeadAttention(key_dim=K) on (x, x) ----

class SelfAttentionWeights(NamedTuple):
    query_kernel: Any  # W_q (D, H, K)
    query_bias: Any  # (H, K)
    key_kernel: Any  # W_k (D, H, K)
    key_bias: Any  # (H, K)
    value_kernel: Any  # W_v (D, H, K)
    value_bias: Any  # (H, K)
    output_kernel: Any  # W_o (H, K, D)
    output_bias: Any  # (D,)


def self_attention_reference(x, w: SelfAttentionWeights, *, dropout, training=None):
    """Multi-head self-attention, (B, N, D) → (B, N, D): per head h,

        P_h = softmax((x W_q,h + b_q,h)(x W_k,h + b_k,h)ᵀ / √K)   (over the keys),
        out = Σ_h dropout(P_h) (x W_v,h + b_v,h) W_o,h + b_o.
    """
    key_dim = w.query_kernel.shape[-1]
    query = ops.einsum("bnd,dhk->bnhk", x, w.query_kernel) + w.query_bias  # (B, N, H, K)
    key = ops.einsum("bnd,dhk->bnhk", x, w.key_kernel) + w.key_bias
    value = ops.einsum("bnd,dhk->bnhk", x, w.value_kernel) + w.value_bias
    query = query * ops.cast(1.0 / float(key_dim) ** 0.5, query.dtype)
    scores = ops.einsum("bmhk,bnhk->bhnm", key, query)  # (B, H, N queries, N keys)
    probabilities = dropout(ops.softmax(scores, axis=-1), training=training)
    context = ops.einsum("bhnm,bmhk->bnhk", probabilities, value)  # (B, N, H, K)
    return ops.einsum("bnhk,hkd->bnd", context, w.output_kernel) + w.output_bias  # (B, N, D)


def self_attention_fused(x, w: SelfAttentionWeights, *, dropout, training=None):
    """The reference with the projections folded: per head h,

        scores_h = (x W_q,h + b_q)(x W_k,h + b_k)ᵀ / √K  →  (x A_h + u_h) xᵀ / √K,
            A_h = W_q,h W_k,hᵀ (D×D), u_h = W_k,h b_q,h,
    because the terms constant along the keys cancel in the softmax over them; and
        out = Σ_h P_h (x W_v,h + b_v,h) W_o,h + b_o  =  Σ_h [P_h x, P_h 1] M_h + b_o,
            M_h = [W_v,h W_o,h ; b_v,h W_o,h] ((D+1)×D),
    so the key and value projections (D → H·K each) are never computed, and the scores read x
    itself, shared by the heads. Scores, softmax, dropout and context are one op per direction
    whose gradient recomputes the (B, H, N, N) tensors instead of keeping them
    (kernels.self_attention_context; a 16-bit keep-mask from `dropout`'s seed generator).
    """
    _, patches, dim = x.shape
    heads, key_dim = w.query_kernel.shape[1], w.query_kernel.shape[2]
    a = ops.einsum("dhk,ehk->dhe", w.query_kernel, w.key_kernel)  # (D, H, D)
    u = ops.einsum("ehk,hk->he", w.key_kernel, w.query_bias)  # (H, D)
    scale = ops.cast(1.0 / float(key_dim) ** 0.5, x.dtype)
    query = (ops.reshape(ops.matmul(x, ops.reshape(a, (dim, heads * dim))),
                         (-1, patches, heads, dim)) + u) * scale  # (B, N, H, D)
    x1 = ops.concatenate([x, ops.ones_like(x[..., :1])], axis=-1)  # (B, N, D+1): ones carry Σ P_h
    active = bool(training) and dropout.rate > 0
    context = kernels.self_attention_context(query, x, x1, dropout.rate if active else 0.0,
                                     dropout.seed_generator if active else None)  # (B, N, H, D+1)
    context = ops.reshape(context, (-1, patches, heads * (dim + 1)))
    m = ops.concatenate([ops.einsum("dhk,hke->hde", w.value_kernel, w.output_kernel),
                         ops.einsum("hk,hke->he", w.value_bias, w.output_kernel)[:, None, :]],
                        axis=1)  # (H, D+1, D)
    # b_k cannot change the output (the softmax over keys cancels it), so the folded form never
    # reads it; it still needs a gradient for the optimiser: an exact 0 (the reference's
    # gradient is rounding noise around 0).
    output_bias = w.output_bias + 0.0 * ops.sum(w.key_bias)
    return ops.matmul(context, ops.reshape(m, (heads * (dim + 1), dim))) + output_bias


SELF_ATTENTION = {"reference": self_attention_reference, "fused": self_attention_fused}


def self_attention(x, weights: SelfAttentionWeights, *, dropout, training=None,
                   path: str = "reference"):
    """Multi-head self-attention (self_attention_reference's formula), computed by `path`, a key
    of SELF_ATTENTION. `dropout`: the probabilities' Keras Dropout layer."""
    return SELF_ATTENTION[_check_path(path, SELF_ATTENTION)](x, weights, dropout=dropout,
                                                              training=training)
