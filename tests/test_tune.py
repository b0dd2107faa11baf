"""Tuning sweeps (hydra/sweeper=tune, eanet.sweeps.tune): the search space, its errors, pruned runs
in the report, and one tuning sweep killed with SIGKILL mid-trial, relaunched, and finished.

The sweep is built so that pruning must happen: its first trial (enqueued) trains at a learning
rate that learns the synthetic classes within a few epochs; the second trains at 1e-7, where the
weights cannot move and validation top-1 stays at the untrained model's. The median pruner
(deterministic given the reports; never the first trial, n_startup_trials=1) compares a trial's
best value so far with the finished trials' at the same epoch, from epoch 2: the 1e-7 trial is
below it, so it is pruned. The sweep is killed while that trial trains, so the relaunch must
resume it (same settings, same MLflow run) and prune it there.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time

import pandas as pd
import pytest

from conftest import client_for, run_eanet, start_eanet, training_runs
from eanet.config import ConfigError
from eanet.report import tables
from eanet.sweeps import study, tune

optuna = pytest.importorskip("optuna")


def test_search_space_in_hydra_sweep_grammar():
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)

    space = study.search_space({"optimizer.learning_rate": "tag(log, interval(1e-4, 1e-2))",
                               "optimizer.weight_decay": "interval(0, 0.1)",
                               "model.num_heads": "choice(2, 4)",
                               "model.patch_size": "range(2, 8, 2)"})
    assert space == {"optimizer.learning_rate": FloatDistribution(1e-4, 1e-2, log=True),
                     "optimizer.weight_decay": FloatDistribution(0.0, 0.1),
                     "model.num_heads": CategoricalDistribution([2, 4]),
                     "model.patch_size": IntDistribution(2, 8, step=2)}


@pytest.mark.parametrize("params, message", [
    ({"optimizer.learning_rate": "0.001"}, "not a range"),
    ({"optimizer.learning_rate": "interval(1e-4"}, "hydra.sweeper.params.optimizer.learning_rate"),
])
def test_search_space_errors_name_the_setting(params, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        study.search_space(params)


def test_unknown_pruner_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="hydra.sweeper.pruner.kind='hyperband'. Valid values: "
                                          "median, none, successive_halving"):
        study.build(study.pruners(), {"kind": "hyperband"}, "hydra.sweeper.pruner")
    with pytest.raises(ConfigError, match="hydra.sweeper.pruner \\(median\\)"):
        study.build(study.pruners(), {"kind": "median", "n_warmup": 2}, "hydra.sweeper.pruner")


class RecordedRun:
    """What the trial callback needs of eanet.tracking.run.TrackedRun: its id and set_tags."""
    run_id = "run-1"

    def __init__(self):
        self.tags = {}

    def set_tags(self, tags):
        self.tags.update(tags)


@pytest.mark.parametrize("pruner, values, pruned_at", [
    # median: below the finished trial's value at the same epoch, from n_warmup_steps on
    ({"kind": "median", "n_startup_trials": 1, "n_warmup_steps": 1}, [0.2, 0.2, 0.2], 1),
    ({"kind": "median", "n_startup_trials": 1, "n_warmup_steps": 1}, [0.2, 0.9, 0.9], None),
    ({"kind": "none"}, [0.1, 0.1, 0.1], None),
])
def test_the_trial_callback_reports_each_epoch_and_prunes(tmp_path, pruner, values, pruned_at):
    from eanet.sweeps.trial import ReportToTrial

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    created = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    created.set_user_attr(study.PRUNER_ATTR, pruner)
    finished = created.ask()
    for epoch in range(3):
        finished.report(0.8, epoch)
    created.tell(finished, 0.8)
    trial = created.ask()
    callback = ReportToTrial(RecordedRun(), storage, "s", trial._trial_id, parent_run="parent-1")
    for epoch, value in enumerate(values):
        if epoch == pruned_at:
            with pytest.raises(optuna.TrialPruned, match=f"pruned at epoch {epoch}"):
                callback.on_epoch_end(epoch, {"val_top1": value})
            break
        callback.on_epoch_end(epoch, {"val_top1": value})
    reported = created.trials[1].intermediate_values
    assert reported == {e: v for e, v in enumerate(values) if pruned_at is None or e <= pruned_at}
    assert created.trials[1].user_attrs[study.RUN_ID_ATTR] == "run-1"
    assert callback.run.tags == {"eanet.study": "s", "eanet.trial": "1",
                                 "mlflow.parentRunId": "parent-1"}


def test_a_trial_process_rebuilds_the_study_pruner(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    created = optuna.create_study(study_name="s", storage=storage)
    created.set_user_attr(study.PRUNER_ATTR, {"kind": "successive_halving", "min_resource": 2})
    pruner = study.load_pruner(optuna.load_study(study_name="s", storage=storage))
    assert isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner)
    assert pruner._min_resource == 2


def test_pruned_runs_are_counted_never_averaged():
    frame = pd.DataFrame({
        "params.model.name": ["ea"] * 3, "params.model.attention": ["external"] * 3,
        "params.seed": ["0", "1", "2"], "status": ["FINISHED", "KILLED", "FAILED"],
        "tags.eanet.pruned": [None, "true", None],
        "metrics.test_top1": [0.4, 0.1, None], "metrics.best_val_top1": [0.5, 0.2, None]})
    runs = tables.typed_runs(frame)
    [row] = tables.configuration_table(runs, []).to_dict("records")
    assert (row["n"], row["n_pruned"], row["n_failed"]) == (1, 1, 1)
    assert row["test_top1_mean"] == 0.4 and row["best_val_top1_mean"] == 0.5


def test_unknown_setting_in_the_space_fails_before_any_trial(tmp_path):
    result = run_eanet(tmp_path, "-m", "hydra/sweeper=tune",
                       "++hydra.sweeper.params={optimizer.learnin_rate:'interval(0.1,0.2)'}")
    assert result.returncode == 1, result.stderr
    assert "eanet: hydra.sweeper.params" in result.stderr
    assert "learnin_rate" in result.stderr
    assert not (tmp_path / "optuna.db").exists()  # no study was created
    assert training_runs(client_for(tmp_path)) == []


# --- a tuning sweep, killed and relaunched ------------------------------------------------------

GOOD, BAD = 0.03, 1e-7
SWEEP = [
    "-m", "hydra/sweeper=tune", "hydra.sweep.dir=multirun/tune", "hydra.sweeper.n_trials=2",
    "data.synthetic_train_size=128", "trainer.epochs=4",  # 26 validation images, not TINY's 13
    "tracking.log_model=false", "~hydra.sweeper.params",
    f"+hydra.sweeper.params={{optimizer.learning_rate:'choice({GOOD},{BAD})'}}",
    f"hydra.sweeper.enqueue=[{{optimizer.learning_rate:{GOOD}}},{{optimizer.learning_rate:{BAD}}}]",
    "hydra.sweeper.pruner.n_startup_trials=1", "hydra.sweeper.pruner.n_warmup_steps=2",
]


def the_study(folder):
    storage = f"sqlite:///{folder / 'optuna.db'}"
    [name] = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


def reported_epochs(folder, trial: int) -> int:
    """How many epochs trial number `trial` has reported (read with sqlite3: polling through
    Optuna would cost the sweep it watches much of a core)."""
    try:
        with contextlib.closing(sqlite3.connect(folder / "optuna.db")) as db:
            return db.execute("SELECT COUNT(*) FROM trial_intermediate_values v JOIN trials t "
                              "ON v.trial_id = t.trial_id WHERE t.number = ?",
                              (trial,)).fetchone()[0]
    except sqlite3.OperationalError:  # no study yet
        return 0


def kill_mid_trial(folder) -> None:
    """Start the sweep; SIGKILL it (all its processes) once trial 1 has reported an epoch."""
    log = folder / "killed.log"
    process = start_eanet(folder, *SWEEP, log=log)
    deadline = time.monotonic() + 400
    while not reported_epochs(folder, 1):
        assert process.poll() is None, f"the sweep ended before it was killed:\n{log.read_text()}"
        assert time.monotonic() < deadline, "trial 1 reported no epoch in time"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def test_sigkill_mid_tuning_then_relaunch_finishes_without_repeating(tmp_path):
    from optuna.trial import TrialState

    kill_mid_trial(tmp_path)
    client = client_for(tmp_path)
    [first] = [r for r in training_runs(client) if r.info.status == "FINISHED"]
    assert the_study(tmp_path).trials[1].state == TrialState.RUNNING  # as SIGKILL left it

    result = run_eanet(tmp_path, *SWEEP)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = the_study(tmp_path).trials
    # Trial 0 kept; trial 1 failed as interrupted and asked again (trial 2) with its settings.
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED]
    assert trials[1].user_attrs[study.INTERRUPTED_ATTR] is True
    assert trials[2].user_attrs["resumes_trial"] == 1
    assert trials[2].params == trials[1].params == {"optimizer.learning_rate": BAD}
    assert min(trials[2].intermediate_values) > 0  # resumed past the checkpointed epoch 0

    # MLflow: one run per setting. The finished one untouched; the killed one resumed, pruned.
    runs = {r.info.run_id: r for r in training_runs(client)}
    assert len(runs) == 2
    assert trials[0].user_attrs["mlflow_run_id"] == first.info.run_id
    assert runs[first.info.run_id].info.end_time == first.info.end_time
    assert runs[first.info.run_id].data.metrics["best_val_top1"] == pytest.approx(trials[0].value)
    pruned = runs[trials[2].user_attrs["mlflow_run_id"]]
    assert trials[1].user_attrs["mlflow_run_id"] == pruned.info.run_id
    assert pruned.info.status == "KILLED" and pruned.data.tags["eanet.pruned"] == "true"
    assert pruned.data.tags["eanet.trial"] == "2"

    # The summary (tuned.csv) and the report count the pruned trial, and never average it.
    [tuned] = pd.read_csv(tmp_path / "multirun/tune/tuned.csv").to_dict("records")
    assert (tuned["n_complete"], tuned["n_pruned"], tuned["n_failed"], tuned["n_interrupted"],
            tuned["best_trial"]) == (1, 1, 0, 1, 0)
    # One parent run for the tuning sweep, reused by the relaunch: every trial's run under it.
    [parent] = client.search_runs([first.info.experiment_id], "tags.`eanet.run_type` = 'tuning'")
    assert parent.info.status == "FINISHED"
    assert {r.data.tags.get("mlflow.parentRunId") for r in runs.values()} == {parent.info.run_id}
    report = pd.read_csv(tmp_path / "multirun/tune/report/report.csv")
    assert report[["optimizer.learning_rate", "n", "n_pruned", "n_failed"]].values.tolist() == [
        [BAD, 0, 1, 0], [GOOD, 1, 0, 0]]


def test_the_tune_study_tunes_each_model_with_the_same_budget():
    from conftest import CONF_DIR, compose_config
    from eanet.config import validate

    text = (CONF_DIR / "experiment" / "tune.yaml").read_text()
    assert "python -m eanet.run -m +experiment=tune" in text and "Expected" in text
    cfg = compose_config(["+experiment=tune"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.eanet_tune.tune_sweeper.TuneSweeper"
    assert dict(sweeper.studies) == {"model": "ea,vit"}
    axes, fixed = tune.OptunaSweeper.split_arguments(["model=ea,vit", "+experiment=tune"])
    assert tune.OptunaSweeper.axis_combinations(axes) == [["model=ea"], ["model=vit"]]
    space = study.search_space(sweeper.params)
    assert space["optimizer.learning_rate"].log and space["optimizer.weight_decay"].log
    # The seed's settings, tried first, lie in the space.
    [seed] = sweeper.enqueue
    assert all(space[k]._contains(space[k].to_internal_repr(v)) for k, v in seed.items())
    for model in ("ea", "vit"):
        validate(compose_config(["+experiment=tune", f"model={model}"]))
