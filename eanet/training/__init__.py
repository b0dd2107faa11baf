"""The training procedure (`train`) and what it is made of: the optimizers and the seed's
objective (`optimization`), devices (`distribute`), per-epoch checkpoints (`checkpoint`), the
guards that turn faults into recorded endings (`faults`), and SIGTERM as Ctrl-C (`signals`).

The registries behind `optimizer.name` and `trainer.distribution` are import paths, as in Hydra's
`_target_`, resolved only when training starts: the config is validated against their names
without importing Keras or TensorFlow.
"""
# optimizer.name → "module.function" building a Keras optimizer from an OptimizerConfig and
# the optimizer path eanet.models.speed chose ("keras" or "fused")
OPTIMIZERS: dict[str, str] = {
    "adamw": "eanet.training.optimization.adamw",
    "adam": "eanet.training.optimization.adam",
    "sgd": "eanet.training.optimization.sgd",
}

# trainer.distribution → "module.function" returning a tf.distribute.Strategy
DISTRIBUTIONS: dict[str, str] = {
    "none": "eanet.training.distribute.default_strategy",
    "mirrored": "eanet.training.distribute.mirrored_strategy",
}
