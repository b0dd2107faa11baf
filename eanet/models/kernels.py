"""eanet's C++ CPU kernels (csrc/, built by eanet.models.native) as differentiable TensorFlow
functions: each op and its gradient op, one pass per direction over tensors held in cache.

These are the "fused" speed paths of eanet.models.speed, which alone decides when they run
(TensorFlow, a CPU, float32, outside XLA, the library built); the functions here assume it and
raise where the library is missing. Their formulas, term for term, are the reference's:
tests/test_attention.py, test_elementwise.py, test_kernels_property.py and test_native.py
check outputs and every gradient against it.

The dropout inside the attention and GELU ops draws 16 random bits per element
(csrc/dropout_stream.h): each 32-bit word of `tf.random.stateless_uniform`'s Philox stream gives
two elements; an element is kept when its 16 bits are at least round(rate · 2**16), and kept
elements are scaled by 1 / (1 − that threshold / 2**16), so the expectation is exact and the drop
probability is `rate` to within 2**-17: the same rate and expectation as Keras' Dropout, another
random stream.
"""
from __future__ import annotations

from typing import Any

from eanet.models import native


def library() -> Any:
    """The loaded op library (eanet.models.native)."""
    ops = native.fused_ops()
    if ops is None:
        raise RuntimeError("eanet's fused CPU kernels are not available in this process: "
                           "eanet.models.speed chooses them only where they load")
    return ops


def seed_threshold_scale(rate: float, seed_generator):
    """One draw's stateless seed (the generator moves on), the 16-bit keep threshold and the
    scale 1 / P(keep) of the kept elements."""
    import tensorflow as tf

    # SeedGenerator state is int64; stateless ops want int32 (as keras' own _cast_seed).
    seed = tf.cast(tf.math.floormod(seed_generator.next(), 2**31 - 1), tf.int32)
    threshold = native.keep_threshold(rate)  # refuses a rate that would keep nothing
    return seed, threshold, 65536 / (65536 - threshold)


def keep_mask_16bit(shape, rate: float, seed_generator, dtype):
    """A boolean keep-mask of `shape` (csrc/dropout_mask.cc) and the scale of the kept elements
    as a `dtype` tensor."""
    import tensorflow as tf

    seed, threshold, scale = seed_threshold_scale(rate, seed_generator)
    keep = library().eanet_keep_mask16(tf.cast(shape, tf.int32), seed, threshold=threshold)
    return keep, tf.constant(scale, dtype)


def gelu_dropout(x, rate: float, seed_generator):
    """dropout(gelu(x)) with the tanh-approximated GELU (csrc/gelu_dropout.cc); `rate` 0 or no
    generator: the GELU alone. Backward, from x alone (t recomputed):
        gelu(x) = 0.5 x (1 + t),  t = tanh(c (x + a x³)),  c = √(2/π), a = 0.044715,
        gelu'(x) = 0.5 (1 + t) + 0.5 x (1 − t²) c (1 + 3a x²)."""
    import tensorflow as tf

    ops = library()
    active = rate > 0 and seed_generator is not None
    if active:
        seed, threshold, scale = seed_threshold_scale(rate, seed_generator)
    else:
        seed, threshold, scale = tf.zeros((2,), tf.int32), 0, 1.0  # unread
    attrs = dict(threshold=threshold, scale=scale, use_keep=active)

    @tf.custom_gradient
    def fused(x):
        return ops.eanet_gelu_dropout(x, seed, **attrs), \
            lambda dy: ops.eanet_gelu_dropout_grad(x, dy, seed, **attrs)

    return fused(x)


def layer_norm(x, gamma, beta, epsilon: float):
    """(x − mean) / sqrt(var + ε) · γ + β over the last axis (csrc/layer_norm.cc), in float32,
    with the closed-form gradient: x̂ the normalised input, g = dy · γ, inv = 1 / sqrt(var + ε),
        dx = inv · (g − mean(g) − x̂ · mean(g · x̂)),  dγ = Σ dy · x̂,  dβ = Σ dy."""
    import tensorflow as tf

    ops = library()

    @tf.custom_gradient
    def fused(x, gamma, beta):
        return ops.eanet_layer_norm(x, gamma, beta, epsilon=epsilon), \
            lambda dy: ops.eanet_layer_norm_grad(x, gamma, dy, epsilon=epsilon)

    return fused(x, gamma, beta)


def _attention_call(forward, backward, keep, scale, unread=(), **attrs):
    """A whole attention as `forward` with `backward` as its gradient, the output scaled by the
    dropout scale (keep None: no dropout). The inputs at the positions in `unread` are not
    passed to the ops: their gradient is 0 (EANet's score bias, which the softmax over N
    cancels)."""
    import tensorflow as tf

    attrs["use_keep"] = keep is not None
    keep = keep if keep is not None else tf.zeros((1,), tf.bool)  # unread without dropout

    @tf.custom_gradient
    def call(*inputs):
        read = [x for i, x in enumerate(inputs) if i not in unread]
        out = forward(*read, keep, **attrs)

        def grad(dout):
            grads = iter(backward(*read, keep, dout * scale if scale is not None else dout,
                                  **attrs))
            return [tf.zeros_like(x) if i in unread else next(grads) for i, x in enumerate(inputs)]

        return (out * scale if scale is not None else out), grad

    return call


def self_attention_context(query, keys, values, rate: float, seed_generator):
    """softmax(query_h · keysᵀ) with dropout, times values, per head (csrc/fused_attention.cc).

    Shapes: query (B, N, H, D) (each head's query, already scaled by 1/√K), keys (B, N, D),
    values (B, N, V), shared by the heads; the result is (B, N, H, V). Per head, with
    s = query_h · keysᵀ, p = softmax(s) over the keys, keep the 16-bit keep-mask of the
    (B, H·N, N) scores (all True without dropout) and c its scale,
        m = keep · p,   out_h = c · m · values.
    Backward, from dout, with g = c · dout (the small tensor scaled, not the large one):
        dvalues = Σ_h mᵀ · g,   dm = g · valuesᵀ,   t = dm · m  (= p · dp, dp = keep · dm),
        ds = t − p · Σ_keys t,   dquery_h = ds · keys,   dkeys = Σ_h dsᵀ · query_h.
    Only the inputs and the boolean mask are kept for the backward op, which recomputes s, p and
    m block by block (64 query rows of one image and head) in cache.
    """
    import tensorflow as tf

    ops, keep, scale = library(), None, None
    if rate > 0 and seed_generator is not None:
        shape = tf.stack([tf.shape(query)[0], query.shape[2] * tf.shape(query)[1],
                          tf.shape(keys)[1]])
        keep, scale = keep_mask_16bit(shape, rate, seed_generator, query.dtype)
    return _attention_call(ops.eanet_self_attention, ops.eanet_self_attention_grad, keep,
                           scale)(query, keys, values)


def external_attention_context(x, score_kernel, score_bias, read_kernel, groups: int,
                               epsilon: float, rate: float, seed_generator):
    """EANet's attention from the scores to the read-out (csrc/fused_attention.cc).

    Shapes: x (B, N, D), score_kernel (D, G·S) and score_bias (G·S,) the folded M_k projection,
    read_kernel (G·S, D) the folded M_v projection; the result is (B, N, D), before the read-out
    bias. With s = x · score_kernel viewed as (B, G, S, N), the double normalisation
        p = softmax_N(s),   norm = ε + Σ_S p,   q = p / norm,
    the 16-bit keep-mask and scale c (all True / 1 without dropout),
        m = keep · q,   out = c · mᵀ · read_kernel.
    The score bias is constant along N, so the softmax over N cancels it: it is left out, and
    its gradient is an exact 0. Backward, from dout, with g = c · dout and dm = g · read_kernelᵀ:
        dread = Σ_B mᵀ · g,   t = dm · m,   u = t − q · Σ_S t   (p · dp: the L1 step),
        ds = u − p · Σ_N u   (the softmax),   dscore_kernel = Σ_B xᵀ · ds,   dx = ds · score_kernelᵀ.
    The backward op recomputes s, p, q and m block by block (the S slots of one image and group).
    """
    import tensorflow as tf

    ops, keep, scale = library(), None, None
    if rate > 0 and seed_generator is not None:
        shape = tf.stack([tf.shape(x)[0], tf.shape(score_kernel)[1], tf.shape(x)[1]])
        keep, scale = keep_mask_16bit(shape, rate, seed_generator, x.dtype)
    call = _attention_call(ops.eanet_external_attention, ops.eanet_external_attention_grad,
                           keep, scale, unread=(2,), groups=groups, epsilon=epsilon)
    return call(x, score_kernel, score_bias, read_kernel)
