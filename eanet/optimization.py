"""What training minimises and how: the optimizer registry, the seed's loss and its metrics.

Kept apart from `train` (and from MLflow) so config validation and benchmarks can use it alone.
"""
from __future__ import annotations

from typing import Callable

import keras

from eanet.config import OptimizerConfig, TrainerConfig

# optimizer.name → a Keras optimizer. Keras applies weight decay decoupled (AdamW-style) in all.
OPTIMIZERS: dict[str, Callable[[OptimizerConfig], keras.optimizers.Optimizer]] = {
    "adamw": lambda c: keras.optimizers.AdamW(learning_rate=c.learning_rate,
                                              weight_decay=c.weight_decay),
    "adam": lambda c: keras.optimizers.Adam(learning_rate=c.learning_rate,
                                            weight_decay=c.weight_decay or None),
    "sgd": lambda c: keras.optimizers.SGD(learning_rate=c.learning_rate, momentum=c.momentum,
                                          nesterov=c.nesterov, weight_decay=c.weight_decay or None),
}


def build_optimizer(cfg: OptimizerConfig) -> keras.optimizers.Optimizer:
    try:
        return OPTIMIZERS[cfg.name](cfg)
    except KeyError:
        raise ValueError(f"Unknown optimizer.name={cfg.name!r}. "
                         f"Valid values: {', '.join(sorted(OPTIMIZERS))}") from None


def compile_model(model: keras.Model, optimizer: OptimizerConfig,
                  trainer: TrainerConfig) -> keras.Model:
    """The seed's objective: categorical cross-entropy with label smoothing; top-1 and top-5."""
    model.compile(
        optimizer=build_optimizer(optimizer),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=trainer.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="top1"),
                 keras.metrics.TopKCategoricalAccuracy(k=5, name="top5")],
        steps_per_execution=trainer.steps_per_execution,
        # trainer.jit_compile: None lets Keras decide (XLA on a GPU when every layer allows it)
        jit_compile="auto" if trainer.jit_compile is None else trainer.jit_compile,
    )
    return model
