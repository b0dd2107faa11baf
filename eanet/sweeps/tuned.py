"""What a tuning sweep found (eanet.sweeps.tune): `<sweep dir>/tuned.csv` and the log's comparison.

One row per study: its overrides (`model=ea`), how its trials ended (`n_complete`, `n_pruned`,
`n_failed` add up to the trials that used its `n_trials`; `n_interrupted` were asked again), its
best trial, that trial's settings (`params.<setting>`: one column per setting, also where one
search-space key names several settings, so that no header holds a separator) and its run's test
accuracy.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from eanet.sweeps.study import RUN_ID_ATTR, Study, TrialOutcome

log = logging.getLogger("eanet.tune")


def setting_columns(params: dict[str, Any]) -> dict[str, Any]:
    """A trial's params as `params.<setting>` columns: a key naming several settings
    (`model.attention_dropout,model.mlp_dropout`) gives each of them the value."""
    return {f"params.{setting.strip()}": value
            for key, value in params.items() for setting in key.split(",")}


def study_row(found: Study, tracking_uri: Optional[str]) -> dict[str, Any]:
    """A study's line of tuned.csv."""
    counts = found.outcomes()
    row = {"study": found.name, "overrides": " ".join(found.own),
           "n_complete": counts[TrialOutcome.COMPLETE], "n_pruned": counts[TrialOutcome.PRUNED],
           "n_failed": counts[TrialOutcome.FAILED],
           "n_interrupted": counts[TrialOutcome.INTERRUPTED]}
    if counts[TrialOutcome.COMPLETE]:
        best = found.study.best_trial
        row.update({"best_trial": best.number, "best_val_top1": best.value,
                    **setting_columns(best.params), **run_metrics(tracking_uri, best)})
    return row


def run_metrics(tracking_uri: Optional[str], trial) -> dict[str, Any]:
    """A trial's MLflow run and its test accuracy (the trial's callback named the run)."""
    run_id = trial.user_attrs.get(RUN_ID_ATTR)
    if run_id is None:
        return {}
    from eanet.tracking.search import run_metrics as metrics_of

    metrics = metrics_of(tracking_uri, run_id)
    return {"run_id": run_id, "test_top1": metrics.get("test_top1"),
            "test_top5": metrics.get("test_top5")}


def summarise(studies: list[Study], tracking_uri: Optional[str],
              sweep_dir: Path) -> list[dict[str, Any]]:
    """Each study's row, written to tuned.csv and the log, then the comparison if there is one."""
    import pandas as pd

    rows = [study_row(found, tracking_uri) for found in studies]
    table = pd.DataFrame(rows)
    table.to_csv(sweep_dir / "tuned.csv", index=False)
    log.info("Tuned settings (%s):\n%s", sweep_dir / "tuned.csv", table.to_string(index=False))
    comparison = tuned_comparison(table)
    if comparison:
        log.info("At their tuned settings: %s", comparison)
    return rows


def tuned_comparison(table) -> Optional[str]:
    """`model=ea 0.4312 vs model=vit 0.4105 test top-1 (Δ +0.0207)` when the studies are exactly
    those two models' (the study axes: model=ea,vit)."""
    import pandas as pd

    if "test_top1" not in table or len(table) != 2:
        return None
    first, second = table.to_dict("records")
    if pd.isna(first.get("test_top1")) or pd.isna(second.get("test_top1")):
        return None
    return (f"{first['overrides']} {first['test_top1']:.4f} vs {second['overrides']} "
            f"{second['test_top1']:.4f} test top-1 "
            f"(Δ {first['test_top1'] - second['test_top1']:+.4f})")
