"""A tiny `python -m eanet.run -m model=ea,vit` end to end, as `make run` runs it: what it records
in MLflow (run names, tags, params, metrics, artifacts, data sets) and the report it ends with.

The expected records are those the same sweep made before the code was split into packages
(commit dcafedb): params and tags below were read from that sweep, and its fingerprints are
pinned, since a new fingerprint makes every finished run of an existing store train again.
One sweep serves the module.
"""
from __future__ import annotations

import re

import pandas as pd
import pytest

from conftest import TINY, client_for, compose_config, run_eanet, training_runs
from eanet.sweeps.plan import fingerprint

EPOCH_METRICS = {"loss", "top1", "top5", "val_loss", "val_top1", "val_top5", "learning_rate",
                 "epoch_time_s"}
FINAL_METRICS = {"test_loss", "test_top1", "test_top5", "best_val_top1", "train_time_s",
                 "throughput_img_per_s", "param_count_total", "param_count_trainable",
                 "param_count_non_trainable", "param_count_patch_embedding",
                 "param_count_attention", "param_count_mlp", "param_count_norm",
                 "param_count_head"}
ARTIFACTS = ["config.yaml", "history.csv", "hydra", "hydra/config.yaml", "hydra/hydra.yaml",
             "hydra/overrides.yaml", "learning_curves.png", "model", "model/model.keras"]
# Each job's overrides as on the command line (Hydra keeps the last trainer.epochs), model= after.
JOB_OVERRIDES = [*("trainer.epochs=1" if o.startswith("trainer.epochs=") else o for o in TINY)]
FINGERPRINTS = {"ea-p2-h2-dc2-s0": "20ee387a55d958b4", "vit-p2-h2-s0": "cf29b4e71daf7acf"}
# What those jobs computed at dcafedb: Keras 3's contrast clip, now data.augmentation.contrast_clip=true
# (their runs keep these fingerprints; the unclipped default is another computation).
FINGERPRINTS_CLIPPED = {"ea": "3fbe1da9ffb2bd43", "vit": "61ac3ab9eb5d08bd"}

# The EANet job's params: the whole resolved config, flattened, plus the global batch size.
EA_PARAMS = {
    "data.augmentation.contrast": "0.1", "data.augmentation.contrast_clip": "False",
    "data.augmentation.horizontal_flip": "True",
    "data.augmentation.rotation": "0.1", "data.augmentation.zoom": "0.2", "data.image_size": "8",
    "data.name": "synthetic", "data.num_classes": "4", "data.path": "None",
    "data.synthetic_test_size": "32", "data.synthetic_train_size": "64", "data.test_size": "None",
    "data.train_size": "None", "data.validation_split": "0.2",
    "model.attention": "external", "model.attention_dropout": "0.2", "model.dim_coefficient": "2",
    "model.embedding_dim": "16", "model.mlp_dim": "16", "model.mlp_dropout": "0.2",
    "model.name": "ea", "model.num_blocks": "1", "model.num_heads": "2", "model.patch_size": "2",
    "model.projection_dropout": "0.2",
    "optimizer.learning_rate": "0.001", "optimizer.momentum": "0.9", "optimizer.name": "adamw",
    "optimizer.nesterov": "False", "optimizer.weight_decay": "0.0001",
    "quiet": "False", "seed": "0",
    "tracking.checkpoint_dir": "checkpoints", "tracking.experiment_name": "eanet",
    "tracking.keep_checkpoints": "False", "tracking.log_model": "True",
    "tracking.register_best_as": "None", "tracking.rerun": "False",
    "tracking.tracking_uri": "None",
    "trainer.batch_size": "16", "trainer.distribution": "none", "trainer.epochs": "1",
    "trainer.global_batch_size": "16", "trainer.jit_compile": "None",
    "trainer.label_smoothing": "0.1", "trainer.matmul_precision": "default",
    "trainer.precision": "float32",
    "trainer.steps_per_epoch": "None", "trainer.steps_per_execution": "1",
    "trainer.test_steps": "None", "trainer.validation_steps": "None", "trainer.verbose": "0",
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """(folder, sweep folder, finished process, {run name: run}) of the sweep, run in `folder`
    with MLflow's default store there (./mlflow.db, ./mlruns) and Hydra's default sweep folder."""
    folder = tmp_path_factory.mktemp("sweep")
    result = run_eanet(folder, "-m", "model=ea,vit", "trainer.epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {r.info.run_name: r for r in training_runs(client_for(folder))}
    (sweep_id,) = {r.data.tags["eanet.sweep_id"] for r in runs.values()}  # one sweep
    return folder, folder / sweep_id, result, runs


def artifact_tree(client, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for artifact in client.list_artifacts(run_id, path):
        found.append(artifact.path)
        if artifact.is_dir:
            found += artifact_tree(client, run_id, artifact.path)
    return sorted(found)


def test_one_finished_run_per_model_named_and_tagged(sweep):
    folder, sweep_dir, _, runs = sweep
    assert sorted(runs) == ["ea-p2-h2-dc2-s0", "vit-p2-h2-s0"]
    assert (folder / "mlflow.db").is_file() and (folder / "mlruns").is_dir()
    sweep_id = str(sweep_dir.relative_to(folder))  # Hydra's default sweep folder
    assert re.fullmatch(r"multirun/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d", sweep_id)
    assert (sweep_dir / "multirun.yaml").is_file()
    for job, (name, model) in enumerate([("ea-p2-h2-dc2-s0", "ea"), ("vit-p2-h2-s0", "vit")]):
        run = runs[name]
        assert run.info.status == "FINISHED"
        tags = {k: v for k, v in run.data.tags.items() if k.startswith("eanet.")}
        assert sorted(tags) == ["eanet.backend", "eanet.fingerprint", "eanet.job_num",
                                "eanet.matmul_precision.effective",
                                "eanet.model", "eanet.model_uri", "eanet.onednn",
                                "eanet.overrides", "eanet.replicas", "eanet.run_type",
                                "eanet.sweep_id"]  # eanet.backend: added with the JAX backend
        assert tags["eanet.run_type"] == "train" and tags["eanet.model"] == model
        assert tags["eanet.backend"] == "tensorflow"
        assert tags["eanet.fingerprint"] == FINGERPRINTS[name]
        assert tags["eanet.job_num"] == str(job) and tags["eanet.replicas"] == "1"
        assert tags["eanet.onednn"] == "1" and tags["eanet.model_uri"].startswith("models:/m-")
        assert tags["eanet.overrides"].split() == [*JOB_OVERRIDES, f"model={model}"]
        assert run.data.tags["mlflow.runName"] == name


@pytest.mark.parametrize("model", ["ea", "vit"])
def test_runs_recorded_with_the_contrast_clip_keep_their_fingerprints(model):
    overrides = [*JOB_OVERRIDES, f"model={model}", "data.augmentation.contrast_clip=true"]
    assert fingerprint(compose_config(overrides)) == FINGERPRINTS_CLIPPED[model]


def test_params_are_the_resolved_config(sweep):
    *_, runs = sweep
    assert runs["ea-p2-h2-dc2-s0"].data.params == EA_PARAMS
    vit = runs["vit-p2-h2-s0"].data.params
    assert vit == {**EA_PARAMS, "model.name": "vit", "model.attention": "self"}


def test_metrics_artifacts_and_data_sets(sweep):
    folder, *_, runs = sweep
    client = client_for(folder)
    for run in runs.values():
        assert set(run.data.metrics) == EPOCH_METRICS | FINAL_METRICS
        for key in EPOCH_METRICS:
            assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0], key
        assert artifact_tree(client, run.info.run_id) == ARTIFACTS
        inputs = {d.tags[0].value: d.dataset.name for d in run.inputs.dataset_inputs}
        assert inputs == {"training": "synthetic/training", "validation": "synthetic/validation",
                          "test": "synthetic/test"}
    ea, vit = runs["ea-p2-h2-dc2-s0"].data.metrics, runs["vit-p2-h2-s0"].data.metrics
    assert ea["param_count_total"] == 2_356 and vit["param_count_total"] == 3_300
    assert ea["param_count_attention"] != vit["param_count_attention"]


def test_sweep_prints_progress_and_a_summary(sweep):
    *_, result, _ = sweep
    assert "start job 1 of 2 |" in result.stdout and "end (completed) job 2 of 2 |" in result.stdout
    summary = result.stderr[result.stderr.index("eanet sweep "):].splitlines()
    assert summary[0].endswith("2 jobs, 2 completed, 0 failed or stopped")
    assert [line.split()[:3] for line in summary[1:]] == [["#0", "COMPLETED", "model=ea"],
                                                          ["#1", "COMPLETED", "model=vit"]]


def test_sweep_ends_with_its_report(sweep):
    """The report is written into the sweep folder and logged as a report run, by the sweep."""
    folder, sweep_dir, _, runs = sweep
    report = sweep_dir / "report"
    assert sorted(p.name for p in report.iterdir()) == [
        "accuracy_vs_parameters.png", "comparison.csv", "report.csv", "report.md", "runs.csv"]
    table = pd.read_csv(report / "report.csv")
    assert list(table["model"]) == ["ea", "vit"] and list(table["n"]) == [1, 1]
    assert list(table["test_top1_mean"]) == pytest.approx(
        [runs["ea-p2-h2-dc2-s0"].data.metrics["test_top1"],
         runs["vit-p2-h2-s0"].data.metrics["test_top1"]])
    comparison = pd.read_csv(report / "comparison.csv")
    assert comparison["delta_top1"][0] == pytest.approx(
        table["test_top1_mean"][0] - table["test_top1_mean"][1])

    client = client_for(folder)
    [report_run] = client.search_runs([client.get_experiment_by_name("eanet").experiment_id],
                                      "tags.`eanet.run_type` = 'report'")
    assert report_run.info.run_name == f"report-{sweep_dir.name}"
    assert report_run.data.tags["eanet.sweep_id"] == str(sweep_dir.relative_to(folder))
    assert set(report_run.data.metrics) == {"n_configurations", "n_failed", "n_runs"}
    assert artifact_tree(client, report_run.info.run_id) == [
        "accuracy_vs_parameters.png", "comparison.csv", "report.csv", "report.md", "runs.csv"]
