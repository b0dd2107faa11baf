"""A local SQLite store opens under eanet's lock: sweeps launched at the same moment into one
fresh store record every run, and the job they share is trained once (its claim,
eanet.tracking.ledger), on a SQLite file as on a tracking server. A store that MLflow's table creation left half-migrated (the
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
SHARED = "99"  # the seed every sweep of a round shares

# One process per sweep, which launches its sweep (`python -m eanet.run -m seed=99,<i> …`) once
# per round: in round r all of them start at the same moment (a file barrier) into the fresh store
# round<r>/mlflow.db (or, with EANET_TEST_SERVER, the fresh experiment round<r> of that tracking
# server). Every sweep's first job is the shared seed=99. Launching the rounds in one process each
# spares importing TensorFlow ROUNDS times; every round still opens, creates and migrates a store
# (or an experiment and its claims ledger) MLflow has not seen.
LAUNCHER = textwrap.dedent("""
    import os, runpy, sys, time
    from pathlib import Path

    sweep, rounds, sweeps, root = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path.cwd()
    SHARED = 99
    overrides = sys.argv[4:]
    for r in range(rounds):
        folder = root / f"round{r}"
        folder.mkdir(exist_ok=True)
        (folder / f"ready{sweep}").touch()
        deadline = time.monotonic() + 300
        while len(list(folder.glob("ready*"))) < sweeps and time.monotonic() < deadline:
            time.sleep(0.01)
        os.chdir(folder)
        server = os.environ.get("EANET_TEST_SERVER")
        where = ([f"tracking.tracking_uri={server}", f"tracking.experiment_name=round{r}"]
                 if server else [f"tracking.tracking_uri=sqlite:///{folder}/mlflow.db"])
        sys.argv = ["eanet.run", "-m", f"seed={SHARED},{sweep}", f"hydra.sweep.dir=sweep{sweep}",
                    *where, *overrides]
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


OVERRIDES = [*TINY, f"trainer.epochs={EPOCHS}", "data.synthetic_train_size=20",
             "data.synthetic_test_size=16", "tracking.log_model=false", "tracking.lease_s=3",
             "hydra.callbacks.sweep_report.enabled=false"]


def launch_rounds(folder, sweeps: int, env: dict) -> None:
    """SWEEPS processes, each launching its sweep ROUNDS times at a shared barrier."""
    logs = [folder / f"sweep{i}.log" for i in range(sweeps)]
    processes = []
    for i, log in enumerate(logs):
        with open(log, "w") as output:
            processes.append(subprocess.Popen(
                [*eanet_command(script=LAUNCHER, tiny=False), str(i), str(ROUNDS), str(sweeps),
                 *OVERRIDES], cwd=folder, env=env, stdout=output, stderr=subprocess.STDOUT))
    for process, log in zip(processes, logs):
        assert process.wait(timeout=600) == 0, log.read_text()[-3000:]


def check_round(client, r: int, sweeps: int, experiment: str = "eanet") -> None:
    """Every computation has exactly one FINISHED run with one point per epoch; the shared one
    is in every sweep's record (what its report and registration select)."""
    from eanet.tracking.record import SweepRecord

    assert [e.name for e in client.search_experiments()].count(experiment) == 1
    runs = training_runs(client, experiment)
    assert sorted(run.data.params["seed"] for run in runs) == sorted(
        [SHARED, *(str(i) for i in range(sweeps))]), r
    assert len({run.data.tags["eanet.fingerprint"] for run in runs}) == len(runs)
    for run in runs:
        assert run.info.status == "FINISHED", (r, run.data.params["seed"])
        for key in ("loss", "val_loss", "top1"):
            assert metric_steps(client, run.info.run_id, key) == list(range(EPOCHS)), (r, key)
    [shared] = [run.info.run_id for run in runs if run.data.params["seed"] == SHARED]
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    parents = client.search_runs([experiment_id], "tags.`eanet.run_type` = 'sweep'")
    assert len(parents) == sweeps
    for parent in parents:
        record = SweepRecord(client.tracking_uri, parent.info.run_id)
        assert shared in record.run_ids(), r
        assert {e.status.value for e in record.jobs().values()} <= {"trained", "finished earlier"}
    return runs


def test_sweeps_launched_at_once_into_a_fresh_store_record_every_run(tmp_path):
    """Issue 21: MLflow creates and migrates a fresh store's tables in a process' first
    `MlflowClient()`; two processes doing it at once collided and left the store broken.
    Issue 26: the job they share was trained once per sweep, into one checkpoint folder."""
    launch_rounds(tmp_path, SWEEPS, subprocess_env())
    for r in range(ROUNDS):
        folder = tmp_path / f"round{r}"
        assert not {t for t in tables(folder) if t.startswith("_alembic_tmp_")}, r
        client = client_for(store_uri(folder))
        runs = check_round(client, r, SWEEPS)
        for run in runs:
            # The software it ran on (eanet.tracking.lineage), as every training run records it.
            tags = run.data.tags
            assert tags["mlflow.source.git.commit"] and tags["eanet.git_dirty"] in ("true", "false")
            packages = tags["eanet.packages"].split()
            for name in ("keras", "numpy", "mlflow", "hydra-core", "omegaconf", "pandas"):
                assert f"{name}=={metadata.version(name)}" in packages, name


def test_sweeps_launched_at_once_on_a_tracking_server_train_their_shared_job_once(tmp_path):
    """The claim is atomic over HTTP too: two sweeps per round, each round a fresh experiment
    (and so a fresh claims ledger, created by whichever process gets there first)."""
    from servers import mlflow_server

    with mlflow_server(store_uri(tmp_path), tmp_path / "artifacts", tmp_path / "server.log") as url:
        launch_rounds(tmp_path, 2, subprocess_env(EANET_TEST_SERVER=url))
        client = client_for(url)
        for r in range(ROUNDS):
            check_round(client, r, 2, experiment=f"round{r}")
