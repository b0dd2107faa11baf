"""Typed configuration: the schema behind every Hydra config group, and its validation.

Hydra composes `conf/` on top of these dataclasses (registered in the ConfigStore as
`eanet_schema`), so a typo'd key or a value of the wrong type fails while the config is composed.
`validate` then checks what types cannot express (divisibility, ranges, registry names, keys
added with `+` that the schema does not know) and runs at start-up, before any data is loaded:
every error names the key and what would be valid.

This module is a leaf of eanet's import graph: it imports no other eanet module. What only other
modules know comes in as arguments: the names in eanet's registries (`Choices`, gathered by
`eanet.validation`), the Keras backend. `check_choice` is the one "Unknown X. Valid values: …"
check, used wherever a name is looked up in a registry.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")  # trainer.precision

# A registry's valid names per setting, e.g. {"model.attention": ("external", "self")}.
Choices = Mapping[str, Collection[str]]


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


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _positive(cfg_section: Any, prefix: str, *names: str) -> None:
    for name in names:
        value = getattr(cfg_section, name)
        _require(
            value is not None and value > 0,
            f"Expected {prefix}.{name} to be a positive integer. Received: {prefix}.{name}={value}",
        )


def _fraction(cfg_section: Any, prefix: str, *names: str) -> None:
    for name in names:
        value = getattr(cfg_section, name)
        _require(
            0.0 <= value < 1.0,
            f"Expected {prefix}.{name} in [0, 1). Received: {prefix}.{name}={value}",
        )


def _no_unknown_keys(node: DictConfig, schema: type, prefix: str = "") -> None:
    """Refuse keys that the schema does not have: Hydra lets `+` add a key to any node, and
    `+model.foo=1` would otherwise be recorded as a param and silently do nothing."""
    known = {f.name: f for f in fields(schema)}
    for key in node.keys():
        name = f"{prefix}{key}"
        if key not in known:
            where = f" under {prefix.rstrip('.')}" if prefix else ""
            raise ConfigError(f"Unknown key {name}: the config has no such setting. "
                              f"Valid keys{where}: {', '.join(sorted(known))}")
        section = known[key].default_factory
        if is_dataclass(section) and isinstance(node.get(key), DictConfig):
            _no_unknown_keys(node[key], section, f"{name}.")


def validate(cfg: DictConfig | Config, choices: Optional[Choices] = None,
             backend: Optional[str] = None) -> Config:
    """Check every setting that types alone cannot; return the typed config.

    `choices`: the registries' valid names per setting (settings not in it are not looked up);
    `backend`: the Keras backend the run will use (None: not checked). `eanet.validation.validate`
    passes both. Raises ConfigError naming the first offending key.
    """
    if isinstance(cfg, DictConfig):
        _no_unknown_keys(cfg, OmegaConf.get_type(cfg) or Config)
        typed = OmegaConf.to_object(cfg)
    else:
        typed = cfg
    m, d, o, t = typed.model, typed.data, typed.optimizer, typed.trainer

    for setting, valid in (choices or {}).items():
        if setting == "model.attention" and m.attention_layer is not None:
            continue  # a new attention, built by its own `_target_`
        if setting == "data.name" and d.loader is not None:
            continue  # a data set of its own, loaded by `data.loader`
        section, name = setting.rsplit(".", 1)
        check_choice(setting, getattr(getattr(typed, section), name), valid)
    if m.attention_layer is not None:
        layer = m.attention_layer
        target = layer.get("_target_") if isinstance(layer, dict) else None
        _require(isinstance(target, str) and "." in target,
                 f"Expected model.attention_layer._target_ to be the import path of an attention "
                 f"layer (my.module.MyAttention). Received: model.attention_layer={m.attention_layer}")
    if d.loader is not None:
        module, _, function = d.loader.rpartition(".")
        _require(bool(module) and bool(function) and " " not in d.loader,
                 f"Expected data.loader to be the import path of a loader function "
                 f"(my.module.load) or null. Received: data.loader={d.loader}")

    _positive(m, "model", "patch_size", "embedding_dim", "mlp_dim", "num_blocks", "num_heads",
              "dim_coefficient")
    _positive(d, "data", "image_size", "num_classes", "synthetic_train_size", "synthetic_test_size")
    for name in ("train_size", "test_size"):
        if getattr(d, name) is not None:
            _positive(d, "data", name)
    _positive(t, "trainer", "epochs", "batch_size")
    for name in ("steps_per_epoch", "validation_steps", "test_steps"):
        if getattr(t, name) is not None:
            _positive(t, "trainer", name)

    _require(
        d.image_size % m.patch_size == 0,
        f"Expected data.image_size divisible by model.patch_size. "
        f"Received: data.image_size={d.image_size}, model.patch_size={m.patch_size}",
    )
    _require(
        m.embedding_dim % m.num_heads == 0,
        f"Expected model.embedding_dim divisible by model.num_heads. "
        f"Received: model.embedding_dim={m.embedding_dim}, model.num_heads={m.num_heads}",
    )
    if m.attention == "external":
        # The memory has S = embedding_dim // dim_coefficient slots; each of the
        # num_heads * dim_coefficient heads has width embedding_dim // num_heads.
        _require(
            m.embedding_dim % m.dim_coefficient == 0,
            f"Expected model.embedding_dim divisible by model.dim_coefficient. "
            f"Received: model.embedding_dim={m.embedding_dim}, "
            f"model.dim_coefficient={m.dim_coefficient}",
        )

    _fraction(m, "model", "attention_dropout", "projection_dropout", "mlp_dropout")
    _fraction(d, "data", "validation_split")
    _fraction(t, "trainer", "label_smoothing")
    a = d.augmentation
    for name in ("rotation", "contrast", "zoom"):
        _require(
            0.0 <= getattr(a, name) < 1.0,
            f"Expected data.augmentation.{name} in [0, 1). "
            f"Received: data.augmentation.{name}={getattr(a, name)}",
        )
    _require(o.learning_rate > 0, f"Expected optimizer.learning_rate > 0. "
             f"Received: optimizer.learning_rate={o.learning_rate}")
    _require(o.weight_decay >= 0, f"Expected optimizer.weight_decay >= 0. "
             f"Received: optimizer.weight_decay={o.weight_decay}")
    _require(0.0 <= o.momentum < 1.0, f"Expected optimizer.momentum in [0, 1). "
             f"Received: optimizer.momentum={o.momentum}")
    check_choice("trainer.verbose", str(t.verbose), ("auto", "0", "1", "2"))
    _require(
        t.distribution == "none" or backend in (None, "tensorflow"),
        f"trainer.distribution={t.distribution} uses TensorFlow's MirroredStrategy and needs "
        f"Keras' TensorFlow backend. Received: KERAS_BACKEND={backend}. On JAX one job trains "
        f"on one device: use trainer.distribution=none, and hydra/launcher=gpu_pack to run "
        f"several sweep jobs per GPU (docs/gpu.md)",
    )
    check_choice("trainer.precision", t.precision, PRECISIONS)
    _positive(t, "trainer", "steps_per_execution")
    for name in ("max_runs", "max_hours"):
        if getattr(typed.sweep, name) is not None:
            _require(getattr(typed.sweep, name) > 0, f"Expected sweep.{name} > 0 (or null: no "
                     f"limit). Received: sweep.{name}={getattr(typed.sweep, name)}")
    _require(typed.tracking.lease_s >= 1,
             f"Expected tracking.lease_s >= 1 (seconds). Received: tracking.lease_s={typed.tracking.lease_s}")
    _require(typed.tracking.system_metrics_interval_s > 0,
             f"Expected tracking.system_metrics_interval_s > 0. "
             f"Received: tracking.system_metrics_interval_s={typed.tracking.system_metrics_interval_s}")
    return typed
