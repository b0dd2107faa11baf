"""The schema's own checks (eanet.config): what types cannot express — divisibility, ranges,
registry names, keys added with `+` that the schema does not know — checked at start-up, before
any data is loaded; every error names the key and what would be valid.

Like eanet.config, a leaf of eanet's import graph beside it: what only other modules know comes
in as arguments, the names in eanet's registries (`Choices`, gathered by eanet.validation) and
the Keras backend.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import fields, is_dataclass
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from eanet.config import PRECISIONS, Config, ConfigError, check_choice

# A registry's valid names per setting, e.g. {"model.attention": ("external", "self")}.
Choices = Mapping[str, Collection[str]]


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
