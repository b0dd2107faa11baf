"""Where a real training run's wall time goes: the framework's own cost, outside fit/evaluate.

`measure_overhead` runs the unmodified `eanet.training.train.train` on the composed config, as
`python -m eanet.run` does; it times the phases by wrapping the functions they call (imports, the
data, pipelines, model build, compile, MLflow), `Model.fit` and `Model.evaluate`; whatever is left
is `other_s`. `startup_s` runs from the command until TensorFlow is loaded; it holds `import_s`
(importing the training code, TensorFlow and Keras). `data_load_s`, within `data_s`, is loading,
splitting and counting the data set. It also reports when `fit` began and when the first training
step finished, counted from the start of the process (the command), and how long a training step waits for its data: the same trained model is stepped
on the run's own pipeline and on one cached in-memory batch, alternating; the difference is the
input pipeline's cost to a step.
"""
from __future__ import annotations

import contextlib
import functools
import tempfile
import time
from collections import defaultdict
from typing import Any, Callable

from omegaconf import DictConfig, open_dict

from eanet.config import Config

# train()'s callees, grouped into the phases reported. data_s: loading, splitting and counting the
# data set, then the input pipelines.
PHASES = {
    "data_s": ("prepare_data", "make_dataset"),
    "model_s": ("build_augmentation", "build_model", "compile_model", "count_parameters"),
}
TRACKING_METHODS = ("__enter__", "__exit__", "log_parameter_counts", "log_results",
                    "log_artifacts")

OVERHEAD_COLUMNS = ["model", "startup_s", "import_s", "data_s", "model_s", "tracking_s",
                    "fit_s", "evaluate_s", "other_s", "overhead_fraction", "fit_start_age_s",
                    "first_step_s", "first_step_age_s", "median_step_s", "data_wait_fraction",
                    "loop_gap_fraction"]


class PhaseClock:
    """Accumulates wall time per phase for functions wrapped with `timed`.

    Only the outermost timed call counts: `fit` calls `evaluate` for validation, and that time
    belongs to fit.
    """

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self._depth = 0

    def timed(self, phase: str, function: Callable) -> Callable:
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            if self._depth:
                return function(*args, **kwargs)
            self._depth += 1
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - start
                self._depth -= 1
        return wrapper


@contextlib.contextmanager
def patched(target: Any, name: str, value: Any):
    original = getattr(target, name)
    setattr(target, name, value)
    try:
        yield original
    finally:
        setattr(target, name, original)


def measure_overhead(cfg: Config, raw_cfg: DictConfig, steps: int, warmup: int,
                     import_s: float) -> dict[str, Any]:
    """The unmodified `train` on the composed config, as `python -m eanet.run` runs it, with its
    phases timed."""
    from eanet.bench.measure import process_age_s

    begin_age_s = process_age_s()  # since the command: interpreter, Hydra, validation
    clock = PhaseClock()
    loaded: dict[str, float] = {}

    with tempfile.TemporaryDirectory() as store, contextlib.ExitStack() as patches:
        if cfg.tracking.tracking_uri is None:  # measure MLflow, but not in the user's own store
            cfg.tracking.tracking_uri = f"sqlite:///{store}/mlflow.db"
            with open_dict(raw_cfg):
                raw_cfg.tracking.tracking_uri = cfg.tracking.tracking_uri
        import_start = time.perf_counter()

        import keras

        import eanet.training.train as train_module
        from eanet.bench.measure import StepTimer, median
        from eanet.tracking.run import TrackedRun

        clock.seconds["import_s"] = time.perf_counter() - import_start
        start = time.perf_counter()  # TensorFlow is loaded
        load = train_module.prepare_data

        def prepare_data(*args, **kwargs):
            load_start = time.perf_counter()
            try:
                return load(*args, **kwargs)
            finally:
                loaded["data_load_s"] = time.perf_counter() - load_start

        patches.enter_context(patched(train_module, "prepare_data", prepare_data))
        startup_s = process_age_s() - (time.perf_counter() - start)
        timer = StepTimer()
        captured: dict[str, Any] = {}
        fit_start: dict[str, float] = {}
        original_fit = keras.Model.fit

        def capture(key: str, function: Callable) -> Callable:
            def wrapper(*args, **kwargs):
                result = function(*args, **kwargs)
                captured.setdefault(key, result)  # the first call: the training pipeline / model
                return result
            return wrapper

        def fit(*args, **kwargs):
            fit_start.setdefault("age_s", process_age_s())
            return original_fit(*args, **kwargs)

        for phase, names in PHASES.items():
            for name in names:
                function = getattr(train_module, name)
                if name in ("make_dataset", "build_model"):
                    function = capture(name, function)
                patches.enter_context(patched(train_module, name, clock.timed(phase, function)))
        for name in TRACKING_METHODS:
            patches.enter_context(patched(TrackedRun, name,
                                          clock.timed("tracking_s", getattr(TrackedRun, name))))
        patches.enter_context(patched(keras.Model, "fit", clock.timed("fit_s", fit)))
        patches.enter_context(patched(keras.Model, "evaluate",
                                      clock.timed("evaluate_s", keras.Model.evaluate)))
        patches.enter_context(patched(train_module, "extra_callbacks", lambda: [timer]))
        train_module.train(cfg, raw_cfg)
        run_s = time.perf_counter() - start

    step_s = timer.median_step_s(min(warmup, len(timer.step_times) - 1))
    phases = {k: clock.seconds.get(k, 0.0) for k in ("data_s", "model_s", "tracking_s", "fit_s",
                                                       "evaluate_s")}
    other_s = run_s - sum(phases.values())
    total_s = startup_s + run_s
    outside = total_s - phases["fit_s"] - phases["evaluate_s"]
    wait = data_wait(captured["build_model"], captured["make_dataset"], steps, warmup)
    return {
        "measurement": "overhead", "model": cfg.model.name, "batch": cfg.trainer.batch_size,
        "python_import_s": round(import_s, 3), "startup_s": round(startup_s, 3),
        "before_start_s": round(begin_age_s, 3), "import_s": round(clock.seconds["import_s"], 3),
        "data_load_s": round(loaded.get("data_load_s", 0.0), 3),
        **{k: round(v, 3) for k, v in phases.items()}, "other_s": round(other_s, 3),
        "total_s": round(total_s, 3), "overhead_s": round(outside, 3),
        "overhead_fraction": round(outside / total_s, 4),
        "fit_start_age_s": round(fit_start["age_s"], 2),
        "first_step_s": round(timer.step_times[0], 2),
        "first_step_age_s": round(timer.first_step_end_age_s, 2),
        "median_step_s": round(step_s, 4),
        "loop_gap_fraction": round(median(timer.gaps) / step_s, 5) if timer.gaps else 0.0,
        **wait,
    }


def data_wait(model, train_ds, steps: int, warmup: int) -> dict[str, float]:
    """Step time on the run's pipeline vs on one cached batch, alternating twice; the difference."""
    from eanet.bench.measure import StepTimer

    cached = train_ds.take(1).cache().repeat()
    times: dict[str, list[float]] = {"pipeline": [], "cached": []}
    for _ in range(2):
        for name, dataset in (("pipeline", train_ds.repeat()), ("cached", cached)):
            timer = StepTimer()
            model.fit(dataset, epochs=1, steps_per_epoch=steps + warmup, callbacks=[timer],
                      verbose=0)
            times[name].append(timer.median_step_s(warmup))
    pipeline, cached_s = min(times["pipeline"]), min(times["cached"])
    return {"pipeline_step_s": round(pipeline, 4), "cached_step_s": round(cached_s, 4),
            "data_wait_fraction": round((pipeline - cached_s) / pipeline, 4)}
