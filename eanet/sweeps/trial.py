"""A tuning trial's side in the training process: each epoch's validation top-1 goes to its Optuna
trial, and the study's pruner may stop the run there (`hydra/sweeper=tune`, eanet.sweeps.tune).

The sweeper names the trial in the job's environment (set by Hydra's `hydra.job.env_set`, so it
reaches a job in any launcher's process): `TRIAL_ENV` holds the storage URL, the study name, the
trial id and the sweep's parent MLflow run, which the trial's run is tagged to nest under. Outside
a tuning sweep it is unset and `trial_callbacks()` adds nothing; Optuna is imported only inside one.

Trial and run name each other when training begins, before the first batch (a run that diverges
there is still its trial's, nested under the sweep): the trial holds the run's id, the run is
named `<study>-t<trial number>` and tagged with both.

A pruned run raises `optuna.TrialPruned` out of `fit`: `TrackedRun` ends its MLflow run KILLED
with the tag `eanet.pruned=true` (its checkpoint and per-epoch metrics stay), and the sweeper
tells the study the trial was pruned.
"""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import keras

from eanet.sweeps.study import RUN_ID_ATTR, TRIAL_ENV, load_pruner
from eanet.tracking.tags import TAG_PARENT, TAG_RUN_NAME, TAG_STUDY, TAG_TRIAL

if TYPE_CHECKING:
    from eanet.tracking.run import TrackedRun

MONITOR = "val_top1"  # what the trial reports each epoch (step = epoch, from 0)


class ReportToTrial(keras.callbacks.Callback):
    """`trial.report(val_top1, epoch)` after every epoch, then `trial.should_prune()`.

    Listed after the checkpoint and the MLflow logger: a pruned run keeps that epoch's state and
    metrics. The study's pruner is rebuilt from the study itself (eanet.sweeps.study.load_pruner).
    """

    def __init__(self, run: TrackedRun, storage: str, study: str, trial_id: int,
                 parent_run: str | None = None):
        super().__init__()
        self.run = run
        self.parent_run = parent_run
        import optuna  # only in a tuning sweep's jobs

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        loaded = optuna.load_study(study_name=study, storage=storage)
        loaded.pruner = load_pruner(loaded)
        self.trial = optuna.Trial(loaded, trial_id)
        self.study_name = study

    def on_train_begin(self, logs=None):
        self.link_run()

    def on_epoch_end(self, epoch, logs=None):
        import optuna

        value = (logs or {}).get(MONITOR)
        if value is None:
            raise ValueError(f"A tuning trial needs {MONITOR} every epoch (a validation split: "
                             f"data.validation_split > 0). Received: {sorted(logs or {})}")
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch} ({MONITOR}={float(value):.4f})")

    def link_run(self) -> None:
        """Trial and MLflow run name each other (a resumed run takes the new trial's name)."""
        self.trial.set_user_attr(RUN_ID_ATTR, self.run.run_id)
        tags = {TAG_STUDY: self.study_name, TAG_TRIAL: str(self.trial.number),
                TAG_RUN_NAME: trial_run_name(self.study_name, self.trial.number)}
        if self.parent_run:
            tags[TAG_PARENT] = self.parent_run  # nested under the tuning sweep's run
        self.run.set_tags(tags)


def trial_run_name(study: str, number: int) -> str:
    """`tune-model=ea-1a2b3c4d-t3`: trial 3 of that study."""
    return f"{study}-t{number}"


def trial_callbacks(run: TrackedRun) -> list[keras.callbacks.Callback]:
    """The tuning trial's reporter when this job is one (`TRIAL_ENV` set), else nothing."""
    spec = os.environ.get(TRIAL_ENV)
    if not spec:
        return []
    trial = json.loads(spec)
    return [ReportToTrial(run, trial["storage"], trial["study"], int(trial["trial_id"]),
                          trial.get("parent_run"))]
