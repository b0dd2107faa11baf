"""The command line, as a user runs it: `python -m eanet.run …` in a subprocess."""
import os
import subprocess
import sys

from mlflow.tracking import MlflowClient

from conftest import ROOT, TINY


def _run(args, cwd, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("EANET_DATA", None)
    return subprocess.run([sys.executable, "-m", "eanet.run", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_sweep_over_both_models_records_two_finished_runs_in_one_sweep(tmp_path):
    result = _run(["-m", "model=ea,vit", *TINY, "trainer.epochs=1"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    # MLflow's own default store, in the working directory the command ran in.
    assert (tmp_path / "mlflow.db").exists() and (tmp_path / "mlruns").is_dir()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("eanet")
    runs = client.search_runs([experiment.experiment_id], "tags.`eanet.run_type` = 'train'")
    assert sorted(r.info.run_name for r in runs) == ["ea-p2-h2-dc2-s0", "vit-p2-h2-s0"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    sweeps = {r.data.tags["eanet.sweep_id"] for r in runs}
    assert len(sweeps) == 1 and sweeps.pop().startswith("multirun/")
    assert {r.data.tags["eanet.model"] for r in runs} == {"ea", "vit"}
    for run in runs:
        hydra_files = {a.path for a in client.list_artifacts(run.info.run_id, "hydra")}
        assert {"hydra/config.yaml", "hydra/overrides.yaml", "hydra/hydra.yaml"} <= hydra_files
        assert "data=synthetic" in run.data.tags["eanet.overrides"]
    assert runs[0].data.metrics["param_count_attention"] != runs[1].data.metrics["param_count_attention"]


def test_bad_value_fails_before_any_work_with_the_key_named(tmp_path):
    result = _run([*TINY, "model.num_heads=3"], cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    assert "model.embedding_dim divisible by model.num_heads" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "mlflow.db").exists()  # nothing was recorded, nothing was loaded


def test_missing_data_file_is_a_clear_error(tmp_path):
    result = _run(["data=cifar100", f"data.path={tmp_path / 'nope.npz'}"], cwd=tmp_path,
                  timeout=120)
    assert result.returncode != 0
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_help_and_cfg_work_from_a_subfolder(tmp_path):
    sub = ROOT / "eanet"  # any folder inside the clone
    assert "model: ea, vit" in _run(["--help"], cwd=sub, timeout=120).stdout
    printed = _run(["--cfg", "job", "model=vit"], cwd=sub, timeout=120).stdout
    assert "attention: self" in printed and "patch_size: 2" in printed
