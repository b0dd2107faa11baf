"""The optimizer and the compiled model: model.implementation=reference compiles Keras' own
Adam(W), auto (on TensorFlow) FusedAdam(W), which update exactly as Keras' Adam(W) do; `fit`
traces the training step once."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY, compose_config
from eanet.config_checks import validate
from eanet.models.model import build_augmentation, build_model
from eanet.training.optimization import FusedAdam, FusedAdamW, build_optimizer, compile_model


def run_updates(optimizer, steps: int, in_graph: bool) -> list[np.ndarray]:
    """`steps` updates of three variables (one excluded from weight decay) on fixed gradients."""
    rng = np.random.default_rng(0)
    variables = [keras.Variable(rng.normal(size=shape).astype("float32"), name=name)
                 for shape, name in (((5, 3), "kernel"), ((3,), "bias"), ((4, 2, 2), "memory"))]
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    gradients = [[tf.constant(rng.normal(size=v.shape).astype("float32")) for v in variables]
                 for _ in range(steps)]
    optimizer.build(variables)

    def apply(step_gradients):
        optimizer.apply_gradients(zip(step_gradients, variables))

    if in_graph:
        apply = tf.function(apply)
    for step_gradients in gradients:
        apply(step_gradients)
    return [v.numpy() for v in variables + list(optimizer.variables)]


@pytest.mark.parametrize("in_graph", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("fused, reference, settings", [
    (FusedAdamW, keras.optimizers.AdamW, dict(learning_rate=0.01, weight_decay=0.1)),
    (FusedAdam, keras.optimizers.Adam, dict(learning_rate=0.01)),
    (FusedAdam, keras.optimizers.Adam, dict(learning_rate=0.01, weight_decay=0.05)),
    (FusedAdam, keras.optimizers.Adam, dict(learning_rate=0.01, amsgrad=True)),  # Keras' own path
], ids=["adamw", "adam", "adam-decay", "adam-amsgrad"])
def test_fused_adam_updates_like_keras_adam(fused, reference, settings, in_graph):
    ours = run_updates(fused(**settings), steps=4, in_graph=in_graph)
    theirs = run_updates(reference(**settings), steps=4, in_graph=in_graph)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):  # variables, iterations, moments: to float rounding
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(ours[0], run_updates(fused(**settings), 0, in_graph)[0])  # it moved


@pytest.mark.parametrize("name, implementation, expected", [
    ("adamw", "reference", keras.optimizers.AdamW), ("adam", "reference", keras.optimizers.Adam),
    ("adamw", "auto", FusedAdamW), ("adam", "auto", FusedAdam),
    ("sgd", "auto", keras.optimizers.SGD)])
def test_the_implementation_chooses_the_optimizers_update(name, implementation, expected):
    cfg = validate(compose_config([f"optimizer={name}"] if name != "adamw" else []))
    assert type(build_optimizer(cfg.optimizer, implementation)) is expected


def test_fused_adamw_is_one_kernel_per_variable_in_the_graph():
    variables = [keras.Variable(np.ones((3, 2), "float32")), keras.Variable(np.ones(2, "float32"))]
    optimizer = FusedAdamW(learning_rate=0.01, weight_decay=0.1)
    optimizer.build(variables)
    step = tf.function(lambda grads: optimizer.apply_gradients(zip(grads, variables)))
    graph = step.get_concrete_function([tf.TensorSpec(v.shape) for v in variables]).graph
    op_types = [op.type for op in graph.get_operations()]
    assert op_types.count("ResourceApplyAdam") == len(variables)
    assert op_types.count("ResourceApplyGradientDescent") == len(variables)  # the weight decay
    assert op_types.count("Pow") == 2  # β1^t and β2^t once per step, not per variable


def test_fused_adamw_serializes_as_itself():
    optimizer = FusedAdamW(learning_rate=0.003, weight_decay=0.02)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is FusedAdamW
    assert restored.get_config() == optimizer.get_config()


def test_fit_traces_the_training_step_once():
    """The optimizer's variables exist before `fit`: a tf.function that creates variables while
    tracing is traced again, and for the seed model that second trace costs ~20 s."""
    cfg = validate(compose_config(TINY))
    augmentation = build_augmentation(cfg.data.augmentation, [0.0] * 3, [1.0] * 3, seed=0)
    model = compile_model(build_model(cfg.model, 8, 4, augmentation), cfg.optimizer, cfg.trainer)
    assert model.optimizer.built and len(model.optimizer.variables) > 1
    traces = []
    train_step = model.train_step

    def counting_train_step(data):
        traces.append(1)  # Python runs only while TensorFlow traces
        return train_step(data)

    model.train_step = counting_train_step
    x = np.random.default_rng(0).uniform(0, 255, (32, 8, 8, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(32) % 4, 4)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert len(traces) == 1


def test_keras_still_has_the_internals_fused_adam_uses():
    """FusedAdam(W) relies on Keras-internal optimizer names (pyproject.toml bounds Keras for it).
    On a Keras release without them it would silently fall back to Keras' slower update: fail."""
    optimizer = FusedAdamW(learning_rate=1e-3, weight_decay=1e-4)
    optimizer.build([keras.Variable(np.zeros((3,), "float32"))])
    missing = [name for name in optimizer.KERAS_INTERNALS if not hasattr(optimizer, name)]
    assert not missing, (f"Keras {keras.__version__} lacks {missing} (checked against Keras "
                         f"{optimizer.KERAS_CHECKED}): update FusedAdamUpdate in "
                         "eanet/training/optimization.py, then the Keras bound in pyproject.toml")
    assert optimizer._fused()
