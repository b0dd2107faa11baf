"""The training procedure, as in the seed: seed → data → model → compile → fit → evaluate → log.

Loss: categorical cross-entropy with label smoothing; metrics: top-1 and top-5 accuracy; the
optimizer comes from `OPTIMIZERS` (AdamW 1e-3 / wd 1e-4 by default). Returns the best validation
top-1, the metric a sweep optimises (the test set is only evaluated, never selected on).
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import keras
from omegaconf import DictConfig

from eanet.checkpoint import TrainingCheckpoint
from eanet.config import Config, OptimizerConfig
from eanet.data import channel_statistics, load_dataset, make_dataset, split_validation
from eanet.model import build_augmentation, build_model, count_parameters
from eanet.faults import StopOnNonFiniteLoss
from eanet.sweep import plan_run, sync_epoch_metrics
from eanet.tracking import TrackedRun

log = logging.getLogger(__name__)

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


def compile_model(model: keras.Model, cfg: Config) -> keras.Model:
    model.compile(
        optimizer=build_optimizer(cfg.optimizer),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.trainer.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="top1"),
                 keras.metrics.TopKCategoricalAccuracy(k=5, name="top5")],
    )
    return model


def extra_callbacks() -> list[keras.callbacks.Callback]:
    """Callbacks added to every fit; a seam for tests and later features."""
    return []


def train(cfg: Config, raw_cfg: DictConfig) -> float:
    """Train one configuration and record it as one MLflow run; return the best val top-1."""
    t = cfg.trainer
    plan = plan_run(cfg, raw_cfg)  # skip a configuration that FINISHED; resume an interrupted one
    if plan.skip:
        return plan.result
    keras.backend.clear_session()  # sweep jobs share a process: free the previous job's graphs
    keras.utils.set_random_seed(cfg.seed)

    # Data: uint8 arrays; a seeded validation split of the training set; test kept apart.
    data = load_dataset(cfg.data, cfg.seed)
    splits = split_validation(data, cfg.data.validation_split, cfg.seed)
    image_size, num_classes = cfg.data.image_size, data.num_classes
    log.info("data %s: %d train / %d val / %d test images", data.source, len(splits.y_train),
             len(splits.y_val), len(splits.y_test))
    train_ds = make_dataset(splits.x_train, splits.y_train, num_classes, t.batch_size, image_size,
                            training=True, seed=cfg.seed, repeat=t.steps_per_epoch is not None)
    val_ds = (make_dataset(splits.x_val, splits.y_val, num_classes, t.batch_size, image_size,
                           training=False, seed=cfg.seed) if len(splits.y_val) else None)
    test_ds = make_dataset(splits.x_test, splits.y_test, num_classes, t.batch_size, image_size,
                           training=False, seed=cfg.seed)

    # Model: normalisation statistics of the training split, the seed's augmentation, then EANet/ViT.
    mean, variance = channel_statistics(splits.x_train)
    augmentation = build_augmentation(cfg.data.augmentation, mean, variance, seed=cfg.seed)
    model = compile_model(build_model(cfg.model, image_size, num_classes, augmentation), cfg)
    counts = count_parameters(model)
    log.info("model %s: %s", cfg.model.name, counts)

    checkpoint = TrainingCheckpoint(plan.checkpoint_dir)
    with TrackedRun(cfg, raw_cfg, run_id=plan.run_id, tags=plan.tags) as run:
        initial_epoch = checkpoint.restore(model, run.run_id)
        sync_epoch_metrics(checkpoint.epoch_metrics)
        if plan.run_id is None:  # a resumed run has them already
            run.log_parameter_counts(counts)
        verbose = t.verbose if t.verbose == "auto" else int(t.verbose)
        start = time.perf_counter()
        # The checkpoint precedes the MLflow logger: an epoch is logged once it can be resumed.
        callbacks = [StopOnNonFiniteLoss(), checkpoint, run.epoch_logger(), *extra_callbacks()]
        history = model.fit(train_ds, validation_data=val_ds, epochs=t.epochs,
                            initial_epoch=initial_epoch, steps_per_epoch=t.steps_per_epoch,
                            validation_steps=t.validation_steps, callbacks=callbacks,
                            verbose=verbose)
        train_time = time.perf_counter() - start

        test = model.evaluate(test_ds, steps=t.test_steps, return_dict=True, verbose=0)
        steps_per_epoch = t.steps_per_epoch or -(-len(splits.y_train) // t.batch_size)
        images_seen = min(steps_per_epoch * t.batch_size, len(splits.y_train)
                          if t.steps_per_epoch is None else steps_per_epoch * t.batch_size)
        epochs_run = len(history.history.get("loss", []))
        val_top1 = checkpoint.history.get("val_top1", [])  # every epoch, resumed or not
        results = {"test_loss": test["loss"], "test_top1": test["top1"], "test_top5": test["top5"],
                   "train_time_s": train_time,
                   "throughput_img_per_s": images_seen * epochs_run / train_time}
        if val_top1:
            results["best_val_top1"] = max(val_top1)
        run.log_results(results)
        run.log_artifacts(model, checkpoint.history)
        log.info("%s: test top-1 %.4f, top-5 %.4f (%d epochs, %.1f s)", run.run_id,
                 test["top1"], test["top5"], epochs_run, train_time)
    checkpoint.finish(keep=cfg.tracking.keep_checkpoints)
    return float(results.get("best_val_top1", test["top1"]))
