"""Sweeps that share computations (issue 26): each computation is trained once and every sweep
that covers it finds it again — in its record, its report and its comparison."""
from __future__ import annotations

import time

import pandas as pd

import subprocess

from conftest import (client_for, eanet_command, metric_steps, run_eanet, subprocess_env,
                      training_runs)
from eanet.tracking.record import SweepRecord

QUICK = ["trainer.epochs=1", "tracking.log_model=false", "tracking.lease_s=3"]

# A sweep that starts once the file EANET_TEST_GATE exists (TensorFlow imported before), and whose
# first epoch ends only once the file EANET_TEST_HOLD exists (through the train.extra_callbacks
# seam): the test decides when each side moves, whatever the machine's load.
GATED = """
import os, pathlib, runpy, time, keras, eanet.training.train

def wait_for(name, limit=300):
    deadline = time.monotonic() + limit
    while name and not pathlib.Path(name).exists() and time.monotonic() < deadline:
        time.sleep(0.05)

class HeldEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            wait_for(os.environ.get("EANET_TEST_HOLD"))

eanet.training.train.extra_callbacks = lambda: [HeldEpoch()]
wait_for(os.environ.get("EANET_TEST_GATE"))
runpy.run_module("eanet.run", run_name="__main__")
"""


def start_gated(folder, log, *arguments, **env):
    with open(log, "w") as output:
        return subprocess.Popen(eanet_command(*arguments, script=GATED), cwd=folder,
                                env=subprocess_env(**env), stdout=output, stderr=subprocess.STDOUT)


def sweep_report(result, folder):
    """The report folder of the sweep that `result` printed."""
    [line] = [l for l in result.stdout.splitlines() if "Sweep report written to " in l]
    return folder / line.split("Sweep report written to ")[1].split("/ and logged")[0]


def test_settings_a_model_ignores_train_once_and_count_once(tmp_path):
    """ViT ignores dim_coefficient: `model=ea,vit model.dim_coefficient=1,2 seed=0,1` is 6
    computations, not 8, and the report counts ViT's two seeds once each."""
    result = run_eanet(tmp_path, "-m", "model=ea,vit", "model.dim_coefficient=1,2", "seed=0,1",
                       *QUICK)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = training_runs(client_for(tmp_path))
    assert len(runs) == 6 and {r.info.status for r in runs} == {"FINISHED"}
    assert result.stdout.count("skipped: FINISHED as run") == 2
    table = pd.read_csv(sweep_report(result, tmp_path) / "report.csv")
    vit = table[table["model"] == "vit"]
    assert len(vit) == 1 and vit["n"].tolist() == [2]
    assert sorted(table[table["model"] == "ea"]["n"]) == [2, 2]
    comparison = pd.read_csv(sweep_report(result, tmp_path) / "comparison.csv")
    assert len(comparison) == 2  # each EANet memory size against the one ViT


def test_a_later_sweep_reports_what_an_earlier_one_trained(tmp_path):
    """A sweep reports every job it covers, whichever sweep trained its run: after
    `model=ea seed=0` (the seed study's setting, num_heads=2 here), a heads sweep over both
    models reports EANet's num_heads=2 run beside ViT's, and their comparison."""
    first = run_eanet(tmp_path, "-m", "model=ea", "seed=0", *QUICK)
    assert first.returncode == 0, first.stderr[-3000:]
    heads = run_eanet(tmp_path, "-m", "model=ea,vit", "model.num_heads=1,2", "seed=0", *QUICK)
    assert heads.returncode == 0, heads.stderr[-3000:]
    assert heads.stdout.count("skipped: FINISHED as run") == 1
    report = sweep_report(heads, tmp_path)
    table = pd.read_csv(report / "report.csv")
    assert sorted(zip(table["model"], table["model.num_heads"])) == [
        ("ea", 1), ("ea", 2), ("vit", 1), ("vit", 2)]
    assert set(table["n"]) == {1}
    assert len(pd.read_csv(report / "comparison.csv")) == 2  # EANet vs ViT at each num_heads
    assert len(training_runs(client_for(tmp_path))) == 4  # ea, vit × heads 1, 2


def test_a_sweep_started_mid_way_through_a_shared_job_waits_for_it(tmp_path):
    """The second sweep meets a live claim: it neither trains the job again nor takes it over;
    it waits, takes the result, and the run holds each epoch once."""
    epochs = 3
    gate, hold = tmp_path / "gate", tmp_path / "hold"
    first = start_gated(tmp_path, tmp_path / "first.log", "-m", "seed=7", *QUICK,
                        f"trainer.epochs={epochs}", EANET_TEST_HOLD=str(hold))
    second = start_gated(tmp_path, tmp_path / "second.log", "-m", "seed=7,1", *QUICK,
                         f"trainer.epochs={epochs}", EANET_TEST_GATE=str(gate))

    def wait(condition, what: str) -> None:
        deadline = time.monotonic() + 300
        while not condition():
            for process, log in ((first, "first.log"), (second, "second.log")):
                assert process.poll() is None, (tmp_path / log).read_text()[-3000:]
            assert time.monotonic() < deadline, what
            time.sleep(0.2)

    client = client_for(tmp_path)
    # mid-way: the first sweep's run has logged its first epoch (and holds before the next)
    wait(lambda: (runs := training_runs(client)) and metric_steps(client, runs[0].info.run_id),
         "the first sweep never logged an epoch")
    gate.touch()
    wait(lambda: "waiting for it" in (tmp_path / "second.log").read_text(),
         "the second sweep never met the first one's claim")
    hold.touch()
    assert first.wait(timeout=300) == 0, (tmp_path / "first.log").read_text()[-3000:]
    assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    second = subprocess.CompletedProcess([], 0, (tmp_path / "second.log").read_text(), "")
    assert "running elsewhere" in second.stdout and "waiting for it" in second.stdout
    runs = {r.data.params["seed"]: r for r in training_runs(client)}
    assert sorted(runs) == ["1", "7"] and {r.info.status for r in runs.values()} == {"FINISHED"}
    shared = runs["7"].info.run_id
    for key in ("loss", "val_top1"):
        assert metric_steps(client, shared, key) == list(range(epochs)), key
    experiment = client.get_experiment_by_name("eanet").experiment_id
    parents = client.search_runs([experiment], "tags.`eanet.run_type` = 'sweep'")
    assert len(parents) == 2
    for parent in parents:
        assert shared in SweepRecord(client.tracking_uri, parent.info.run_id).run_ids()
