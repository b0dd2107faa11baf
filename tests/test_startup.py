"""How `python -m eanet.run` starts (eanet.training.startup): MLflow's start-up in a helper
process and the data on a thread while TensorFlow imports, the imports with the collector paused.
The run's record is complete all the same."""
from __future__ import annotations

from conftest import client_for, run_eanet, run_python, training_runs

# Reports whether the training process had loaded MLflow when its first training step began, and
# whether it loaded the data. Hooks in through eanet.training.startup, which imports no Keras:
# importing eanet.training.train first would load Keras, and with it no helper process is forked.
PROBE = """
import runpy, sys
import eanet.data, eanet.training.startup as startup

prepare_data, import_once = eanet.data.prepare_data, startup.import_once

def prepare_data_reported(*args):
    print("data loaded", flush=True)
    return prepare_data(*args)

def import_and_probe(module):
    import_once(module)
    if module == startup.TRAINING_MODULE:
        import keras, eanet.training.train as train

        class Probe(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                if batch == 0:
                    print("MLflow loaded at the first step:", "mlflow" in sys.modules, flush=True)

        train.extra_callbacks = lambda: [Probe()]

eanet.data.prepare_data, startup.import_once = prepare_data_reported, import_and_probe
runpy.run_module("eanet.run", run_name="__main__")  # as `python -m eanet.run` would
"""

PAUSED_GC = """
import gc
from eanet.training.startup import import_once, paused_gc

with paused_gc():
    assert not gc.isenabled()
    kept = [{} for _ in range(1000)]
assert gc.isenabled() and gc.get_freeze_count() >= 1000
frozen = gc.get_freeze_count()
import_once("eanet.config")  # imported already: nothing is frozen again
assert gc.get_freeze_count() == frozen
assert "wave" not in __import__("sys").modules
import_once("wave")
assert "wave" in __import__("sys").modules and gc.get_freeze_count() > frozen
print("checked")
"""


def test_mlflow_loads_after_the_first_step_begins_and_the_run_is_recorded_completely(tmp_path):
    result = run_eanet(tmp_path, "trainer.epochs=2", script=PROBE)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MLflow loaded at the first step: False" in result.stdout
    assert result.stdout.count("data loaded") == 1

    client = client_for(tmp_path)
    [run] = training_runs(client)
    assert run.info.status == "FINISHED" and run.info.run_name == "ea-p2-h2-dc2-s0"
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["model.patch_size"] == "2" and params["trainer.global_batch_size"] == "16"
    assert tags["eanet.backend"] == "tensorflow" and tags["eanet.replicas"] == "1"
    assert tags["eanet.matmul_precision.effective"] == "float32"  # the default, probed
    assert tags["eanet.fingerprint"] and tags["eanet.model_uri"].startswith("models:/")
    assert "mlflow.source.git.commit" in tags and tags["mlflow.user"]
    assert metrics["param_count_total"] > 0 and metrics["test_top1"] >= 0
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_top1")] == [0, 1]
    contexts = {i.tags[0].value for i in run.inputs.dataset_inputs}
    assert contexts == {"training", "validation", "test"}


def test_a_finished_configuration_is_skipped(tmp_path):
    args = ("trainer.epochs=1", "tracking.log_model=false")
    first = run_eanet(tmp_path, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    again = run_eanet(tmp_path, *args, script=PROBE)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "skipped: FINISHED as run" in again.stdout
    assert "first step" not in again.stdout
    assert len(training_runs(client_for(tmp_path))) == 1


def test_paused_gc_freezes_only_what_a_first_import_leaves():
    result = run_python("-c", PAUSED_GC)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "checked" in result.stdout
