"""What a person reads: `--help` names plan, plug-ins and tuning; TensorFlow's and MLflow's own
messages stay out of a run's output unless `library_logs=true` (eanet.console)."""
from __future__ import annotations

import importlib.util
import sys

import pytest

from conftest import run_eanet, run_module
from eanet.console import TENSORFLOW_NOTICES

# The libraries' own settings unset, as in a user's shell (subprocess_env quiets them for tests).
USER_SHELL = {"TF_CPP_MIN_LOG_LEVEL": None, "PYTHONWARNINGS": None, "MLFLOW_LOGGING_LEVEL": None}
needs_tensorflow = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                                      reason="TensorFlow's start-up notices")


def test_help_explains_plan_plugins_tuning_and_output(tmp_path):
    result = run_module("eanet.run", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for what in ("plan=true", "hydra/sweeper=tune", "hydra.searchpath=", "docs/extending.md",
                 "data=cifar10", "library_logs=true", "quiet=true", "data: cifar10, cifar100, synthetic"):
        assert what in text, what
    assert max(len(line) for line in text.split("== Config: ")[0].splitlines()) <= 100


@needs_tensorflow
@pytest.mark.parametrize("library_logs", [False, True])
def test_library_messages_only_when_asked(tmp_path, library_logs):
    """plan=true loads TensorFlow (it builds the model to count its parameters) and nothing else
    prints: its notices show only with library_logs=true."""
    result = run_eanet(tmp_path, "plan=true", f"library_logs={str(library_logs).lower()}",
                       env=USER_SHELL)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trainable" in result.stdout
    if library_logs:
        assert any(notice in result.stderr for notice in TENSORFLOW_NOTICES), result.stderr
    else:
        assert result.stderr == ""


def test_native_stderr_filter_keeps_other_lines(capfd):
    import os

    from eanet.console import native_stderr_without

    with native_stderr_without(("noise",)):
        os.write(2, b"some noise here\nan error that matters\n")
        print("from python", file=sys.stderr)
    err = capfd.readouterr().err  # (pytest's own sys.stderr bypasses the descriptor: any order)
    assert sorted(err.splitlines()) == ["an error that matters", "from python"]
