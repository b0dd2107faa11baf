"""Forward FLOPs per image of a built Keras model: the cost EANet's claim is about, the same on
every device.

Convention: a multiply-add of a matrix product or a convolution is 2 FLOPs (fvcore and many
papers count it as 1: halve to compare with those); element-wise work (biases, normalisations,
softmax, activations, residual sums, dropout) is not counted. The count is of the layers' formulas, the reference
implementation's (eanet.models.attention), whichever implementation runs: the folded and fused
forms compute the same function, some with fewer products.

How a layer is counted, first rule that applies:

1. `FLOP_FORMULAS`: a formula from the layer's shapes (eanet's layers, Keras' Dense; those
   without matrix products count 0); a TransformerBlock is its attention layer plus its MLP;
2. a Keras model inside the model (the augmentation stage): the sum over its layers;
3. any other layer (a plug-in attention from `model.attention_layer`): traced once for one
   image and its matrix products counted from the traced graph (`traced_flops`: TensorFlow's
   graph or JAX's jaxpr), only those that depend on the input (a product of weights alone is
   not per-image work).

Whatever cannot be counted is named in `FlopCount.uncounted`, never silently zero: an op from a
custom library, a function call or control flow inside a traced layer, or a backend without a
tracer. tests/test_flops.py checks the seed models against a count by hand and the formulas
against the traced reference implementations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import keras
from keras import layers

from eanet.models.layers import (ClassifierHead, ExternalAttention, PatchEmbedding, PatchExtract,
                                 SelfAttention, TransformerBlock)

Shape = tuple  # a layer's input shape for one image: (1, …)


@dataclass
class FlopCount:
    """FLOPs of one forward pass of one image, by top-level layer and by component."""
    total: int = 0
    by_layer: dict[str, int] = field(default_factory=dict)
    # patch_embedding, attention, mlp, head, other (as count_parameters' components)
    by_component: dict[str, int] = field(default_factory=dict)
    traced: list[str] = field(default_factory=list)  # layers counted from their traced graph
    uncounted: list[str] = field(default_factory=list)  # "layer: what was left out"

    def add(self, component: str, flops: int) -> None:
        self.by_component[component] = self.by_component.get(component, 0) + int(flops)

    def metrics(self) -> dict[str, float]:
        """What a training run logs (eanet.training.train)."""
        return {"flops_per_image": float(self.total),
                "flops_attention_per_image": float(self.by_component.get("attention", 0))}

    def tags(self) -> dict[str, str]:
        """The run's tag naming what the count left out (none when it is complete)."""
        from eanet.tracking.tags import TAG_FLOPS_UNCOUNTED

        return {TAG_FLOPS_UNCOUNTED: "; ".join(self.uncounted)[:5000]} if self.uncounted else {}


# ---- formulas from shapes ----

def dense_flops(layer: layers.Dense, shape: Shape) -> int:
    """x W on every position: (…, in) → (…, units)."""
    return 2 * math.prod(shape[1:-1]) * shape[-1] * layer.units


def external_attention_flops(layer: ExternalAttention, shape: Shape) -> int:
    """N patches of width D: x W_in (D → D·dc), h M_k (G heads: d → S), A M_v (S → d),
    merge and W_out (D·dc → D); with G·d = D·dc: 2·N·D·dc·(2·D + 2·S), linear in N."""
    _, patches, dim = shape
    width = layer.total_heads * layer.head_dim  # D·dc
    return 2 * patches * (dim * width + 2 * width * layer.memory_size + width * dim)


def self_attention_flops(layer: SelfAttention, shape: Shape) -> int:
    """N patches of width D, H heads of width K: the projections to Q, K, V (D → H·K each), the
    scores Q Kᵀ and the context P V (H·N·N·K each), the output (H·K → D): quadratic in N."""
    _, patches, dim = shape
    heads, key_dim = layer.num_heads, layer.attention.key_dim
    projections = 3 * patches * dim * heads * key_dim + patches * heads * key_dim * dim
    return 2 * (projections + 2 * heads * patches * patches * key_dim)


def patch_embedding_flops(layer: PatchEmbedding, shape: Shape) -> int:
    return dense_flops(layer.projection, shape)  # the position embedding is a sum


def classifier_head_flops(layer: ClassifierHead, shape: Shape) -> int:
    return dense_flops(layer.classifier, (shape[0], shape[-1]))  # after average pooling


def no_products(layer: layers.Layer, shape: Shape) -> int:
    return 0


# Layer class → FLOPs for one image of input shape `shape`. A subclass counts as its base.
# A TransformerBlock is its attention + MLP.
FLOP_FORMULAS: dict[type, Callable[[layers.Layer, Shape], int]] = {
    layers.Dense: dense_flops,
    ExternalAttention: external_attention_flops,
    SelfAttention: self_attention_flops,
    PatchEmbedding: patch_embedding_flops,
    ClassifierHead: classifier_head_flops,
    PatchExtract: no_products,
    layers.InputLayer: no_products,
    layers.Normalization: no_products,
    layers.LayerNormalization: no_products,
    layers.Dropout: no_products,
    layers.Activation: no_products,
    layers.GlobalAveragePooling1D: no_products,
    # the random augmentation is the identity at inference
    layers.RandomFlip: no_products, layers.RandomRotation: no_products,
    layers.RandomContrast: no_products, layers.RandomZoom: no_products,
}

COMPONENTS = {PatchEmbedding: "patch_embedding", ClassifierHead: "head"}


def _formula(layer: layers.Layer):
    for cls in type(layer).__mro__:
        if cls in FLOP_FORMULAS:
            return FLOP_FORMULAS[cls]
    return None


def _input_shape(layer: layers.Layer) -> Shape:
    """The layer's input shape in its model, for one image (an input layer: its own)."""
    tensor = layer.output if isinstance(layer, layers.InputLayer) else layer.input
    return (1, *tuple(tensor.shape)[1:])


def forward_flops(model: keras.Model) -> FlopCount:
    """Forward FLOPs per image of `model` (inference: dropout and augmentation inactive)."""
    count = FlopCount()
    for layer in model.layers:
        try:
            shape = _input_shape(layer)
        except (AttributeError, ValueError):  # several inputs: no formula or trace here
            count.uncounted.append(f"{layer.name}: not one input tensor")
            continue
        if isinstance(layer, TransformerBlock):  # pre-norm: attention, then the MLP
            attention = _count_layer(layer.attention, shape, f"{layer.name}/{layer.attention.name}",
                                     count)
            mlp = (dense_flops(layer.mlp_hidden, shape)
                   + dense_flops(layer.mlp_output, (*shape[:-1], layer.mlp_dim)))
            count.add("attention", attention)
            count.add("mlp", mlp)
            flops = attention + mlp
        else:
            flops = _count_layer(layer, shape, layer.name, count)
            if flops:
                count.add(COMPONENTS.get(type(layer), "other"), flops)
        count.by_layer[layer.name] = flops
        count.total += flops
    return count


def _count_layer(layer: layers.Layer, shape: Shape, path: str, count: FlopCount) -> int:
    formula = _formula(layer)
    if formula is not None:
        return formula(layer, shape)
    if isinstance(layer, keras.Model):  # e.g. the augmentation stage
        return sum(_count_layer(inner, _input_shape(inner), f"{path}/{inner.name}", count)
                   for inner in layer.layers)
    try:
        flops, missing = traced_flops(layer, shape)
    except Exception as error:  # noqa: BLE001 - a count must never stop a training run
        flops, missing = 0, [f"not traced ({type(error).__name__}: {error})"]
    count.traced.append(path)
    count.uncounted.extend(f"{path}: {what}" for what in missing)
    return flops


# ---- any other layer: its traced computation ----

def traced_flops(layer: layers.Layer, shape: Shape) -> tuple[int, list[str]]:
    """FLOPs of the matrix products in `layer`'s forward pass (training=False) on one input of
    `shape` that depend on that input, and what could not be counted."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow_flops(layer, shape)
    if backend == "jax":
        return _jax_flops(layer, shape)
    return 0, [f"not traced on the {backend} backend (TensorFlow and JAX are)"]


def einsum_flops(equation: str, shapes: list[Shape]) -> int:
    """2 × the product of every index's size (one multiply-add per index combination); an
    ellipsis stands for the leading dimensions it covers, broadcast across operands."""
    inputs = equation.replace(" ", "").split("->")[0].split(",")
    sizes: dict[str, int] = {}
    for spec, shape in zip(inputs, shapes):
        letters = spec.replace("...", "")
        covered = len(shape) - len(letters)
        labels = ([f"…{covered - i}" for i in range(covered)] if "..." in spec else [])
        before, _, after = spec.partition("...") if "..." in spec else (spec, "", "")
        for label, size in zip([*before, *labels, *after], shape):
            sizes[label] = max(sizes.get(label, 1), int(size))
    return 2 * math.prod(sizes.values())


def _tensorflow_flops(layer: layers.Layer, shape: Shape) -> tuple[int, list[str]]:
    import tensorflow as tf

    function = tf.function(lambda x: layer(x, training=False))
    graph = function.get_concrete_function(tf.TensorSpec(shape, layer.compute_dtype)).graph
    # ops that depend on the input: forward from the input placeholder
    dependent = {t.ref() for t in graph.inputs[:1]}
    flops, missing = 0, []
    for op in graph.get_operations():  # in creation order: an op's inputs come before it
        if not any(t.ref() in dependent for t in op.inputs):
            continue
        dependent.update(t.ref() for t in op.outputs)
        shapes = [tuple(t.shape) for t in op.inputs]
        if op.type == "MatMul":
            (m, k), n = shapes[0], shapes[1][0 if op.get_attr("transpose_b") else 1]
            if op.get_attr("transpose_a"):
                m, k = k, m
            flops += 2 * m * k * n
        elif op.type.startswith("BatchMatMul"):
            a, b = shapes
            m, k = (a[-1], a[-2]) if op.get_attr("adj_x") else (a[-2], a[-1])
            n = b[-2] if op.get_attr("adj_y") else b[-1]
            batch = tf.broadcast_static_shape(tf.TensorShape(a[:-2]), tf.TensorShape(b[:-2]))
            flops += 2 * math.prod(batch.as_list()) * m * k * n
        elif op.type == "Einsum":
            flops += einsum_flops(op.get_attr("equation").decode(), shapes)
        elif op.type in ("Conv2D", "DepthwiseConv2dNative"):
            height, width, channels = shapes[1][:3]  # kernel (kh, kw, in, out or multiplier)
            per_output = height * width * (channels if op.type == "Conv2D" else 1)
            flops += 2 * math.prod(tuple(op.outputs[0].shape)) * per_output
        elif op.type in ("PartitionedCall", "StatefulPartitionedCall", "While", "If",
                         "StatelessWhile", "StatelessIf") or not hasattr(tf.raw_ops, op.type):
            missing.append(f"op {op.type} (not counted)")
    return flops, missing


def _jax_flops(layer: layers.Layer, shape: Shape) -> tuple[int, list[str]]:
    import jax
    import jax.numpy as jnp

    closed = jax.make_jaxpr(lambda x: layer(x, training=False))(
        jnp.zeros(shape, layer.compute_dtype))
    missing: list[str] = []
    return _jaxpr_flops(closed.jaxpr, [True], missing), missing


def _jaxpr_flops(jaxpr, input_dependent: list[bool], missing: list[str]) -> int:
    """Products in `jaxpr` (nested ones included) that depend on its inputs marked True."""
    dependent = {v for v, d in zip(jaxpr.invars, input_dependent) if d}
    flops = 0
    for eqn in jaxpr.eqns:
        uses = [not hasattr(v, "val") and v in dependent for v in eqn.invars]
        if not any(uses):
            continue
        dependent.update(eqn.outvars)
        name = eqn.primitive.name
        if name == "dot_general":
            lhs, rhs = (v.aval.shape for v in eqn.invars)
            (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
            free = [s for i, s in enumerate(rhs) if i not in (*rhs_contract, *rhs_batch)]
            flops += 2 * math.prod(lhs) * math.prod(free)
        elif name == "conv_general_dilated":
            kernel = eqn.invars[1].aval.shape  # out channels × in / groups × window
            out_channels = kernel[eqn.params["dimension_numbers"].rhs_spec[0]]
            flops += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(kernel) // out_channels
        else:  # pjit, custom_jvp_call, remat, scan …: count the called computation
            for sub in _called_jaxprs(eqn.params):
                # the called jaxpr's inputs are the last of the equation's (after loop constants)
                inner = uses[len(uses) - len(sub.invars):] if len(uses) >= len(sub.invars) \
                    else [True] * len(sub.invars)
                once = _jaxpr_flops(sub, inner, missing)
                flops += once * (eqn.params["length"] if name == "scan" else 1)
                if once and name in ("while", "cond"):
                    missing.append(f"{name}: products inside control flow counted once")
    return flops


def _called_jaxprs(params: dict) -> list:
    found = []
    for value in params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if type(item).__name__ in ("Jaxpr", "ClosedJaxpr"):
                found.append(getattr(item, "jaxpr", item))
    return found


def format_flops(flops: float) -> str:
    """2.1e8 → '0.210 GFLOPs' (what log lines and reports print)."""
    return f"{flops / 1e9:.3f} GFLOPs"

