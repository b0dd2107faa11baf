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
    callback.on_train_begin()  # before the first batch: a run that diverges there is linked too
    assert created.trials[1].user_attrs[study.RUN_ID_ATTR] == "run-1"
    for epoch, value in enumerate(values):
        if epoch == pruned_at:
            with pytest.raises(optuna.TrialPruned, match=f"pruned at epoch {epoch}"):
                callback.on_epoch_end(epoch, {"val_top1": value})
            break
        callback.on_epoch_end(epoch, {"val_top1": value})
    reported = created.trials[1].intermediate_values
    assert reported == {e: v for e, v in enumerate(values) if pruned_at is None or e <= pruned_at}
    assert created.trials[1].user_attrs[study.RUN_ID_ATTR] == "run-1"
    assert callback.run.tags == {"eanet.study": "s", "eanet.trial": "1", "mlflow.runName": "s-t1",
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


def test_a_pruned_run_resumed_and_finished_counts_once(tracking_dir):
    """A run its pruner stopped (KILLED, eanet.pruned=true), resumed (by another trial, or a plain
    sweep of the same configuration) and finished is one finished run: no pruned mark left, and
    the report's n, n_pruned and n_failed add up to the one run."""
    import mlflow

    from conftest import TINY, compose_config
    from eanet.tracking.run import TrackedRun
    from eanet.validation import validate

    raw = compose_config([*TINY, f"tracking.tracking_uri={tracking_dir}"])
    cfg = validate(raw)
    with pytest.raises(optuna.TrialPruned):
        with TrackedRun(cfg, raw) as run:
            raise optuna.TrialPruned("pruned at epoch 1")
    client = client_for(tracking_dir)
    assert client.get_run(run.run_id).data.tags["eanet.pruned"] == "true"
    with TrackedRun(cfg, raw, run_id=run.run_id) as resumed:
        pass
    finished = client.get_run(resumed.run_id)
    assert finished.info.status == "FINISHED" and "eanet.pruned" not in finished.data.tags
    frame = mlflow.search_runs(experiment_names=[cfg.tracking.experiment_name])
    [row] = tables.configuration_table(tables.typed_runs(frame), []).to_dict("records")
    assert (row["n"], row["n_pruned"], row["n_failed"]) == (1, 0, 0)
    # A store written before the mark was dropped: its finished run counts as finished alone.
    frame["tags.eanet.pruned"] = "true"
    [row] = tables.configuration_table(tables.typed_runs(frame), []).to_dict("records")
    assert (row["n"], row["n_pruned"], row["n_failed"]) == (1, 0, 0)


def sweeper(**changes):
    settings = {"n_trials": 3, "n_jobs": 1, "direction": "maximize",
                "params": {"optimizer.learning_rate": "interval(0.1, 0.2)"},
                "pruner": {"kind": "none"}, "sampler": {"kind": "random"}}
    return tune.OptunaSweeper(**{**settings, **changes})


@pytest.mark.parametrize("setting, value", [
    ("max_consecutive_failures", 0), ("max_consecutive_failures", 1.5),
    ("max_consecutive_failures", True), ("n_trials", 0)])
def test_sweeper_settings_fail_at_start_naming_the_setting(setting, value):
    with pytest.raises(ConfigError, match=rf"Expected hydra.sweeper.{setting} >= 1 \(an integer\)"
                                          rf"\. Received: hydra.sweeper.{setting}={value}"):
        sweeper(**{setting: value}).check_settings()
    sweeper(max_consecutive_failures=1).check_settings()


def test_the_study_name_is_readable_and_leaves_out_budgets():
    """`tune-<its own overrides>-<8 hex of eanet.sweeps.parent.sweep_key over what it searches>`:
    a budget, n_trials or n_jobs added on a relaunch continues the same study."""
    import re

    from conftest import compose_config

    def name(*overrides, own=("model=ea",), fixed=("data=synthetic",)):
        config = compose_config(["hydra/sweeper=tune", *overrides], return_hydra_config=True)
        return study.study_name(config, list(own), list(fixed))

    first = name()
    assert re.fullmatch(r"tune-model=ea-[0-9a-f]{8}", first), first
    assert name("hydra.sweeper.n_trials=40", "hydra.sweeper.n_jobs=4",
                "hydra.sweeper.max_consecutive_failures=5") == first
    assert name(fixed=("data=synthetic", "sweep.max_runs=1", "sweep.max_hours=2")) == first
    assert name(fixed=("data=synthetic", "optimizer.weight_decay=0.1")) != first
    assert name("hydra.sweeper.direction=minimize") != first
    assert name(own=("model=vit",)).startswith("tune-model=vit-")
    assert name(own=()).startswith("tune-") and name(own=()) != first


def test_tuned_csv_gives_each_setting_a_column_of_its_own():
    """A search-space key that names several settings never puts its comma in a header."""
    from eanet.sweeps.tuned import setting_columns

    assert setting_columns({"model.attention_dropout,model.mlp_dropout": 0.2,
                            "optimizer.learning_rate": 1e-3}) == {
        "params.model.attention_dropout": 0.2, "params.model.mlp_dropout": 0.2,
        "params.optimizer.learning_rate": 1e-3}


class CountedStudy:
    """What a launch reads of a study (eanet.sweeps.study.Study): its name and trials used."""

    def __init__(self, name, counted=0):
        self.name, self.used = name, counted

    def counted(self):
        return self.used


def test_a_launch_keeps_the_budget_and_stops_a_failing_study(caplog):
    from eanet.sweeps.launch import Launch

    launch = Launch(n_trials=3, max_consecutive_failures=3, max_runs=2)
    assert launch.room(4) == 2 and launch.spent() is None
    launch.launched = 2
    assert launch.room(4) == 0 and launch.spent().startswith("sweep.max_runs=2 reached")
    over = Launch(n_trials=3, max_consecutive_failures=3, max_hours=0.5, start=time.time() - 3600)
    assert over.room(1) == 0 and over.spent() == "sweep.max_hours=0.5 passed"

    launch = Launch(n_trials=10, max_consecutive_failures=2)
    ea, vit = CountedStudy("tune-model=ea-0"), CountedStudy("tune-model=vit-0")
    for outcome in ("FAILED", "COMPLETE", "FAILED", "PRUNED", "FAILED"):  # never 2 in a row
        launch.record(ea, study.TrialOutcome[outcome], "failed: NonFiniteLossError: …", 0)
    assert launch.asking([ea, vit]) == [ea, vit]
    launch.record(ea, study.TrialOutcome.FAILED, "failed: NonFiniteLossError: loss nan", 5)
    assert launch.asking([ea, vit]) == [vit]
    [line] = [r.getMessage() for r in caplog.records if "stopped" in r.getMessage()]
    assert line == ("study tune-model=ea-0 stopped at 0 of 10 trials: 2 in a row failed "
                    "(hydra.sweeper.max_consecutive_failures=2), the last failed: "
                    "NonFiniteLossError: loss nan")
    assert launch.status([ea, vit]) == "FAILED"
    # A trial whose job started nothing: the launch stops; the next one asks it again.
    launch.record(vit, study.TrialOutcome.INTERRUPTED, "not started", 1)
    assert launch.room(1) == 0


def test_a_trial_whose_job_started_nothing_is_asked_again_not_failed():
    """`train` returns None when a budget kept the job from starting: the trial is no failure of
    its settings. It is asked again (same settings) and the launch stops there."""
    from hydra.core.utils import JobReturn, JobStatus
    from optuna.trial import TrialState

    from eanet.sweeps.launch import Launch

    created = optuna.create_study()
    found = study.Study("s", [], [], created)
    space = {"optimizer.learning_rate": optuna.distributions.FloatDistribution(0.1, 0.2)}
    trial = created.ask(space)
    ret = JobReturn(status=JobStatus.COMPLETED, _return_value=None)
    outcome, _ = tune.OptunaSweeper.tell(found, trial, ret)
    assert outcome == study.TrialOutcome.INTERRUPTED and found.counted() == 0
    [asked, waiting] = created.get_trials(deepcopy=False)
    assert asked.state == TrialState.FAIL and waiting.state == TrialState.WAITING
    assert waiting.system_attrs["fixed_params"] == asked.params  # enqueued: asked next
    assert waiting.user_attrs[study.RESUMES_ATTR] == 0
    launch = Launch(n_trials=3, max_consecutive_failures=3)
    launch.record(found, outcome, "not started", trial.number)
    assert launch.room(1) == 0 and launch.spent() == "trial 0 of s was not started"


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
    from eanet.config_checks import validate

    text = (CONF_DIR / "experiment" / "tune.yaml").read_text()
    assert "python -m eanet.run -m +experiment=tune" in text and "Expected" in text
    cfg = compose_config(["+experiment=tune"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.eanet_tune.tune_sweeper.TuneSweeper"
    assert dict(sweeper.studies) == {"model": "ea,vit"}
    assert sweeper.max_consecutive_failures == 3
    axes, fixed = study.study_axes(["model=ea,vit", "+experiment=tune"])
    assert study.axis_combinations(axes) == [["model=ea"], ["model=vit"]]
    space = study.search_space(sweeper.params)
    assert space["optimizer.learning_rate"].log and space["optimizer.weight_decay"].log
    # The seed's settings, tried first, lie in the space.
    [seed] = sweeper.enqueue
    assert all(space[k]._contains(space[k].to_internal_repr(v)) for k, v in seed.items())
    for model in ("ea", "vit"):
        validate(compose_config(["+experiment=tune", f"model={model}"]))


# --- faults and budgets: the study goes on, or stops cleanly with one line -------------------

def tuning_sweep(space: str, *overrides: str) -> list[str]:
    return ["-m", "hydra/sweeper=tune", "hydra.sweep.dir=multirun/tune",
            "tracking.log_model=false", "~hydra.sweeper.params",
            f"+hydra.sweeper.params={{optimizer.learning_rate:'{space}'}}",
            "hydra.sweeper.enqueue=[]", "hydra.sweeper.sampler.kind=random", *overrides]


def output(result) -> str:
    return result.stdout + result.stderr


def test_a_study_whose_every_trial_diverges_records_them_all_and_ends_as_usual(tmp_path):
    """Every trial diverges (NonFiniteLossError at a learning rate of 1e29+): each is a FAILED trial
    and a FAILED run, the study goes on to n_trials and the sweep ends with its summary and
    tuned.csv (exit 0: failed trials are outcomes of the search). A relaunch with more trials
    continues the same study, and stops it after max_consecutive_failures failed trials in a
    row, with one line."""
    from optuna.trial import TrialState

    sweep = tuning_sweep("interval(1e29, 1e30)", "trainer.epochs=1")
    result = run_eanet(tmp_path, *sweep, "hydra.sweeper.n_trials=3")
    assert result.returncode == 0, output(result)[-3000:]
    trials = the_study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 3
    assert not any(t.user_attrs.get(study.INTERRUPTED_ATTR) for t in trials)
    runs = training_runs(client_for(tmp_path))
    assert sorted(r.info.run_id for r in runs) == sorted(t.user_attrs["mlflow_run_id"]
                                                         for t in trials)
    assert {r.info.status for r in runs} == {"FAILED"}
    assert all(r.data.tags["eanet.error"].startswith("NonFiniteLossError") for r in runs)
    name = the_study(tmp_path).study_name
    assert sorted(r.info.run_name for r in runs) == [f"{name}-t{n}" for n in range(3)]
    [summary] = [x for x in result.stderr.splitlines() if x.startswith("eanet sweep ")]
    assert "3 jobs" in summary and "3 failed" in summary  # the sweep's usual summary
    tuned = pd.read_csv(tmp_path / "multirun/tune/tuned.csv")
    assert not any("," in column or " " in column for column in tuned.columns)
    [row] = tuned.to_dict("records")
    assert (row["n_complete"], row["n_pruned"], row["n_failed"]) == (0, 0, 3)
    [parent] = client_for(tmp_path).search_runs(
        [runs[0].info.experiment_id], "tags.`eanet.run_type` = 'tuning'")
    assert parent.info.status == "FAILED"  # a study without a best trial
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}

    result = run_eanet(tmp_path, *sweep, "hydra.sweeper.n_trials=6",
                       "hydra.sweeper.max_consecutive_failures=2")
    assert result.returncode == 0, output(result)[-3000:]
    assert [t.state for t in the_study(tmp_path).trials] == [TrialState.FAIL] * 5
    [line] = [x for x in output(result).splitlines() if "in a row failed" in x]
    assert (f"study {name} stopped at 5 of 6 trials: 2 in a row failed (hydra.sweeper."
            "max_consecutive_failures=2), the last failed: NonFiniteLossError") in line


def test_a_budget_stops_a_tuning_sweep_cleanly_and_a_relaunch_goes_on(tmp_path):
    """`sweep.max_runs=1` on a 3-trial study: one trial, one line, the usual ending (exit 0,
    tuned.csv); the same command again runs the next trial of the same study."""
    from optuna.trial import TrialState

    sweep = tuning_sweep("interval(0.001, 0.01)", "hydra.sweeper.n_trials=3", "trainer.epochs=1",
                         "sweep.max_runs=1")
    for launch in (1, 2):
        result = run_eanet(tmp_path, *sweep)
        assert result.returncode == 0, output(result)[-3000:]
        found = the_study(tmp_path)
        assert [t.state for t in found.trials] == [TrialState.COMPLETE] * launch
        [line] = [x for x in output(result).splitlines() if "tuning stopped" in x]
        assert (f"tuning stopped: sweep.max_runs=1 reached (1 trials launched); trials done: "
                f"{found.study_name} {launch} of 3; the same command continues") in line
        # Each trial trains settings of its own: a relaunch draws new ones (the sampler's seed
        # moves on), not the first launch's again.
        runs = training_runs(client_for(tmp_path))
        assert [r.info.status for r in runs] == ["FINISHED"] * launch
        assert sorted(r.info.run_name for r in runs) == [f"{found.study_name}-t{n}"
                                                         for n in range(launch)]
        [row] = pd.read_csv(tmp_path / "multirun/tune/tuned.csv").to_dict("records")
        assert row["n_complete"] == launch
