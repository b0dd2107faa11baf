"""Plug-ins from a folder of the user's own, outside the repository: docs/extending.md's example
(a pooled attention layer and a data set loader, each with its YAML), written out as the docs
show it, sweeps beside `ea` and `vit` exactly as a built-in does — `plan=true`, the sweep-wide
checks (a bad value fails once, in one line), the report, and its MLflow model loading in a fresh
Python — without a warning from Hydra's callbacks (which turn a callback's exception into one).
"""
from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import ROOT, client_for, run_eanet, run_python, store_uri, training_runs

# The model and data settings of a run that costs milliseconds a step (TINY, less its data set).
SMALL = ["model.embedding_dim=16", "model.mlp_dim=16", "model.num_blocks=1", "model.num_heads=2",
         "model.dim_coefficient=2", "data.image_size=8", "data.train_size=64", "data.test_size=32",
         "trainer.epochs=1", "trainer.batch_size=16", "trainer.verbose=0"]
# What Hydra makes of an exception in a callback: a warning, and the sweep goes on.
CALLBACK_WARNING = re.compile(r"Callback \w+\.on_\w+ raised")


def example_files(folder: Path) -> dict[str, Path]:
    """Each code block of docs/extending.md whose first line is `# <path>`, written under
    `folder`; returns {path: file}."""
    text = (ROOT / "docs" / "extending.md").read_text()
    files = {}
    for block in re.findall(r"```(?:python|yaml)\n(.*?)```", text, re.S):
        first, _, body = block.partition("\n")
        if first.startswith("# ") and "/" in first:
            path = folder / first[2:].split()[0]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block)
            files[first[2:].split()[0]] = path
    return files


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory) -> Path:
    """The docs' example in a folder outside the repository: my_plugins/ and my_conf/."""
    folder = tmp_path_factory.mktemp("user")
    files = example_files(folder)
    assert set(files) == {"my_plugins/pool_attention.py", "my_conf/model/pool.yaml",
                          "my_plugins/stripes.py", "my_conf/data/stripes.yaml"}
    assert ROOT not in folder.parents
    return folder


def plugin_args(folder: Path) -> list[str]:
    return [f"hydra.searchpath=[file://{folder / 'my_conf'}]", "data=stripes", *SMALL]


def plugin_env(folder: Path) -> dict[str, str | None]:
    """my_plugins/ on the path, and Python's warnings shown (tests' subprocesses hide them)."""
    return {"PYTHONPATH": os.pathsep.join([str(ROOT), str(folder / "my_plugins")]),
            "PYTHONWARNINGS": None}


def assert_no_callback_warning(result) -> None:
    assert not CALLBACK_WARNING.search(result.stderr), result.stderr[-3000:]


def test_compose_jobs_sees_the_sweeps_searchpath(user_folder):
    """eanet.sweeps.callbacks.compose_jobs composes a job whose model exists only in a config
    folder named by `hydra.searchpath`, as Hydra composes the job itself."""
    from hydra import compose, initialize_config_dir

    from conftest import CONF_DIR
    from eanet.config import register_configs
    from eanet.sweeps.callbacks import compose_jobs

    register_configs()
    searchpath = [f"file://{user_folder / 'my_conf'}"]
    jobs = [["model=pool", "data=stripes", "model.num_heads=2"], ["model=ea", "data=stripes"]]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        fast = compose_jobs("config", jobs, searchpath)
        hydra = [compose("config", overrides=[f"hydra.searchpath=[{searchpath[0]}]", *job])
                 for job in jobs]
    assert [OmegaConf.to_container(c, resolve=True) for c in fast] == [
        OmegaConf.to_container(c, resolve=True) for c in hydra]
    assert fast[0].model.attention_layer._target_ == "pool_attention.PoolAttention"
    assert fast[0].data.loader == "stripes.load_stripes" and fast[0].data.num_classes == 3


def docs_command(folder: Path, marker: str) -> list[str]:
    """The arguments of docs/extending.md's `python -m eanet.run` line containing `marker`,
    run from `folder` (its `$PWD`)."""
    text = (ROOT / "docs" / "extending.md").read_text()
    [block] = re.findall(r"```sh\n(.*?)```", text, re.S)
    [line] = [line for line in block.splitlines() if marker in line]
    words = shlex.split(line.replace("$PWD", str(folder)), comments=True)
    assert words[:3] == ["python", "-m", "eanet.run"], line
    return words[3:]


def test_plan_lists_plugins_beside_ea_and_vit_and_writes_nothing(user_folder, tmp_path):
    """The docs' plan command, on small models."""
    arguments = docs_command(user_folder, "plan=true")
    assert "model=ea,vit,pool" in arguments and "data=stripes" in arguments
    result = run_eanet(tmp_path, *arguments, *SMALL, tiny=False, env=plugin_env(user_folder))
    assert result.returncode == 0, result.stderr[-3000:]
    assert_no_callback_warning(result)
    rows = [line for line in result.stdout.splitlines() if line.startswith("#")]
    assert [row.split("|")[0].split()[1] for row in rows] == [
        "ea-p2-h2-dc2-s0", "vit-p2-h2-s0", "pool-p2-h2-s0"]
    assert all("new" in row and "trainable" in row for row in rows), result.stdout
    assert not list(tmp_path.iterdir())  # no store, no sweep folder, no sweep run


def test_a_bad_value_fails_the_plugin_sweep_once_in_one_line(user_folder, tmp_path):
    result = run_eanet(tmp_path, "-m", "model=ea,pool", *plugin_args(user_folder),
                       "model.num_heads=3", tiny=False, env=plugin_env(user_folder))
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("eanet: Expected model.embedding_dim divisible by model.num_heads. "
                           "Received: model.embedding_dim=16, model.num_heads=3 (job with "
                           "overrides model=ea "), line
    assert not (tmp_path / "mlflow.db").exists()  # no job ran, no store was made


def test_a_module_that_cannot_be_imported_fails_once_naming_the_setting(user_folder, tmp_path):
    result = run_eanet(tmp_path, "-m", "model=ea,pool", *plugin_args(user_folder), tiny=False,
                       env={"PYTHONPATH": str(ROOT), "PYTHONWARNINGS": None})  # no my_plugins/
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("eanet: Cannot import 'pool_attention' named by "
                           "model.attention_layer._target_=pool_attention.PoolAttention: the "
                           "module must be importable: on PYTHONPATH"), line


def test_plugins_sweep_beside_ea_and_vit_report_and_load_in_a_fresh_python(user_folder,
                                                                           tmp_path):
    result = run_eanet(tmp_path, "-m", "model=ea,vit,pool", *plugin_args(user_folder),
                       tiny=False, env=plugin_env(user_folder))
    assert result.returncode == 0, result.stderr[-3000:]
    assert_no_callback_warning(result)

    runs = {run.info.run_name: run for run in training_runs(client_for(tmp_path))}
    assert set(runs) == {"ea-p2-h2-dc2-s0", "vit-p2-h2-s0", "pool-p2-h2-s0"}
    pool = runs["pool-p2-h2-s0"].data
    assert pool.params["model.attention_layer._target_"] == "pool_attention.PoolAttention"
    assert pool.params["data.loader"] == "stripes.load_stripes"
    d = 16  # one block's MultiHeadAttention: query, key, value and output projections
    assert pool.metrics["param_count_attention"] == 4 * (d * d + d)
    uri = pool.tags["eanet.model_uri"]
    assert f"logged model: {uri}" in result.stdout + result.stderr

    [report] = tmp_path.glob("multirun/*/*/report")
    assert sorted(pd.read_csv(report / "report.csv")["model"]) == ["ea", "pool", "vit"]
    comparison = pd.read_csv(report / "comparison.csv")
    assert "pool" in set(comparison["model"]) and set(comparison["baseline"]) == {"vit"}

    # A fresh Python, elsewhere, with neither the checkout nor my_plugins/ on its path.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    images = np.random.default_rng(0).uniform(0, 255, (3, 8, 8, 3)).astype(np.float32)
    np.save(elsewhere / "images.npy", images)
    loaded = run_python("-c", LOAD, uri, cwd=elsewhere,
                        env={"PYTHONPATH": None, "MLFLOW_TRACKING_URI": store_uri(tmp_path)})
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    [line] = loaded.stdout.strip().splitlines()  # predict printed no progress bar
    shape, module = line.split()
    assert shape == "(3,3)" and Path(module).parent.name == "code"


# argv: model URI. Prints the probabilities' shape and where pool_attention was imported from.
LOAD = """
import sys
import numpy as np
import mlflow
model = mlflow.pyfunc.load_model(sys.argv[1])
p = model.predict(np.load("images.npy"))
assert np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
print(str(p.shape).replace(" ", ""), sys.modules["pool_attention"].__file__)
"""
