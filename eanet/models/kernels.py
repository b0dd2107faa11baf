"""The CPU speed kernels behind `model.implementation=auto`: Keras' dropout and layer
normalisation, the MLP's GELU, EANet's double normalisation and the attentions' cores from the
scores to the read-out, computed the cheaper way on TensorFlow (same weights, same function).
The attentions' reference formulas, and the choice among implementations, are in
eanet.models.attention.

Each keeps the Keras layer it replaces as its base class and falls back to it wherever the fast
path does not apply (other backends, other axes, noise shapes). Where eanet's fused C++ ops are
available (float32 on a CPU, outside XLA: eanet.models.native, sources in csrc/), each attention
call runs whole as one op per direction (matmuls included), and dropout, GELU-then-dropout and
layer normalisation as one op each; else the TensorFlow ops written out below compute the same
terms (the attention's around the fused normalisation where only that applies).
tests/test_attention.py, tests/test_layers.py, tests/test_equivalence.py and tests/test_native.py
check outputs and gradients both ways against the plain computation.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from eanet.models import native


@keras.saving.register_keras_serializable(package="eanet", name="Dropout")  # the name saved models hold
class FastDropout(layers.Dropout):
    """`keras.layers.Dropout` that draws 16 random bits per element instead of 32 on TensorFlow.

    Drawing the random numbers is most of dropout's cost on a CPU, and dropout is about a fifth
    of an EANet training step there (docs/performance.md). Each 32-bit Philox draw is split
    into two 16-bit halves, one per element; an element is kept when its half is at least
    round(rate * 2**16), and kept elements are scaled by 1 / (1 - that_threshold / 2**16), so
    the expectation is exactly preserved and the drop probability is `rate` to within 2**-17.
    Other backends, and `noise_shape`, use Keras' own dropout. Inference is the identity, so
    weights behave exactly as with `keras.layers.Dropout`.
    """

    def call(self, inputs, training=False):
        if (not training or self.rate == 0 or self.noise_shape is not None
                or keras.backend.backend() != "tensorflow"):
            return super().call(inputs, training=training)
        import tensorflow as tf

        library = native.fused_ops_for(inputs.dtype)
        if library is not None:  # one pass, the mask drawn in place and never stored
            return dropout_16bit(inputs, self.rate, self.seed_generator, library)
        keep, scale = keep_mask_16bit(tf.shape(inputs), self.rate, self.seed_generator,
                                      inputs.dtype)
        return tf.where(keep, inputs * scale, tf.zeros_like(inputs))


def _seed_threshold_scale(rate: float, seed_generator):
    """One draw's stateless seed (the generator moves on), the 16-bit keep threshold and the
    scale 1 / P(keep) of the kept elements (FastDropout's docstring has the arithmetic)."""
    import tensorflow as tf

    # SeedGenerator state is int64; stateless ops want int32 (as keras' own _cast_seed).
    seed = tf.cast(tf.math.floormod(seed_generator.next(), 2**31 - 1), tf.int32)
    threshold = native.keep_threshold(rate)  # refuses a rate that would keep nothing
    return seed, threshold, 65536 / (65536 - threshold)


def keep_mask_16bit(shape, rate: float, seed_generator, dtype):
    """(TensorFlow) A boolean keep-mask of `shape` from 16 random bits per element, and the scale
    1 / P(keep) of the kept elements (FastDropout's docstring has the arithmetic).

    The bits are the uint32 words of tf.random.stateless_uniform, each split into its two
    16-bit halves. eanet's fused op (eanet/models/csrc/dropout_mask.cc) draws the same words,
    bit for bit, and compares them in one pass; elsewhere TensorFlow's ops do it.
    """
    import tensorflow as tf

    seed, threshold, scale = _seed_threshold_scale(rate, seed_generator)
    scale = tf.constant(scale, dtype)
    library = native.fused_ops_for()
    if library is not None:
        return library.eanet_keep_mask16(tf.cast(shape, tf.int32), seed, threshold=threshold), scale
    shape = tf.cast(shape, tf.int64)  # ViT's (B, H·N, N) scores pass 2**31 elements
    size = tf.reduce_prod(shape)
    bits = tf.random.stateless_uniform(((size + 1) // 2,), seed=seed, minval=None,
                                       maxval=None, dtype=tf.uint32)
    halves = tf.reshape(tf.bitcast(bits, tf.uint16), (-1,))[:size]
    return tf.reshape(halves >= threshold, shape), scale


def dropout_16bit(inputs, rate: float, seed_generator, library):
    """(TensorFlow, fused op) keep · inputs · scale with keep_mask_16bit's mask, which is drawn
    inside the op and drawn again for the gradient (keep · upstream · scale) instead of kept."""
    import tensorflow as tf

    seed, threshold, scale = _seed_threshold_scale(rate, seed_generator)
    attrs = dict(threshold=threshold, scale=scale)

    @tf.custom_gradient
    def dropout(x):
        def grad(upstream):
            return library.eanet_dropout16(upstream, seed, **attrs)

        return library.eanet_dropout16(x, seed, **attrs), grad

    return dropout(inputs)


def recompute_after(upstream, tensor):
    """`tensor`, made to depend on `upstream` by data, so a gradient function recomputes from it
    *after* its upstream gradient exists: TensorFlow's graph optimiser would otherwise merge the
    recomputation with the identical forward ops and keep their outputs alive after all (what
    `tf.recompute_grad` does too; XLA ignores control dependencies, so a data one).
    """
    import tensorflow as tf

    first = tf.reduce_max(tf.reshape(upstream, (-1,))[:1])  # one element, not a pass over it
    zero = tf.where(first == first, tf.constant(0.0, tensor.dtype),  # never folded to a constant
                    tf.constant(float("nan"), tensor.dtype))
    return tensor + zero


def fused_call(fused, scale, unread=()):
    """(TensorFlow) The attention computed by `fused` (native.FusedOpPair), its output scaled
    by the dropout scale (None: no dropout), with the fused backward op as its gradient. The
    inputs at the positions in `unread` are not passed to the op: their gradient is 0 (EANet's
    score bias, which the softmax over N cancels)."""
    import tensorflow as tf

    @tf.custom_gradient
    def call(*inputs):
        read = [x for i, x in enumerate(inputs) if i not in unread]
        out = fused.forward(*read)

        def grad(dout):
            grads = iter(fused.backward(*read, dout * scale if scale is not None else dout))
            return [tf.zeros_like(x) if i in unread else next(grads) for i, x in enumerate(inputs)]

        return (out * scale if scale is not None else out), grad

    return call


def self_attention_context(query, keys, values, rate: float, seed_generator):
    """(TensorFlow) softmax(query · keysᵀ) with dropout, times values, per head; the gradient
    written out and the (N × N) tensors recomputed in it instead of kept.

    Shapes: query (B, N, H, D) (per patch, each head's query, already scaled by 1/√K), keys
    (B, N, D), values (B, N, V), shared by the heads; the result is (B, N, H, V). Per head,
    with s = query_h · keysᵀ, p = softmax(s) over the keys, keep FastDropout's 16-bit
    keep-mask of the (B, H·N, N) scores (all True without dropout) and c its scale,
        m = keep · p,   out_h = c · m · values.
    Backward, from the upstream gradient dout, with g = c · dout (scaling the small tensor,
    not the large one):
        dvalues = Σ_h mᵀ · g,   dm = g · valuesᵀ,   t = dm · m  (= p · dp, dp = keep · dm),
        ds = t − p · Σ_keys t,   dquery_h = ds · keys,   dkeys = Σ_h dsᵀ · query_h.
    Only query, keys, values and the boolean keep-mask are kept for the backward pass: s, p and
    m (B, H·N, N) are recomputed there, one more matmul of the step's attention, instead of
    holding two float (B, H, N, N) tensors per block until the backward pass reaches it. The
    fused op (csrc/fused_attention.cc) reads and writes the heads interleaved as given;
    TensorFlow's ops stack them along the rows, (B, H·N, ·), and back.
    """
    import tensorflow as tf

    dropout = rate > 0 and seed_generator is not None
    batch, patches, heads, width = (tf.shape(query)[0], tf.shape(query)[1], query.shape[2],
                                    query.shape[3])
    if dropout:
        scores_shape = tf.stack([batch, heads * patches, tf.shape(keys)[1]])
        keep, scale = keep_mask_16bit(scores_shape, rate, seed_generator, query.dtype)
    whole = native.fused_self_attention(query.dtype, keep if dropout else None)
    if whole is not None:  # all of it, matmuls included, as one op per direction
        return fused_call(whole, scale if dropout else None)(query, keys, values)
    stacked = tf.reshape(tf.transpose(query, (0, 2, 1, 3)), (batch, heads * patches, width))
    out = _self_attention_context_rows(stacked, keys, values, keep if dropout else None,
                                       scale if dropout else None)  # (B, H·N, V)
    return tf.transpose(tf.reshape(out, (batch, heads, patches, values.shape[-1])), (0, 2, 1, 3))


def _self_attention_context_rows(query, keys, values, keep, scale):
    """self_attention_context with the heads stacked along the rows, query (B, H·N, D), and the
    call's keep-mask and scale (None: no dropout), as TensorFlow ops around the fused
    normalisation where it applies (native.fused_normalized_dropout); the result is
    (B, H·N, V)."""
    import tensorflow as tf

    dropout = keep is not None
    fused = native.fused_normalized_dropout(query.dtype, keep, rows_per_block=1,
                                            normalize_columns=False)

    def kept(scores):
        """m: the softmax of the scores over the keys, dropped out."""
        if fused is not None:
            return fused.forward(scores)
        p = tf.nn.softmax(scores)  # (B, H·N, N)
        return tf.where(keep, p, tf.zeros_like(p)) if dropout else p

    def kept_and_score_gradient(scores, dm):
        """m again, and the gradient at the scores given dm, the gradient at m."""
        if fused is not None:
            return fused.backward(scores, dm)
        p = tf.nn.softmax(scores)
        m = tf.where(keep, p, tf.zeros_like(p)) if dropout else p
        t = dm * m  # dm · m
        return m, t - p * tf.reduce_sum(t, axis=-1, keepdims=True)

    @tf.custom_gradient
    def attend(q, k, v):
        out = tf.matmul(kept(tf.matmul(q, k, transpose_b=True)), v)  # (B, H·N, V)

        def grad(dout):
            g = dout * scale if dropout else dout
            dm = tf.matmul(g, v, transpose_b=True)  # (B, H·N, N)
            scores = tf.matmul(recompute_after(dout, q), k, transpose_b=True)
            m, ds = kept_and_score_gradient(scores, dm)
            dv = tf.matmul(m, g, transpose_a=True)  # (B, N, V)
            return tf.matmul(ds, k), tf.matmul(ds, q, transpose_a=True), dv

        return out * scale if dropout else out, grad

    return attend(query, keys, values)


def external_attention_context(x, score_kernel, score_bias, read_kernel, groups: int,
                               epsilon: float, rate: float, seed_generator):
    """(TensorFlow) EANet's attention from the scores to the read-out, the gradient written out
    and the (B, G·S, N) tensors recomputed in it instead of kept.

    Shapes: x (B, N, D) the block's input, score_kernel (D, G·S) and score_bias (G·S,) the
    folded M_k projection, read_kernel (G·S, D) the folded M_v projection; the result is
    (B, N, D), before the read-out bias. With x_t = xᵀ (B, D, N), s = score_kernelᵀ · x_t viewed
    as (B, G, S, N) (the patches on the last axis, so no large tensor is transposed), the double
    normalisation (in float32)
        p = softmax_N(s),   norm = ε + Σ_S p,   q = p / norm,
    FastDropout's 16-bit keep-mask and scale c (all True / 1 without dropout),
        m = keep · q,   out = c · (read_kernelᵀ · m)ᵀ.
    The score bias is constant along N, so the softmax over N cancels it: it is left out, and
    its gradient is an exact 0 (the seed's graph gives it rounding noise around 0).
    Backward, from the upstream gradient dout, with g = c · doutᵀ (the small tensor scaled) and
    dm = read_kernel · g, dq = keep · dm, dp the gradient at p:
        dread = Σ_B (g · mᵀ)ᵀ,   t = dq · q = dm · m,
        p · dp = t − q · Σ_S t =: u   (the L1 step, as p / norm = q),
        ds = u − p · Σ_N u            (the softmax),
        dscore_kernel = Σ_B (ds · x_tᵀ)ᵀ,   dx = (score_kernel · ds)ᵀ.
    Only x, the weights and the boolean keep-mask are kept for the backward pass; s, p, q and
    m are recomputed there (a (G·S × D) matmul and the normalisation again) instead of holding
    (B, G, S, N) tensors per block until the backward pass reaches it. The fused op
    (csrc/fused_attention.cc) reads x and writes the result in (B, N, D) directly; TensorFlow's
    ops transpose the small (B, N, D) tensors.
    """
    import tensorflow as tf

    dropout = rate > 0 and seed_generator is not None
    if dropout:
        shape = tf.stack([tf.shape(x)[0], tf.shape(score_kernel)[1], tf.shape(x)[1]])
        keep, scale = keep_mask_16bit(shape, rate, seed_generator, x.dtype)
    whole = native.fused_external_attention(x.dtype, keep if dropout else None, groups, epsilon)
    if whole is not None:  # all of it, matmuls included, as one op per direction
        attend = fused_call(whole, scale if dropout else None, unread=(2,))
        return attend(x, score_kernel, score_bias, read_kernel)
    x_t = tf.transpose(x, (0, 2, 1))  # (B, D, N)
    out_t = _external_attention_context_t(
        x_t, tf.transpose(score_kernel), tf.reshape(score_bias, (-1, 1)),
        tf.transpose(read_kernel), groups, epsilon, keep if dropout else None,
        scale if dropout else None)
    return tf.transpose(out_t, (0, 2, 1))  # (B, N, D)


def _external_attention_context_t(x_t, score_kernel_t, score_bias, read_kernel_t, groups: int,
                                  epsilon: float, keep, scale):
    """external_attention_context on the transposed input x_t (B, D, N), with score_kernel_t
    (G·S, D), score_bias (G·S, 1), read_kernel_t (D, G·S) and the call's keep-mask and scale
    (None: no dropout), as TensorFlow ops around the fused normalisation where it applies
    (native.fused_normalized_dropout); the result is (B, D, N)."""
    import tensorflow as tf

    dtype = x_t.dtype
    dropout = keep is not None
    fused = native.fused_normalized_dropout(dtype, keep,
                                            rows_per_block=score_kernel_t.shape[0] // groups,
                                            normalize_columns=True, epsilon=epsilon)

    def normalized(scores):
        """p, q as (B, G, S, N) float32 and m as (B, G·S, N) in the compute dtype."""
        scores = tf.cast(scores, tf.float32)  # (B, G·S, N)
        batch, patches = tf.shape(scores)[0], tf.shape(scores)[2]
        p = tf.nn.softmax(tf.reshape(scores, (batch, groups, -1, patches)))  # over N
        q = p / (epsilon + tf.reduce_sum(p, axis=2, keepdims=True))  # over S
        m = tf.cast(tf.reshape(q, tf.shape(scores)), dtype)
        return p, q, (tf.where(keep, m, tf.zeros_like(m)) if dropout else m)

    def kept(scores):
        """m: the double-normalised scores, dropped out."""
        if fused is not None:
            return fused.forward(scores)
        return normalized(scores)[2]

    def kept_and_score_gradient(scores, dm):
        """m again, and the gradient at the scores given dm, the gradient at m."""
        if fused is not None:
            return fused.backward(scores, dm)
        p, q, m = normalized(scores)
        t = tf.reshape(tf.cast(dm * m, tf.float32), tf.shape(q))  # dq · q
        u = t - q * tf.reduce_sum(t, axis=2, keepdims=True)  # p · dp
        ds = u - p * tf.reduce_sum(u, axis=-1, keepdims=True)
        return m, tf.cast(tf.reshape(ds, tf.shape(dm)), dtype)  # (B, G·S, N)

    @tf.custom_gradient
    def attend(x_t, kernel, bias, read):
        out = tf.matmul(read, kept(tf.matmul(kernel, x_t)))  # (B, D, N)

        def grad(dout):
            g = dout * scale if dropout else dout
            dm = tf.matmul(read, g, transpose_a=True)  # (B, G·S, N)
            m, ds = kept_and_score_gradient(tf.matmul(kernel, recompute_after(dout, x_t)), dm)
            dread = tf.reduce_sum(tf.matmul(g, m, transpose_b=True), axis=0)  # (D, G·S)
            return (tf.matmul(kernel, ds, transpose_a=True),
                    tf.reduce_sum(tf.matmul(ds, x_t, transpose_b=True), axis=0),
                    tf.zeros_like(bias), dread)

        return out * scale if dropout else out, grad

    return attend(x_t, score_kernel_t, score_bias, read_kernel_t)


def gelu_tanh(x):
    """(TensorFlow) The tanh-approximated GELU of the seed's MLP, its gradient written out.

    Forward, the same ops as `tf.nn.gelu(x, approximate=True)` (so the same values):
        gelu(x) = 0.5 x (1 + t),   t = tanh(c (x + a x³)),   c = √(2/π), a = 0.044715.
    Backward, from x alone (t recomputed, one tanh):
        gelu'(x) = 0.5 (1 + t) + 0.5 x (1 − t²) c (1 + 3a x²).
    TensorFlow's own gradient keeps x³, t, 1 + t and 0.5 x, four more (B, N, mlp_dim) tensors
    per block until the backward pass reaches it, and takes a dozen passes over them there.
    """
    import tensorflow as tf

    @tf.custom_gradient
    def gelu(x):
        a, c = tf.cast(0.044715, x.dtype), tf.cast(0.7978845608028654, x.dtype)

        def grad(dy):
            x2 = x * x
            t = tf.tanh(c * (x + a * x2 * x))
            return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * a * x2))

        return 0.5 * x * (1.0 + tf.tanh(c * (x + a * tf.pow(x, 3)))), grad

    return gelu(x)


def gelu_then_dropout(x, dropout: layers.Dropout, training, implementation: str = "auto"):
    """dropout(gelu(x)), the MLP's tanh-approximated GELU and the dropout after it.

    "reference" (and "auto" on other backends than TensorFlow): Keras' `ops.gelu`, then
    `dropout`. "auto" on TensorFlow's CPU (float32): one C++ op per direction
    (csrc/gelu_dropout.cc), the same terms as `gelu_tanh` then `dropout`, with the same keep-mask
    (dropout's seed generator, FastDropout's stream), which the gradient draws again instead of
    storing; elsewhere on TensorFlow the two steps as they are (`gelu_tanh`, then `dropout`).
    """
    if implementation == "reference" or keras.backend.backend() != "tensorflow":
        return dropout(ops.gelu(x, approximate=True), training=training)
    library = native.fused_ops_for(x.dtype)
    if library is None or dropout.noise_shape is not None:
        return dropout(gelu_tanh(x), training=training)
    import tensorflow as tf

    active = bool(training) and dropout.rate > 0
    if active:
        seed, threshold, scale = _seed_threshold_scale(dropout.rate, dropout.seed_generator)
    else:
        seed, threshold, scale = tf.zeros((2,), tf.int32), 0, 1.0  # unread
    attrs = dict(threshold=threshold, scale=scale, use_keep=active)

    @tf.custom_gradient
    def fused(x):
        def grad(dy):
            return library.eanet_gelu_dropout_grad(x, dy, seed, **attrs)

        return library.eanet_gelu_dropout(x, seed, **attrs), grad

    return fused(x)


@keras.saving.register_keras_serializable(package="eanet", name="LayerNormalization")
class FastLayerNormalization(layers.LayerNormalization):
    """`keras.layers.LayerNormalization` over the last axis, with its gradient written out.

    Same weights (gamma, beta), same outputs. Differentiating Keras' op-by-op form (moments,
    rsqrt, scale, shift) costs several more passes over the (B, N, D) activations than the
    closed form below; the two layer norms per block were about a fifth of an EANet CPU step.
    Falls back to Keras' own call for any other axis, rms_scaling, or without center and scale.
    """

    def call(self, inputs):
        last_axis = len(inputs.shape) - 1
        if self.axis not in (-1, [-1], last_axis, [last_axis]) \
                or self.rms_scaling or not (self.center and self.scale):
            return super().call(inputs)
        return ops.cast(layer_norm_last_axis(ops.cast(inputs, "float32"),
                                             ops.cast(self.gamma, "float32"),
                                             ops.cast(self.beta, "float32"), self.epsilon),
                        self.compute_dtype)


def layer_norm_last_axis(x, gamma, beta, epsilon):
    """(x - mean) / sqrt(var + eps) * gamma + beta over the last axis, with the closed-form
    gradient: with x̂ the normalised input, g = dy * gamma and inv = 1 / sqrt(var + eps),
        dx = inv * (g - mean(g) - x̂ * mean(g * x̂)),  dgamma = Σ dy * x̂,  dbeta = Σ dy.
    """

    library = native.fused_ops_for(x.dtype) if keras.backend.backend() == "tensorflow" else None
    if library is not None:  # the same terms as one C++ op per direction (csrc/layer_norm.cc)
        import tensorflow as tf

        @tf.custom_gradient
        def fused(x, gamma, beta):
            def grad(dy):
                return library.eanet_layer_norm_grad(x, gamma, dy, epsilon=epsilon)

            return library.eanet_layer_norm(x, gamma, beta, epsilon=epsilon), grad

        return fused(x, gamma, beta)

    @ops.custom_gradient
    def normalize(x, gamma, beta):
        mean = ops.mean(x, axis=-1, keepdims=True)
        centered = x - mean
        inv = ops.rsqrt(ops.mean(ops.square(centered), axis=-1, keepdims=True) + epsilon)
        x_hat = centered * inv

        def grad(*args, upstream=None):
            dy = args[0] if upstream is None else upstream
            g = dy * gamma
            dx = inv * (g - ops.mean(g, axis=-1, keepdims=True)
                        - x_hat * ops.mean(g * x_hat, axis=-1, keepdims=True))
            reduce_axes = tuple(range(len(dy.shape) - 1))
            return dx, ops.sum(dy * x_hat, axis=reduce_axes), ops.sum(dy, axis=reduce_axes)

        return x_hat * gamma + beta, grad

    return normalize(x, gamma, beta)


def double_normalization(scores, epsilon):
    """EANet's double normalisation of (B, G, S, N) scores, with its gradient written out.

    Forward: p = softmax(scores) over N (last axis), q = p / (epsilon + sum_S p) over S (axis 2).
    Backward, from the upstream gradient dq:
        dp = (dq - sum_S(dq * q)) / (epsilon + sum_S p)      (the L1 step)
        dscores = p * (dp - sum_N(dp * p))                   (the softmax)
    The same values as differentiating the two steps op by op (tests/test_layers.py checks
    both against that), with fewer passes over the large tensors.
    """

    @ops.custom_gradient
    def normalize(scores):
        p = ops.softmax(scores, axis=-1)
        norm = epsilon + ops.sum(p, axis=2, keepdims=True)  # (B, G, 1, N)
        q = p / norm

        def grad(*args, upstream=None):
            dq = args[0] if upstream is None else upstream
            dp = (dq - ops.sum(dq * q, axis=2, keepdims=True)) / norm
            return (p * (dp - ops.sum(dp * p, axis=-1, keepdims=True)),)  # one per input (JAX)

        return q, grad

    return normalize(scores)
