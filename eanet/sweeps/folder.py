"""What a sweep's processes share through its folder (`hydra.sweep.dir`): the parent run's id,
which every job's run nests under (eanet.sweeps.parent), and the budget's places
(eanet.sweeps.budget). A module of its own so that the callbacks, the parent and the budget read
it without importing each other.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

PROGRESS_DIR = ".progress"  # inside the sweep folder: what the sweep's processes share
PARENT_FILE = "parent.json"
NOT_STARTED = "not started (budget"  # how a job the budget stopped begins its outcome


def progress_dir(sweep_dir: str | Path) -> Path:
    return Path(sweep_dir) / PROGRESS_DIR


def parent_run_id(sweep_dir: str | Path) -> Optional[str]:
    """The parent run of the sweep writing into `sweep_dir`, if it has one."""
    try:
        return json.loads((progress_dir(sweep_dir) / PARENT_FILE).read_text())["run_id"]
    except (OSError, ValueError, KeyError):
        return None
