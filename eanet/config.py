"""Typed configuration: the schema behind every Hydra config group.

Hydra composes `conf/` on top of these dataclasses (registered in the ConfigStore as
`eanet_schema`), so a typo'd key or a value of the wrong type fails while the config is composed.
What types cannot express (divisibility, ranges, registry names, keys added with `+` that the
schema does not know) is checked by eanet.config_checks at start-up, before any data is loaded.

This module is a leaf of eanet's import graph: it imports no other eanet module.
`check_choice` is the one "Unknown X. Valid values: …" check, used wherever a name is looked up
in a registry.
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import OmegaConf

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")  # trainer.precision


class ConfigError(ValueError):
    """A setting that cannot work. The message names the key, the value and what is valid."""


def check_choice(setting: str, value: Any, valid: Collection[Any]) -> None:
    """Raise ConfigError `Unknown <setting>=<value>. Valid values: …` unless `value` is in `valid`."""
    if value not in valid:
        raise ConfigError(f"Unknown {setting}={value!r}. "
                          f"Valid values: {', '.join(sorted(map(str, valid)))}")


@dataclass
class ModelConfig:
    name: str = "ea"  # short name used in run names and reports
    # The attention's name: a key of eanet.models.ATTENTION_TYPES (external, self), or any name
    # when `attention_layer` says what builds it.
    attention: str = "external"
    # A new attention (docs/extending.md): {_target_: my.module.MyAttention, <its arguments>}, built
    # once per block as MyAttention(**arguments, name=...) (eanet.plugins); the arguments may
    # interpolate the settings below (`${model.embedding_dim}`). None: the built-in `attention`.
    attention_layer: Any = None  # a mapping, or None (Any: a None default takes a dict override)
    patch_size: int = 2
    embedding_dim: int = 64
    mlp_dim: int = 64
    num_blocks: int = 8
    num_heads: int = 4
    dim_coefficient: int = 4  # external attention only: width multiplier and memory size divisor
    attention_dropout: float = 0.2
    projection_dropout: float = 0.2
    mlp_dropout: float = 0.2
    # eanet.models.IMPLEMENTATIONS: "auto", the fastest implementation for the backend (fused CPU
    # kernels, folded projections), or "reference", the paper's formulas in plain keras.ops.
    implementation: str = "auto"


@dataclass
class AugmentationConfig:
    # The seed's augmentation; active only in training (Keras' random layers are identity at inference).
    horizontal_flip: bool = True
    rotation: float = 0.1  # fraction of 2*pi
    contrast: float = 0.1
    zoom: float = 0.2
    # Keras 3's RandomContrast clips its output to pixel values, [0, 255]. In the seed's order it runs
    # after the normalisation, on values around 0, where that clip zeroes every negative value, in
    # training only: train and inference inputs then differ (EANet's validation loss rises from the
    # first epoch: experiments/seed/README.md). tf.keras did not clip when the Keras example recorded
    # its numbers (keras-team/keras-cv#427). false: contrast unclipped, as in that run; true: the
    # clip, as the seed's code runs under Keras 3.
    contrast_clip: bool = False


@dataclass
class DataConfig:
    # The data set's name (run records, reports); without `loader`, a key of eanet.data.DATASETS.
    name: str = "cifar100"
    # A data set of its own: the import path of a function `load(path)` returning the arrays
    # (x_train, y_train, x_test, y_test) (eanet.data.load_arrays; docs/extending.md), e.g.
    # eanet.cifar.load_cifar10. None: the built-in data set `name`.
    loader: Optional[str] = None
    # A local copy, given to the loader. CIFAR: the official python tarball, its extracted folder,
    # or an .npz with x_train/y_train/x_test/y_test. None means Keras' own download.
    path: Optional[str] = None
    image_size: int = 32  # images are resized to this if it differs from the data set's size
    num_classes: int = 100
    validation_split: float = 0.2  # taken from the shuffled training set
    train_size: Optional[int] = None  # use only this many training images (before the split)
    test_size: Optional[int] = None  # evaluate on only this many test images
    # synthetic data set only
    synthetic_train_size: int = 512
    synthetic_test_size: int = 128
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)


@dataclass
class OptimizerConfig:
    name: str = "adamw"  # registry key in eanet.training.OPTIMIZERS
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only


@dataclass
class TrainerConfig:
    epochs: int = 50
    batch_size: int = 128
    label_smoothing: float = 0.1
    # Limits for quick runs; None means the whole split.
    steps_per_epoch: Optional[int] = None
    validation_steps: Optional[int] = None
    test_steps: Optional[int] = None
    verbose: str = "auto"  # Keras fit verbosity: auto, 0, 1 or 2
    # none, or mirrored: one replica per visible GPU (eanet.training.distribute); batch_size is per replica
    distribution: str = "none"
    # Speed switches (measure them with `python -m eanet.bench`); the defaults are the seed's.
    precision: str = "float32"  # a Keras dtype policy: float32 | mixed_bfloat16 | mixed_float16
    # default | bfloat16: float32 matmuls on bfloat16-rounded inputs (AMX CPUs; eanet.training.precision)
    matmul_precision: str = "default"
    jit_compile: Optional[bool] = None  # XLA; None lets Keras decide (on GPU when the model allows)
    steps_per_execution: int = 1  # training steps per compiled call


@dataclass
class TrackingConfig:
    # None: MLFLOW_TRACKING_URI if set, else MLflow's default (sqlite:///mlflow.db in the working dir).
    tracking_uri: Optional[str] = None
    experiment_name: str = "eanet"
    log_model: bool = True  # log the trained model as an MLflow model (eanet.tracking.lineage)
    # After a sweep, register its best run's model (highest best_val_top1) under this name in
    # MLflow's model registry (eanet.sweeps.ending.RegisterBestModel). None: register nothing.
    register_best_as: Optional[str] = None
    # Faults and re-runs (eanet.sweeps.plan, eanet.training.checkpoint). None of these changes a run's result.
    rerun: bool = False  # train again even when this configuration already FINISHED
    checkpoint_dir: str = "checkpoints"  # per-epoch training state, a folder per MLflow run
    keep_checkpoints: bool = False  # keep a FINISHED run's checkpoint instead of removing it
    # CPU, memory (and GPU) every this many seconds, as MLflow's system/* metrics of the run
    system_metrics_interval_s: float = 10.0
    # A job's claim on its computation (eanet.tracking.ledger) lives this long unless renewed
    # (every third of it, while it trains): a job that dies without a word (SIGKILL, a lost
    # machine) is taken over, and resumed from its checkpoint, this long after its last renewal.
    lease_s: float = 120.0


@dataclass
class SweepConfig:
    # Budgets of one launch of a sweep (eanet.sweeps.budget): no job starts past them; the jobs
    # left are listed as not started and a relaunch continues with them. None: no limit.
    max_runs: Optional[int] = None  # training runs started (new or resumed; skipped ones are free)
    max_hours: Optional[float] = None  # hours since the launch began


@dataclass
class Config:
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    quiet: bool = False  # batch jobs: no Keras progress bar; one progress line per sweep job
    # TensorFlow's and MLflow's own messages: oneDNN and CPU-instruction notices, MLflow's warnings
    # and INFO lines. false: only their errors (eanet.console); true: all, as they print them.
    library_logs: bool = False
    sweep: SweepConfig = field(default_factory=SweepConfig)
    plan: bool = False  # print what would run and its cost, then exit (eanet.sweeps.plan)


def run_name(cfg: Config) -> str:
    """What the run is, e.g. `ea-p2-h4-dc4-s0` or `vit-p2-h4-s0`."""
    m = cfg.model
    parts = [m.name, f"p{m.patch_size}", f"h{m.num_heads}"]
    if m.attention == "external":
        parts.append(f"dc{m.dim_coefficient}")
    parts.append(f"s{cfg.seed}")
    return "-".join(parts)


# Settings (exact names or prefixes) that say where things go or how much is printed, never what
# is computed: left out of a run's fingerprint (eanet.sweeps.plan) and of a report's configurations.
NOT_COMPUTED = ("tracking.", "trainer.verbose", "data.path", "quiet", "library_logs", "sweep.",
                "plan")


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'model': {'patch_size': 2}} → {'model.patch_size': 2}."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def gpu_share(jobs: Any, reserve: float = 0.1) -> str:
    """The fraction of a GPU's memory each of `jobs` packed processes may take, leaving `reserve`
    free: `${eanet.gpu_share:${hydra.launcher.n_jobs}}` in conf/hydra/launcher/gpu_pack.yaml."""
    jobs = int(jobs)
    if jobs <= 0:
        raise ConfigError(f"Expected hydra.launcher.n_jobs > 0 to share a GPU. Received: {jobs}")
    return f"{(1.0 - reserve) / jobs:.3f}"


def register_configs() -> None:
    """Make the schema available to `conf/config.yaml` (its defaults list starts with it), and
    eanet's resolvers to every config."""
    from hydra.core.config_store import ConfigStore  # only where a config is composed

    ConfigStore.instance().store(name="eanet_schema", node=Config)
    OmegaConf.register_new_resolver("eanet.gpu_share", gpu_share, replace=True)
