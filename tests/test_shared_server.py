"""A team's tracking server: a tiny 2-job sweep logs over HTTP to a real `mlflow server`
(SQLite backend, artifacts served by the server), read back over HTTP with MlflowClient; the same
store opened in the MLflow UI in headless Chromium (`browser` marker: the sweep one row that
expands into its jobs); a PostgreSQL backend (`postgres` marker).

One sweep serves the module (module-scoped fixture): it costs ~40 s of CPU.
"""
from __future__ import annotations

import os
import time

import pytest

from conftest import client_for, headless_chromium, store_uri, training_runs
from servers import mlflow_server, postgres_bin, postgres_cluster, run_sweep

IN_CI = bool(os.environ.get("CI"))
EXPERIMENT = "eanet-shared"


@pytest.fixture(scope="module")
def served_sweep(tmp_path_factory):
    """(server URL, sweep stdout) after `-m seed=0,1 tracking=server` against a fresh server."""
    folder = tmp_path_factory.mktemp("server")
    with mlflow_server(store_uri(folder), folder / "artifacts",
                       folder / "server.log") as url:
        # tracking=server reads the server's address from MLFLOW_TRACKING_URI
        result = run_sweep(folder, "seed=0,1", "tracking=server",
                           f"tracking.experiment_name={EXPERIMENT}", "trainer.epochs=1",
                           "tracking.register_best_as=eanet-shared-best", "quiet=true",
                           env={"MLFLOW_TRACKING_URI": url})
        yield url, result.stdout + result.stderr


def sweep_runs(url: str):
    client = client_for(url)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, f"no experiment {EXPERIMENT} on {url}"
    runs = training_runs(client, EXPERIMENT, order_by="attributes.run_name ASC")
    return client, experiment, runs


def sweep_run(client, experiment):
    [parent] = client.search_runs([experiment.experiment_id], "tags.`eanet.run_type` = 'sweep'")
    return parent


def test_sweep_logs_to_the_server_over_http(served_sweep):
    url, _ = served_sweep
    client, experiment, runs = sweep_runs(url)
    assert [r.info.run_name for r in runs] == ["ea-p2-h2-dc2-s0", "ea-p2-h2-dc2-s1"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags["eanet.sweep_id"] for r in runs}) == 1  # one sweep
    parent = sweep_run(client, experiment)  # ... one sweep run, the parent of both
    assert parent.info.status == "FINISHED" and parent.data.metrics["sweep_done"] == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == \
        {"plan.txt", "report", "summary.txt"}
    for run in runs:
        assert run.data.params["tracking.tracking_uri"] == url  # env var → tracking=server
        assert {"test_top1", "best_val_top1", "param_count_total"} <= set(run.data.metrics)
        # artifacts went to the server (proxied), not to a local folder
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        top = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "history.csv", "learning_curves.png"} <= top
        assert "model" not in top  # the model is stored once, as the run's MLflow model


def test_runs_record_datasets_and_a_signed_model(served_sweep):
    import mlflow
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    url, _ = served_sweep
    client, _, runs = sweep_runs(url)
    for run in runs:
        inputs = {d.tags[0].value: d.dataset for d in run.inputs.dataset_inputs}
        assert set(inputs) == {"training", "validation", "test"}
        assert inputs["training"].name == "synthetic/training" and inputs["training"].digest
        assert run.data.tags["eanet.replicas"] == "1"
        with _use_tracking_uri(url):  # not set_tracking_uri: it would outlive this test
            info = mlflow.models.get_model_info(run.data.tags["eanet.model_uri"])
        assert info.name == run.info.run_name
        signature = info.signature.to_dict()
        assert "[-1, 8, 8, 3]" in signature["inputs"] and "[-1, 4]" in signature["outputs"]


def test_best_model_of_the_sweep_is_registered(served_sweep):
    url, _ = served_sweep
    client, _, runs = sweep_runs(url)
    best = max(runs, key=lambda r: r.data.metrics["best_val_top1"])
    versions = client.search_model_versions("name = 'eanet-shared-best'")
    assert len(versions) == 1
    assert versions[0].tags["eanet.run_id"] == best.info.run_id
    assert versions[0].source == best.data.tags["eanet.model_uri"]


def test_each_sweep_job_prints_a_progress_line(served_sweep):
    _, output = served_sweep
    assert "start job 1 of 2 |" in output and "start job 2 of 2 |" in output
    assert "end (completed) job 2 of 2 |" in output and "2 done | ETA 0m00s" in output
    assert "━━━━" not in output  # quiet=true: no Keras progress bar


# --- the MLflow UI in a real browser -------------------------------------------------------------

@pytest.mark.browser
def test_mlflow_ui_shows_the_sweep(served_sweep, tmp_path):
    url, _ = served_sweep
    client, experiment, runs = sweep_runs(url)
    parent = sweep_run(client, experiment)
    exp = experiment.experiment_id
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with headless_chromium(tmp_path) as context:
        page = context.new_page()
        # The experiment's runs table shows the sweep as one row ...
        page.goto(f"{url}/#/experiments/{exp}/runs")
        sweep_name = parent.info.run_name
        page.get_by_text(sweep_name, exact=True).first.wait_for(timeout=90_000)
        for run in runs:
            assert page.get_by_text(run.info.run_name, exact=True).count() == 0
        page.screenshot(path=shots / "sweep.png")
        # ... that expands into its jobs' runs, listed by name
        row = page.get_by_role("row").filter(has_text=sweep_name).first
        row.locator('button[data-component-id*="runnamecellrenderer"]').first.click()
        for run in runs:
            page.get_by_text(run.info.run_name, exact=True).first.wait_for(timeout=30_000)
        # ... and shows a metric and the parameter count once their columns are added.
        page.get_by_role("button", name="Columns").click()
        search = page.get_by_placeholder("Search columns")
        for column in ("test_top1", "param_count_total"):
            search.fill(column)
            page.get_by_text(column, exact=True).first.click()
        page.keyboard.press("Escape")
        page.get_by_role("columnheader", name="param_count_total").first.wait_for()
        total = str(int(runs[0].data.metrics["param_count_total"]))
        page.get_by_role("gridcell", name=total, exact=True).first.wait_for()
        page.get_by_role("columnheader", name="test_top1").first.wait_for()
        page.screenshot(path=shots / "runs.png")

        # A run page: its metrics (param counts included), params and datasets.
        run = runs[0]
        page.goto(f"{url}/#/experiments/{exp}/runs/{run.info.run_id}")
        page.get_by_text("param_count_attention", exact=True).first.wait_for(timeout=60_000)
        overview = page.inner_text("body")
        for text in ("test_top1", "best_val_top1", "model.patch_size", "synthetic/training",
                     "Metrics (", "Parameters ("):
            assert text in overview, f"{text!r} not on the run page"
        page.screenshot(path=shots / "run.png", full_page=True)

        # Its artifacts: config, learning curves, history.
        page.goto(f"{url}/#/experiments/{exp}/runs/{run.info.run_id}/artifacts")
        page.get_by_text("learning_curves.png", exact=True).first.wait_for(timeout=60_000)
        artifacts = page.inner_text("body")
        for name in ("config.yaml", "learning_curves.png", "history.csv", "hydra"):
            assert name in artifacts.split("\n"), f"artifact {name} not listed"
        page.get_by_text("learning_curves.png", exact=True).first.click()
        page.wait_for_timeout(1500)  # the preview loads the image through the server
        page.screenshot(path=shots / "artifacts.png")

        # The sweep run's report page (report/report.html), shown in a frame: its tables and
        # its plots, embedded.
        page.goto(f"{url}/#/experiments/{exp}/runs/{parent.info.run_id}/artifacts")
        page.reload()  # from another run's artifacts, a hash change alone shows no artifacts
        page.get_by_text("report", exact=True).first.click(timeout=60_000)
        page.get_by_text("report.html", exact=True).first.click(timeout=30_000)
        report = page.frame_locator("iframe").first
        report.get_by_role("heading", name="Configurations").wait_for(timeout=30_000)
        assert "ea" in report.locator("table").first.inner_text()
        sizes = report.locator("img").evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
        assert sizes and min(sizes) > 0
        page.screenshot(path=shots / "report.png")
    print(f"\nMLflow UI screenshots: {shots}")
    assert sorted(p.name for p in shots.iterdir()) == ["artifacts.png", "report.png", "run.png",
                                                        "runs.png", "sweep.png"]


# --- PostgreSQL backend store --------------------------------------------------------------------

@pytest.mark.postgres
def test_server_on_a_postgres_backend(tmp_path):
    pytest.importorskip("psycopg2", reason="pip install psycopg2-binary (eanet[postgres])")
    if postgres_bin("initdb") is None and not IN_CI:
        pytest.skip("PostgreSQL server not installed (apt-get install -y postgresql)")
    start = time.monotonic()
    with postgres_cluster() as database, \
            mlflow_server(database, tmp_path / "artifacts", tmp_path / "server.log") as url:
        run_sweep(tmp_path, "seed=0", "tracking=server", "trainer.epochs=1",
                  "tracking.log_model=false", env={"MLFLOW_TRACKING_URI": url})
        (run,) = training_runs(client_for(url))
        assert run.info.status == "FINISHED" and run.info.run_name == "ea-p2-h2-dc2-s0"
        assert run.data.tags["eanet.sweep_id"] and "test_top1" in run.data.metrics
        # the run is in PostgreSQL itself
        import sqlalchemy

        engine = sqlalchemy.create_engine(database)
        with engine.connect() as connection:
            names = connection.execute(sqlalchemy.text("SELECT name FROM runs")).scalars().all()
        engine.dispose()
        # + the sweep's run and the experiment's claims ledger (eanet.tracking.ledger)
        training = [name for name in names if not name.startswith("sweep-") and name != "ledger"]
        assert training == ["ea-p2-h2-dc2-s0"] and len(names) == 3
    print(f"\nPostgreSQL-backed server: {time.monotonic() - start:.0f} s")
