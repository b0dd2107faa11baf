"""Guards that turn faults into clear, recorded endings instead of lost or corrupted work.

- `StopOnNonFiniteLoss`: a NaN or infinite loss raises at once (Keras' TerminateOnNaN only stops
  quietly, and the run would look FINISHED); `TrackedRun` records it as FAILED with the reason.
- `interrupt_on_sigterm`: SIGTERM (what a scheduler sends) raises KeyboardInterrupt like Ctrl-C,
  so the MLflow run ends KILLED instead of being left RUNNING.
- `check_tracking_location`: an unwritable store fails before any data is loaded.
- `store_lock`: parallel jobs opening one fresh SQLite store take turns creating its tables.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import urlparse

import keras

from eanet.config import ConfigError


class NonFiniteLossError(ArithmeticError):
    """The training loss became NaN or infinite: the run diverged."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raise `NonFiniteLossError` on the first batch whose loss is NaN or infinite."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"loss became {float(loss)} at epoch {self.epoch}, batch {batch}: training "
                "diverged (a smaller optimizer.learning_rate usually helps)")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")


def interrupt_on_sigterm() -> None:
    """Make SIGTERM behave like Ctrl-C in this process (main thread only, as Python requires)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)


def sqlite_path(tracking_uri: Optional[str]) -> Optional[Path]:
    """The database file of a `sqlite:///…` URI (MLflow's default when none is set), else None."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return None
    path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else parsed.path
    return Path(path).resolve() if path and path != ":memory:" else None


def _writable(folder: Path) -> Optional[str]:
    """None if a file can be created in `folder` (or the folder created); else why not."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    try:
        if not existing.is_dir():
            return f"{existing} is not a folder"
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".eanet-write-check-"):
            pass
    except OSError as error:
        return str(error)
    return None


def check_tracking_location(tracking_uri: Optional[str], checkpoint_dir: str) -> None:
    """Fail early, naming the setting, if the SQLite store or the checkpoint folder is unwritable.

    Local paths only (a remote server answers for itself). Runs before data or TensorFlow load.
    """
    database = sqlite_path(tracking_uri)
    if database is not None:
        problem = (_writable(database.parent) or
                   (None if not database.exists() or os.access(database, os.W_OK)
                    else f"{database} is read-only"))
        if problem:
            raise ConfigError(f"Cannot write the MLflow store {database} "
                              f"(tracking.tracking_uri={tracking_uri}): {problem}")
    problem = _writable(Path(checkpoint_dir).resolve())
    if problem:
        raise ConfigError(f"Cannot write checkpoints to tracking.checkpoint_dir={checkpoint_dir}: "
                          f"{problem}")


@contextlib.contextmanager
def store_lock(tracking_uri: Optional[str]) -> Iterator[None]:
    """Hold an exclusive lock on a local SQLite store (no-op for other stores).

    MLflow creates a fresh store's tables on first use; two processes doing it at once collide.
    Everything after that is serialised by SQLite itself (MLflow sets a 20 s busy timeout).
    """
    database = sqlite_path(tracking_uri)
    if database is None:
        yield
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    # In the temp folder, not beside the store: nothing to clean up or to keep out of git.
    key = hashlib.sha1(str(database).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"eanet-store-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
