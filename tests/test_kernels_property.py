"""The fused attention ops (eanet/models/csrc/fused_attention.cc) against the paper's formulas
written in plain keras.ops and differentiated by the backend: 50 seeded draws per attention of
the shapes models produce (batch 1 and odd batches, patch counts that are not a multiple of the
64-row blocks, memory size 1, head width 1, odd embedding widths), dropout off and on, the keep
mask drawn from the same stream (keep_mask_16bit) for both. Outputs and the gradient at every
input and weight agree to float32 rounding."""
from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import require_fused_kernels
from keras import ops

from eanet.models.kernels import (external_attention_context, keep_mask_16bit,
                                  self_attention_context)

DRAWS = 50
RATE = 0.25


def _dims(rng):
    """A batch and a patch count as models have them, edges first: batch 1 and odd batches;
    patch counts below, at and around the 64-row blocks (never a multiple of 64 but 64)."""
    batch = int(rng.choice([1, 2, 3, 5]))
    patches = int(rng.choice([1, 2, 7, 63, 64, 65, 100, 129]))
    return batch, patches


def _self_attention_reference(query, keys, values, keep, scale):
    """softmax(query_h · keysᵀ) per head, dropped out, times values: query (B, N, H, D), keys
    (B, M, D), values (B, M, V), keep (B, H·N, M) (heads stacked along the rows) or None."""
    batch, patches, heads = query.shape[0], query.shape[1], query.shape[2]
    p = ops.softmax(ops.einsum("bnhd,bmd->bhnm", query, keys), axis=-1)  # (B, H, N, M)
    if keep is not None:
        p = ops.where(ops.reshape(keep, (batch, heads, patches, -1)), p, 0.0) * scale
    return ops.einsum("bhnm,bmv->bnhv", p, values)


def _external_attention_reference(x, score_kernel, score_bias, read_kernel, groups, epsilon,
                                  keep, scale):
    """EANet's attention: scores x · M_k (+ bias) per group, softmax over the N patches, L1 over
    the S memory slots (double normalisation), dropout, read-out through M_v."""
    batch, patches = x.shape[0], x.shape[1]
    scores = ops.einsum("bnd,dk->bkn", x, score_kernel) + score_bias[:, None]  # (B, G·S, N)
    p = ops.softmax(ops.reshape(scores, (batch, groups, -1, patches)), axis=-1)
    q = p / (epsilon + ops.sum(p, axis=2, keepdims=True))
    m = ops.reshape(q, (batch, -1, patches))  # (B, G·S, N)
    if keep is not None:
        m = ops.where(keep, m, 0.0) * scale
    return ops.einsum("bkn,kd->bnd", m, read_kernel)


def _with_gradients(function, inputs, upstream):
    """function(*inputs) and its gradient at every input, for the upstream gradient."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(inputs)
        out = function(*inputs)
    return [out.numpy(), *(g.numpy() for g in tape.gradient(out, inputs, upstream))]


def _assert_close(got, want, names):
    for name, g, w in zip(names, got, want):
        assert g.shape == w.shape, name
        np.testing.assert_allclose(g, w, rtol=2e-4, atol=2e-5 * max(1.0, np.abs(w).max()),
                                   err_msg=name)


def _draws(seed):
    """(draw, rng, dropout): dropout on every other draw."""
    require_fused_kernels()
    rng = np.random.default_rng(seed)
    for draw in range(DRAWS):
        yield draw, rng, (draw % 2 == 1)


pytestmark = pytest.mark.filterwarnings("ignore:You are using a softmax over axis")  # 1 patch


def test_fused_self_attention_equals_the_plain_formula():
    import tensorflow as tf

    for draw, rng, dropout in _draws(1):
        batch, patches = _dims(rng)
        heads, width, value_width = (int(rng.integers(1, 5)), int(rng.choice([1, 3, 8])),
                                     int(rng.choice([1, 5, 8])))
        shapes = [(batch, patches, heads, width), (batch, patches, width),
                  (batch, patches, value_width)]
        inputs = [tf.constant(rng.normal(0, 1, s), tf.float32) for s in shapes]
        upstream = tf.constant(rng.normal(0, 1, (batch, patches, heads, value_width)), tf.float32)
        rate = RATE if dropout else 0.0

        def fused(q, k, v):
            return self_attention_context(q, k, v, rate, keras.random.SeedGenerator(draw))

        keep, scale = None, None
        if dropout:  # the same stream: a generator seeded alike, its first draw
            keep, scale = keep_mask_16bit(tf.constant([batch, heads * patches, patches]), rate,
                                          keras.random.SeedGenerator(draw), tf.float32)

        def reference(q, k, v):
            return _self_attention_reference(q, k, v, keep, scale)

        _assert_close(_with_gradients(fused, inputs, upstream),
                      _with_gradients(reference, inputs, upstream),
                      [f"draw {draw} {shapes} dropout={dropout}: {name}"
                       for name in ("out", "dquery", "dkeys", "dvalues")])


def test_fused_external_attention_equals_the_plain_formula():
    import tensorflow as tf

    for draw, rng, dropout in _draws(2):
        batch, patches = _dims(rng)
        width = int(rng.choice([1, 3, 5, 8, 13]))  # the embedding width D, odd ones included
        groups, slots = int(rng.integers(1, 4)), int(rng.choice([1, 2, 5, 8]))  # S = 1: one slot
        memory = groups * slots
        shapes = [(batch, patches, width), (width, memory), (memory,), (memory, width)]
        inputs = [tf.constant(rng.normal(0, 1, s), tf.float32) for s in shapes]
        upstream = tf.constant(rng.normal(0, 1, (batch, patches, width)), tf.float32)
        rate, epsilon = (RATE if dropout else 0.0), 1e-9

        def fused(x, kernel, bias, read):
            return external_attention_context(x, kernel, bias, read, groups, epsilon, rate,
                                              keras.random.SeedGenerator(draw))

        keep, scale = None, None
        if dropout:
            keep, scale = keep_mask_16bit(tf.constant([batch, memory, patches]), rate,
                                          keras.random.SeedGenerator(draw), tf.float32)

        def reference(x, kernel, bias, read):
            return _external_attention_reference(x, kernel, bias, read, groups, epsilon, keep,
                                                  scale)

        _assert_close(_with_gradients(fused, inputs, upstream),
                      _with_gradients(reference, inputs, upstream),
                      [f"draw {draw} {shapes} groups={groups} dropout={dropout}: {name}"
                       for name in ("out", "dx", "dscore_kernel", "dscore_bias", "dread_kernel")])
