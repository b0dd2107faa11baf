"""Per-epoch checkpoints of the training state, so an interrupted run continues where it stopped.

After every completed epoch `TrainingCheckpoint` writes one file, `<checkpoint_dir>/<run id>/
state.npz`, holding everything `fit` needs to go on as if never stopped:

- the model's variables, including the Keras seed-generator states of augmentation and dropout;
- the optimizer's variables (iteration count, moments);
- Python's and NumPy's global random states;
- the epoch index, the MLflow run it belongs to, and the per-epoch metrics so far.

Keyed by the MLflow run, a checkpoint belongs to one run of one experiment: whichever job resumes
that run (a relaunch, another sweep taking over a dead claim: eanet.sweeps.jobs) finds it, and no
other run can remove it. A checkpoint written under the computation's fingerprint (the layout
before runs keyed it) is found there once and moved under its run.

The file is written beside its final name and renamed over it, so a kill or a full disk during the
write leaves the previous checkpoint intact. It holds arrays and a JSON string only and is read with
`allow_pickle=False`: loading a checkpoint cannot run code. Not restored: the position of the input
pipeline's shuffle (tf.data's, or eanet.array_batches' on other backends), which starts its sequence
of epoch orders again, so a resumed run sees a different (equally random) data order than an
uninterrupted one would have.
"""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import keras
import numpy as np


log = logging.getLogger(__name__)

STATE_FILE = "state.npz"


def _epoch_metrics(model: keras.Model, logs: Optional[dict], epoch_start: float) -> dict[str, float]:
    """Keras' per-epoch logs plus the learning rate and the epoch's wall time."""
    metrics = {k: float(v) for k, v in (logs or {}).items()}
    metrics["epoch_time_s"] = time.perf_counter() - epoch_start
    metrics["learning_rate"] = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    return metrics


class TrainingCheckpoint(keras.callbacks.Callback):
    """Saves the training state after each epoch; `restore` loads it back before `fit`.

    Put it before the MLflow epoch logger in `fit`'s callbacks: an epoch's metrics then reach
    MLflow only once its checkpoint exists, and `epoch_metrics` (the list) lets a resumed run fill in any
    epoch whose metrics the interruption kept from being logged (never one twice).
    """

    def __init__(self, checkpoint_dir: str | Path, legacy_folder: Optional[str | Path] = None):
        super().__init__()
        self.checkpoint_dir = Path(checkpoint_dir)
        self.legacy_folder = Path(legacy_folder) if legacy_folder is not None else None
        self.run_id: Optional[str] = None
        self.epoch_metrics: list[dict[str, float]] = []  # one per epoch, what the MLflow run logs

    @property
    def folder(self) -> Path:
        return self.checkpoint_dir / str(self.run_id)

    @property
    def path(self) -> Path:
        return self.folder / STATE_FILE

    @property
    def history(self) -> dict[str, list[float]]:
        """Keras' `History.history` over every epoch of the run, before and after a resume."""
        keys = [k for k in (self.epoch_metrics[0] if self.epoch_metrics else {})
                if k not in ("learning_rate", "epoch_time_s")]
        return {k: [m[k] for m in self.epoch_metrics if k in m] for k in keys}

    def _adopt_legacy(self) -> None:
        """Move a checkpoint of this run from its fingerprint's folder to the run's own."""
        legacy = self.legacy_folder / STATE_FILE if self.legacy_folder else None
        if self.path.is_file() or legacy is None or not legacy.is_file():
            return
        try:
            with np.load(legacy, allow_pickle=False) as archive:
                owner = json.loads(str(archive["meta"]))["run_id"]
        except (OSError, ValueError, KeyError):
            return
        if owner == self.run_id:
            self.folder.mkdir(parents=True, exist_ok=True)
            os.replace(legacy, self.path)
            log.info("checkpoint of run %s moved from %s to %s", self.run_id, legacy, self.path)

    def restore(self, model: keras.Model, run_id: str) -> int:
        """Load the state saved for `run_id` into the compiled `model`; return the next epoch.

        A checkpoint saved for another run is ignored and will be overwritten: only the run that
        wrote it may continue from it.
        """
        self.run_id = run_id
        self._adopt_legacy()
        if not self.path.is_file():
            return 0
        with np.load(self.path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            if meta["run_id"] != run_id:
                log.warning("ignoring checkpoint %s: it belongs to run %s, not %s", self.path,
                            meta["run_id"], run_id)
                return 0
            model.optimizer.build(model.trainable_variables)
            _assign(model.variables, archive, "model", meta["model_variables"])
            _assign(model.optimizer.variables, archive, "optimizer", meta["optimizer_variables"])
            numpy_state = archive["numpy_rng_keys"]
        random.setstate(_as_tuples(meta["python_rng"]))
        name, position, has_gauss, cached = meta["numpy_rng"]
        np.random.set_state((name, numpy_state, position, has_gauss, cached))
        self.epoch_metrics = meta["epoch_metrics"]
        log.info("resuming run %s after epoch %d from %s", run_id, meta["epoch"], self.path)
        return meta["epoch"] + 1

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        metrics = _epoch_metrics(self.model, logs, self.epoch_start)
        del self.epoch_metrics[epoch:]  # the epoch list always ends at the epoch just completed
        self.epoch_metrics.append(metrics)
        self.save(epoch)

    def save(self, epoch: int) -> None:
        name, numpy_keys, position, has_gauss, cached = np.random.get_state()
        meta = {
            "run_id": self.run_id, "epoch": epoch, "epoch_metrics": self.epoch_metrics,
            "model_variables": len(self.model.variables),
            "optimizer_variables": len(self.model.optimizer.variables),
            "python_rng": random.getstate(), "numpy_rng": [name, position, has_gauss, cached],
        }
        arrays = {"meta": np.array(json.dumps(meta)), "numpy_rng_keys": numpy_keys}
        for prefix, variables in (("model", self.model.variables),
                                  ("optimizer", self.model.optimizer.variables)):
            for i, variable in enumerate(variables):
                arrays[f"{prefix}_{i}"] = keras.ops.convert_to_numpy(variable)
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial.npz")
        with open(partial, "wb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, self.path)  # atomic: the old checkpoint stays until this one is whole

    def finish(self, keep: bool) -> None:
        """Once the run has FINISHED: remove the checkpoint folder unless asked to keep it."""
        if keep:
            log.info("checkpoint kept in %s (tracking.keep_checkpoints=true)", self.folder)
        else:
            shutil.rmtree(self.folder, ignore_errors=True)


def _assign(variables: list, archive: Any, prefix: str, expected: int) -> None:
    if len(variables) != expected:
        raise ValueError(f"Checkpoint holds {expected} {prefix} variables but the {prefix} has "
                         f"{len(variables)}: it was written by a different model or optimizer")
    for i, variable in enumerate(variables):
        value = archive[f"{prefix}_{i}"]
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(f"Checkpoint {prefix} variable {variable.path} has shape "
                             f"{value.shape}, expected {tuple(variable.shape)}")
        variable.assign(value)


def _as_tuples(value: Any) -> Any:
    """JSON turned `random.getstate()`'s tuples into lists; `random.setstate` wants tuples."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list) else value
