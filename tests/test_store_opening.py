"""A local SQLite store opens under eanet's lock, and one that MLflow's table creation left
half-migrated (the leftover `_alembic_tmp_*` copy of two processes creating it at once) is made
afresh when it holds nothing, or named in one line with what to do when it holds runs."""
from __future__ import annotations

import sqlite3


from conftest import client_for, run_module, store_uri

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
