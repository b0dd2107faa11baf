"""eanet.models.speed, the one door for speed: its decision for every combination of its inputs,
the facts it reads from the process (XLA through TensorFlow's private API, checked against the
version named here), and what a model's graph then holds."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from conftest import require_fused_kernels
from eanet.models.layers import ExternalAttention, SelfAttention, TransformerBlock
from eanet.models.speed import SpeedPaths, choose_speed_paths, inside_xla, speed_paths

# inside_xla reads tensorflow.python; checked against this TensorFlow release.
TENSORFLOW_CHECKED = "2.21.0"
REFERENCE = SpeedPaths("reference", "keras", "keras", "keras")
FUSED = SpeedPaths("fused", "fused", "fused", "fused")


def never_asked() -> bool:
    raise AssertionError("the kernels were asked about where they cannot run")


def choose(implementation="auto", attention="external", backend="tensorflow", device="cpu",
           precision="float32", xla=False, kernels=lambda: True) -> SpeedPaths:
    return choose_speed_paths(implementation, attention, backend=backend, device=device,
                              precision=precision, xla=xla, kernels=kernels)


@pytest.mark.parametrize("facts, expected", [
    ({}, FUSED),
    ({"attention": "self"}, FUSED),
    ({"kernels": lambda: False}, SpeedPaths("folded", "keras", "keras", "fused")),
    ({"attention": "self", "kernels": lambda: False},
     SpeedPaths("reference", "keras", "keras", "fused")),
    ({"xla": True, "kernels": never_asked},
     SpeedPaths("folded", "keras", "keras", "fused")),
    ({"device": "gpu", "kernels": never_asked},
     SpeedPaths("folded", "keras", "keras", "fused")),
    # layer normalisation computes in float32 under every policy: its kernel still applies
    ({"precision": "mixed_bfloat16"}, SpeedPaths("folded", "fused", "keras", "fused")),
    ({"backend": "jax", "kernels": never_asked},
     SpeedPaths("folded", "keras", "keras", "keras")),
    ({"backend": "jax", "device": "gpu", "attention": "self", "kernels": never_asked},
     SpeedPaths("reference", "keras", "keras", "keras")),
    ({"attention": None}, SpeedPaths("plug-in", "fused", "fused", "fused")),
    ({"attention": "pool"}, SpeedPaths("plug-in", "fused", "fused", "fused")),
], ids=["tf-cpu", "tf-cpu-self", "no-kernels", "no-kernels-self", "xla", "gpu", "bfloat16",
        "jax", "jax-gpu-self", "no-attention", "plug-in"])
def test_auto_chooses_by_backend_device_precision_and_xla(facts, expected):
    assert choose(**facts) == expected


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
@pytest.mark.parametrize("attention", ["external", "self"])
def test_reference_is_plain_keras_everywhere(backend, attention):
    assert choose("reference", attention, backend=backend, kernels=never_asked) == REFERENCE
    plug_in = choose("reference", None, backend=backend, kernels=never_asked)
    assert plug_in == SpeedPaths("plug-in", "keras", "keras", "keras")


def test_an_unknown_implementation_is_refused_with_the_valid_values():
    with pytest.raises(ValueError, match="Unknown implementation 'fast'. Valid values: auto, "
                                         "reference"):
        choose("fast")


def test_the_paths_print_and_tag_by_piece():
    paths = choose(kernels=lambda: False)
    assert str(paths) == "attention=folded norm=keras gelu=keras optimizer=fused"
    assert list(paths.as_dict()) == ["attention", "norm", "gelu", "optimizer"]


def test_inside_xla_reads_tensorflows_xla_context():
    """The one use of tensorflow.python in eanet (no public API says whether an XLA function is
    being traced). Fails where TensorFlow moved it: update eanet.models.speed.inside_xla."""
    import tensorflow as tf

    seen = []

    def probe(x):
        seen.append(inside_xla("tensorflow"))
        return x

    x = tf.ones((2,))
    probe(x)
    tf.function(probe)(x)
    tf.function(probe, jit_compile=True)(x)
    assert seen == [False, False, True], (
        f"TensorFlow {tf.__version__} (inside_xla was checked against {TENSORFLOW_CHECKED})")
    assert inside_xla("jax") is False


def test_a_process_decides_from_its_own_backend_device_and_policy():
    require_fused_kernels()
    assert speed_paths("auto", "external") == FUSED  # TensorFlow on this CPU, float32
    assert speed_paths("auto", "external", "mixed_bfloat16").attention == "folded"
    assert speed_paths("reference", "self") == REFERENCE


def op_types(function, *args) -> set[str]:
    return {op.type for op in function.get_concrete_function(*args).graph.get_operations()}


@pytest.mark.parametrize("attention", ["external", "self"])
def test_a_block_holds_the_fused_ops_exactly_where_the_door_says(attention):
    """auto on this CPU: every fused op in the training graph; under XLA (which cannot hold
    them) and for the reference, none, with the same inference outputs."""
    import tensorflow as tf

    require_fused_kernels()
    x = tf.constant(np.random.default_rng(0).normal(0, 1, (2, 9, 16)), tf.float32)

    def block(implementation):
        layer = (ExternalAttention(16, 2, 2, 0.2, 0.2, implementation=implementation)
                 if attention == "external" else
                 SelfAttention(16, 2, 0.2, implementation=implementation))
        built = TransformerBlock(layer, 16, 32, 0.2, implementation)
        built(x)
        return built

    auto, reference = block("auto"), block("reference")
    reference.set_weights(auto.get_weights())
    core = "EanetExternalAttention" if attention == "external" else "EanetSelfAttention"
    training = op_types(tf.function(lambda x: auto(x, training=True)), x)
    assert {core, "EanetKeepMask16", "EanetLayerNorm", "EanetGeluDropout"} <= training
    xla = tf.function(lambda x: auto(x, training=True), jit_compile=True)
    assert not {op for op in op_types(xla, x) if op.startswith("Eanet")}
    assert not {op for op in op_types(tf.function(lambda x: reference(x, training=True)), x)
                if op.startswith("Eanet")}
    outputs = [keras.ops.convert_to_numpy(f(x)) for f in (
        auto, reference, tf.function(lambda x: auto(x), jit_compile=True))]
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outputs[2], outputs[1], rtol=1e-4, atol=1e-5)
