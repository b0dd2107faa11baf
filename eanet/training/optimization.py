"""What training minimises and how: the optimizer registry, the seed's loss and its metrics.

Kept apart from `train` (and from MLflow) so config validation and benchmarks can use it alone.
Adam and AdamW are Keras' own for `model.implementation=reference`, and for "auto" where
eanet.models.speed chooses the fused update (TensorFlow) FusedAdam and FusedAdamW.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import keras

from eanet.training import OPTIMIZERS

if TYPE_CHECKING:
    from eanet.config import OptimizerConfig, TrainerConfig


class FusedAdamUpdate:
    """Adam's per-variable update as TensorFlow's fused `ResourceApplyAdam` kernel.

    Keras 3's Adam writes the update (Kingma & Ba, Alg. 1) as a few dozen graph ops per
    variable — moments, bias correction, the step — and the TensorFlow backend traces them once
    per variable, so they make up much of the training step's graph, and of its first-step
    tracing and graph optimisation. `ResourceApplyAdam`, tf.keras 2's kernel, computes the same
    formula in one op:
        lr_t = lr · sqrt(1 − β2^t) / (1 − β1^t)
        m += (g − m)(1 − β1);  v += (g² − v)(1 − β2);  θ −= lr_t · m / (sqrt(v) + ε)
    and the step's scalars (t, β^t, ...) are made once per step, not once per variable.
    Decoupled weight decay (AdamW) is one fused op per variable too (`ResourceApplyGradientDescent`
    with δ = θ). AMSGrad, and a saved model loaded where eanet.models.speed does not choose the
    fused update (another backend), take Keras' update and decay unchanged; sparse gradients,
    Keras' update after our decay. What it needs of Keras' Adam beyond its public API is read
    in one place, `_keras_adam_state`.
    """

    def apply(self, grads, trainable_variables=None):
        self._step_scalars = {}  # dtype → this step's scalars, made by its first update_step
        return super().apply(grads, trainable_variables)

    # The Keras-internal names the fused path relies on, checked against KERAS_CHECKED (the
    # version bound in pyproject.toml); without any of them it takes Keras' own update instead.
    KERAS_INTERNALS = ("_get_variable_index", "_use_weight_decay", "_apply_weight_decay",
                       "_momentums", "_velocities")
    KERAS_CHECKED = "3.15.1"

    def _fused(self) -> bool:
        from eanet.models.speed import FUSED, speed_paths

        return (speed_paths("auto").optimizer == FUSED and not self.amsgrad
                and all(hasattr(self, name) for name in self.KERAS_INTERNALS))

    def _keras_adam_state(self, variable):
        """Keras' Adam state of `variable`: its first and second moments, and whether weight
        decay applies to it (the optimizer's exclusions). Keras has no public API for them."""
        index = self._get_variable_index(variable)
        return self._momentums[index], self._velocities[index], self._use_weight_decay(variable)

    def _apply_weight_decay(self, variables):
        # Keras decays every variable before the updates, several traced ops each; the fused
        # update_step decays each variable itself just before its Adam step: the same θ −= lr·λ·θ
        # (Adam's step does not read θ), with Keras' exclusions (`_use_weight_decay`).
        if not self._fused():
            super()._apply_weight_decay(variables)

    def update_step(self, gradient, variable, learning_rate):
        if not self._fused():
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        dtype = variable.dtype
        scalars = getattr(self, "_step_scalars", {})  # {} when called outside `apply`
        if dtype not in scalars:
            step = tf.cast(self.iterations + 1, dtype)  # t: Keras counts iterations from 0
            beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
            lr = tf.cast(learning_rate, dtype)
            adam = dict(beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
                        lr=lr, beta1=beta_1, beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype))
            decay = None if self.weight_decay is None else lr * tf.cast(self.weight_decay, dtype)
            scalars[dtype] = adam, decay
        adam, decay = scalars[dtype]
        handle = _handle(variable)
        momentum, velocity, decays = self._keras_adam_state(variable)
        if decay is not None and decays:
            theta = tf.raw_ops.ReadVariableOp(resource=handle, dtype=dtype)
            tf.raw_ops.ResourceApplyGradientDescent(var=handle, alpha=decay, delta=theta)
        if isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        tf.raw_ops.ResourceApplyAdam(var=handle, m=_handle(momentum), v=_handle(velocity),
                                     grad=tf.cast(gradient, dtype), **adam)


def _handle(variable):
    """The TensorFlow resource behind a Keras or tf.Variable (a replica's own under tf.distribute
    updates)."""
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle


@keras.saving.register_keras_serializable(package="eanet")
class FusedAdam(FusedAdamUpdate, keras.optimizers.Adam):
    """keras.optimizers.Adam, updated by one fused kernel per variable (FusedAdamUpdate)."""


@keras.saving.register_keras_serializable(package="eanet")
class FusedAdamW(FusedAdamUpdate, keras.optimizers.AdamW):
    """keras.optimizers.AdamW, updated by one fused kernel per variable (FusedAdamUpdate)."""


# The optimizers of the registry eanet.training.OPTIMIZERS (optimizer.name), by the optimizer
# path eanet.models.speed chose ("keras" or "fused"). Keras applies weight decay decoupled
# (AdamW-style) in all.
ADAMW = {"keras": keras.optimizers.AdamW, "fused": FusedAdamW}
ADAM = {"keras": keras.optimizers.Adam, "fused": FusedAdam}


def adamw(c: OptimizerConfig, path: str) -> keras.optimizers.Optimizer:
    return ADAMW[path](learning_rate=c.learning_rate, weight_decay=c.weight_decay)


def adam(c: OptimizerConfig, path: str) -> keras.optimizers.Optimizer:
    return ADAM[path](learning_rate=c.learning_rate, weight_decay=c.weight_decay or None)


def sgd(c: OptimizerConfig, path: str) -> keras.optimizers.Optimizer:
    return keras.optimizers.SGD(learning_rate=c.learning_rate, momentum=c.momentum,
                                nesterov=c.nesterov, weight_decay=c.weight_decay or None)


def build_optimizer(cfg: OptimizerConfig, implementation: str = "auto") -> keras.optimizers.Optimizer:
    """optimizer.name's optimizer, updated as eanet.models.speed chooses for `implementation`."""
    # Imported here: a saved model's optimizer class loads without the config's modules.
    from eanet.config import check_choice
    from eanet.models.speed import speed_paths
    from eanet.plugins import import_object

    check_choice("optimizer.name", cfg.name, OPTIMIZERS)
    path = speed_paths(implementation).optimizer
    return import_object(OPTIMIZERS[cfg.name], "optimizer.name")(cfg, path)


def compile_model(model: keras.Model, optimizer: OptimizerConfig, trainer: TrainerConfig,
                  implementation: str = "auto") -> keras.Model:
    """The seed's objective: categorical cross-entropy with label smoothing; top-1 and top-5;
    the optimizer's update as eanet.models.speed chooses for `implementation`
    (model.implementation)."""
    model.compile(
        optimizer=build_optimizer(optimizer, implementation),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=trainer.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="top1"),
                 keras.metrics.TopKCategoricalAccuracy(k=5, name="top5")],
        steps_per_execution=trainer.steps_per_execution,
        # trainer.jit_compile: None lets Keras decide (XLA on a GPU when every layer allows it)
        jit_compile="auto" if trainer.jit_compile is None else trainer.jit_compile,
    )
    # The optimizer's slots (moments, iteration count) now, not in the first traced step: without
    # a distribution strategy Keras creates them inside `fit`'s first trace, and a tf.function that
    # creates variables is traced a second time: the whole training step traced twice, the larger
    # part of the first step's time.
    model.optimizer.build(model.trainable_variables)
    return model
