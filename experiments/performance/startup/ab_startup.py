"""A B A B: what eanet's start-up machinery saves a run, measured from the outside.

Runs `python -m eanet.run` (one job) on the real CIFAR-100 with a few steps, each time in a fresh
folder (fresh MLflow store), in variants that switch pieces of eanet.training.startup off by
patching them before eanet.run starts:

    all        as shipped: helper process opens the MLflow run, data read on a thread during
               TensorFlow's import, imports with the collector paused + gc.freeze, MLflow
               imported on a thread after the first step
    none       all four off: plan and open the run in-process, read the data, import, train
    no_helper / no_thread / no_gc / no_mlflow_thread   one piece off

Prints per run: wall time of the whole command and age of the process when the first training
step ended. It patches eanet.training.startup, which this measurement led to remove: run it on a
copy of commit a501e5a, the last with it (README.md beside this file has the exact commands).

    git archive a501e5a | tar -x -C /tmp/ab-tree
    cd /tmp/ab-tree && PYTHONPATH=$PWD python <this file> --data <cifar100.npz> --rounds 3 \
        all none no_helper no_thread no_gc no_mlflow_thread
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

PATCHES = {
    "no_helper": """
from eanet.tracking.opening import RunOpener
RunOpener.start = classmethod(lambda cls, *a: None)
""",
    "no_thread": """
from concurrent.futures import Future
import eanet.training.startup as startup
from eanet.data import prepare_data
def loaded_now(data_cfg, seed):
    future = Future(); future.set_result(prepare_data(data_cfg, seed)); return future
startup.prepare_data_in_background = loaded_now
""",
    "no_gc": """
import contextlib, eanet.training.startup as startup
startup.paused_gc = contextlib.nullcontext
""",
    "no_mlflow_thread": """
import eanet.tracking.run as tracked
tracked.TrackedRun.load_in_background = lambda self: None
""",
}
PATCHES["none"] = "".join(PATCHES.values())
PATCHES["all"] = ""

PROBE = """
import os, runpy, sys, time
T0 = float(os.environ["AB_T0"])
import eanet.training.startup as startup
_import_once = startup.import_once
def import_and_probe(module):
    _import_once(module)
    if module == startup.TRAINING_MODULE:
        import keras, eanet.training.train as train
        class FirstStep(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if batch == 0 and not hasattr(self, "done"):
                    self.done = print(f"FIRST_STEP_AGE {time.time() - T0:.2f}", flush=True)
        train.extra_callbacks = lambda: [FirstStep()]
startup.import_once = import_and_probe
runpy.run_module("eanet.run", run_name="__main__")
"""

OVERRIDES = ["model=ea", "trainer=quick", "trainer.epochs=1", "trainer.steps_per_epoch=2",
             "trainer.validation_steps=1", "trainer.test_steps=1", "trainer.verbose=0",
             "tracking.log_model=false"]


def run_once(variant: str, data: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as work:
        env = {**os.environ, "AB_T0": repr(time.time()), "TF_CPP_MIN_LOG_LEVEL": "2"}
        start = time.perf_counter()
        env["AB_T0"] = repr(time.time())
        result = subprocess.run([sys.executable, "-c", PATCHES[variant] + PROBE, *OVERRIDES,
                                 f"data.path={os.path.abspath(data)}"],
                                cwd=work, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
    if result.returncode:
        sys.exit(result.stderr[-3000:])
    first = float(result.stdout.split("FIRST_STEP_AGE ")[1].split()[0])
    return wall, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", choices=sorted(PATCHES))
    parser.add_argument("--data", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = {v: [] for v in args.variants}
    for round_ in range(args.rounds):
        for variant in args.variants:
            wall, first = run_once(variant, args.data)
            results[variant].append((wall, first))
            print(f"round {round_ + 1} {variant:17s} wall {wall:6.2f} s  first step at {first:6.2f} s",
                  flush=True)
    print("\nmedians:")
    for variant, rows in results.items():
        print(f"{variant:17s} wall {statistics.median(r[0] for r in rows):6.2f} s  "
              f"first step at {statistics.median(r[1] for r in rows):6.2f} s")


if __name__ == "__main__":
    main()
