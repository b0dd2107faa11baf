"""The repository speaks of itself only: what it ships (code, configs, scripts, docs, tests) names
no machine-lending service, transfer pieces, session time or tools of the place it was built in.
Records under experiments/ say where they were measured, and may."""
from __future__ import annotations

import re
import subprocess

from conftest import ROOT

# Wording of a place's logistics, not of this project (the words are split so that this file
# does not match itself).
PLACE_WORDING = re.compile("|".join([
    r"\blent\b",
    r"\.carry\d*\b", r"\bcarry=\[", r"\bcarr(y|ied) (limit|call|piece|wheel)s?",
    "device" + r"\s+(tool|minutes|time\b|budget)", "session" + r"'?s?\s+(minutes|time|budget)",
    r"\bwork" + r"place\b", "gpu_" + "session", "prepare_gpu_" + "carry", "rehearse_gpu_",
    "find_" + "python312", "gpu-image-" + "packages",
]), re.IGNORECASE)


def shipped_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.split()
    return [p for p in listed
            if not p.startswith("experiments/") and (ROOT / p).is_file()
            and p != "tests/test_repository_text.py"]


def test_the_place_wording_is_recognised():
    for text in ("run it on a lent machine", "stage .carry1", "run(carry=[\".carry2\"])", "the device tool copies it",
                 "15 device minutes", "bash scripts/gpu_" + "session.sh", "the carried pieces"):
        assert PLACE_WORDING.search(text), text
    for text in ("keras.backend.clear_session()", "const uint64_t carry = sum < low;",
                 "a .keras file carrying a lambda", "excellent", "silently"):
        assert not PLACE_WORDING.search(text), text


def test_nothing_outside_experiments_names_the_place_it_was_built_in():
    found = []
    for path in shipped_files():
        try:
            text = (ROOT / path).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary: images, data
        for number, line in enumerate(text.splitlines(), 1):
            if PLACE_WORDING.search(line):
                found.append(f"{path}:{number}: {line.strip()}")
    assert len(shipped_files()) > 100  # the listing saw the tree
    assert not found, "\n".join(found)
