"""The training procedure, as in the seed: seed → data → model → compile → fit → evaluate → log.

Loss, metrics and optimizer come from `eanet.training.optimization` (the seed's: label-smoothed
categorical cross-entropy, top-1/top-5, AdamW 1e-3 / wd 1e-4). Returns the best validation
top-1, the metric a sweep optimises (the test set is only evaluated, never selected on).
`build_compiled_model` is the one way a model is built for training; the benchmarks use it too.
"""
from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Optional, Sequence

import keras
from omegaconf import DictConfig

from eanet.config import Config
from eanet.data import channel_statistics, make_dataset, model_inputs, prepare_data
from eanet.models.flops import forward_flops, format_flops
from eanet.models.model import build_augmentation, build_model, count_parameters
from eanet.models.speed import SpeedPaths, run_speed_paths
from eanet.sweeps.jobs import RunPlan, claim_job, finished_earlier
from eanet.tracking.record import JobStatus
from eanet.sweeps.trial import trial_callbacks
from eanet.tracking import lineage
from eanet.tracking.run import TrackedRun
from eanet.training.checkpoint import TrainingCheckpoint
from eanet.training.distribute import distribution_strategy, global_batch_size
from eanet.training.memory import peak_memory, reset_peak_memory
from eanet.training.faults import StopOnNonFiniteLoss, StopWhenClaimLost
from eanet.training.optimization import compile_model
from eanet.training.precision import effective_matmul_precision, set_matmul_precision

log = logging.getLogger(__name__)


def set_precision(cfg: Config) -> None:
    """The dtype policy of every layer built after this (global in Keras, so set per run), and
    the precision inside float32 matmuls (eanet.training.precision), before the first one."""
    keras.mixed_precision.set_global_policy(cfg.trainer.precision)
    set_matmul_precision(cfg.trainer.matmul_precision)


def build_compiled_model(cfg: Config, mean: Sequence[float], variance: Sequence[float],
                         num_classes: int, strategy: Optional[object] = None) -> keras.Model:
    """The classifier `cfg` describes, compiled with the seed's objective, given the training
    split's per-channel statistics (the seed's `Normalization.adapt`).

    The augmentation is built outside the strategy's scope, as its random layers' seed states
    are per process; the model's and optimizer's variables live on every replica.
    """
    set_precision(cfg)
    augmentation = build_augmentation(cfg.data.augmentation, mean, variance, seed=cfg.seed)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = build_model(cfg.model, cfg.data.image_size, num_classes, augmentation)
        compile_model(model, cfg.optimizer, cfg.trainer, cfg.model.implementation)
    return model


def build_training(cfg: Config, x, y, num_classes: int):
    """The compiled model and training pipeline `train` builds, for images x and labels y (what
    the benchmarks step through)."""
    train_ds = make_dataset(x, y, num_classes, cfg.trainer.batch_size, cfg.data.image_size,
                            training=True, seed=cfg.seed, repeat=True)
    mean, variance = channel_statistics(x)
    return build_compiled_model(cfg, mean, variance, num_classes), train_ds


def model_speed_paths(cfg: Config, model: keras.Model) -> SpeedPaths:
    """The speed paths of the compiled `model` built from `cfg` (eanet.models.speed)."""
    m = cfg.model
    return run_speed_paths(m.implementation, m.attention if m.attention_layer is None else None,
                           cfg.trainer.precision, model.jit_compile)


def extra_callbacks() -> list[keras.callbacks.Callback]:
    """Callbacks added to every fit; a seam for tests and later features."""
    return []


def train(cfg: Config, raw_cfg: DictConfig) -> Optional[float]:
    """Train one configuration and record it as one MLflow run; return the best val top-1
    (None: the sweep's budget kept it from starting)."""
    job_start = time.perf_counter()
    # A computation that FINISHED (in any sweep) is skipped before anything loads.
    plan = finished_earlier(cfg, raw_cfg)
    if plan.skip:
        return plan.result
    keras.backend.clear_session()  # sweep jobs share a process: free the previous job's graphs
    keras.utils.set_random_seed(cfg.seed)
    # Data: uint8 arrays; a seeded validation split of the training set; test kept apart. Missing
    # or broken data fails here, before the job claims anything in the store.
    prepared = prepare_data(cfg.data, cfg.seed)
    # Claim the computation (waiting while another process trains it), or skip it after all.
    claim_job(plan, cfg)
    if plan.skip:
        return plan.result
    try:
        return _train_claimed(cfg, raw_cfg, plan, prepared, job_start)
    finally:
        plan.lease.release()


def _train_claimed(cfg: Config, raw_cfg: DictConfig, plan: RunPlan, prepared,
                   job_start: float) -> float:
    t = cfg.trainer
    strategy = distribution_strategy(t.distribution)  # one device unless trainer.distribution says
    batch_size = global_batch_size(t.batch_size, strategy)  # t.batch_size is per replica

    data, splits = prepared.data, prepared.splits
    image_size, num_classes = cfg.data.image_size, data.num_classes
    log.info("data %s: %d train / %d val / %d test images", data.source, len(splits.y_train),
             len(splits.y_val), len(splits.y_test))
    train_ds = make_dataset(splits.x_train, splits.y_train, num_classes, batch_size, image_size,
                            training=True, seed=cfg.seed, repeat=t.steps_per_epoch is not None)
    val_ds = (make_dataset(splits.x_val, splits.y_val, num_classes, batch_size, image_size,
                           training=False, seed=cfg.seed) if len(splits.y_val) else None)
    test_ds = make_dataset(splits.x_test, splits.y_test, num_classes, batch_size, image_size,
                           training=False, seed=cfg.seed)

    # Model: normalisation statistics of the training split, the seed's augmentation, then EANet/ViT.
    model = build_compiled_model(cfg, prepared.mean, prepared.variance, num_classes, strategy)
    counts = count_parameters(model)
    flops = forward_flops(model)  # per image, forward (eanet.models.flops)
    log.info("model %s: %s; %s per image", cfg.model.name, counts, format_flops(flops.total))
    speed = model_speed_paths(cfg, model)  # how each piece computes (eanet.models.speed)
    log.info("speed paths (model.implementation=%s): %s", cfg.model.implementation, speed)

    checkpoint = TrainingCheckpoint(cfg.tracking.checkpoint_dir,
                                    Path(cfg.tracking.checkpoint_dir) / plan.legacy_fingerprint)
    with TrackedRun(cfg, raw_cfg, run_id=plan.run_id, tags=plan.tags) as run:
        plan.lease.attach(run.run_id)  # the claim names its run
        plan.record_job(run_id=run.run_id)
        initial_epoch = checkpoint.restore(model, run.run_id)
        run.sync_epoch_metrics(checkpoint.epoch_metrics)
        lineage.log_matmul_precision(effective_matmul_precision())
        lineage.log_speed_paths(speed.as_dict())
        if plan.run_id is None:  # a resumed run has them already
            run.log_parameter_counts(counts)
            run.log_results(flops.metrics())
            run.set_tags(flops.tags())  # what the count left out, if anything
            lineage.log_datasets(cfg.data.name, data.source, splits)
            lineage.log_replicas(strategy.num_replicas_in_sync, batch_size)
        verbose = 0 if cfg.quiet else t.verbose if t.verbose == "auto" else int(t.verbose)
        reset_peak_memory()  # this run's peak, not an earlier job's in the same process
        start = time.perf_counter()
        # The checkpoint precedes the MLflow logger: an epoch is logged once it can be resumed;
        # a tuning trial's reporter (which may prune) comes after both.
        callbacks = [StopOnNonFiniteLoss(), StopWhenClaimLost(plan.lease), checkpoint,
                     run.epoch_logger(checkpoint),
                     *trial_callbacks(run), *extra_callbacks()]
        history = model.fit(train_ds, validation_data=val_ds, epochs=t.epochs,
                            initial_epoch=initial_epoch, steps_per_epoch=t.steps_per_epoch,
                            validation_steps=t.validation_steps, callbacks=callbacks,
                            verbose=verbose, shuffle=False)  # tf.data reshuffles every epoch
        train_time = time.perf_counter() - start

        test = model.evaluate(test_ds, steps=t.test_steps, return_dict=True, verbose=0)
        images_per_epoch = (t.steps_per_epoch * batch_size if t.steps_per_epoch
                            else len(splits.y_train))
        epochs_run = len(history.history.get("loss", []))
        val_top1 = checkpoint.history.get("val_top1", [])  # every epoch, resumed or not
        results = {**peak_memory(),
                   "test_loss": test["loss"], "test_top1": test["top1"], "test_top5": test["top5"],
                   "train_time_s": train_time,
                   # training images per second of fit, validation passes included
                   "throughput_img_per_s": images_per_epoch * epochs_run / train_time}
        if val_top1:
            results["best_val_top1"] = max(val_top1)
        run.log_results(results)
        run.log_artifacts(checkpoint.history)
        model_uri = (lineage.log_model_with_signature(model, model_inputs(splits.x_test[:4],
                                                                          image_size))
                     if cfg.tracking.log_model else None)
        log.info("%s: test top-1 %.4f, top-5 %.4f (%d epochs, %.1f s)", run.run_id,
                 test["top1"], test["top5"], epochs_run, train_time)
        if model_uri:  # what mlflow.pyfunc.load_model takes
            log.info("logged model: %s", model_uri)
        # the job's time outside fit, for the next plan's estimates (eanet.sweeps.estimate)
        run.log_results({"job_overhead_s": time.perf_counter() - job_start - train_time})
    plan.record_job(status=JobStatus.TRAINED)
    checkpoint.finish(keep=cfg.tracking.keep_checkpoints)
    return float(results.get("best_val_top1", test["top1"]))
