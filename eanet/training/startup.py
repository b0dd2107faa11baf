"""How a run gets to its first training step: the start-up steps that do not need each other,
overlapped (issue 13: the first step within 20 s of the command on a 2-core CPU).

    helper process: import MLflow, open the store, plan ······ (asked) open the run
    data thread:    load, split and count the data
    main thread:    import TensorFlow, Keras, the model code ──► pipelines, model ──► fit

1. MLflow's start-up runs in a helper process (`eanet.tracking.opening.RunOpener`): it plans the
   run (skip a FINISHED configuration, resume an interrupted one: eanet.sweeps.plan) and opens it
   when `train` enters its `TrackedRun`. Importing MLflow and opening a store are ≈ 2.3 s of
   Python (3.6 s when the store is new) that would otherwise hold the GIL before TensorFlow's
   import; this process imports MLflow only after the first training step.
2. The data set is loaded, split and counted on a thread (`prepare_data_in_background`): numpy
   works with the GIL released, so the second core does it meanwhile.
3. TensorFlow and Keras are imported with Python's garbage collector paused: the import creates
   half a million long-lived objects and hardly any garbage, and the collector's passes over
   them cost ≈ 0.9 s of its ≈ 5 s. The survivors are then frozen (`gc.freeze`): the collections
   while tracing and in `clear_session` no longer walk them.

Where no helper is forked (`RunOpener.start`: e.g. in a sweep, whose checks before the first
job load MLflow), MLflow is imported and the run planned here, then the data thread starts. A
configuration that the helper's plan skips has imported TensorFlow and loaded its data for
nothing (once per process). Nothing here changes what is trained: the same data (seeded, local
random generators), the same model and order of random draws; `train` seeds Keras after all
of this.
"""
from __future__ import annotations

import contextlib
import gc
import importlib
import sys
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass

from omegaconf import DictConfig

from eanet.config import Config
from eanet.data import TrainingData, prepare_data_in_background
from eanet.sweeps.plan import RunPlan, plan_run
from eanet.tracking.opening import RunOpener

PLANNING_MODULE = "eanet.tracking.search"  # imports MLflow (and pandas), not TensorFlow
TRAINING_MODULE = "eanet.training.train"  # imports Keras, TensorFlow and the model


@dataclass
class Start:
    """A started run: its plan (from the helper, waiting for it if needed) and its data."""
    opener: RunOpener | None  # the helper process that opens the MLflow run, if one was forked
    loading: Future[TrainingData] | None  # None: planned here, and skipped
    planned_here: RunPlan | None = None

    @property
    def plan(self) -> RunPlan:
        return self.planned_here if self.opener is None else self.opener.plan()


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Collector off for the block; what the block left alive is frozen afterwards (it lives as
    long as the process). The few cycles an import leaves (≈ 5,000 objects) are frozen too."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def import_once(module: str) -> None:
    """Import `module` with the collector paused, unless this process has imported it already.

    A sweep's later jobs find it imported: freezing then would keep the previous job's model
    from ever being collected, so only the import itself freezes.
    """
    if module not in sys.modules:
        with paused_gc():
            importlib.import_module(module)


def start(cfg: Config, raw_cfg: DictConfig) -> Start:
    """Plan the run and, unless it is skipped, start loading its data and import the training
    code. Returns with TensorFlow imported (unless planned here and skipped) and the data
    possibly still loading; `train(cfg, raw_cfg, started)` goes on from there."""
    opener = RunOpener.start(plan_run, cfg, raw_cfg)
    if opener is None:
        import_once(PLANNING_MODULE)
        plan = plan_run(cfg, raw_cfg)
        if plan.skip:
            return Start(None, None, plan)
        started = Start(None, prepare_data_in_background(cfg.data, cfg.seed), plan)
    else:  # the plan comes later: load the data at once, for nothing if it skips the run
        started = Start(opener, prepare_data_in_background(cfg.data, cfg.seed))
    import_once(TRAINING_MODULE)
    return started
