"""Which MLflow store, and the experiment in it: the one place that knows URIs and lookups.

- `sqlite_path` parses a `sqlite:///…` URI (MLflow's default when none is set) to its file;
- `check_tracking_location`: an unwritable local store or checkpoint folder fails before any
  data or TensorFlow loads;
- `store_lock`: parallel jobs opening one fresh SQLite store take turns creating its tables;
- `experiment_id` gets or creates the experiment of a run; `existing_experiment_id` only reads
  (what a report does), failing with the experiments the store has.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import unquote, urlparse

import mlflow
from mlflow.tracking import MlflowClient

from eanet.tracking import StoreError

DEFAULT_URI = "sqlite:///mlflow.db"  # MLflow's own default: ./mlflow.db where the command runs


def resolved_uri(tracking_uri: Optional[str]) -> str:
    """The URI MLflow will use: the setting, else MLFLOW_TRACKING_URI, else MLflow's default."""
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def sqlite_path(tracking_uri: Optional[str]) -> Optional[Path]:
    """The database file of a local SQLite store (`sqlite:///rel.db`, `sqlite:////abs.db`), else
    None (a server, or an in-memory database)."""
    uri = resolved_uri(tracking_uri)
    if urlparse(uri).scheme != "sqlite":
        return None
    path = unquote(uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else urlparse(uri).path)
    return Path(path).resolve() if path and path != ":memory:" else None


def local_store_path(tracking_uri: Optional[str]) -> Optional[Path]:
    """The file or folder holding a local store (SQLite, or a `file:` store), else None."""
    uri = resolved_uri(tracking_uri)
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        return sqlite_path(uri)
    if parsed.scheme in ("file", ""):
        return Path(unquote(parsed.path)).resolve()
    return None


def use_store(tracking_uri: Optional[str]) -> str:
    """Point MLflow at the configured store (None keeps MLFLOW_TRACKING_URI or the default)."""
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    return mlflow.get_tracking_uri()


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
            raise StoreError(f"Cannot write the MLflow store {database} "
                             f"(tracking.tracking_uri={tracking_uri}): {problem}")
    problem = _writable(Path(checkpoint_dir).resolve())
    if problem:
        raise StoreError(f"Cannot write checkpoints to tracking.checkpoint_dir={checkpoint_dir}: "
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


def experiment_id(tracking_uri: Optional[str], experiment_name: str) -> str:
    """Point MLflow at the store and get (or create) the experiment; unreachable → StoreError."""
    use_store(tracking_uri)
    client = MlflowClient()
    try:
        with store_lock(tracking_uri):  # a fresh store's tables are created by one job only
            experiment = client.get_experiment_by_name(experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return client.create_experiment(experiment_name)
        except mlflow.exceptions.MlflowException:
            # Another job of a parallel sweep created it between our two calls.
            experiment = client.get_experiment_by_name(experiment_name)
            if experiment is None:
                raise
            return experiment.experiment_id
    except mlflow.exceptions.MlflowException as error:
        raise StoreError(f"Cannot use the MLflow store {mlflow.get_tracking_uri()} "
                         f"(tracking.tracking_uri={tracking_uri}): {error.message}") from None


def existing_experiment_id(tracking_uri: Optional[str], experiment_name: str,
                           setting: str = "experiment") -> str:
    """The id of an experiment that must exist already (reports read, never create)."""
    uri = use_store(tracking_uri)
    path = local_store_path(uri)
    if path is not None and not path.exists():
        raise StoreError(f"Tracking store not found: {uri} ({path} does not exist). Run the "
                         "report where the sweep ran, or pass tracking_uri=…")
    client = MlflowClient()
    try:
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            names = sorted(e.name for e in client.search_experiments())
            raise StoreError(f"Unknown {setting}={experiment_name!r} in {uri}. "
                             f"Valid values: {', '.join(names) or '(none: the store is empty)'}")
    except mlflow.exceptions.MlflowException as error:  # e.g. a tracking server that is down
        raise StoreError(f"Cannot read the tracking store {uri}: {error.message}") from None
    return experiment.experiment_id
