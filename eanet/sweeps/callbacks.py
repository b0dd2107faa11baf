"""Hydra callbacks for sweeps (listed under `hydra.callbacks` in conf/config.yaml; the parent run's
own, `SweepParent`, is in eanet.sweeps.parent).

- `SweepPlan`: with plan=true, prints every job's plan (eanet.sweeps.plan) and exits 0 before
  anything is written.
- `PrepareSweep`: before any job starts, in the sweep's process: validates every job's config,
  loads each data source the jobs use once (a missing or broken copy, or a download that cannot
  work, fails here and not in every job), and creates the MLflow store and experiment once.
  Parallel jobs (joblib, Submitit, Ray) that find neither race to create the SQLite tables
  (alembic "Online migration expected to match one row" seen here with Submitit); an unreachable
  tracking server fails the sweep at once instead of in every job. Any of these stops the sweep
  with the one line a single run prints (`eanet: …`) and exit status 1. It also makes SIGTERM stop
  the sweep as Ctrl-C does (parallel workers included).
- `SweepProgress`: a line as each sweep job starts and ends — job k of N, time since the launch
  began, jobs ended, and the sweep's ETA — from the sweep's record.
- the end of a sweep — each job's final status, the summary, the report, the best model's
  registration — is eanet.sweeps.ending.

Hydra calls `on_job_*` in the process that runs the job: the sweep's own process with the basic
launcher, a worker process with joblib, Ray or Submitit (possibly on another machine). So these
callbacks share nothing in memory with the sweep's process: what they share is the sweep's
record on its parent run (eanet.tracking.record), in the store every job records to.
"""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from eanet.sweeps.plan import format_duration
from eanet.tracking.record import SweepRecord, eta_seconds
from eanet.training.signals import interrupt_on_sigterm

log = logging.getLogger("eanet.sweep")


def job_overrides(config: DictConfig) -> Optional[list[list[str]]]:
    """The overrides of every job the basic sweeper will launch, in launch order; None if unknown
    (another sweeper, or overrides only a config loader can expand, such as glob choices)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = str(config.hydra.sweeper.get("_target_", ""))
    if not sweeper.endswith("BasicSweeper"):
        return None
    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    try:
        overrides = OverridesParser.create().parse_overrides(arguments)
        if any(o.is_sweep_override() and not o.is_discrete_sweep() for o in overrides):
            return None
        batches = BasicSweeper.split_arguments(overrides, None)
    except Exception:  # noqa: BLE001 - an estimate only: the jobs themselves will say more
        return None
    return [job for batch in batches for job in batch]


def searchpath_override(searchpath: Sequence[str]) -> list[str]:
    """`hydra.searchpath=[…]` as an override (none for an empty search path)."""
    if not searchpath:
        return []
    quoted = ("'" + str(p).replace("'", "\\'") + "'" for p in searchpath)
    return [f"hydra.searchpath=[{','.join(quoted)}]"]


def compose_jobs(config_name: str, jobs: list[list[str]],
                 searchpath: Sequence[str] = ()) -> list[DictConfig]:
    """Each job's config, as `hydra.compose(config_name, overrides=job)` makes it, composed once
    per distinct choice of config groups (and added or deleted keys), the value overrides then
    set as Hydra itself sets them after composing (`OmegaConf.update`): a 96-job grid is one
    composition, not 96 (each is a fraction of a second).

    `searchpath`: the sweep's `config.hydra.searchpath`. Config folders added on the command line
    (`hydra.searchpath=[file:///my/conf]`: a user's own model or data YAML) are known to Hydra only
    while it composes with that override, so every composition here carries it."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    extra = searchpath_override(searchpath)
    loader = GlobalHydra.instance().config_loader()
    groups: dict[str, bool] = {}

    def is_group(name: str) -> bool:
        if name not in groups:
            groups[name] = bool(loader.get_group_options(name, results_filter=None,
                                                         config_name=config_name,
                                                         overrides=extra))
        return groups[name]

    parser = OverridesParser.create()
    bases: dict[tuple[str, ...], DictConfig] = {}
    configs = []
    for job in jobs:
        parsed = parser.parse_overrides(job)
        structural = tuple(text for text, o in zip(job, parsed)
                           if o.is_add() or o.is_delete() or o.is_force_add()
                           or o.key_or_group.startswith("hydra") or is_group(o.key_or_group))
        if structural not in bases:
            bases[structural] = compose(config_name, overrides=[*extra, *structural])
        cfg = bases[structural].copy()
        try:
            for text, o in zip(job, parsed):
                if text not in structural:
                    OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
        except Exception:  # noqa: BLE001 - Hydra's own composition says what is wrong
            cfg = compose(config_name, overrides=[*extra, *job])
        configs.append(cfg)
    return configs


def validate_jobs(jobs: list[list[str]], configs: list[DictConfig]) -> list:
    """Every job's typed config (eanet.validation.validate); the first bad one raises
    ConfigError naming the job's own overrides."""
    from eanet.config import ConfigError
    from eanet.validation import validate

    typed = []
    for overrides, composed in zip(jobs, configs):
        try:
            typed.append(validate(composed))
        except ConfigError as error:
            raise ConfigError(f"{error} (job with overrides {' '.join(overrides)})") from None
    return typed


def count_jobs(config: DictConfig) -> Optional[int]:
    """How many jobs the basic sweeper will launch for this sweep; None if unknown."""
    jobs = job_overrides(config)
    return None if jobs is None else len(jobs)


def progress_line(job: int, total: Optional[int], elapsed: float, done: int) -> str:
    """e.g. `job 2 of 4 | elapsed 1m05s | 1 done | ETA 3m15s` (job counts from 1)."""
    parts = [f"job {job} of {total}" if total else f"job {job}", f"elapsed {format_duration(elapsed)}",
             f"{done} done"]
    eta = eta_seconds(elapsed, done, total)
    if eta is not None:
        parts.append(f"ETA {format_duration(eta)}")
    return " | ".join(parts)


class SweepProgress(Callback):
    """A line as each job starts and ends: job k of N, time since the launch began, jobs ended,
    and the ETA (eanet.tracking.record.eta_seconds), all read from the sweep's record."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        log.info("sweep of %s jobs into %s", count_jobs(config) or "an unknown number of",
                 config.hydra.sweep.dir)

    def _line(self, config: DictConfig) -> Optional[str]:
        if config.hydra.mode != RunMode.MULTIRUN:
            return None
        record = SweepRecord.of_sweep(config.tracking.tracking_uri, str(config.hydra.sweep.dir))
        if record is None:
            return None  # no parent run (a tuning sweep logs its own progress)
        launch, jobs = record.launch(), record.jobs()
        done = sum(1 for e in jobs.values() if e.launch == launch.get("id") and e.status.ended)
        return progress_line(config.hydra.job.num + 1, launch.get("total"),
                             time.time() - launch.get("start", time.time()), done)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        line = self._line(config)
        if line:
            log.info("start %s", line)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        line = self._line(config)
        if line:
            log.info("end (%s) %s", job_return.status.name.lower(), line)


class SweepPlan(Callback):
    """plan=true: prints every job's plan (eanet.sweeps.plan.format_plan) and exits with status 0
    before anything is written (no sweep folder, no store, no run)."""

    def on_multirun_start(self, config: DictConfig, config_name: Optional[str] = None,
                          **kwargs: Any) -> None:
        if not config.get("plan"):
            return
        from hydra.errors import HydraException

        from eanet.config import ConfigError
        from eanet.console import quiet_libraries
        from eanet.data import DataError
        from eanet.sweeps.plan import format_plan, sweep_plan, sweep_startup
        from eanet.tracking import StoreError

        jobs = job_overrides(config) if config_name else None
        if jobs is None:
            sys.exit("eanet: plan=true lists the jobs of Hydra's basic sweeper with discrete "
                     "values (a,b,c); this sweep's jobs are not known before it runs")
        try:
            configs = compose_jobs(config_name, jobs, config.hydra.searchpath)
            typed = validate_jobs(jobs, configs)
            quiet_libraries(typed[0].library_logs if typed else False)
            plans = sweep_plan(list(zip(jobs, configs)))
            startup = sweep_startup(list(zip(jobs, configs)))
        except (ConfigError, DataError, StoreError, HydraException) as error:
            sys.exit(f"eanet: {error}")
        print(format_plan(plans, startup), flush=True)
        sys.exit(0)


class PrepareSweep(Callback):
    def on_multirun_start(self, config: DictConfig, config_name: Optional[str] = None,
                          **kwargs: Any) -> None:
        # SIGTERM to the sweep's process (a scheduler's stop, scripts/gpu_study.sh's TIME_LIMIT)
        # stops it as Ctrl-C does. A parallel launcher (joblib) then stops its worker processes
        # and their queued jobs; by default the sweep's process would die at once and leave its
        # workers running the queued jobs.
        interrupt_on_sigterm()
        from hydra.errors import HydraException

        from eanet.config import ConfigError
        from eanet.console import quiet_libraries
        from eanet.data import DataError
        from eanet.tracking import StoreError

        # Hydra turns an exception raised here into a warning and goes on with the sweep: every
        # error a check can meet ends it here, once, in one line.
        try:
            jobs = self.validated_jobs(config, config_name)
            quiet_libraries(jobs[0].library_logs)  # before TensorFlow and MLflow load
            self.check_matmul_precisions(config, jobs)
            self.check_plugins(jobs)
            self.check_data(jobs)
            from eanet.tracking.store import experiment_id

            experiment_id(config.tracking.tracking_uri, config.tracking.experiment_name)
        except (ConfigError, DataError, StoreError, HydraException) as error:
            log.error("%s", error)  # eanet.run's KNOWN_ERRORS, and a config Hydra cannot compose
            sys.exit(f"eanet: {error}")  # SystemExit passes through Hydra: no traceback

    @staticmethod
    def validated_jobs(config: DictConfig, config_name: Optional[str]) -> list:
        """Every job's typed config, composed as the job will compose it (config folders of the
        sweep's `hydra.searchpath` included); the first bad one raises ConfigError naming the
        job's own overrides."""
        from eanet.validation import validate

        jobs = job_overrides(config) if config_name else None
        if jobs is None:  # another sweeper: the sweep's own config is all there is to check
            return [validate(config_without_hydra(config))]
        return validate_jobs(jobs, compose_jobs(config_name, jobs, config.hydra.searchpath))

    @staticmethod
    def check_plugins(jobs: list) -> None:
        """Import each plug-in attention layer the jobs name (`model.attention_layer._target_`)
        once: a module that is not found fails here, not in every job. (A data set's loader is
        imported by check_data.)"""
        from eanet.plugins import import_object

        for target in sorted({cfg.model.attention_layer["_target_"] for cfg in jobs
                              if cfg.model.attention_layer is not None}):
            import_object(target, "model.attention_layer._target_")

    @staticmethod
    def check_matmul_precisions(config: DictConfig, jobs: list) -> None:
        """Jobs that share this process (Hydra's basic launcher) cannot differ in
        trainer.matmul_precision on TensorFlow, which reads it once per process."""
        from eanet.backend import configured_backend
        from eanet.config import ConfigError
        from eanet.training.precision import check_sweep_matmul_precisions

        one_process = str(config.hydra.launcher.get("_target_", "")).endswith(".BasicLauncher")
        problem = check_sweep_matmul_precisions([cfg.trainer.matmul_precision for cfg in jobs],
                                                one_process, configured_backend())
        if problem:
            raise ConfigError(problem)

    @staticmethod
    def check_data(jobs: list) -> None:
        """Load each distinct data source once: a download or a broken copy fails here."""
        from eanet.data import load_dataset

        seen = set()
        for cfg in jobs:
            source = (cfg.data.name, cfg.data.loader, cfg.data.path)
            if source not in seen:
                seen.add(source)
                load_dataset(cfg.data, cfg.seed)


def config_without_hydra(config: DictConfig) -> DictConfig:
    from omegaconf import OmegaConf, open_dict

    copy = OmegaConf.create(config)
    with open_dict(copy):
        copy.pop("hydra", None)
    return copy
