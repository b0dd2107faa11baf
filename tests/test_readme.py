"""The commands the README and docs/ show still work.

Every line of a ```bash block in README.md or docs/*.md that runs `python -m eanet.…` (or
`.venv/bin/python -m eanet.…`, possibly after `VAR=value` assignments) is checked without running
the work itself: its module answers `--help`, and its overrides compose into a config that
validates — each job of a sweep (`a=1,2`) separately. Launcher plugins that are not installed are
left out with their `hydra.launcher.*` overrides. Lines in ```console or plain blocks (output,
deliberate errors) are not commands.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from functools import lru_cache

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from conftest import CONF_DIR, ROOT, compose_config
from eanet.validation import validate

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
README_LIMIT = 12_000  # bytes, as `wc -c` counts them (so also characters)

# Hydra apps: module → config name in conf/.
HYDRA_APPS = {"eanet.run": "config", "eanet.bench": "bench", "eanet.report": "report"}
ARGPARSE_APPS = ("eanet.bench.compare",)
# Hydra flags that take no override; `--cfg`/`-c` and `--package`/`-p` take a value.
FLAGS = {"-m", "--multirun", "--help", "-h", "--hydra-help", "--resolve", "--info", "-i"}
FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p"}
# hydra/launcher=<name> → the plugin module it needs (slurm is conf/hydra/launcher/slurm.yaml).
LAUNCHER_PLUGINS = {
    "basic": None,
    "joblib": "hydra_plugins.hydra_joblib_launcher",
    "submitit_local": "hydra_plugins.hydra_submitit_launcher",
    "submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
    "slurm": "hydra_plugins.hydra_submitit_launcher",
    "ray": "hydra_plugins.hydra_ray_launcher",
}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def bash_lines(path) -> list[tuple[int, str]]:
    """(line number, logical line) of every ```bash block in `path`, continuations joined."""
    lines, block, pending, start = [], False, "", 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            block = line.strip() == "```bash" if not block else False
            continue
        if not block:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lines.append((start, pending + line))
        pending = ""
    return lines


def eanet_commands() -> list[tuple[str, str, list[str]]]:
    """(where, module, arguments) of every eanet command in the README and docs/."""
    commands = []
    for path in [README, *DOCS]:
        for number, line in bash_lines(path):
            words = shlex.split(line, comments=True)
            while words and ENV_ASSIGNMENT.match(words[0]):
                words.pop(0)
            if (len(words) >= 3 and words[0] in ("python", ".venv/bin/python")
                    and words[1] == "-m" and words[2].startswith("eanet.")):
                commands.append((f"{path.relative_to(ROOT)}:{number}", words[2], words[3:]))
    return commands


COMMANDS = eanet_commands()
MODULES = sorted({module for _, module, _ in COMMANDS})


@lru_cache(maxsize=None)
def help_text(module: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)


def launcher_overrides_dropped(arguments: list[str]) -> list[str]:
    """The overrides, less a launcher whose plugin is not installed and that launcher's keys."""
    kept, missing = [], False
    for argument in arguments:
        if argument.startswith("hydra/launcher="):
            name = argument.split("=", 1)[1]
            assert name in LAUNCHER_PLUGINS, f"unknown launcher {name!r}: {sorted(LAUNCHER_PLUGINS)}"
            plugin = LAUNCHER_PLUGINS[name]
            if plugin is not None and importlib.util.find_spec(plugin) is None:
                missing = True
                continue
        kept.append(argument)
    if missing:
        kept = [a for a in kept if not a.lstrip("+~").startswith("hydra.launcher.")]
    return kept


def overrides_of(arguments: list[str]) -> list[str]:
    """The Hydra overrides of a command line (its flags, and their values, removed)."""
    overrides, skip = [], False
    for argument in arguments:
        if skip:
            skip = False
        elif argument in FLAGS_WITH_VALUE:
            skip = True
        elif argument not in FLAGS:
            assert not argument.startswith("-"), f"unexpected flag {argument}"
            overrides.append(argument)
    return launcher_overrides_dropped(overrides)


def jobs(overrides: list[str]) -> list[list[str]]:
    """The override list of every job a sweep over `overrides` launches (one for a single run)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def compose_app(module: str, overrides: list[str]):
    if module == "eanet.run":
        return compose_config(overrides)
    if module == "eanet.bench":
        from eanet.bench.cli import register_configs

        register_configs()  # the bench schema, under the name config.yaml's defaults use
    else:
        import eanet.report.cli  # noqa: F401 - registers the report schema
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(HYDRA_APPS[module], overrides=overrides)


def check_composes(module: str, overrides: list[str]) -> None:
    for job in jobs(overrides):
        cfg = compose_app(module, job)
        if module == "eanet.report":
            OmegaConf.to_object(cfg)  # types every key of ReportConfig
            continue
        typed = validate(cfg)
        if module == "eanet.bench":
            from eanet.bench.cli import validate_bench

            validate_bench(typed)


def test_readme_is_short_and_starts_with_the_two_commands():
    text = README.read_text()
    assert len(text.encode()) <= README_LIMIT, f"README.md is {len(text.encode())} bytes"
    before, fence, rest = text.partition("```")
    assert fence, "README.md has no code block"
    assert [line for line in before.splitlines() if line.strip()] == ["# eanet"], \
        "README.md must open with its title and then the two commands"
    first_block = rest.split("```", 1)[0]
    assert "make run" in first_block and "make test" in first_block


def test_the_docs_show_eanet_commands():
    assert {"eanet.run", "eanet.report", "eanet.bench", "eanet.bench.compare"} <= set(MODULES)
    assert set(MODULES) <= set(HYDRA_APPS) | set(ARGPARSE_APPS), MODULES


# What each Hydra app's --help opens with (conf/hydra/help/): the command, not Hydra's banner.
HELP_OPENINGS = {
    "eanet.run": "eanet.run: train EANet (external attention) and ViT (self-attention) on CIFAR-100",
    "eanet.report": "eanet.report: tables and plots of a sweep's training runs",
    "eanet.bench": "eanet.bench: how fast and how lean eanet trains",
}


@pytest.mark.parametrize("module", MODULES)
def test_module_answers_help(module):
    result = help_text(module)
    assert result.returncode == 0, result.stderr[-2000:]
    if module not in HYDRA_APPS:
        assert "usage:" in result.stdout
        return
    assert result.stdout.startswith(HELP_OPENINGS[module]), result.stdout[:300]
    assert "powered by Hydra" not in result.stdout
    assert "== Config" in result.stdout and "--hydra-help" in result.stdout  # then Hydra's part


def test_run_help_introduces_eanet_with_commands_that_work(monkeypatch):
    """The first screen names the commands that matter and where runs go; each command is valid."""
    from eanet.training import precision

    monkeypatch.setattr(precision, "_tensorflow_matmul_precision", None)
    monkeypatch.delenv(precision.TF_FPMATH_ENV, raising=False)
    header = help_text("eanet.run").stdout.split("== Config groups")[0]
    assert "mlflow.db" in header and "outputs/" in header and "multirun/" in header
    # "  python -m … <overrides>   what it does": the command ends at the first run of 3 spaces
    commands = [shlex.split(line.strip().split("   ")[0]) for line in header.splitlines()
                if line.strip().startswith("python -m eanet.")]
    assert {c[2] for c in commands} == {"eanet.run", "eanet.report", "eanet.bench"}
    assert ["python", "-m", "eanet.run", "-m", "model=ea,vit"] in commands
    for _, _, module, *arguments in commands:
        check_composes(module, overrides_of(arguments))


@pytest.mark.parametrize("where, module, arguments", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_command_line_is_valid(where, module, arguments, monkeypatch):
    # Each command starts a fresh process: forget the matmul precision that an earlier test in
    # this worker gave TensorFlow (eanet.training.precision refuses a second one in one process).
    from eanet.training import precision

    monkeypatch.setattr(precision, "_tensorflow_matmul_precision", None)
    monkeypatch.delenv(precision.TF_FPMATH_ENV, raising=False)
    if module in HYDRA_APPS:
        check_composes(module, overrides_of(arguments))
        return
    # eanet.bench.compare: its options exist, and each contender is one it can run.
    from eanet.bench.compare import split_contender

    usage = help_text(module).stdout
    options = [a.split("=", 1)[0] for a in arguments if a.startswith("--")]
    assert all(option in usage for option in options), (options, usage)
    values = {i + 1 for i, a in enumerate(arguments) if a.startswith("--") and "=" not in a
              and a not in ("--help", "-h")}
    contenders = [a for i, a in enumerate(arguments) if not a.startswith("-") and i not in values]
    for contender in contenders:
        _, name, overrides = split_contender(contender)
        assert name in ("seed", "eanet"), contender
        if name == "eanet":
            check_composes("eanet.bench", overrides)
