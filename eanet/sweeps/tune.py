"""Tuning sweeps: `python -m eanet.run -m hydra/sweeper=tune …`, eanet's Hydra sweeper on Optuna.

    python -m eanet.run -m +experiment=tune                       EANet and ViT, tuned alike
    python -m eanet.run -m hydra/sweeper=tune model=vit hydra.sweeper.n_trials=12

The search space is `hydra.sweeper.params` (conf/hydra/sweeper/tune.yaml), in Hydra's sweep
grammar: `interval(a, b)` (uniform), `tag(log, interval(a, b))` (log-uniform), `range(a, b, step)`,
`choice(a, b, …)`. A key may name several settings, comma-separated, that take one value (the
three dropout rates). Each value of a choice list in `hydra.sweeper.studies` or on the command
line (`model=ea,vit`) is a study of its own with `n_trials` trials: every model gets the same
budget. Other overrides apply to every trial.

The sweeper asks the studies in turn (Optuna's ask/tell) for `n_jobs` trials at a time and runs
them as one batch of jobs through the configured launcher (basic, joblib, Submitit, …). A trial
is a normal training run (one MLflow run named `<study>-t<trial number>`, checkpointed, skipped
or resumed by fingerprint: eanet.sweeps.jobs) whose callback (eanet.sweeps.trial) reports each
epoch's validation top-1 to its trial; the study's pruner (median or successive halving) stops
unpromising runs, which end KILLED in MLflow with `eanet.pruned=true`. The value of a trial is
its run's best validation top-1.

Faults: a trial that diverges (NonFiniteLossError) or fails is told to its study as failed (its
MLflow run FAILED, counted in n_failed) and the study goes on; after
`hydra.sweeper.max_consecutive_failures` failed trials in a row in one launch, the study stops
with one line that says so (the others go on). A budget (`sweep.max_runs`: trials launched,
`sweep.max_hours`: since the launch began) is the sweeper's: it asks no trial past it, stops with
one line, and the same command continues.

The studies live in `hydra.sweeper.storage`: by default `optuna.db` beside a local SQLite MLflow
store; with a tracking server, name its database (or any other). A study's name says what sets
it apart and what it searches (eanet.sweeps.study.study_name), so the same command, with or
without a budget or with more trials, continues it: after a crash or SIGKILL, trials left
RUNNING are marked failed (`interrupted`) and asked again with the same settings (their MLflow
runs resume from their checkpoints); finished, pruned and failed trials are kept, never repeated.

The trials' MLflow runs nest under one parent run per tuning sweep (tag eanet.tuning: its studies'
names; a relaunch reuses it), which holds the sweep's record (eanet.tracking.record) as any sweep's
parent does: the progress, the summary and the report cover every trial of every launch. When the launch ends, `<sweep dir>/tuned.csv` holds each study's
best settings and its run's test accuracy (eanet.sweeps.tuned), also on the parent run, which
ends FINISHED when every study has its n_trials and a best trial, KILLED when a budget stopped
the launch, else FAILED; the log compares EANet with ViT at their tuned settings.
"""
from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from eanet.config import ConfigError, check_choice
from eanet.sweeps.study import (DIRECTIONS, PRUNER_ATTR, TRIAL_ENV, Study, TrialOutcome,
                                axis_combinations, build, legacy_study_name, override_value,
                                pruners, sampler, search_space, study_axes, study_name,
                                study_storage)

log = logging.getLogger("eanet.tune")

BUDGET = ("max_runs", "max_hours")  # sweep.*: one launch's budget, which the sweeper keeps


class OptunaSweeper(Sweeper):
    """The sweeper (registered for Hydra as hydra_plugins.eanet_tune.tune_sweeper.TuneSweeper)."""

    def __init__(self, n_trials: int, n_jobs: int, direction: str, params: Mapping[str, Any],
                 pruner: Mapping[str, Any], sampler: Mapping[str, Any],
                 storage: Optional[str] = None, study_name: Optional[str] = None,
                 enqueue: Sequence[Mapping[str, Any]] = (),
                 studies: Optional[Mapping[str, Any]] = None,
                 max_consecutive_failures: int = 3):
        self.n_trials, self.n_jobs, self.direction = n_trials, n_jobs, direction
        self.max_consecutive_failures = max_consecutive_failures
        self.params = dict(params or {})
        self.pruner_spec = OmegaConf.to_container(pruner) if isinstance(pruner, DictConfig) \
            else dict(pruner)
        self.sampler_spec = OmegaConf.to_container(sampler) if isinstance(sampler, DictConfig) \
            else dict(sampler)
        self.storage, self.study_name = storage, study_name
        self.enqueue = [dict(point) for point in enqueue or ()]
        self.studies = dict(studies or {})
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.launcher = None
        self.storage_url: Optional[str] = None
        self.parent_run: Optional[str] = None  # the MLflow run the trials' runs nest under

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> list[dict[str, Any]]:
        from eanet.sweeps.launch import Launch

        try:
            self.check_settings()
            launch = Launch(self.n_trials, self.max_consecutive_failures,
                            **{name: self.config.sweep.get(name) for name in BUDGET})
            studies, space = self.open_studies(arguments)
        except ConfigError as error:
            log.error("%s", error)
            sys.exit(f"eanet: {error}")  # one line, as eanet.run prints, before any trial
        from eanet.sweeps.tuned import summarise
        from eanet.tracking.sweep_run import end_tuning_parent_run, tuning_parent_run

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        tracking = self.config.tracking
        self.parent_run = tuning_parent_run(tracking.tracking_uri, tracking.experiment_name,
                                            " ".join(s.name for s in studies), str(sweep_dir))
        self.start_record(sweep_dir, launch.planned(studies))
        try:
            self.run_trials(studies, space, launch)
        except BaseException as error:
            end_tuning_parent_run(self.parent_run, "KILLED" if isinstance(
                error, KeyboardInterrupt) else "FAILED")
            raise
        rows = summarise(studies, tracking.tracking_uri, sweep_dir)
        end_tuning_parent_run(self.parent_run, launch.status(studies), [sweep_dir / "tuned.csv"])
        return rows

    def start_record(self, sweep_dir: Path, total: int) -> None:
        """The parent run holds the sweep's record (eanet.tracking.record): this launch starts in
        it, and the sweep folder names it, so that each trial's job enters itself there and the
        sweep's progress, summary and report cover every trial, as in any sweep."""
        from eanet.tracking.record import SweepRecord, write_parent_file

        SweepRecord(self.config.tracking.tracking_uri, self.parent_run).start_launch(total)
        write_parent_file(sweep_dir, self.parent_run)

    # --- the studies ---------------------------------------------------------------------------

    def check_settings(self) -> None:
        """The sweeper's own settings (the space and the pruner are checked in open_studies)."""
        check_choice("hydra.sweeper.direction", self.direction, DIRECTIONS)
        for name in ("n_trials", "n_jobs", "max_consecutive_failures"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"Expected hydra.sweeper.{name} >= 1 (an integer). "
                                  f"Received: hydra.sweeper.{name}={value!r}")
        if not self.params:
            raise ConfigError("hydra.sweeper.params is empty: nothing to tune")

    def open_studies(self, arguments: list[str]) -> tuple[list[Study], dict[str, Any]]:
        """Create or continue one study per study-axis combination, trials left RUNNING by a
        killed sweep failed and queued again."""
        import optuna

        space = search_space(self.params)
        for point in self.enqueue:
            unknown = sorted(set(point) - set(space))
            if unknown:
                raise ConfigError(f"hydra.sweeper.enqueue: {', '.join(unknown)} not in the search "
                                  f"space. Valid keys: {', '.join(space)}")
        # Study axes from the config first (`studies: {model: ea,vit}`), the command line after:
        # a key given in both takes the command line's value, as Hydra's own sweeps do.
        axes, fixed = study_axes(
            [f"{k}={v}" for k, v in self.studies.items()] + list(arguments))
        build(pruners(), self.pruner_spec, "hydra.sweeper.pruner")  # fails here, not in a trial
        sampler(self.sampler_spec, 0)  # as does the sampler
        storage = self.storage_url = study_storage(self.storage,
                                                   self.config.tracking.tracking_uri)
        self.check_space(space, [a[0] for a in axes] if axes else [], fixed)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        studies, stored = [], set(optuna.get_all_study_names(storage))
        for own in axis_combinations(axes):
            name = self.name_for(own, fixed, space, stored)
            study = optuna.create_study(study_name=name, storage=storage,
                                        direction=self.direction, load_if_exists=True)
            study.sampler = sampler(self.sampler_spec, len(study.trials))
            study.set_user_attr(PRUNER_ATTR, self.pruner_spec)
            overrides = [*own, *self.trial_fixed(fixed)]
            study.set_user_attr("overrides", overrides)
            found = Study(name, own, overrides, study)
            running = (optuna.trial.TrialState.RUNNING,)
            for trial in study.get_trials(deepcopy=False, states=running):
                found.requeue(trial, "was interrupted")
            if not study.trials:
                for point in self.enqueue:  # e.g. the seed's settings first
                    study.enqueue_trial(point, skip_if_exists=True)
            log.info("study %s in %s: %d of %d trials done", name, storage, found.counted(),
                     self.n_trials)
            studies.append(found)
        return studies, space

    def trial_fixed(self, fixed: list[str]) -> list[str]:
        """The fixed overrides a trial gets. The launch's budget is the sweeper's (it asks no
        trial past it): a trial's job gets none, so that it never refuses to start."""
        kept = [o for o in fixed if o.split("=", 1)[0].lstrip("+~") not in
                (f"sweep.{name}" for name in BUDGET)]
        return kept + [f"sweep.{name}=null" for name in BUDGET
                       if self.config.sweep.get(name) is not None]

    def name_for(self, own: list[str], fixed: list[str], space: dict[str, Any],
                 stored: set[str]) -> str:
        """`hydra.sweeper.study_name` and the study's overrides, else `study_name`'s; a study
        stored under its name from before that (`legacy_study_name`) keeps it."""
        if self.study_name:
            return "-".join([self.study_name, *own])
        name = study_name(self.config, own, fixed)
        legacy = legacy_study_name(own, fixed, space, self.direction,
                                   str(self.config.tracking.experiment_name))
        return legacy if legacy in stored and name not in stored else name

    def check_space(self, space: dict[str, Any], axes: list[str], fixed: list[str]) -> None:
        """Every key of the space is a setting, and the space's corners make valid configs."""
        from eanet.sweeps.callbacks import config_without_hydra
        from eanet.validation import validate

        loader = self.hydra_context.config_loader
        for corner in ("low", "high"):
            overrides = [*axes, *fixed]
            for key, dist in space.items():
                value = (dist.choices[0] if corner == "low" else dist.choices[-1]) \
                    if hasattr(dist, "choices") else getattr(dist, corner)
                for setting in key.split(","):
                    overrides.append(f"{setting.strip()}={override_value(value)}")
            try:
                config = loader.load_sweep_config(self.config, overrides)
                validate(config_without_hydra(config))
            except ConfigError as error:
                raise ConfigError(f"hydra.sweeper.params: {error}") from None
            except Exception as error:  # noqa: BLE001 - Hydra's own: an unknown key, a bad type
                raise ConfigError(f"hydra.sweeper.params ({', '.join(space)}): "
                                  f"{str(error).splitlines()[0]}") from None

    # --- ask, launch, tell ---------------------------------------------------------------------

    def run_trials(self, studies: list[Study], space: dict[str, Any], launch) -> None:
        """Batches of trials through the launcher until every study has its n_trials, or the
        launch stops (a budget, a study's failures: one line each, from `launch`)."""
        from optuna.trial import TrialState

        # Job numbers continue past every trial the studies hold: a relaunch into the same sweep
        # folder never overwrites an earlier trial's job folder.
        job_idx = sum(t.state != TrialState.WAITING for s in studies for t in s.study.trials)
        while batch := self.ask_batch(launch.asking(studies), space, launch.room(self.n_jobs)):
            returns = self.launcher.launch([job for _, _, job in batch], initial_job_idx=job_idx)
            job_idx += len(batch)
            launch.launched += len(batch)
            for (found, trial, _), ret in zip(batch, returns):
                outcome, what = self.tell(found, trial, ret)
                log.info("study %s trial %d %s -> %s", found.name, trial.number, trial.params,
                         what)
                launch.record(found, outcome, what, trial.number)
        launch.say_why_stopped(studies)

    def ask_batch(self, studies: list[Study], space: dict[str, Any], size: int) -> list[tuple]:
        """Up to `size` new trials, taken from the studies in turn (each gets the same budget,
        and a sweep stopped early has advanced them alike)."""
        remaining = {s.name: self.n_trials - s.counted() for s in studies}
        batch = []
        while len(batch) < size and any(n > 0 for n in remaining.values()):
            for found in studies:
                if remaining[found.name] > 0 and len(batch) < size:
                    remaining[found.name] -= 1
                    trial = found.study.ask(space)
                    batch.append((found, trial, self.job_overrides(found, trial)))
        return batch

    def job_overrides(self, found: Study, trial) -> list[str]:
        identity = json.dumps({"storage": self.storage_url, "study": found.name,
                               "trial_id": trial._trial_id, "parent_run": self.parent_run})
        settings = [f"{setting.strip()}={override_value(value)}"
                    for key, value in trial.params.items() for setting in key.split(",")]
        quoted = identity.replace("\\", "\\\\").replace("'", "\\'")
        return [*found.overrides, *settings, f"++hydra.job.env_set.{TRIAL_ENV}='{quoted}'"]

    @staticmethod
    def tell(found: Study, trial, ret: JobReturn) -> tuple[TrialOutcome, str]:
        """Tell the study how the trial's job ended; return that and a few words on it."""
        import optuna
        from optuna.trial import TrialState

        result = ret._return_value
        if ret.status == JobStatus.COMPLETED and result is None:
            # train() started nothing (a budget of the job's own): not the settings' doing
            found.requeue(trial, "was not started")
            return TrialOutcome.INTERRUPTED, "not started: asked again"
        if ret.status == JobStatus.COMPLETED:
            value = float(result)
            if math.isfinite(value):
                found.study.tell(trial, value)
                return TrialOutcome.COMPLETE, f"{value:.4f}"
            found.study.tell(trial, state=TrialState.FAIL)
            return TrialOutcome.FAILED, f"failed: its value is {value}"
        if isinstance(result, optuna.TrialPruned):
            found.study.tell(trial, state=TrialState.PRUNED)
            return TrialOutcome.PRUNED, f"pruned: {result}"
        found.study.tell(trial, state=TrialState.FAIL)
        return TrialOutcome.FAILED, f"failed: {type(result).__name__}: {result}"
