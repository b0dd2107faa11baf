"""Hydra entry point: `python -m eanet.run` (one run) or `python -m eanet.run -m model=ea,vit` (a sweep).

The config is composed from `conf/` on top of the typed schema in `eanet.config`, validated before
any data is loaded, then handed to `eanet.train.train`, which records the run in MLflow.
"""
from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from eanet.config import ConfigError, register_configs, validate
from eanet.data import DataError

log = logging.getLogger("eanet")

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        typed = validate(cfg)
        from eanet.faults import interrupt_on_sigterm
        from eanet.train import train  # TensorFlow loads only once the config is known good

        interrupt_on_sigterm()  # a scheduler's SIGTERM ends the MLflow run KILLED, like Ctrl-C
        return train(typed, cfg)
    except (ConfigError, DataError) as error:
        log.error("%s", error)
        if multirun:
            raise  # Hydra marks this job failed, runs the others, and exits non-zero at the end
        sys.exit(f"eanet: {error}")


if __name__ == "__main__":
    main()
