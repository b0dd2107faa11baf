"""Which MLflow store, and the experiment in it: the one place that knows URIs and lookups.

- `sqlite_path` parses a `sqlite:///…` URI (MLflow's default when none is set) to its file;
- `check_tracking_location`: an unwritable local store or checkpoint folder fails before any
  data or TensorFlow loads;
- `use_store` points MLflow at the store and opens it: a local SQLite store under `store_lock`,
  so that only one process at a time creates or migrates its tables (MLflow does both inside its
  first `MlflowClient()` in a process); a store whose creation was cut short is made afresh if it
  holds nothing, else named with what to do (`_open_sqlite`);
- `experiment_id` gets or creates the experiment of a run; `existing_experiment_id` only reads
  (what a report does), failing with the experiments the store has.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import sqlite3
import tempfile
import threading
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import unquote, urlparse

import mlflow
from mlflow.tracking import MlflowClient

from eanet.tracking import StoreError

log = logging.getLogger(__name__)

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
    """Point MLflow at the configured store (None keeps MLFLOW_TRACKING_URI or the default) and
    open it; a local SQLite store is opened under `store_lock`. Returns the URI."""
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    uri = mlflow.get_tracking_uri()
    database = sqlite_path(uri)
    if database is not None:
        with store_lock(uri):
            _open_sqlite(uri, database)
    return uri


# A cut-short migration (alembic's batch mode on SQLite copies a table through this prefix).
LEFTOVER_PREFIX = "_alembic_tmp_"
# Rows a fresh store has before anything is recorded in it.
UNRECORDED_TABLES = {"alembic_version", "workspaces"}


def _open_sqlite(uri: str, database: Path) -> None:
    """Open the store as this process' MLflow store (MLflow keeps it), creating or migrating its
    tables if needed. A store whose creation or migration was cut short (leftover
    `_alembic_tmp_*` tables, a schema behind MLflow's) is made afresh when nothing is recorded
    in it; with runs in it, a StoreError names the file and what to do, and nothing is touched."""
    from alembic.util import CommandError
    from mlflow.store.db.utils import _get_latest_schema_revision
    from sqlalchemy.exc import SQLAlchemyError

    try:
        MlflowClient(uri)
        return
    except (mlflow.exceptions.MlflowException, SQLAlchemyError, CommandError) as error:
        problem = str(getattr(error, "message", error)).strip().splitlines()[0]
        cannot_open = StoreError(f"Cannot open the MLflow store {database} "
                                 f"(tracking.tracking_uri={uri}): {problem}")
        if not database.is_file():
            raise cannot_open from None
        try:
            _remake_if_unrecorded(database, problem, _get_latest_schema_revision())
        except (sqlite3.Error, _NotHalfMigrated):  # MLflow's own reason says more
            raise cannot_open from None
    MlflowClient(uri)


class _NotHalfMigrated(Exception):
    """The store failed to open for another reason than a cut-short migration."""


def _remake_if_unrecorded(database: Path, problem: str, head_revision: str) -> None:
    """Drop every table of a half-migrated store that holds nothing (MLflow then creates them
    afresh); a StoreError saying what to do if it holds runs; _NotHalfMigrated if its schema
    is whole."""
    with contextlib.closing(sqlite3.connect(database)) as connection:
        tables = [name for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        leftovers = [name for name in tables if name.startswith(LEFTOVER_PREFIX)]
        revision = (connection.execute("SELECT version_num FROM alembic_version").fetchall()
                    if "alembic_version" in tables else [])
        if not leftovers and revision == [(head_revision,)]:
            raise _NotHalfMigrated
        if _holds_records(connection, tables):
            drop = (f"drop the leftover tables of a cut-short migration (sqlite3 {database} "
                    f"'DROP TABLE {'; DROP TABLE '.join(leftovers)}'), then " if leftovers else "")
            raise StoreError(f"The MLflow store {database} is half-migrated ({problem}); its "
                             f"runs are still in it. Keep a copy of the file, {drop}run "
                             f"'mlflow db upgrade sqlite:///{database}'.")
        log.warning("The MLflow store %s was left half-created (%s) and holds no runs: "
                    "creating it afresh", database, problem)
        for name in tables:
            connection.execute(f'DROP TABLE "{name}"')
        connection.commit()


def _holds_records(connection: sqlite3.Connection, tables: list[str]) -> bool:
    """Whether any table (or a migration's copy of one) has a row beyond a fresh store's own
    (its schema version, its workspace, the `Default` experiment 0)."""
    for name in tables:
        base = name.removeprefix(LEFTOVER_PREFIX)
        if base in UNRECORDED_TABLES:
            continue
        where = " WHERE experiment_id != 0" if base == "experiments" else ""
        if connection.execute(f'SELECT 1 FROM "{name}"{where} LIMIT 1').fetchone():
            return True
    return False


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


# Per store file, this process' hold on its lock: a thread waits for another, and a nested
# `store_lock` in the holding thread goes through (flock would wait for itself).
_holds: dict[Path, threading.RLock] = {}
_depths: dict[Path, int] = {}
_holds_guard = threading.Lock()


@contextlib.contextmanager
def store_lock(tracking_uri: Optional[str]) -> Iterator[None]:
    """Hold an exclusive lock on a local SQLite store (no-op for other stores).

    MLflow creates and migrates a store's tables when a process first opens it; two processes
    doing it at once collide and can leave the file half-migrated. Everything after that is
    serialised by SQLite itself (MLflow sets a 20 s busy timeout).
    """
    database = sqlite_path(tracking_uri)
    if database is None:
        yield
        return
    with _holds_guard:
        hold = _holds.setdefault(database, threading.RLock())
    with hold:
        _depths[database] = _depths.get(database, 0) + 1
        try:
            if _depths[database] > 1:
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
        finally:
            _depths[database] -= 1


def experiment_id(tracking_uri: Optional[str], experiment_name: str) -> str:
    """Point MLflow at the store and get (or create) the experiment; unreachable → StoreError."""
    uri = use_store(tracking_uri)
    client = MlflowClient()
    try:
        with store_lock(uri):  # parallel jobs of a sweep: one creates it, the others find it
            experiment = client.get_experiment_by_name(experiment_name)
            if experiment is not None:
                return experiment.experiment_id
            try:
                return client.create_experiment(experiment_name)
            except mlflow.exceptions.MlflowException as error:
                # a tracking server has no shared lock: another process created it just now
                if error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                return client.get_experiment_by_name(experiment_name).experiment_id
    except mlflow.exceptions.MlflowException as error:
        raise StoreError(f"Cannot use the MLflow store {uri} "
                         f"(tracking.tracking_uri={tracking_uri}): {error.message}") from None


def existing_experiment_id(tracking_uri: Optional[str], experiment_name: str,
                           setting: str = "experiment") -> str:
    """The id of an experiment that must exist already (reports read, never create)."""
    uri = tracking_uri or mlflow.get_tracking_uri()
    path = local_store_path(uri)
    if path is not None and not path.exists():
        raise StoreError(f"Tracking store not found: {uri} ({path} does not exist). Run the "
                         "report where the sweep ran, or pass tracking_uri=…")
    use_store(tracking_uri)
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
