"""Runs as the report sees them (`eanet.report.tables.typed_runs`' frame), made up in pandas: no
MLflow store, no training. The report's statistics and pages are tested on these."""
from __future__ import annotations

from typing import Optional

import pandas as pd

from eanet.report import tables


def typed_frame(results: dict[str, dict[int, float]], *, metric: str = "test_top1",
                patch_size: int = 2, extra: Optional[dict[str, float]] = None) -> pd.DataFrame:
    """One FINISHED run per (model, seed) with `metric` = the given value; `results` maps a model
    (ea or vit) to {seed: value}. Costs are the seed models' (parameters, FLOPs per image)."""
    rows = []
    for model, by_seed in results.items():
        for seed, value in by_seed.items():
            rows.append({
                "run_id": f"{model}-{patch_size}-{seed}", "status": "FINISHED",
                "model.name": model, "model.attention": "external" if model == "ea" else "self",
                "model.patch_size": patch_size, "seed": seed,
                f"metrics.{metric}": value,
                "metrics.param_count_total": 361_380 if model == "ea" else 623_268,
                "metrics.flops_per_image": 201_732_608 if model == "ea" else 839_266_816,
                "metrics.throughput_img_per_s": 60.0 if model == "ea" else 30.0,
                **(extra or {})})
    runs = pd.DataFrame(rows)
    runs["seed"] = runs["seed"].astype("Int64")
    runs["model.patch_size"] = runs["model.patch_size"].astype("Int64")
    return runs


def report_tables(runs: pd.DataFrame, axes: list[str] = (), baseline: str = "vit"):
    """(table, comparison with intervals, differences) as `eanet.report.cli.sweep_report` builds
    them."""
    axes = list(axes)
    table = tables.configuration_table(runs, axes)
    comparison = tables.model_comparison(runs, table, axes, baseline)
    differences = tables.metric_differences(runs, comparison, axes)
    return table, tables.with_intervals(comparison, differences), differences
