"""A study's record for the repository: `python -m eanet.report.record` (scripts/gpu_study.sh
calls it once the sweep and its report are done).

    python -m eanet.report.record --sweep multirun/2026-12-01/10-00-00 --study seed \\
        --out experiments/seed/2026-12-01-h200 --command "…" --wall-s 512 --gpu "NVIDIA H200"

Copies the sweep's report (report.csv, comparison.csv, differences.csv, runs.csv, report.md,
report.html, PNGs, from
`<sweep>/report/`) into `--out`, each training run's history.csv (from MLflow) into
`--out/runs/<run name>/history.csv`, and writes `record.json`: the study, the exact command, the
commit (`+uncommitted-changes` if tracked files differed from it), the Keras backend, the versions
of Python and of every distribution a run depends on (eanet.tracking.lineage.stack_versions), the GPU, the wall time (summed over the launches of a sweep
that was stopped and resumed, each listed) and every run with its status (failed runs stay in, as
failed). Nothing is trained or recomputed here.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Optional

import pandas as pd

REPORT_FILES = ("report.csv", "comparison.csv", "differences.csv", "runs.csv", "report.md",
                "report.html")


def commit_text() -> Optional[str]:
    """eanet's commit, `+uncommitted-changes` when tracked files differed from it."""
    from eanet.tracking.lineage import source_commit

    commit, dirty = source_commit()
    return commit and commit + ("+uncommitted-changes" if dirty else "")


def record_study(sweep: Path, study: str, out: Path, command: str, wall_s: float, gpu: str,
                 backend: str, tracking_uri: Optional[str] = None) -> dict:
    """Write the record described in the module docstring into `out`; return record.json's dict."""
    from eanet.tracking.lineage import stack_versions
    from eanet.tracking.search import download_run_file
    from eanet.tracking.store import use_store

    report = sweep / "report"
    runs_csv = report / "runs.csv"
    if not runs_csv.is_file():
        raise FileNotFoundError(f"{runs_csv} does not exist: the sweep's report is missing "
                                f"(python -m eanet.report sweep={sweep})")
    out.mkdir(parents=True, exist_ok=True)
    for path in [*(report / name for name in REPORT_FILES), *sorted(report.glob("*.png"))]:
        if path.is_file():
            shutil.copy2(path, out / path.name)

    use_store(tracking_uri)
    runs = []
    for row in pd.read_csv(runs_csv).to_dict("records"):
        name = str(row.get("tags.mlflow.runName") or row["run_id"])
        history = download_run_file(row["run_id"], "history.csv", out / "runs" / name)
        runs.append({"name": name, "run_id": row["run_id"], "status": row.get("status"),
                     "history": str(history.relative_to(out)) if history else None})
    # A relaunch that resumed the sweep adds its launch: the wall time is that of all of them.
    launches = [{"command": command, "wall_time_s": round(wall_s, 1)}]
    previous = out / "record.json"
    if previous.is_file():
        earlier = json.loads(previous.read_text())
        if earlier.get("sweep") == str(sweep):
            launches = earlier.get("launches", []) + launches
    record = {
        "study": study, "command": command, "commit": commit_text(),
        "backend": backend, "gpu": gpu,
        "wall_time_s": round(sum(launch["wall_time_s"] for launch in launches), 1),
        "launches": launches, "sweep": str(sweep), "versions": stack_versions(), "runs": runs,
    }
    (out / "record.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sweep", required=True, type=Path, help="the sweep's hydra.sweep.dir")
    parser.add_argument("--study", required=True, help="conf/experiment/<study>.yaml")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--command", required=True, help="the exact command that ran the study")
    parser.add_argument("--wall-s", required=True, type=float)
    parser.add_argument("--gpu", default="none", help="the GPU's name (nvidia-smi), or none")
    parser.add_argument("--backend", default="", help="the Keras backend (KERAS_BACKEND)")
    parser.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    try:
        record = record_study(args.sweep, args.study, args.out, args.command, args.wall_s,
                              args.gpu, args.backend, args.tracking_uri)
    except FileNotFoundError as error:
        print(f"eanet.report.record: {error}", file=sys.stderr)
        return 1
    failed = [r["name"] for r in record["runs"] if r["status"] != "FINISHED"]
    print(f"recorded {len(record['runs'])} runs of study {args.study} in {args.out}"
          + (f" ({len(failed)} not FINISHED: {', '.join(failed)})" if failed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
