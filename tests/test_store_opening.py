"""A local SQLite store opens under eanet's lock: sweeps launched at the same moment into one
fresh store record every run. A store that MLflow's table creation left half-migrated (the
leftover `_alembic_tmp_*` copy of two processes creating it at once) is made afresh when it holds
nothing, or named in one line with what to do when it holds runs."""
from __future__ import annotations

import sqlite3
import subprocess
import textwrap
from importlib import metadata

from conftest import (TINY, client_for, eanet_command, metric_steps, run_module, store_uri,
                      subprocess_env, training_runs)

SWEEPS, ROUNDS, EPOCHS = 4, 5, 2

# One process per sweep, which launches its sweep (`python -m eanet.run -m seed=<i> …`) once per
# round: in round r all of them start at the same moment (a file barrier) into the fresh store
# round<r>/mlflow.db. Launching the rounds in one process each spares importing TensorFlow
# ROUNDS times; every round still opens, creates and migrates a store MLflow has not seen.
LAUNCHER = textwrap.dedent("""
    import os, runpy, sys, time
    from pathlib import Path

    sweep, rounds, sweeps, root = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path.cwd()
    overrides = sys.argv[4:]
    for r in range(rounds):
        folder = root / f"round{r}"
        folder.mkdir(exist_ok=True)
        (folder / f"ready{sweep}").touch()
        deadline = time.monotonic() + 300
        while len(list(folder.glob("ready*"))) < sweeps and time.monotonic() < deadline:
            time.sleep(0.01)
        os.chdir(folder)
        sys.argv = ["eanet.run", "-m", f"seed={sweep}", f"hydra.sweep.dir=sweep{sweep}",
                    f"tracking.tracking_uri=sqlite:///{folder}/mlflow.db", *overrides]
        try:
            runpy.run_module("eanet.run", run_name="__main__", alter_sys=True)
        except SystemExit as exit:
            if exit.code:
                raise
""")

# The revision at which two processes creating one store at once left it (MLflow 3.17): the next
# migration copies `experiments` through `_alembic_tmp_experiments`, which the other had created.
CUT_SHORT_AT = "c8d9e0f1a2b3"


def half_migrated_store(folder, experiment: str | None = None):
    """A store as a colliding creation leaves it: the first tables, the migrations up to
    CUT_SHORT_AT, and the other process' copy of `experiments`; `experiment` adds a record."""
    import alembic.command
    import sqlalchemy
    from mlflow.store.db.utils import InitialBase, _get_alembic_config

    uri = store_uri(folder)
    engine = sqlalchemy.create_engine(uri)
    InitialBase.metadata.create_all(engine)
    config = _get_alembic_config(uri)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        alembic.command.upgrade(config, CUT_SHORT_AT)
    engine.dispose()
    with sqlite3.connect(folder / "mlflow.db") as connection:
        if experiment:
            connection.execute("INSERT INTO experiments (experiment_id, name, lifecycle_stage) "
                               "VALUES (1, ?, 'active')", (experiment,))
        connection.execute("CREATE TABLE _alembic_tmp_experiments AS SELECT * FROM experiments")
    return uri


def tables(folder) -> set[str]:
    with sqlite3.connect(folder / "mlflow.db") as connection:
        return {name for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_a_half_migrated_store_without_runs_is_made_afresh(tmp_path, monkeypatch):
    from eanet.tracking.store import experiment_id

    monkeypatch.chdir(tmp_path)
    uri = half_migrated_store(tmp_path)
    exp_id = experiment_id(uri, "eanet")
    assert "_alembic_tmp_experiments" not in tables(tmp_path)
    client = client_for(uri)
    assert client.get_experiment(exp_id).name == "eanet"
    run = client.create_run(exp_id)
    client.log_metric(run.info.run_id, "loss", 1.0, step=0)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0]


def test_a_half_migrated_store_with_runs_is_named_in_one_line_and_left_alone(tmp_path):
    half_migrated_store(tmp_path, experiment="eanet")
    before = (tmp_path / "mlflow.db").read_bytes()
    result = run_module("eanet.report", "experiment_name=eanet", cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    message = [line for line in result.stderr.splitlines() if "half-migrated" in line]
    assert len(message) == 1, result.stderr[-2000:]
    assert str(tmp_path / "mlflow.db") in message[0]
    assert "DROP TABLE _alembic_tmp_experiments" in message[0]
    assert "mlflow db upgrade" in message[0]
    assert (tmp_path / "mlflow.db").read_bytes() == before


def test_sweeps_launched_at_once_into_a_fresh_store_record_every_run(tmp_path):
    """Issue 21: MLflow creates and migrates a fresh store's tables in a process' first
    `MlflowClient()`; two processes doing it at once collided and left the store broken."""
    overrides = [*TINY, f"trainer.epochs={EPOCHS}", "data.synthetic_train_size=20",
                 "data.synthetic_test_size=16", "tracking.log_model=false",
                 "hydra.callbacks.sweep_report.enabled=false"]
    logs = [tmp_path / f"sweep{i}.log" for i in range(SWEEPS)]
    processes = []
    for i, log in enumerate(logs):
        with open(log, "w") as output:
            processes.append(subprocess.Popen(
                [*eanet_command(script=LAUNCHER, tiny=False), str(i), str(ROUNDS), str(SWEEPS),
                 *overrides], cwd=tmp_path, env=subprocess_env(), stdout=output,
                stderr=subprocess.STDOUT))
    for process, log in zip(processes, logs):
        assert process.wait(timeout=600) == 0, log.read_text()[-3000:]
    for r in range(ROUNDS):
        folder = tmp_path / f"round{r}"
        assert not {t for t in tables(folder) if t.startswith("_alembic_tmp_")}, r
        client = client_for(store_uri(folder))
        assert [e.name for e in client.search_experiments()].count("eanet") == 1
        runs = training_runs(client)
        assert sorted(run.data.params["seed"] for run in runs) == [str(i) for i in range(SWEEPS)]
        for run in runs:
            assert run.info.status == "FINISHED", (r, run.data.params["seed"])
            # The software it ran on (eanet.tracking.lineage), as every training run records it.
            tags = run.data.tags
            assert tags["mlflow.source.git.commit"] and tags["eanet.git_dirty"] in ("true", "false")
            packages = tags["eanet.packages"].split()
            for name in ("keras", "numpy", "mlflow", "hydra-core", "omegaconf", "pandas"):
                assert f"{name}=={metadata.version(name)}" in packages, name
            for key in ("loss", "val_loss", "top1"):
                assert metric_steps(client, run.info.run_id, key) == list(range(EPOCHS)), key
