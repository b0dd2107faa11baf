"""eanet's models compute the seed's function: same weights in, same outputs (and gradients) out,
with each `model.implementation` (auto: the speed paths; reference: the plain formulas), on
TensorFlow and, in a child process, on JAX.

The seed (../shared/bench/seed_reference.py, the Keras example's model) is the reference. Its
weights are copied into eanet's model in order; shapes must match one to one, which also pins
the parameter counts and the weight order. Inference mode, because dropout and augmentation
draw different random numbers in the two implementations.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import run_python
from eanet.config import AugmentationConfig, ModelConfig
from eanet.models.model import build_augmentation, build_model

ROOT = Path(__file__).resolve().parents[1]
SEED_REFERENCE = ROOT.parent / "shared" / "bench" / "seed_reference.py"
SEED_PARAMS = {"external": 361_380, "self": 623_268}
ATTENTIONS = ["external", "self"]
IMPLEMENTATIONS = ["auto", "reference"]


@pytest.fixture(scope="module")
def seed_reference():
    if not SEED_REFERENCE.is_file():
        pytest.skip(f"the seed implementation is not at {SEED_REFERENCE}; equivalence needs it")
    spec = importlib.util.spec_from_file_location("seed_reference", SEED_REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Seed:
    """The seed's model with non-trivial weights everywhere (biases start at zero), the images it
    saw and what it computes on them: inference outputs and the gradients of <outputs, upstream>
    (a vector-Jacobian product: every backward path, without the loss's clip of tiny
    probabilities, which the ViT's saturated outputs at these weights hit on about half the
    classes, so that float noise decides which gradients the clip zeroes)."""

    def __init__(self, seed_reference, attention: str):
        rng = np.random.default_rng(0)
        self.images = rng.integers(0, 256, (8, 32, 32, 3)).astype("float32")
        self.upstream = rng.normal(0, 1, (8, 100)).astype("float32")
        keras.utils.set_random_seed(0)
        self.model = seed_reference.get_model(f"{attention}_attention", x_adapt=self.images)
        normalization = self.model.get_layer("data_augmentation").layers[0]
        self.mean = np.asarray(normalization.mean).reshape(-1).tolist()
        self.variance = np.asarray(normalization.variance).reshape(-1).tolist()
        for weight in self.model.trainable_weights:
            weight.assign(rng.normal(0, 0.2, weight.shape).astype("float32"))
        self.outputs = keras.ops.convert_to_numpy(self.model(self.images, training=False))
        self.gradients = gradients(self.model, self.images, self.upstream)

    def eanet(self, attention: str, implementation: str) -> keras.Model:
        """eanet's model for `attention` with the seed's weights."""
        ours = build_model(ModelConfig(attention=attention, implementation=implementation), 32, 100,
                           build_augmentation(AugmentationConfig(), self.mean, self.variance, seed=0))
        assert [tuple(w.shape) for w in ours.trainable_weights] == \
            [tuple(w.shape) for w in self.model.trainable_weights]
        for ours_weight, seed_weight in zip(ours.trainable_weights, self.model.trainable_weights):
            ours_weight.assign(seed_weight)
        return ours


def objective(probabilities, upstream):
    return keras.ops.sum(probabilities * upstream)


def gradients(model, images, upstream):
    with tf.GradientTape() as tape:
        value = objective(model(images, training=False), upstream)
    return [tf.convert_to_tensor(g).numpy()  # the embedding's gradient is IndexedSlices
            for g in tape.gradient(value, model.trainable_weights)]


def assert_same_gradients(received, expected):
    for got, want in zip(received, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5 * max(1.0, np.abs(want).max()))


@pytest.fixture(scope="module")
def seeds(seed_reference):
    return {attention: Seed(seed_reference, attention) for attention in ATTENTIONS}


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_same_parameters_and_outputs_as_the_seed(seeds, attention, implementation):
    seed = seeds[attention]
    ours = seed.eanet(attention, implementation)
    trainable = sum(int(np.prod(w.shape)) for w in ours.trainable_weights)
    assert trainable == SEED_PARAMS[attention]

    received = keras.ops.convert_to_numpy(ours(seed.images, training=False))
    assert received.shape == (8, 100)
    np.testing.assert_allclose(received, seed.outputs, rtol=1e-4, atol=1e-6)
    assert not np.allclose(seed.outputs, seed.outputs[:1])  # the images are told apart


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_same_gradients_as_the_seed(seeds, attention, implementation):
    """The reference formulas, and the speed paths (EANet's folded projections and fused op,
    ViT's refold), train the seed's variables exactly as the seed's graph would."""
    seed = seeds[attention]
    ours = seed.eanet(attention, implementation)
    assert_same_gradients(gradients(ours, seed.images, seed.upstream), seed.gradients)


# The child process: eanet's models on Keras' JAX backend, with the seed's weights and what the
# seed computed (from the .npz the test writes), must compute the same outputs and gradients.
ON_JAX = """
import sys
import jax
import keras
import numpy as np
sys.path.insert(0, "tests")
from test_equivalence import ATTENTIONS, assert_same_gradients, objective
from eanet.config import AugmentationConfig, ModelConfig
from eanet.models.model import build_augmentation, build_model

assert keras.backend.backend() == "jax"
seed = np.load(sys.argv[1])
for attention in ATTENTIONS:
    weights = [seed[f"{attention}/weight_{i}"] for i in range(int(seed[f"{attention}/count"]))]
    model = build_model(ModelConfig(attention=attention, implementation="auto"), 32, 100,
                        build_augmentation(AugmentationConfig(), seed[f"{attention}/mean"],
                                           seed[f"{attention}/variance"], seed=0))
    for weight, value in zip(model.trainable_weights, weights, strict=True):
        weight.assign(value)
    images, upstream = seed[f"{attention}/images"], seed[f"{attention}/upstream"]
    frozen = [v.value for v in model.non_trainable_variables]

    def objective_and_outputs(trainable):
        probabilities, _ = model.stateless_call(trainable, frozen, images, training=False)
        return objective(probabilities, upstream), probabilities

    (_, outputs), grads = jax.jit(jax.value_and_grad(objective_and_outputs, has_aux=True))(
        [v.value for v in model.trainable_variables])
    np.testing.assert_allclose(np.asarray(outputs), seed[f"{attention}/outputs"], rtol=1e-4,
                               atol=1e-6, err_msg=attention)
    assert_same_gradients([np.asarray(g) for g in grads],
                          [seed[f"{attention}/gradient_{i}"] for i in range(len(weights))])
    print("same as the seed on JAX:", attention)
"""


def test_same_outputs_and_gradients_as_the_seed_on_jax(seeds, tmp_path):
    """Every JAX run takes paths TensorFlow runs do not (model.implementation=auto there: external
    attention folded in keras.ops, self-attention's reference formula, Keras' own dropout and
    layer normalisation): they too compute the seed's function. The seed needs
    TensorFlow, so this process records what it computes and a JAX child compares.
    tests/test_attention.py ties the other implementations on JAX to the reference."""
    if importlib.util.find_spec("jax") is None:
        pytest.skip("needs JAX beside TensorFlow (`pip install -e .[test]` installs it)")
    arrays = {}
    for attention, seed in seeds.items():
        arrays.update({f"{attention}/images": seed.images, f"{attention}/upstream": seed.upstream,
                       f"{attention}/mean": seed.mean, f"{attention}/variance": seed.variance,
                       f"{attention}/outputs": seed.outputs,
                       f"{attention}/count": len(seed.model.trainable_weights)})
        for i, (weight, gradient) in enumerate(zip(seed.model.trainable_weights, seed.gradients)):
            arrays[f"{attention}/weight_{i}"] = keras.ops.convert_to_numpy(weight)
            arrays[f"{attention}/gradient_{i}"] = gradient
    np.savez(tmp_path / "seed.npz", **arrays)
    result = run_python("-c", ON_JAX, str(tmp_path / "seed.npz"), env={"KERAS_BACKEND": "jax"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("same as the seed on JAX") == len(ATTENTIONS)


@pytest.mark.parametrize("rate", [0.0, 0.2])
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
def test_self_attention_context_matches_op_by_op(rate, graph):
    """The fused op of self-attention's scores → softmax → dropout → context, with its
    recomputing gradient, equals TensorFlow's own gradient of the op-by-op computation with the
    same keep-mask, eagerly and in a graph."""
    from conftest import require_fused_kernels
    from eanet.models.kernels import keep_mask_16bit, self_attention_context

    require_fused_kernels()

    rng = np.random.default_rng(0)
    query, keys, values, upstream = (tf.constant(rng.normal(0, 1, shape), tf.float32) for shape in
                                     [(2, 5, 3, 4), (2, 5, 4), (2, 5, 6), (2, 5, 3, 6)])

    def stacked(t):  # (B, N, H, ·) → (B, H·N, ·): the heads along the rows
        return tf.reshape(tf.transpose(t, (0, 2, 1, 3)), (2, 3 * 5, -1))

    def interleaved(t):  # and back
        return tf.transpose(tf.reshape(t, (2, 3, 5, -1)), (0, 2, 1, 3))

    def op_by_op(q, k, v, generator):
        p = tf.nn.softmax(tf.matmul(stacked(q), k, transpose_b=True))
        if rate:
            keep, scale = keep_mask_16bit(tf.shape(p), rate, generator, p.dtype)
            p = tf.where(keep, p * scale, tf.zeros_like(p))
        return interleaved(tf.matmul(p, v))

    def fused(q, k, v, generator):
        return self_attention_context(q, k, v, rate, generator)

    def output_and_gradients(function):
        generator = keras.random.SeedGenerator(7)  # the same mask for both

        def run():
            with tf.GradientTape() as tape:
                tape.watch([query, keys, values])
                output = function(query, keys, values, generator)
            return output, tape.gradient(output, [query, keys, values], upstream)

        output, grads = (tf.function(run) if graph else run)()
        return [output.numpy()] + [g.numpy() for g in grads]

    expected, received = output_and_gradients(op_by_op), output_and_gradients(fused)
    for name, got, want in zip(["output", "dquery", "dkeys", "dvalues"], received, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)
        assert np.abs(want).max() > 1e-3, name  # not trivially zero
    without_dropout = interleaved(
        tf.matmul(tf.nn.softmax(tf.matmul(stacked(query), keys, transpose_b=True)), values))
    assert np.allclose(received[0], without_dropout.numpy(), atol=1e-6) == (rate == 0)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_auto_trains_like_the_reference(attention):
    """Without dropout (the one random stream that differs), model.implementation=auto and
    =reference (Keras' own AdamW too) follow the same training trajectory from the same initial
    weights."""
    from eanet.config import OptimizerConfig, TrainerConfig
    from eanet.training.optimization import compile_model

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (64, 8, 8, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 4, 64), 4)
    x[y.argmax(1) == 1, :4] += 0.3  # something to learn
    losses, optimizers = {}, {}
    for implementation in IMPLEMENTATIONS:
        cfg = ModelConfig(attention=attention, embedding_dim=16, mlp_dim=16, num_blocks=2,
                          num_heads=2, dim_coefficient=2, attention_dropout=0.0,
                          projection_dropout=0.0, mlp_dropout=0.0, implementation=implementation)
        keras.utils.set_random_seed(0)
        model = build_model(cfg, 8, 4, None)
        compile_model(model, OptimizerConfig(), TrainerConfig(), implementation)
        optimizers[implementation] = type(model.optimizer).__name__
        history = model.fit(x, y, epochs=4, batch_size=16, verbose=0, shuffle=False)
        losses[implementation] = history.history["loss"]
    np.testing.assert_allclose(losses["auto"], losses["reference"], rtol=1e-4)
    assert optimizers == {"auto": "FusedAdamW", "reference": "AdamW"}
    assert losses["auto"][-1] < losses["auto"][0]
