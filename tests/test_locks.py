"""The locks in requirements/ (`make lock`, scripts/lock.sh): what every install takes, so that a
fresh clone gets the versions CI tested. Each is pip-compile's output, pins exactly, admits what
pyproject.toml asks for, and the TensorFlow-free one holds no TensorFlow; the environment these
tests run in was installed from the TensorFlow lock (`make venv`)."""
from __future__ import annotations

import subprocess
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import ROOT

LOCKS = {"tensorflow": ["cpu", "test"], "jax": ["jax", "test"]}  # lock: eanet's extras in it


def pins(lock: str) -> dict[str, str]:
    found = {}
    for line in (ROOT / "requirements" / f"{lock}.txt").read_text().splitlines():
        if line.strip() and not line.startswith((" ", "#")):
            name, version = line.split(" ")[0].split("==")
            found[canonicalize_name(name)] = version
    return found


@pytest.mark.parametrize("lock", LOCKS)
def test_each_lock_pins_what_pyproject_asks_for(lock):
    text = (ROOT / "requirements" / f"{lock}.txt").read_text()
    assert "#    make lock" in text.splitlines()[:6]  # pip-compile's header: how to redo it
    assert "--index-url" not in text and "--find-links" not in text
    pinned = pins(lock)
    for requirement in map(Requirement, metadata.requires("eanet")):
        if requirement.marker and not any(requirement.marker.evaluate({"extra": extra})
                                          for extra in LOCKS[lock]):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pinned, (lock, name)
        assert requirement.specifier.contains(pinned[name], prereleases=True), (lock, requirement)


def test_the_jax_lock_holds_no_tensorflow():
    assert {"jax", "jaxlib", "keras", "mlflow"} <= pins("jax").keys()
    assert not [name for name in pins("jax") if name.startswith("tensorflow")]


def test_this_environment_has_the_versions_of_the_tensorflow_lock():
    for name, version in pins("tensorflow").items():
        assert metadata.version(name) == version, name


def test_every_install_takes_the_locks():
    def dry_run(*target):  # the commands make would run for a fresh environment
        return subprocess.run(["make", "-n", "-B", *target], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout

    assert "-c requirements/tensorflow.txt -e" in dry_run("venv", "VENV=/nonexistent")
    jax = dry_run("test-jax", "JAX_VENV=/nonexistent")
    assert jax.count("LOCK=requirements/jax.txt") == 2  # the wheelhouse and the environment
    for script in ("build_wheelhouse.sh", "gpu_setup.sh"):
        text = (ROOT / "scripts" / script).read_text()
        assert "requirements/jax.txt" in text and '--constraint "$' in text, script
    assert "make test" in (ROOT / ".ci" / "run").read_text()
