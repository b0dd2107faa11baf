"""What a run records of the software it ran on: Python and every distribution it depends on,
and eanet's commit with whether its tree had changes (eanet.tracking.lineage)."""
from __future__ import annotations

import subprocess
from importlib import metadata

from eanet.tracking.lineage import source_commit, stack_versions
from eanet.tracking.opening import KEY_PACKAGES, MAX_TAG_LENGTH, packages_tag


def test_the_stack_is_the_closure_of_eanets_requirements():
    versions = stack_versions()
    backend = {"tensorflow", "tensorflow-cpu", "jax"} & versions.keys()
    assert backend, versions
    for name in ("eanet", "keras", "numpy", "mlflow", "hydra-core", "omegaconf", "pandas",
                 *backend):
        assert versions[name] == metadata.version(name), name
    # Requirements of requirements: MLflow's database layer, OmegaConf's parser runtime.
    assert versions["sqlalchemy"] == metadata.version("sqlalchemy")
    assert versions["antlr4-python3-runtime"] == metadata.version("antlr4-python3-runtime")
    assert versions["python"].count(".") == 2
    # Installed, but only for eanet's tests: no run imports it.
    metadata.version("pytest")
    assert "pytest" not in versions


def test_a_list_over_mlflows_limit_keeps_the_key_packages():
    versions = stack_versions()
    assert packages_tag(versions).split() == [f"{k}=={v}" for k, v in versions.items()]
    many = {**versions, **{f"package-{i}": "1.0" for i in range(1000)}}
    tag = packages_tag(many)
    assert len(tag) <= MAX_TAG_LENGTH
    assert "package-0==1.0" not in tag
    kept, marker = tag.rsplit(" (", 1)
    assert marker == f"{len(many)} in all)"
    assert {item.split("==")[0] for item in kept.split()} == KEY_PACKAGES & versions.keys()


def test_source_commit_says_whether_tracked_files_changed(tmp_path):
    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), *args], check=True,
                              capture_output=True, text=True).stdout.strip()

    assert source_commit(tmp_path) == (None, False)
    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a")
    head = git("rev-parse", "HEAD")
    (tmp_path / "untracked.txt").write_text("not part of the tree\n")
    assert source_commit(tmp_path) == (head, False)
    (tmp_path / "a.py").write_text("x = 2\n")
    assert source_commit(tmp_path) == (head, True)
