"""A tiny real training run into a temporary MLflow store, read back with MlflowClient."""
import keras
import mlflow
import pytest

import eanet.training.train
from conftest import TINY, client_for, compose_config
from eanet.config_checks import validate
from eanet.models.speed import speed_paths
from eanet.training.train import train

EPOCH_METRICS = {"loss", "top1", "top5", "val_loss", "val_top1", "val_top5", "learning_rate",
                 "epoch_time_s"}


def _only_run(client):
    experiment = client.get_experiment_by_name("eanet")
    runs = client.search_runs([experiment.experiment_id], "tags.`eanet.run_type` = 'train'")
    assert len(runs) == 1
    return runs[0]


def test_tiny_run_is_recorded_completely(tracking_dir):
    raw = compose_config([*TINY, f"tracking.tracking_uri={tracking_dir}"])
    best_val_top1 = train(validate(raw), raw)

    client = client_for(tracking_dir)
    run = _only_run(client)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "ea-p2-h2-dc2-s0"
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["model.patch_size"] == "2" and params["optimizer.name"] == "adamw"
    assert params["trainer.batch_size"] == "16" and params["seed"] == "0"
    assert params["data.path"] == "None"
    for name in EPOCH_METRICS:
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == [0, 1], name
    assert metrics["best_val_top1"] == pytest.approx(best_val_top1)
    assert max(m.value for m in client.get_metric_history(run.info.run_id, "val_top1")) \
        == pytest.approx(best_val_top1)
    for name in ("test_loss", "test_top1", "test_top5", "train_time_s", "throughput_img_per_s"):
        assert metrics[name] >= 0, name
    assert 0 <= metrics["test_top1"] <= metrics["test_top5"] <= 1
    assert metrics["param_count_trainable"] == sum(
        metrics[f"param_count_{p}"] for p in ("patch_embedding", "attention", "mlp", "norm", "head"))
    assert metrics["param_count_attention"] > 0
    assert metrics["flops_per_image"] > metrics["flops_attention_per_image"] > 0
    assert metrics["peak_rss_mb"] > 0
    assert tags["eanet.model"] == "ea" and tags["eanet.run_type"] == "train"
    # how each piece computed (eanet.models.speed), as this process decides it
    assert {k.removeprefix("eanet.implementation."): v for k, v in tags.items()
            if k.startswith("eanet.implementation.")} == speed_paths("auto", "external").as_dict()
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "history.csv", "learning_curves.png"} <= artifacts
    assert "model" not in artifacts  # stored once, as the run's MLflow model:

    logged = client.get_logged_model(tags["eanet.model_uri"].removeprefix("models:/"))
    model_file = mlflow.artifacts.download_artifacts(f"{logged.artifact_location}/data/model.keras")
    model = keras.saving.load_model(model_file, safe_mode=True)
    assert model.count_params() == metrics["param_count_total"]


def test_a_crash_mid_training_is_recorded_as_failed(tracking_dir, monkeypatch):
    class Crash(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                raise RuntimeError("disk on fire")

    monkeypatch.setattr(eanet.training.train, "extra_callbacks", lambda: [Crash()])
    raw = compose_config([*TINY, f"tracking.tracking_uri={tracking_dir}"])
    with pytest.raises(RuntimeError, match="disk on fire"):
        train(validate(raw), raw)

    client = client_for(tracking_dir)
    run = _only_run(client)
    assert run.info.status == "FAILED"
    assert "disk on fire" in run.data.tags["eanet.error"]
    assert "error.txt" in {a.path for a in client.list_artifacts(run.info.run_id)}
