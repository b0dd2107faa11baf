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
- `SweepProgress`: a line as each sweep job starts and ends — job k of N, time since the sweep
  started, jobs done, and an ETA from the rate so far — on top of Keras' per-epoch progress bar
  (or instead of it, with `quiet=true`).
- `SweepReport`: the sweep report (`eanet.report`) at the end of every multirun, written to
  `<sweep dir>/report` and logged on the sweep's parent run (every job of it, those of earlier
  launches too); `hydra.callbacks.sweep_report.enabled=false` turns it
  off. A report that fails is logged, never raised. Hydra skips `on_multirun_end` when a job
  failed (the sweeper re-raises the job's error first), so it also counts finished jobs and reports
  after the last one; that counting needs the in-process launcher.
- `RegisterBestModel`: when the sweep ends, registers the MLflow model of its best finished run
  (highest `best_val_top1`) in MLflow's model registry as `tracking.register_best_as`.
- `SweepSummary`: lists, when a multirun ends, what every job did and the error of every job that
  failed.

Hydra calls `on_job_*` in the process that runs the job: the sweep's own process with the basic
launcher, a worker process with joblib, Ray or Submitit (possibly on another machine). So the two
callbacks share nothing in memory with the sweep's process: the sweep's start time and size and
the jobs done are small files in the sweep folder (which every launcher's jobs write to anyway).
"""
from __future__ import annotations

import atexit
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Optional

from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from eanet.tracking.tags import TAG_PARENT

from eanet.sweeps.folder import NOT_STARTED, PROGRESS_DIR, parent_run_id
from eanet.sweeps.plan import JOB_RECORD, format_duration
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


def compose_jobs(config_name: str, jobs: list[list[str]]) -> list[DictConfig]:
    """Each job's config, as `hydra.compose(config_name, overrides=job)` makes it, composed once
    per distinct choice of config groups (and added or deleted keys), the value overrides then
    set as Hydra itself sets them after composing (`OmegaConf.update`): a 96-job grid is one
    composition, not 96 (each is a fraction of a second)."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    repository = GlobalHydra.instance().config_loader().repository
    parser = OverridesParser.create()
    bases: dict[tuple[str, ...], DictConfig] = {}
    configs = []
    for job in jobs:
        parsed = parser.parse_overrides(job)
        structural = tuple(text for text, o in zip(job, parsed)
                           if o.is_add() or o.is_delete() or o.is_force_add()
                           or o.key_or_group.startswith("hydra")
                           or repository.group_exists(o.key_or_group))
        if structural not in bases:
            bases[structural] = compose(config_name, overrides=list(structural))
        cfg = bases[structural].copy()
        try:
            for text, o in zip(job, parsed):
                if text not in structural:
                    OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
        except Exception:  # noqa: BLE001 - Hydra's own composition says what is wrong
            cfg = compose(config_name, overrides=job)
        configs.append(cfg)
    return configs


def count_jobs(config: DictConfig) -> Optional[int]:
    """How many jobs the basic sweeper will launch for this sweep; None if unknown."""
    jobs = job_overrides(config)
    return None if jobs is None else len(jobs)


def progress_line(job: int, total: Optional[int], elapsed: float, done: int) -> str:
    """e.g. `job 2 of 4 | elapsed 1m05s | 1 done | ETA 3m15s` (job counts from 1)."""
    parts = [f"job {job} of {total}" if total else f"job {job}", f"elapsed {format_duration(elapsed)}",
             f"{done} done"]
    if total and done:
        parts.append(f"ETA {format_duration(elapsed / done * max(total - done, 0))}")
    return " | ".join(parts)


class SweepProgress(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.sweep.dir)) / PROGRESS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        total = count_jobs(config)
        (folder / "sweep.json").write_text(json.dumps({"start": time.time(), "total": total}))
        log.info("sweep of %s jobs into %s", total if total else "an unknown number of",
                 config.hydra.sweep.dir)

    def _state(self, config: DictConfig) -> Optional[tuple[Path, dict]]:
        if config.hydra.mode != RunMode.MULTIRUN:
            return None
        folder = Path(str(config.hydra.sweep.dir)) / PROGRESS_DIR
        try:
            return folder, json.loads((folder / "sweep.json").read_text())
        except (OSError, ValueError):
            return None  # started without on_multirun_start (e.g. a launcher's own re-run)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        state = self._state(config)
        if state:
            folder, sweep = state
            done = len(list(folder.glob("done-*")))
            log.info("start %s", progress_line(config.hydra.job.num + 1, sweep["total"],
                                               time.time() - sweep["start"], done))

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        state = self._state(config)
        if state:
            folder, sweep = state
            (folder / f"done-{config.hydra.job.num}").write_text(job_return.status.name)
            done = len(list(folder.glob("done-*")))
            log.info("end (%s) %s", job_return.status.name.lower(),
                     progress_line(config.hydra.job.num + 1, sweep["total"],
                                   time.time() - sweep["start"], done))


class SweepPlan(Callback):
    """plan=true: prints every job's plan (eanet.sweeps.plan.format_plan) and exits with status 0
    before anything is written (no sweep folder, no store, no run)."""

    def on_multirun_start(self, config: DictConfig, config_name: Optional[str] = None,
                          **kwargs: Any) -> None:
        if not config.get("plan"):
            return
        from eanet.config import ConfigError
        from eanet.data import DataError
        from eanet.sweeps.plan import format_plan, sweep_plan
        from eanet.tracking import StoreError

        jobs = job_overrides(config) if config_name else None
        if jobs is None:
            sys.exit("eanet: plan=true lists the jobs of Hydra's basic sweeper with discrete "
                     "values (a,b,c); this sweep's jobs are not known before it runs")
        try:
            plans = sweep_plan(list(zip(jobs, compose_jobs(config_name, jobs))))
        except (ConfigError, DataError, StoreError) as error:
            sys.exit(f"eanet: {error}")
        print(format_plan(plans), flush=True)
        sys.exit(0)


class PrepareSweep(Callback):
    def on_multirun_start(self, config: DictConfig, config_name: Optional[str] = None,
                          **kwargs: Any) -> None:
        # SIGTERM to the sweep's process (a scheduler's stop, scripts/gpu_study.sh's TIME_LIMIT)
        # stops it as Ctrl-C does. A parallel launcher (joblib) then stops its worker processes
        # and their queued jobs; by default the sweep's process would die at once and leave its
        # workers running the queued jobs.
        interrupt_on_sigterm()
        from eanet.config import ConfigError
        from eanet.data import DataError
        from eanet.tracking import StoreError

        try:
            jobs = self.validated_jobs(config, config_name)
            self.check_matmul_precisions(config, jobs)
            self.check_data(jobs)
            from eanet.tracking.store import experiment_id

            experiment_id(config.tracking.tracking_uri, config.tracking.experiment_name)
        except (ConfigError, DataError, StoreError) as error:  # eanet.run's KNOWN_ERRORS
            log.error("%s", error)
            sys.exit(f"eanet: {error}")  # SystemExit passes through Hydra: no traceback

    @staticmethod
    def validated_jobs(config: DictConfig, config_name: Optional[str]) -> list:
        """Every job's typed config, composed as the job will compose it; the first bad one
        raises ConfigError naming the job's own overrides."""
        from eanet.config import ConfigError
        from eanet.validation import validate

        jobs = job_overrides(config) if config_name else None
        if jobs is None:  # another sweeper: the sweep's own config is all there is to check
            return [validate(config_without_hydra(config))]
        typed = []
        for overrides, composed in zip(jobs, compose_jobs(config_name, jobs)):
            try:
                typed.append(validate(composed))
            except ConfigError as error:
                raise ConfigError(f"{error} (job with overrides {' '.join(overrides)})") from None
        return typed

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
            source = (cfg.data.name, cfg.data.path)
            if source not in seen:
                seen.add(source)
                load_dataset(cfg.data, cfg.seed)


def config_without_hydra(config: DictConfig) -> DictConfig:
    from omegaconf import OmegaConf, open_dict

    copy = OmegaConf.create(config)
    with open_dict(copy):
        copy.pop("hydra", None)
    return copy


class RegisterBestModel(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        name = config.tracking.get("register_best_as")
        if name:
            from eanet.tracking.search import register_best_model

            register_best_model(config.tracking.tracking_uri, config.tracking.experiment_name,
                                str(config.hydra.sweep.dir), name)


class SweepReport(Callback):
    """Runs `eanet.report.sweep_report` for the sweep that just ended."""

    def __init__(self, enabled: bool = True, out: Optional[str] = None,
                 baseline: str = "vit") -> None:
        self.enabled = enabled
        self.out = out  # null: <sweep dir>/report
        self.baseline = baseline  # the model every other one is compared with (comparison.csv)
        self.expected_jobs: Optional[int] = None
        self.jobs_done = 0
        self.jobs_failed = 0
        self.reported = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.expected_jobs = count_jobs(config)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        self.jobs_done += 1
        self.jobs_failed += job_return.status == JobStatus.FAILED
        if self.jobs_failed and self.jobs_done == self.expected_jobs:
            self.report(config)  # on_multirun_end will not come: the sweeper re-raises the failure

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.report(config)

    def report(self, config: DictConfig) -> None:
        if not self.enabled or self.reported:
            return
        self.reported = True
        try:
            from eanet.report.cli import ReportConfig, sweep_report
            from eanet.report.files import display_table

            sweep = str(config.hydra.sweep.dir)  # the eanet.sweep_id tag of this sweep's runs
            parent = parent_run_id(sweep)
            cfg = ReportConfig(sweep=sweep, experiment_name=config.tracking.experiment_name,
                               tracking_uri=config.tracking.tracking_uri,
                               out=self.out or f"{sweep}/report", log_to_mlflow=parent is None,
                               baseline=self.baseline)
            if parent is not None:  # every job of the sweep run, those of earlier launches too
                cfg.sweep, cfg.filter = None, f"tags.`{TAG_PARENT}` = '{parent}'"
            report = sweep_report(cfg)
            if parent is not None:
                from eanet.report.cli import report_metrics
                from eanet.tracking.sweep_run import log_report_files

                log_report_files(parent, report.files, report_metrics(report.table))
                report.run_id = parent
            log.info("Sweep report (%d runs, swept: %s):\n%s", len(report.runs),
                     ", ".join(report.axes) or "model only",
                     display_table(report.table).to_string(index=False))
            if not report.comparison.empty:
                log.info("Models vs %s:\n%s", cfg.baseline,
                         display_table(report.comparison).to_string(index=False))
            log.info("Sweep report written to %s/ and logged to MLflow run %s", report.out,
                     report.run_id)
        except Exception as error:  # never fail a finished sweep over its report
            log.error("Sweep report failed: %s: %s. Retry with: python -m eanet.report sweep=%s",
                      type(error).__name__, error, config.hydra.sweep.dir)


class SweepSummary(Callback):
    """Lists every job of a multirun when it ends: what it did, and the error of each failure.

    Each job writes `eanet_job.json` into its output folder (in whichever process ran it, so the
    joblib launcher works too); the summary reads them back. Hydra stops before `on_multirun_end`
    when a job failed (and exits non-zero), so the summary is also registered to print at exit.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        atexit.register(self.report)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Record the job as unfinished; `on_job_end` overwrites that unless Ctrl-C came first."""
        from hydra.core.hydra_config import HydraConfig

        hydra = HydraConfig.get()
        if hydra.mode != RunMode.MULTIRUN:  # a single run has no job number and no summary
            return
        record = {"job_num": hydra.job.num, "overrides": " ".join(hydra.overrides.task),
                  "status": "STOPPED", "outcome": "interrupted before it ended", "error": None}
        (Path(hydra.runtime.output_dir) / JOB_RECORD).write_text(json.dumps(record))

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        hydra = job_return.hydra_cfg.hydra
        if hydra.mode != RunMode.MULTIRUN:
            return
        failed = job_return.status == JobStatus.FAILED
        error = job_return._return_value if failed else None
        optuna = sys.modules.get("optuna")  # a tuning trial its pruner stopped: not a failure
        pruned = failed and optuna is not None and isinstance(error, optuna.TrialPruned)
        path = Path(hydra.runtime.output_dir) / JOB_RECORD
        try:  # plan_run wrote what the job decided (skip, resume, new) into it
            outcome = json.loads(path.read_text()).get("plan")
        except (OSError, ValueError):
            outcome = None
        record = {
            "job_num": hydra.job.num,
            "overrides": " ".join(job_return.overrides or []),
            "status": "PRUNED" if pruned else "FAILED" if failed else "NOT_STARTED" if (
                outcome or "").startswith(NOT_STARTED) else "COMPLETED",
            "outcome": str(error) if pruned else outcome,
            "error": (None if not failed else str(error) if isinstance(error, CompactHydraException)
                      else f"{type(error).__name__}: {error}"),
        }
        path.write_text(json.dumps(record))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.report()
        atexit.unregister(self.report)

    def report(self) -> None:
        print(sweep_summary(self.sweep_dir), file=sys.stderr, flush=True)


def sweep_summary(sweep_dir: Path) -> str:
    """A readable account of the jobs recorded under a multirun folder."""
    records = []
    for file in Path(sweep_dir).glob(f"*/{JOB_RECORD}"):
        records.append(json.loads(file.read_text()))
    records.sort(key=lambda r: r["job_num"] if r["job_num"] is not None else -1)
    left = [r for r in records if r["status"] == "NOT_STARTED"]
    failed = [r for r in records if r["status"] not in ("COMPLETED", "PRUNED", "NOT_STARTED")]
    # Show what tells the jobs apart, not the overrides they all share.
    shared = set.intersection(*(set(r["overrides"].split()) for r in records)) \
        if len(records) > 1 else set()
    completed = len(records) - len(failed) - len(left)
    lines = [f"eanet sweep {sweep_dir}: {len(records)} jobs, {completed} completed, "
             + (f"{len(left)} not started (budget), " if left else "")
             + f"{len(failed)} failed or stopped"]
    for r in records:
        what = r["error"] if r["status"] == "FAILED" else r["outcome"] or "done"
        own = " ".join(o for o in r["overrides"].split() if o not in shared)
        lines.append(f"  #{r['job_num']} {r['status']:<9} {own or '(no overrides)'} — {what}")
    return "\n".join(lines)
