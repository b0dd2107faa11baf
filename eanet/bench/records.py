"""How a measurement is published: one JSON line (`BENCH {...}`), a table, a CSV file."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("eanet.bench")


def emit(record: dict[str, Any]) -> None:
    """One measurement as one JSON line, prefixed so scripts can pick it out of the log."""
    print("BENCH " + json.dumps(record), flush=True)


def print_table(records: list[dict[str, Any]], columns: list[str]) -> None:
    rows = [[_format(r.get(c)) for c in columns] for r in records]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for row in rows:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))
    sys.stdout.flush()


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def write_csv(records: list[dict[str, Any]], path: Path) -> None:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(records).to_csv(path, index=False)
    log.info("wrote %s", path)
