"""Real servers for tests, on loopback: an `mlflow server` (SQLite or PostgreSQL backend) and a
throwaway PostgreSQL cluster; plus a tiny sweep that must succeed (`run_sweep`).

Every server starts in its own process group (setsid) and is stopped with SIGTERM to that group
(SIGKILL after a grace period), so no worker outlives its test.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from conftest import run_eanet


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(process: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the process group, wait, then SIGKILL whatever is left."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def wait_for_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def mlflow_server(backend_store_uri: str, artifacts: Path, log: Path):
    """`mlflow server` on a free loopback port, artifacts served (proxied) by the server.
    Yields its URL, e.g. http://127.0.0.1:41234."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1",
               "--port", str(port), "--backend-store-uri", backend_store_uri,
               "--artifacts-destination", str(artifacts), "--workers", "1"]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=log.parent)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/health", process, log)
        yield url
    finally:
        stop_group(process)


def run_sweep(cwd: Path, *overrides: str, env: dict | None = None, timeout: float = 600,
              python: str = sys.executable) -> subprocess.CompletedProcess:
    """`python -m eanet.run -m TINY… <overrides>` in `cwd`, which must succeed."""
    result = run_eanet(cwd, "-m", *overrides, env=env, timeout=timeout, python=python)
    assert result.returncode == 0, f"sweep failed ({result.returncode}):\n{result.stderr[-6000:]}"
    return result


# --- PostgreSQL --------------------------------------------------------------------------------

def postgres_bin(name: str) -> str | None:
    """initdb/pg_ctl are not on PATH in Debian's packages: they live in /usr/lib/postgresql/N/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


@contextlib.contextmanager
def postgres_cluster():
    """A throwaway PostgreSQL cluster on a free loopback port, trusting local connections, in a
    fresh folder under the system temp dir (removed afterwards). PostgreSQL refuses to run as
    root: as root, the cluster runs as the `postgres` user (Debian's package creates it).
    Yields a SQLAlchemy URL for a fresh `mlflow` database."""
    initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
    if not (initdb and pg_ctl):
        raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found; "
                                "install Debian's `postgresql` package")
    folder = Path(tempfile.mkdtemp(prefix="eanet-postgres-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        folder.chmod(0o755)
        shutil.chown(folder, "postgres")
    data, port = folder / "data", free_port()
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", "postgres", "--auth=trust",
                    "--no-sync"], check=True, capture_output=True, text=True)
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(folder / "postgres.log"), "-w",
                    "-o", f"-h 127.0.0.1 -p {port} -k {folder}", "start"],
                   check=True, capture_output=True, text=True)
    try:
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c",
                        "CREATE DATABASE mlflow"], check=True, capture_output=True, text=True)
        # psycopg2 named explicitly: SQLAlchemy 2.1 defaults postgresql:// to psycopg (v3)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, text=True)
        shutil.rmtree(folder, ignore_errors=True)
