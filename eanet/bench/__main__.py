"""`python -m eanet.bench`: the command line of eanet.bench.cli (usage there and in conf/bench.yaml).

The Hydra entry point lives in this `__main__` module so that Hydra finds `conf/` beside the
package by file path, as for `python -m eanet.run`.
"""
import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from eanet.bench.cli import run_bench, scaling_models, validate_bench
from eanet.config import ConfigError
from eanet.validation import validate

log = logging.getLogger("eanet.bench")


@hydra.main(version_base="1.3", config_path="../../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    try:
        typed = validate(cfg)
        validate_bench(typed)
        # Each of bench.scaling.models composed and valid before any work.
        models = scaling_models(typed) if typed.bench.mode in ("scaling", "all") else []
    except ConfigError as error:
        sys.exit(f"eanet.bench: {error}")
    log.info("bench %s\n%s", typed.bench.mode, OmegaConf.to_yaml(cfg.bench))
    run_bench(typed, cfg, models)


if __name__ == "__main__":
    main()
