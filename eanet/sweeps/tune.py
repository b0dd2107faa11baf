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
them as one batch of jobs through the configured launcher (basic, joblib, Submitit, …). A trial is a normal training
run (one MLflow run, checkpointed, skipped or resumed by fingerprint: eanet.sweeps.plan) whose
callback (eanet.sweeps.trial) reports each epoch's validation top-1 to its trial; the study's
pruner (median or successive halving) stops unpromising runs, which end KILLED in MLflow with
`eanet.pruned=true`. The value of a trial is its run's best validation top-1.

The studies live in `hydra.sweeper.storage`: by default `optuna.db` beside a local SQLite MLflow
store; with a tracking server, name its database (or any other). A study's name comes from what
it searches (space, fixed and study overrides, direction), so the same command continues it:
after a crash or SIGKILL, trials left RUNNING are marked failed (`interrupted`) and asked again
with the same settings (their MLflow runs resume from their checkpoints); finished and pruned
trials are kept, never repeated. Raising `n_trials` continues a study further.

The trials' MLflow runs nest under one parent run per tuning sweep (tag eanet.tuning: its studies'
names; a relaunch reuses it). When the studies end, `<sweep dir>/tuned.csv` holds each study's best
settings and its run's test accuracy, also on the parent run, which ends FINISHED unless a trial
failed; the log compares EANet with ViT at their tuned settings.
"""
from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from eanet.config import ConfigError, check_choice
from eanet.sweeps.study import (DIRECTIONS, INTERRUPTED_ATTR, PRUNER_ATTR, RUN_ID_ATTR,
                                TRIAL_ENV, Study, build, override_value, pruners, samplers,
                                search_space, study_storage)

log = logging.getLogger("eanet.tune")


class OptunaSweeper(Sweeper):
    """The sweeper (registered for Hydra as hydra_plugins.eanet_tune.tune_sweeper.TuneSweeper)."""

    def __init__(self, n_trials: int, n_jobs: int, direction: str, params: Mapping[str, Any],
                 pruner: Mapping[str, Any], sampler: Mapping[str, Any],
                 storage: Optional[str] = None, study_name: Optional[str] = None,
                 enqueue: Sequence[Mapping[str, Any]] = (),
                 studies: Optional[Mapping[str, Any]] = None):
        self.n_trials, self.n_jobs, self.direction = n_trials, n_jobs, direction
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
        try:
            studies, space = self.open_studies(arguments)
        except ConfigError as error:
            log.error("%s", error)
            sys.exit(f"eanet: {error}")  # one line, as eanet.run prints, before any trial
        from eanet.tracking.sweep_run import end_tuning_parent_run, tuning_parent_run

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        tracking = self.config.tracking
        self.parent_run = tuning_parent_run(tracking.tracking_uri, tracking.experiment_name,
                                            " ".join(s.name for s in studies), str(sweep_dir))
        try:
            self.run_trials(studies, space)
        except BaseException as error:
            end_tuning_parent_run(self.parent_run, "KILLED" if isinstance(
                error, KeyboardInterrupt) else "FAILED")
            raise
        rows = self.summarise(studies, sweep_dir)
        failed = any(row["n_failed"] for row in rows)
        end_tuning_parent_run(self.parent_run, "FAILED" if failed else "FINISHED",
                              [sweep_dir / "tuned.csv"])
        return rows

    # --- the studies ---------------------------------------------------------------------------

    def open_studies(self, arguments: list[str]) -> tuple[list[Study], dict[str, Any]]:
        """Validate the settings, then create or continue one study per study-axis combination,
        trials left RUNNING by a killed sweep failed and queued again."""
        import optuna

        check_choice("hydra.sweeper.direction", self.direction, DIRECTIONS)
        for name, value in (("n_trials", self.n_trials), ("n_jobs", self.n_jobs)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"Expected hydra.sweeper.{name} >= 1. Received: {value!r}")
        if not self.params:
            raise ConfigError("hydra.sweeper.params is empty: nothing to tune")
        space = search_space(self.params)
        for point in self.enqueue:
            unknown = sorted(set(point) - set(space))
            if unknown:
                raise ConfigError(f"hydra.sweeper.enqueue: {', '.join(unknown)} not in the search "
                                  f"space. Valid keys: {', '.join(space)}")
        # Study axes from the config first (`studies: {model: ea,vit}`), the command line after:
        # a key given in both takes the command line's value, as Hydra's own sweeps do.
        axes, fixed = self.split_arguments(
            [f"{k}={v}" for k, v in self.studies.items()] + list(arguments))
        build(pruners(), self.pruner_spec, "hydra.sweeper.pruner")  # fails here, not in a trial
        storage = self.storage_url = study_storage(self.storage,
                                                   self.config.tracking.tracking_uri)
        self.check_space(space, [a[0] for a in axes] if axes else [], fixed)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        studies = []
        for own in self.axis_combinations(axes):
            overrides = [*own, *fixed]
            name = self.study_name_for(own, fixed, space)
            study = optuna.create_study(
                study_name=name, storage=storage, direction=self.direction, load_if_exists=True,
                sampler=build(samplers(), self.sampler_spec, "hydra.sweeper.sampler"))
            study.set_user_attr(PRUNER_ATTR, self.pruner_spec)
            study.set_user_attr("overrides", overrides)
            found = Study(name, own, overrides, study)
            self.requeue_interrupted(found)
            if not study.trials:
                for point in self.enqueue:  # e.g. the seed's settings first
                    study.enqueue_trial(point, skip_if_exists=True)
            log.info("study %s in %s: %d of %d trials done", name, storage, found.counted(),
                     self.n_trials)
            studies.append(found)
        return studies, space

    @staticmethod
    def split_arguments(arguments: list[str]) -> tuple[list[list[str]], list[str]]:
        """Command-line choice lists (one study each) and fixed overrides (every trial)."""
        parsed = OverridesParser.create().parse_overrides(arguments)
        axes, fixed = {}, {}
        for override in parsed:
            key = override.get_key_element()
            if override.is_discrete_sweep():
                fixed.pop(key, None)
                axes[key] = [f"{key}={v}" for v in override.sweep_string_iterator()]
            elif override.is_sweep_override():
                raise ConfigError(f"{override.input_line}: only choice lists (a,b) split a tuning "
                                  "sweep into studies; put ranges in hydra.sweeper.params")
            else:
                axes.pop(key, None)
                fixed[key] = override.input_line
        return list(axes.values()), list(fixed.values())

    @staticmethod
    def axis_combinations(axes: list[list[str]]) -> list[list[str]]:
        import itertools

        return [list(c) for c in itertools.product(*axes)] if axes else [[]]

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

    def study_name_for(self, own: list[str], fixed: list[str], space: dict[str, Any]) -> str:
        if self.study_name:
            return "-".join([self.study_name, *own])
        definition = {"space": {k: repr(v) for k, v in space.items()}, "fixed": sorted(fixed),
                      "own": own, "direction": self.direction,
                      "experiment": str(self.config.tracking.experiment_name)}
        digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:8]
        return "-".join(["tune", *own, digest])

    @staticmethod
    def requeue_interrupted(found: Study) -> None:
        """Trials a killed sweep left RUNNING: failed (marked interrupted) and asked again with
        the same settings, so their MLflow runs resume where their checkpoints are."""
        from optuna.trial import TrialState

        for trial in found.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            found.study._storage.set_trial_user_attr(trial._trial_id, INTERRUPTED_ATTR, True)
            found.study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            found.study.enqueue_trial(trial.params, user_attrs={"resumes_trial": trial.number})
            log.info("study %s: trial %d was interrupted: asked again", found.name, trial.number)

    # --- ask, launch, tell ---------------------------------------------------------------------

    def run_trials(self, studies: list[Study], space: dict[str, Any]) -> None:
        """Batches of trials through the launcher until every study has its n_trials."""
        from optuna.trial import TrialState

        # Job numbers continue past every trial the studies hold: a relaunch into the same sweep
        # folder never overwrites an earlier trial's job folder.
        job_idx = sum(t.state != TrialState.WAITING for s in studies for t in s.study.trials)
        while batch := self.ask_batch(studies, space):
            returns = self.launcher.launch([job for _, _, job in batch], initial_job_idx=job_idx)
            job_idx += len(batch)
            self.tell_batch(batch, returns)

    def ask_batch(self, studies: list[Study], space: dict[str, Any]) -> list[tuple]:
        """Up to n_jobs new trials, taken from the studies in turn (each gets the same budget,
        and a sweep stopped early has advanced them alike)."""
        remaining = {s.name: self.n_trials - s.counted() for s in studies}
        batch = []
        while len(batch) < self.n_jobs and any(n > 0 for n in remaining.values()):
            for found in studies:
                if remaining[found.name] > 0 and len(batch) < self.n_jobs:
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
    def tell_batch(batch: list[tuple], returns: Sequence[JobReturn]) -> None:
        import optuna
        from optuna.trial import TrialState

        errors = []
        for (found, trial, _), ret in zip(batch, returns):
            outcome = ret._return_value
            if ret.status == JobStatus.COMPLETED:
                found.study.tell(trial, float(outcome))
                what = f"{float(outcome):.4f}"
            elif isinstance(outcome, optuna.TrialPruned):
                found.study.tell(trial, state=TrialState.PRUNED)
                what = f"pruned: {outcome}"
            else:
                found.study.tell(trial, state=TrialState.FAIL)
                what = f"failed: {type(outcome).__name__}: {outcome}"
                errors.append(outcome)
            log.info("study %s trial %d %s -> %s", found.name, trial.number, trial.params, what)
        if errors and len(errors) == len(batch):
            raise errors[0]  # every trial of the batch failed: not the settings, the setup

    # --- the outcome ---------------------------------------------------------------------------

    def summarise(self, studies: list[Study], sweep_dir: Path) -> list[dict[str, Any]]:
        """Each study's best trial and its run's test accuracy: tuned.csv and the log."""
        import pandas as pd
        from optuna.trial import TrialState

        rows = []
        for found in studies:
            trials = found.study.get_trials(deepcopy=False)
            interrupted = sum(bool(t.user_attrs.get(INTERRUPTED_ATTR)) for t in trials)
            row = {"study": found.name, "overrides": " ".join(found.own),
                   "n_complete": sum(t.state == TrialState.COMPLETE for t in trials),
                   "n_pruned": sum(t.state == TrialState.PRUNED for t in trials),
                   # failed on their own settings; interrupted ones were asked again
                   "n_failed": sum(t.state == TrialState.FAIL for t in trials) - interrupted,
                   "n_interrupted": interrupted}
            complete = [t for t in trials if t.state == TrialState.COMPLETE]
            if complete:
                best = found.study.best_trial
                row.update({"best_trial": best.number, "best_val_top1": best.value,
                            **{f"params.{k}": v for k, v in best.params.items()},
                            **self.run_metrics(best)})
            rows.append(row)
        table = pd.DataFrame(rows)
        table.to_csv(sweep_dir / "tuned.csv", index=False)
        log.info("Tuned settings (%s):\n%s", sweep_dir / "tuned.csv", table.to_string(index=False))
        comparison = tuned_comparison(table)
        if comparison:
            log.info("At their tuned settings: %s", comparison)
        return rows

    def run_metrics(self, trial) -> dict[str, Any]:
        """A trial's MLflow run and its test accuracy (the trial's callback named the run)."""
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if run_id is None:
            return {}
        from eanet.tracking.search import run_metrics

        metrics = run_metrics(self.config.tracking.tracking_uri, run_id)
        return {"run_id": run_id, "test_top1": metrics.get("test_top1"),
                "test_top5": metrics.get("test_top5")}


def tuned_comparison(table) -> Optional[str]:
    """`model=ea 0.4312 vs model=vit 0.4105 test top-1 (Δ +0.0207)` when the studies are exactly
    those two models' (the study axes: model=ea,vit)."""
    if "test_top1" not in table or len(table) != 2:
        return None
    first, second = table.to_dict("records")
    if first.get("test_top1") is None or second.get("test_top1") is None:
        return None
    return (f"{first['overrides']} {first['test_top1']:.4f} vs {second['overrides']} "
            f"{second['test_top1']:.4f} test top-1 "
            f"(Δ {first['test_top1'] - second['test_top1']:+.4f})")
