"""A run's config checked against all of eanet, at start-up, before any data or Keras loads.

`eanet.config_checks.validate` checks the schema's own rules; the names it looks up come from here:
each registry's keys (`CHOICES`), the Keras backend this process will load
(`eanet.backend.configured_backend`). Then what other modules know: whether this process can
still give TensorFlow the requested matmul precision (`eanet.training.precision`), and whether
each dropout rate keeps at least one of the fused dropout's 16-bit keep levels (`eanet.models.native`). Every import here is cheap: the
registries are names and import paths, resolved only when training starts.
"""
from __future__ import annotations

from omegaconf import DictConfig

from eanet.backend import configured_backend
from eanet.config import Config, ConfigError
from eanet.config_checks import validate as validate_schema
from eanet.data import DATASETS
from eanet.models import ATTENTION_TYPES, IMPLEMENTATIONS
from eanet.models.native import KEEP_LEVELS
from eanet.training import DISTRIBUTIONS, OPTIMIZERS
from eanet.training.precision import MATMUL_PRECISIONS, check_matmul_precision

# setting → its registry's valid names
CHOICES = {
    "model.attention": ATTENTION_TYPES,
    "model.implementation": IMPLEMENTATIONS,
    "data.name": DATASETS,
    "optimizer.name": OPTIMIZERS,
    "trainer.distribution": DISTRIBUTIONS,
    "trainer.matmul_precision": MATMUL_PRECISIONS,
}


def validate(cfg: DictConfig | Config) -> Config:
    """The typed config, or ConfigError naming the first setting this run cannot have."""
    backend = configured_backend()
    typed = validate_schema(cfg, CHOICES, backend)
    m = typed.model
    for name in ("attention_dropout", "projection_dropout", "mlp_dropout"):
        rate = getattr(m, name)  # dropout's 16-bit keep threshold must stay below 2**16
        if round(rate * KEEP_LEVELS) >= KEEP_LEVELS:
            raise ConfigError(f"Expected model.{name} below 1 - 2**-17 (at least one of its 65536 "
                              f"16-bit keep levels kept). Received: model.{name}={rate}")
    problem = check_matmul_precision(typed.trainer.matmul_precision, backend)
    if problem:
        raise ConfigError(problem)
    return typed
