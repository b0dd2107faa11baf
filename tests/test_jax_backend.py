"""eanet on Keras' JAX backend where TensorFlow is not installed: the second environment of CI
(`make test-jax`: a venv with `pip install -e .[jax,test]`, run with KERAS_BACKEND=jax).

- TensorFlow cannot be imported there;
- the training step is jitted with the seed's augmentation in the model (the "augmentation stall"
  was the whole step running op by op);
- the GPU study script's CPU variant: a 2-model tiny sweep packed as 2 parallel jobs by the
  gpu_pack launcher preset, two FINISHED runs tagged eanet.backend=jax, the sweep's report and
  the study's record;
- a run SIGKILLed after a checkpointed epoch and relaunched resumes in the same MLflow run; its
  saved model then loads with safe_mode=True, as does its MLflow model;
- trainer.distribution=mirrored fails at start-up with one line.
- the packing benchmark (eanet.bench.packing) runs K = 2 jobs side by side.

Skipped unless JAX is installed and TensorFlow is not (so `make test` skips it).
"""
from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import (ROOT, TINY, checkpointed_epoch, client_for, compose_config, metric_steps,
                      run_eanet, run_python, start_eanet, store_uri, subprocess_env, training_runs)

if importlib.util.find_spec("jax") is None or importlib.util.find_spec("tensorflow") is not None:
    pytest.skip("needs JAX without TensorFlow: the environment of `make test-jax`",
                allow_module_level=True)

JAX = {"KERAS_BACKEND": "jax"}
# 64 training, 16 validation and 32 test images in batches of 16: no partial batch, so each of
# the training and evaluation steps compiles for one batch shape only.
EVEN = ["data.synthetic_train_size=80"]


def test_tensorflow_is_not_installed():
    result = run_python("-c", "import tensorflow", env=JAX)
    assert result.returncode != 0
    assert "No module named 'tensorflow'" in result.stderr


def test_training_step_is_jitted_with_the_augmentation():
    import keras

    from eanet.validation import validate
    from eanet.training.train import build_compiled_model

    assert keras.backend.backend() == "jax"
    cfg = validate(compose_config([*TINY, *EVEN]))
    model = build_compiled_model(cfg, [0.0] * 3, [1.0] * 3, num_classes=4)
    augmentation = model.get_layer("augmentation")
    assert [layer.name for layer in augmentation.layers] == \
        ["normalization", "flip", "rotation", "contrast", "zoom"]  # the seed's order
    assert model.jit_compile is True


def test_a_model_loaded_from_a_keras_file_trains_and_predicts_under_jit(tmp_path):
    """The augmentation's RandomRotation and RandomZoom are eanet's subclasses, which take their
    jit flag from eanet.models.speed when made: a model loaded from its `.keras` file compiles
    under jit as the model that was saved (Keras' own layers would come back unjittable)."""
    import warnings

    import keras

    import eanet.saving  # noqa: F401 - eanet's Keras classes
    from eanet.validation import validate
    from eanet.training.train import build_compiled_model

    cfg = validate(compose_config([*TINY, *EVEN]))
    model = build_compiled_model(cfg, [0.0] * 3, [1.0] * 3, num_classes=4)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (32, 8, 8, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(32) % 4, 4)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*jit_compile")
        loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
        assert loaded.jit_compile is True
        np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                                   rtol=1e-5, atol=1e-6)
        history = loaded.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_study_script_cpu_variant_packs_two_jobs(tmp_path):
    work, experiments = tmp_path / "work", tmp_path / "experiments"
    env = subprocess_env(**JAX, RUN_PYTHON=sys.executable, TINY="1", PACK="2", WORK=str(work),
                         OUT_ROOT=str(experiments))
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_study.sh"), "seed", "seed=0", *EVEN],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    runs = training_runs(client_for(work))
    assert sorted(run.data.tags["eanet.model"] for run in runs) == ["ea", "vit"]
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert {run.data.tags["eanet.backend"] for run in runs} == {"jax"}
    first, second = runs
    # Packed: the two jobs trained at the same time, in two processes.
    assert second.info.start_time < first.info.end_time
    # The preset's environment reached JAX in the jobs: their compilation cache is in the sweep.
    assert any((work / "multirun" / ".jax_cache").iterdir())
    for name in ("report.csv", "comparison.csv", "report.md"):
        assert (work / "multirun" / "report" / name).is_file()

    [record_dir] = (experiments / "seed").iterdir()
    assert record_dir.name.endswith("-cpu")
    record = json.loads((record_dir / "record.json").read_text())
    assert record["backend"] == "jax" and record["study"] == "seed"
    # The stack it ran on (eanet.tracking.lineage.stack_versions): JAX's, without TensorFlow.
    assert {"python", "jax", "jaxlib", "keras", "mlflow"} <= record["versions"].keys()
    assert not [name for name in record["versions"] if name.startswith("tensorflow")]
    assert "+experiment=seed" in record["command"] and record["wall_time_s"] > 0
    assert sorted(r["status"] for r in record["runs"]) == ["FINISHED", "FINISHED"]
    for run in record["runs"]:
        assert len((record_dir / run["history"]).read_text().splitlines()) == 3  # header + 2 epochs
    assert (record_dir / "report.md").is_file() and (record_dir / "comparison.csv").is_file()


def test_sigkill_relaunch_resumes_and_model_loads_safely(tmp_path):
    # Epochs of 300 tiny steps: long enough to be killed between epochs.
    # A short claim lease: the relaunch takes the killed job's claim over after it.
    schedule = ["trainer.epochs=4", "trainer.steps_per_epoch=300", "trainer.validation_steps=1",
                "tracking.lease_s=2"]
    process = start_eanet(tmp_path, *EVEN, *schedule, log=tmp_path / "killed.log", env=JAX)
    deadline = time.monotonic() + 600
    while checkpointed_epoch(tmp_path) < 0:
        assert process.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    stopped_after = checkpointed_epoch(tmp_path)
    assert stopped_after < 3, "the run finished before the kill: make its epochs longer"

    client = client_for(tmp_path)
    [killed] = training_runs(client)
    assert killed.info.status == "RUNNING"  # SIGKILL cannot be caught

    finished = run_eanet(tmp_path, *EVEN, *schedule, env=JAX)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert f"resuming run {killed.info.run_id} after epoch {stopped_after}" in finished.stdout \
        + finished.stderr
    [done] = training_runs(client)
    assert done.info.run_id == killed.info.run_id and done.info.status == "FINISHED"
    assert done.data.tags["eanet.backend"] == "jax"
    assert metric_steps(client, done.info.run_id) == [0, 1, 2, 3]

    # The saved model: its MLflow model's .keras file loads in safe mode, and so does the MLflow
    # model (more in test_model_loading.py).
    import keras
    import mlflow

    logged = client.get_logged_model(done.data.tags["eanet.model_uri"].removeprefix("models:/"))
    path = mlflow.artifacts.download_artifacts(f"{logged.artifact_location}/data/model.keras",
                                               dst_path=str(tmp_path))
    loaded = keras.saving.load_model(path, safe_mode=True)
    images = np.random.default_rng(0).uniform(0, 255, (3, 8, 8, 3)).astype("float32")
    probabilities = loaded.predict(images, verbose=0)
    assert probabilities.shape == (3, 4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    mlflow.set_tracking_uri(store_uri(tmp_path))
    logged = mlflow.pyfunc.load_model(done.data.tags["eanet.model_uri"])
    np.testing.assert_allclose(np.asarray(logged.predict(images)), probabilities, atol=1e-5)


def test_mirrored_is_refused_at_start_up(tmp_path):
    result = run_eanet(tmp_path, "trainer.distribution=mirrored", env=JAX, timeout=120)
    assert result.returncode == 1
    assert "needs Keras' TensorFlow backend" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "mlflow.db").exists()  # before any store, data or Keras


def test_packing_benchmark_runs_jobs_side_by_side(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "eanet.bench.packing", "--jobs", "2", "--steps", "50",
         "--warmup", "2", "--out", str(tmp_path), "--",
         *(o for o in TINY if not o.startswith(("trainer.epochs", "trainer.verbose")))],
        cwd=tmp_path, env=subprocess_env(**JAX), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [line] = [json.loads(line[len("BENCH "):]) for line in result.stdout.splitlines()
              if line.startswith("BENCH ")]
    assert line["jobs"] == 2 and line["failed"] == 0 and len(line["per_job_img_per_s"]) == 2
    assert line["total_img_per_s"] > 0
    assert (tmp_path / "packing.csv").is_file()


def test_flops_are_counted_the_same_on_jax():
    """The seed EANet's formulas, and a plug-in attention traced through its jaxpr, give the
    counts by hand of tests/test_flops.py."""
    from eanet.models.flops import forward_flops, traced_flops
    from test_flops import BLOCK_MLP, BLOCKS, D, EMBED, EXTERNAL, HEAD, HEADS, N, seed_model
    from toy_attention import LinearAttention

    assert forward_flops(seed_model("ea")).total == EMBED + BLOCKS * (EXTERNAL + BLOCK_MLP) + HEAD
    layer = LinearAttention(D, HEADS)
    layer.build((None, N, D))
    head_dim = D // HEADS
    assert traced_flops(layer, (1, N, D)) == (
        2 * N * D * 3 * D + 4 * N * HEADS * head_dim * head_dim + 2 * N * HEADS * head_dim
        + 2 * N * D * D, [])
