"""The sweep report on a temporary MLflow store holding known runs: exact numbers, files, artifacts."""
from __future__ import annotations

import math

import pandas as pd
import pytest
from mlflow.entities import Metric, Param

from conftest import client_for, run_module, store_uri
from eanet.report.cli import ReportConfig, ReportError, sweep_report

SWEEP = "multirun/2026-11-25/10-00-00"
T_975_DF2 = 4.302652729911275  # Student's t, 97.5% quantile, 2 degrees of freedom
T_975_DF1 = 12.706204736174698  # ... 1 degree of freedom


def make_run(client, experiment_id, model, patch_size, seed, metrics, status="FINISHED",
             sweep=SWEEP, run_type="train"):
    """A run as eanet.tracking records it: string params, final metrics, tags."""
    attention = "external" if model == "ea" else "self"
    run = client.create_run(experiment_id, run_name=f"{model}-p{patch_size}-s{seed}",
                            tags={"eanet.run_type": run_type, "eanet.sweep_id": sweep,
                                  "eanet.model": model})
    params = {"model.name": model, "model.attention": attention, "model.patch_size": patch_size,
              "model.num_heads": 4, "model.dim_coefficient": 4, "model.attention_dropout": 0.2,
              "seed": seed, "data.path": f"/data/copy{seed}.npz", "data.train_size": "None",
              "trainer.epochs": 1, "trainer.verbose": "auto", "data.augmentation.horizontal_flip": True,
              "tracking.tracking_uri": "None", "tracking.experiment_name": "eanet"}
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()],
                     metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
    if status != "RUNNING":  # RUNNING: a job that died without ending its run
        client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def results(top1, top5, throughput, params, attention):
    return {"test_top1": top1, "test_top5": top5, "best_val_top1": top1 + 0.01,
            "train_time_s": 1000 / throughput, "throughput_img_per_s": throughput,
            "param_count_total": params, "param_count_attention": attention}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """ea and vit at patch sizes 2 and 4 over seeds; a failed run, an unfinished one and one
    without test_top5.

    Built once for the module (a fresh SQLite store costs seconds); tests only read it, except
    for the report runs they add, which training-run searches never see.
    """
    folder = tmp_path_factory.mktemp("store")
    uri = store_uri(folder)
    client = client_for(uri)
    exp = client.create_experiment("eanet", artifact_location=str(folder / "mlruns"))
    for seed, (top1, top5, speed) in enumerate([(0.40, 0.70, 100), (0.42, 0.72, 110),
                                                (0.44, 0.74, 120)]):
        make_run(client, exp, "ea", 2, seed, results(top1, top5, speed, 1000, 300))
    make_run(client, exp, "ea", 2, 3, {"param_count_total": 1000}, status="RUNNING")
    for seed, (top1, top5) in enumerate([(0.30, 0.60), (0.34, 0.64)]):
        make_run(client, exp, "vit", 2, seed, results(top1, top5, 50, 2000, 800))
    make_run(client, exp, "ea", 4, 0, results(0.50, 0.80, 200, 900, 300))
    make_run(client, exp, "ea", 4, 1, results(0.52, 0.82, 200, 900, 300))
    no_top5 = results(0.54, 0.0, 200, 900, 300)
    del no_top5["test_top5"]
    make_run(client, exp, "ea", 4, 2, no_top5)  # finished, but test_top5 never logged
    make_run(client, exp, "vit", 4, 0, results(0.36, 0.66, 100, 1800, 800))
    make_run(client, exp, "vit", 4, 1, {"param_count_total": 1800, "param_count_attention": 800},
             status="FAILED")
    # Neither another sweep's runs nor a previous report run may be counted.
    make_run(client, exp, "ea", 8, 0, results(0.9, 0.9, 1, 1, 1), sweep="multirun/other")
    make_run(client, exp, "ea", 2, 0, {}, run_type="report")
    # A second experiment: a study of its own beside this one.
    tuned = client.create_experiment("eanet-tuned", artifact_location=str(folder / "mlruns"))
    for model, top1 in (("ea", 0.61), ("vit", 0.55)):
        make_run(client, tuned, model, 2, 0, results(top1, 0.9, 100, 1000, 300),
                 sweep="multirun/tuned")
    return uri


def row(table, model, patch_size):
    return table[(table["model"] == model) & (table["model.patch_size"] == patch_size)].iloc[0]


def test_report_numbers_files_and_artifacts(store, tmp_path):
    report = sweep_report(ReportConfig(sweep=SWEEP, tracking_uri=store, out=str(tmp_path / "r")))

    assert report.axes == ["model.patch_size"]  # not seed, paths, bookkeeping, nor ViT's dc
    csv = pd.read_csv(tmp_path / "r" / "report.csv")
    assert list(csv.columns[:4]) == ["model", "model.patch_size", "n", "n_failed"]
    assert list(zip(csv["model"], csv["model.patch_size"])) == [
        ("ea", 2), ("ea", 4), ("vit", 2), ("vit", 4)]

    ea2 = row(csv, "ea", 2)  # the unfinished run: counted as not finished, never averaged
    assert (ea2["n"], ea2["n_failed"]) == (3, 1)
    assert ea2["test_top1_mean"] == pytest.approx(0.42)
    assert ea2["test_top1_std"] == pytest.approx(0.02)
    assert ea2["test_top1_ci95"] == pytest.approx(T_975_DF2 * 0.02 / math.sqrt(3))
    assert ea2["test_top5_mean"] == pytest.approx(0.72)
    assert ea2["best_val_top1_mean"] == pytest.approx(0.43)
    assert ea2["throughput_img_per_s_mean"] == pytest.approx(110)
    assert (ea2["param_count_total"], ea2["param_count_attention"]) == (1000, 300)

    ea4 = row(csv, "ea", 4)  # the run without test_top5 counts for top-1 only
    assert (ea4["n"], ea4["n_failed"]) == (3, 0)
    assert ea4["test_top1_mean"] == pytest.approx(0.52)
    assert ea4["test_top5_mean"] == pytest.approx(0.81)
    assert ea4["test_top5_std"] == pytest.approx(math.sqrt(2) * 0.01)
    assert ea4["test_top5_ci95"] == pytest.approx(T_975_DF1 * math.sqrt(2) * 0.01 / math.sqrt(2))

    vit2 = row(csv, "vit", 2)
    assert vit2["test_top1_std"] == pytest.approx(math.sqrt(2) * 0.02)

    vit4 = row(csv, "vit", 4)  # the failed run: counted, never averaged; n=1 has no std or interval
    assert (vit4["n"], vit4["n_failed"]) == (1, 1)
    assert vit4["test_top1_mean"] == pytest.approx(0.36)
    assert math.isnan(vit4["test_top1_std"]) and math.isnan(vit4["test_top1_ci95"])
    assert vit4["param_count_total"] == 1800

    comparison = pd.read_csv(tmp_path / "r" / "comparison.csv")
    assert list(comparison["model.patch_size"]) == [2, 4]
    assert comparison["delta_top1"].tolist() == pytest.approx([0.42 - 0.32, 0.52 - 0.36])
    assert comparison["delta_top5"].tolist() == pytest.approx([0.72 - 0.62, 0.81 - 0.66])
    assert comparison["param_ratio"].tolist() == pytest.approx([0.5, 0.5])
    assert comparison["speed_ratio"].tolist() == pytest.approx([110 / 50, 200 / 100])

    # each Δ with its interval: Welch's at patch size 2 (ea ran seeds 0-2, vit 0-1); none beside
    # vit's single finished run at patch size 4
    assert comparison["delta_top1_method"].tolist() == ["Welch", "none"]
    assert comparison["delta_top1_low"][0] < comparison["delta_top1"][0] \
        < comparison["delta_top1_high"][0]
    differences = pd.read_csv(tmp_path / "r" / "differences.csv")
    assert set(differences["metric"]) == {"test_top1", "test_top5", "best_val_top1",
                                          "throughput_img_per_s"}

    written = {p.name for p in (tmp_path / "r").iterdir()}
    assert {"report.csv", "comparison.csv", "differences.csv", "runs.csv", "report.md",
            "report.html", "accuracy_vs_parameters.png",
            "accuracy_vs_model_patch_size.png"} <= written
    for name in written:
        assert (tmp_path / "r" / name).stat().st_size > 0
    markdown = (tmp_path / "r" / "report.md").read_text()
    assert "## Models vs vit" in markdown and "| 42.00 ± 2.00 |" in markdown
    assert ("- test_top1 at patch_size=4: ea − vit = +16.0 pp (n = 3 and 1): one run of vit, "
            "so no interval") in markdown

    client = client_for(store)
    report_run = client.get_run(report.run_id)
    assert report_run.data.tags["eanet.run_type"] == "report"
    assert report_run.data.tags["eanet.sweep_id"] == SWEEP
    assert report_run.data.metrics["n_failed"] == 2
    artifacts = {a.path for a in client.list_artifacts(report.run_id)}
    assert written <= artifacts


def test_whole_experiment_and_filter(store, tmp_path):
    everything = sweep_report(ReportConfig(sweep=None, tracking_uri=store, out=str(tmp_path / "a"),
                                           log_to_mlflow=False))
    assert len(everything.runs) == 12 and everything.run_id is None
    assert row(everything.table, "ea", 8)["n"] == 1

    vit = sweep_report(ReportConfig(sweep=SWEEP, tracking_uri=store, out=str(tmp_path / "v"),
                                    filter="params.`model.name` = 'vit'", log_to_mlflow=False))
    assert list(vit.table["model"]) == ["vit", "vit"] and vit.comparison.empty


def test_a_report_over_two_sweeps_says_which_it_read(store, tmp_path, capsys):
    from eanet.report.__main__ import print_report

    report = sweep_report(ReportConfig(sweeps=[SWEEP, "multirun/other"], tracking_uri=store,
                                       out=str(tmp_path), log_to_mlflow=False))
    assert len(report.runs) == 12 and report.sweep is None
    assert report.sources == [f"sweep `{SWEEP}` (11 runs)", "sweep `multirun/other` (1 run)"]
    assert row(report.table, "ea", 8)["n"] == 1  # the other sweep's configuration, beside
    assert len(report.verdicts) == 2  # patch sizes 2 and 4: ea against vit
    markdown = (tmp_path / "report.md").read_text()
    assert f"Read: sweep `{SWEEP}` (11 runs); sweep `multirun/other` (1 run)." in markdown
    print_report(report)
    printed = capsys.readouterr().out
    assert f"12 training runs read: sweep {SWEEP} (11 runs); sweep multirun/other (1 run)" \
        in printed
    assert "verdict:\n  test_top1 at patch_size=2: ea − vit = +10.0 pp [-2.0, 22.0] (Welch" \
        in printed

    with pytest.raises(ReportError, match="multirun/nope"):
        sweep_report(ReportConfig(sweeps=[SWEEP, "multirun/nope"], tracking_uri=store))


def test_a_report_over_two_experiments(store, tmp_path):
    report = sweep_report(ReportConfig(sweep=None, experiment_names=["eanet", "eanet-tuned"],
                                       tracking_uri=store, out=str(tmp_path),
                                       log_to_mlflow=False))
    assert len(report.runs) == 14
    assert report.sources[-1] == "experiments eanet, eanet-tuned"
    assert "sweep `multirun/tuned` (2 runs)" in report.sources


def test_latest_sweep_is_the_newest_runs_sweep(store, tmp_path):
    report = sweep_report(ReportConfig(tracking_uri=store, out=str(tmp_path), log_to_mlflow=False))
    assert report.sweep == "multirun/other"  # created last among the training runs


@pytest.mark.parametrize("cfg, message", [
    (dict(sweep="multirun/nope"), "No training runs match"),
    (dict(experiment_name="missing"), "Unknown experiment_name='missing'"),
    (dict(metric="test_top3"), "Metric 'test_top3' is missing from every one of the 11"),
    (dict(filter="params.x === 1"), "MLflow rejected the search"),
])
def test_clear_errors(store, tmp_path, cfg, message):
    with pytest.raises(ReportError, match=message):
        sweep_report(ReportConfig(**{"sweep": SWEEP, "tracking_uri": store, **cfg}))


def test_missing_store_is_an_error_and_not_created(tmp_path):
    uri = f"sqlite:///{tmp_path / 'nowhere' / 'mlflow.db'}"
    with pytest.raises(ReportError, match="Tracking store not found"):
        sweep_report(ReportConfig(tracking_uri=uri))
    assert not (tmp_path / "nowhere").exists()


def test_command_line_error_has_no_traceback(store, tmp_path):
    done = run_module("eanet.report", f"tracking_uri={store}", "sweep=multirun/nope",
                      cwd=tmp_path, timeout=120)
    assert done.returncode == 1
    assert "eanet.report: No training runs match" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_sweep_whose_every_run_failed_is_reported_as_counts(tmp_path):
    """A tuning study whose every trial diverged: no accuracy to average, but the report still
    says what ran and how it ended (n = 0, n_failed = 2) instead of failing."""
    client = client_for(tmp_path)
    experiment = client.create_experiment("eanet")
    for seed in (0, 1):
        make_run(client, experiment, "ea", 2, seed, {"param_count_total": 100.0},
                 status="FAILED", sweep="failed-sweep")
    report = sweep_report(ReportConfig(sweep="failed-sweep", tracking_uri=store_uri(tmp_path),
                                       out=str(tmp_path / "out"), log_to_mlflow=False))
    assert report.table[["model", "n", "n_failed"]].values.tolist() == [["ea", 0, 2]]
    assert (tmp_path / "out" / "report.csv").is_file()
