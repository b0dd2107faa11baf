"""A run's identity is its computation: the fingerprint.

`fingerprint(raw_cfg)` is 16 hex digits over what changes the numbers a run produces:

- every setting that the chosen model, data, optimizer and trainer actually read — not the
  settings a model ignores (`ignored_settings`: what its attention layer declares, e.g. ViT's
  `dim_coefficient` and `projection_dropout`; what the chosen optimizer does not take, e.g.
  AdamW's `momentum`), and not where results go or how much is printed (`NOT_COMPUTED`:
  `tracking.*`, `sweep.*`, `plan`, `quiet`, …);
- the Keras backend (eanet.backend): `model.implementation=auto` runs other code on TensorFlow
  than on JAX, so a configuration finished on one is not taken for the other.

Two jobs that differ only in ignored settings share one run; the report groups by the same
identity (the run's `eanet.fingerprint` tag), so `n` counts distinct computations.

`legacy_fingerprint` is the identity runs were recorded under before the backend and ignored
settings counted; eanet.sweeps.jobs finds such a run again through it (same backend only).
"""
from __future__ import annotations

import hashlib
import importlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

from eanet.config import NOT_COMPUTED, flatten

# The built-in attentions' layer classes (model.attention), read for their `ignored_settings`.
ATTENTION_LAYER_CLASSES = {"external": "eanet.models.layers.ExternalAttention",
                           "self": "eanet.models.layers.SelfAttention"}
# optimizer.name → the optimizer settings it does not read (eanet.training.optimization).
OPTIMIZER_IGNORES = {"adamw": ("momentum", "nesterov"), "adam": ("momentum", "nesterov"),
                     "sgd": ()}
# data.name → data settings its loader does not read (only the synthetic set reads its sizes).
SYNTHETIC_ONLY = ("synthetic_train_size", "synthetic_test_size")

# Settings added after runs were recorded, left out of the legacy fingerprint at the value that
# computes what runs did before they existed.
ADDED_LATER = {"trainer.matmul_precision": "default", "data.augmentation.contrast_clip": True,
               "model.attention_layer": None, "model.implementation": "auto", "data.loader": None}


def _tree(raw_cfg: DictConfig | dict) -> dict:
    tree = OmegaConf.to_container(raw_cfg, resolve=True) if isinstance(raw_cfg, DictConfig) \
        else raw_cfg
    tree = dict(tree)
    tree.pop("hydra", None)
    return tree


def _import(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def attention_ignores(model: dict) -> tuple[str, ...]:
    """The ModelConfig fields the model's attention layer declares it ignores (the layer class's
    `ignored_settings`; a plug-in's class is imported from `attention_layer._target_`)."""
    layer = model.get("attention_layer")
    path = layer.get("_target_") if isinstance(layer, dict) else \
        ATTENTION_LAYER_CLASSES.get(model.get("attention", ""))
    if not path:
        return ()
    try:
        target = _import(path)
    except (ImportError, AttributeError, ValueError):
        return ()  # validation reports a layer that cannot be imported; nothing is ignored here
    return tuple(getattr(target, "ignored_settings", ()))


def ignored_settings(raw_cfg: DictConfig | dict) -> tuple[str, ...]:
    """Dotted settings this configuration's model, optimizer and data do not read."""
    tree = _tree(raw_cfg)
    model, optimizer, data = tree.get("model", {}), tree.get("optimizer", {}), tree.get("data", {})
    ignored = [f"model.{name}" for name in attention_ignores(model)]
    ignored += [f"optimizer.{name}" for name in OPTIMIZER_IGNORES.get(optimizer.get("name"), ())]
    if data.get("name") != "synthetic":
        ignored += [f"data.{name}" for name in SYNTHETIC_ONLY]
    return tuple(sorted(ignored))


def _not_computed(key: str) -> bool:
    return any(key == p or key.startswith(p) for p in NOT_COMPUTED)


def computed_settings(raw_cfg: DictConfig | dict) -> dict[str, Any]:
    """The flattened settings that change the result (see the module's docstring)."""
    tree = _tree(raw_cfg)
    ignored = set(ignored_settings(tree))
    return {k: v for k, v in flatten(tree).items() if not _not_computed(k) and k not in ignored}


def fingerprint(raw_cfg: DictConfig | dict, backend: str | None = None) -> str:
    """16 hex digits identifying what a configuration computes on `backend` (None: the Keras
    backend this process would load)."""
    from eanet.backend import configured_backend

    identity = {"settings": computed_settings(raw_cfg),
                "backend": backend or configured_backend()}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def legacy_fingerprint(raw_cfg: DictConfig | dict) -> str:
    """The fingerprint of runs recorded before the backend and ignored settings were part of it."""
    kept = {k: v for k, v in flatten(_tree(raw_cfg)).items()
            if not _not_computed(k) and not (k in ADDED_LATER and v == ADDED_LATER[k])}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]
