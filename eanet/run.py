"""Hydra entry point: `python -m eanet.run` (one run) or `python -m eanet.run -m model=ea,vit` (a sweep).

The config is composed from `conf/` on top of the typed schema in `eanet.config` and validated
before anything heavy loads (validation imports neither Keras nor TensorFlow), then handed to
`eanet.training.train.train`, which records the run in MLflow.

Known errors (a bad value, missing or broken data, an unusable store) end a run with one line,
`eanet: <what is wrong>`, and exit status 1. In a sweep, the `PrepareSweep` callback checks every
job's config, the data and the store before the first job starts; an error that only a job can
meet fails that job with the same one line (no traceback) and the sweep exits non-zero at its end.
"""
from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig

from eanet.config import ConfigError, register_configs
from eanet.validation import validate
from eanet.data import DataError
from eanet.tracking import StoreError

log = logging.getLogger("eanet")

# What a user can fix: printed as one line, never as a traceback.
KNOWN_ERRORS = (ConfigError, DataError, StoreError)


class JobError(CompactHydraException):
    """A sweep job's known error. Hydra prints a CompactHydraException as its message alone."""


register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        typed = validate(cfg)
        from eanet.console import quiet_libraries

        quiet_libraries(typed.library_logs)  # before TensorFlow and MLflow load
        if typed.plan:  # a sweep's plan is printed before its first job (SweepPlan)
            from eanet.sweeps.plan import format_plan, sweep_plan

            print(format_plan(sweep_plan([(list(HydraConfig.get().overrides.task), cfg)])))
            return None
        from eanet.training.signals import interrupt_on_sigterm
        from eanet.training.train import train

        interrupt_on_sigterm()  # a scheduler's SIGTERM ends the MLflow run KILLED, like Ctrl-C
        return train(typed, cfg)
    except KNOWN_ERRORS as error:
        if multirun:
            log.error("%s", error)  # in the job's log, as it happens
            # Hydra marks this job failed, runs the others, and exits non-zero at the end.
            raise JobError(f"eanet: {error}") from None
        sys.exit(f"eanet: {error}")


if __name__ == "__main__":
    main()
