"""Shared test helpers: the real Hydra config shrunk to a tiny model on tiny data (`TINY`), eanet's
commands in a subprocess (`run_eanet`, `start_eanet`, `run_module`, `run_python`, all with
`subprocess_env()`), and reading back what a run recorded (`client_for`, `training_runs`,
`metric_steps`, `checkpointed_epoch`). One copy of each, here; test modules import them (`from conftest import …`).

The `slow` marker has one rule:

    slow = takes more than ~60 s alone on 2 CPU cores (`pytest --durations`).

Everything else runs in `make test` (`pytest -m "not slow"`, which must stay under 8 minutes on
2 cores), subprocess sweeps included: a test that sweeps is made small (TINY, one or two epochs,
two or three jobs) rather than marked slow. Tests that need what a machine may lack (the real CIFAR-100 copy:
`real_data`; Chromium: `browser`; a PostgreSQL server: `postgres`; the seed's files under
../shared/bench; a Ray environment: EANET_RAY_PYTHON) skip when it is missing (with CI set, the
browser test fails instead); that alone does not make them slow.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest
from hydra import compose, initialize_config_dir

from eanet.config import register_configs

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
REAL_CIFAR = ROOT.parent / "shared" / "data" / "cifar100.npz"

# A model and data set small enough that a training step costs milliseconds: one override a
# line in scripts/tiny-overrides.txt, which `TINY=1 scripts/gpu_study.sh` uses too.
TINY = (ROOT / "scripts" / "tiny-overrides.txt").read_text().split()

# Training runs only: every sweep also records a report run (eanet.run_type=report).
TRAINING_RUNS = "tags.`eanet.run_type` = 'train'"

register_configs()


# Test modules with a module-scoped fixture (a sweep, a server, a store): each runs whole on one
# xdist worker, so that the fixture is made once, not once per worker.
ONE_WORKER_MODULES = {p.name for p in Path(__file__).parent.glob("test_*.py")
                      if 'scope="module"' in p.read_text()}


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """`make test` runs `pytest -n auto`, which deals tests out to the workers one by one
    (`--dist load`): the same, except that each of ONE_WORKER_MODULES is dealt as one unit.
    (xdist's own `xdist_group` marks do nothing under pytest 9: xdist 3.8 renames node ids
    through an attribute pytest 9 no longer reads.)"""
    if config.getvalue("dist") != "load":
        return None  # another --dist chosen on the command line: xdist's own
    from xdist.scheduler import LoadScopeScheduling

    class ModuleFixturesTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if Path(module).name in ONE_WORKER_MODULES else nodeid

    return ModuleFixturesTogether(config, log)


def compose_config(overrides=(), return_hydra_config=False):
    """The config `python -m eanet.run <overrides>` would see (with the run's schema: a test
    that imported eanet.bench.cli has put the bench's under the same name in this process)."""
    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides),
                       return_hydra_config=return_hydra_config)


def require_fused_kernels():
    """Skips the test where eanet's fused CPU kernels cannot be built, except in CI (CI set),
    where that fails it."""
    from eanet.models import native

    if native.fused_ops() is None:
        if os.environ.get("CI"):
            pytest.fail("eanet's fused CPU kernels did not build (see the log's warning)")
        pytest.skip("eanet's fused CPU kernels are not available here (no C++ compiler?)")


@pytest.fixture
def tracking_dir(tmp_path, monkeypatch):
    """A temporary working directory holding a fresh MLflow SQLite store; returns its URI."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return store_uri(tmp_path)


# --- subprocesses ------------------------------------------------------------------------------

def subprocess_env(**extra: str | None) -> dict[str, str]:
    """This process's environment for a child that imports this checkout: no tracking URI, data
    location or pytest state inherited (a child uses MLflow's default store in its cwd and the
    data its command names), TensorFlow's and Python's warnings quiet; then `extra` (a None
    value removes the variable)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "EANET_DATA", "PYTEST_CURRENT_TEST")}
    env.update({"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore",
                **extra})
    return {k: v for k, v in env.items() if v is not None}


def run_python(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: float = 600,
               python: str = sys.executable) -> subprocess.CompletedProcess:
    """`python <args>` with `subprocess_env()` (updated by `env`), output captured as text."""
    return subprocess.run([python, *args], cwd=cwd, env=subprocess_env(**(env or {})),
                          capture_output=True, text=True, timeout=timeout)


def run_module(module: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """`python -m <module> <args>`; keyword arguments as for `run_python`."""
    return run_python("-m", module, *args, **kwargs)


def eanet_command(*arguments: str, script: str | None = None, tiny: bool = True,
                  python: str = sys.executable) -> list[str]:
    """`python -m eanet.run [flags] TINY… overrides…`, or `python -c script …` for a script that
    ends by running eanet.run. Hydra's flags (`-m`, `--cfg job`, …) go first, in order: an
    argument is an override if it has `=` or starts with `~`."""
    def is_override(a: str) -> bool:
        return not a.startswith("-") and ("=" in a or a.startswith("~"))

    head = [python, "-c", script] if script else [python, "-m", "eanet.run"]
    flags = [a for a in arguments if not is_override(a)]
    return [*head, *flags, *(TINY if tiny else []), *(a for a in arguments if is_override(a))]


def run_eanet(cwd: Path, *arguments: str, script: str | None = None, tiny: bool = True,
              env: dict | None = None, timeout: float = 600,
              python: str = sys.executable) -> subprocess.CompletedProcess:
    """`python -m eanet.run TINY… <arguments>` in `cwd` (see `eanet_command`)."""
    return subprocess.run(eanet_command(*arguments, script=script, tiny=tiny, python=python),
                          cwd=cwd, env=subprocess_env(**(env or {})), capture_output=True,
                          text=True, timeout=timeout)


def start_eanet(cwd: Path, *arguments: str, log: Path,
                env: dict | None = None) -> subprocess.Popen:
    """`run_eanet` in the background, in its own process group (signals sent to it never reach
    pytest), its output into `log`: a file, not a pipe, as a full pipe would stall the run."""
    with open(log, "w") as output:
        return subprocess.Popen(eanet_command(*arguments), cwd=cwd,
                                env=subprocess_env(**(env or {})), stdout=output,
                                stderr=subprocess.STDOUT, start_new_session=True)


# --- what a run recorded -----------------------------------------------------------------------

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


@contextlib.contextmanager
def headless_chromium(folder: Path):
    """A playwright browser context on Debian's chromium, with a fresh profile under `folder`,
    1920×1080 (`browser` tests). Skips when chromium or playwright is missing, except in CI
    (CI set), where that fails."""
    chromium = shutil.which("chromium")
    if chromium is None and not os.environ.get("CI"):
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium); "
                    "in CI (CI set) this test fails instead")
    assert chromium, "chromium must be installed in CI (.ci/run installs it)"
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tempfile.mkdtemp(dir=folder), headless=True, executable_path=chromium,
            args=CHROMIUM_ARGS, viewport={"width": 1920, "height": 1080})
        try:
            yield context
        finally:
            context.close()


def store_uri(folder: Path) -> str:
    """MLflow's default store when a command runs in `folder`: `folder/mlflow.db`."""
    return f"sqlite:///{Path(folder) / 'mlflow.db'}"


def client_for(store: Path | str):
    """An MlflowClient on a store URI, or on the default store of a folder."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store if isinstance(store, str) else store_uri(store))


def training_runs(client, experiment: str = "eanet",
                  order_by: str = "attributes.start_time ASC") -> list:
    """The active training runs of `experiment`, oldest first (or `order_by`); [] if it is
    missing."""
    from mlflow.entities import ViewType

    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs([found.experiment_id], TRAINING_RUNS,
                              run_view_type=ViewType.ACTIVE_ONLY, order_by=[order_by])


def metric_steps(client, run_id: str, key: str = "loss") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def checkpointed_epoch(folder: Path) -> int:
    """The last epoch in the one checkpoint under `folder/checkpoints`, or -1 if none yet (or
    while it is being replaced)."""
    import numpy as np

    files = list((Path(folder) / "checkpoints").glob("*/state.npz"))
    if not files:
        return -1
    try:
        with np.load(files[0], allow_pickle=False) as archive:
            return json.loads(str(archive["meta"]))["epoch"]
    except (OSError, ValueError, KeyError):
        return -1
