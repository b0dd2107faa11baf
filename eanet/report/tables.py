"""Sweep results as tables: MLflow's run frame → typed runs → one row per configuration.

Pure pandas, no MLflow calls (those live in `eanet.report`). The steps:

1. `typed_runs`: the frame of `mlflow.search_runs` with its params typed (MLflow returns every
   param as a string: "4" → 4, "0.001" → 0.001, "None" → missing, "True" → True).
2. `swept_settings`: the params that vary across the runs — the sweep axes — leaving out the
   model (always the first column), `seed` (runs differing only by seed are repeats), paths and
   bookkeeping.
3. `configuration_table`: one row per (model, axes) with counts, mean/std/95% interval of the test
   accuracies over seeds, sizes and speeds. Runs that did not finish are counted, never averaged:
   `n_pruned` the tuning trials a pruner stopped (tag eanet.pruned), `n_failed` the others.
4. `model_comparison`: every model beside a baseline model (`baseline`, ViT by default: the seed
   study's EANet-vs-ViT table) wherever both exist for the same other settings.
"""
from __future__ import annotations

import math

import pandas as pd
from scipy import stats

from eanet.config import NOT_COMPUTED

MODEL = "model.name"
PRUNED = "tags.eanet.pruned"  # "true" on a run a tuning sweep's pruner stopped (eanet.sweeps.trial)
ATTENTION = "model.attention"
ATTENTION_LAYER = "model.attention_layer"  # a model's own attention layer: _target_ and arguments
FINISHED = "FINISHED"

# Params that never define a configuration: the repeat index, and those that never change what is
# computed (where files are, how runs are logged, how much is printed: eanet.config.NOT_COMPUTED).
REPEAT = "seed"

# Settings an attention type ignores: ViT has no external memory, so its dim_coefficient is
# meaningless and must neither split ViT rows nor count as a swept axis.
UNUSED_BY_ATTENTION = {"self": ("model.dim_coefficient",)}

# Final metrics of a training run (see eanet.tracking) and how the table summarises them.
ACCURACIES = ("test_top1", "test_top5")  # mean, std and 95% interval over seeds
MEANS = ("best_val_top1", "train_time_s", "throughput_img_per_s")  # mean over seeds
SIZES = ("param_count_total", "param_count_attention")  # identical across seeds


def _typed(column: pd.Series) -> pd.Series:
    """A string param column as numbers, booleans or strings; "None" becomes missing."""
    values = column.astype(object).where(column.notna() & (column != "None"), None)
    present = values.dropna()
    if present.empty:
        return values
    if present.isin(["True", "False"]).all():
        return values.map({"True": True, "False": False}).astype("boolean")
    numbers = pd.to_numeric(present, errors="coerce")
    if numbers.notna().all():
        typed = pd.to_numeric(values, errors="coerce")
        if (typed.dropna() % 1 == 0).all() and not present.str.contains(r"[.eE]").any():
            return typed.astype("Int64")
        return typed.astype(float)
    return values


def typed_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Type every `params.*` column and drop the prefix (`params.model.patch_size` → `model.patch_size`).

    Settings unused by a run's attention type (`UNUSED_BY_ATTENTION`) are set missing.
    """
    params = {c: c[len("params."):] for c in frame.columns if c.startswith("params.")}
    runs = frame.drop(columns=list(params)).copy()
    for column, name in params.items():
        runs[name] = _typed(frame[column])
    if ATTENTION in runs:
        for attention, unused in UNUSED_BY_ATTENTION.items():
            for name in unused:
                if name in runs:
                    runs.loc[runs[ATTENTION] == attention, name] = pd.NA
    return runs


def _is_setting(name: str) -> bool:
    return (name not in (REPEAT, MODEL, ATTENTION)
            and not any(name == p or name.startswith(p) for p in NOT_COMPUTED))


def swept_settings(runs: pd.DataFrame, params: list[str]) -> list[str]:
    """The params (among `params`) whose value differs between runs, in config order.

    A setting a run's attention type ignores is compared only among the runs that use it; the
    arguments of a model's own attention layer (`model.attention_layer.*`) only among the runs of
    one model, as they belong to its definition.
    """
    ignored = {name: attention for attention, names in UNUSED_BY_ATTENTION.items()
               for name in names}
    axes = []
    for name in params:
        if not _is_setting(name):
            continue
        values = runs[name]
        if name in ignored and ATTENTION in runs:
            values = values[runs[ATTENTION] != ignored[name]]
        if name.startswith(ATTENTION_LAYER):
            if (values.astype(object).groupby(runs[MODEL]).nunique(dropna=False) > 1).any():
                axes.append(name)
        elif values.astype(object).nunique(dropna=False) > 1:
            axes.append(name)
    return axes


def _ci95(std: float, n: int) -> float:
    """Half-width of the 95% t-interval of a mean of n values (missing below 2 values)."""
    if n < 2 or pd.isna(std):
        return math.nan
    return float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n))


def _summarise(group: pd.DataFrame) -> pd.Series:
    finished = group[group["status"] == FINISHED]
    pruned = int((group[PRUNED] == "true").sum()) if PRUNED in group else 0
    row = {"n": len(finished), "n_failed": len(group) - len(finished) - pruned,
           "n_pruned": pruned}
    for metric in ACCURACIES:
        values = finished.get(f"metrics.{metric}", pd.Series(dtype=float)).dropna()
        std = values.std(ddof=1) if len(values) >= 2 else math.nan
        row[f"{metric}_mean"] = values.mean() if len(values) else math.nan
        row[f"{metric}_std"] = std
        row[f"{metric}_ci95"] = _ci95(std, len(values))
    for metric in MEANS:
        values = finished.get(f"metrics.{metric}", pd.Series(dtype=float)).dropna()
        row[f"{metric}_mean"] = values.mean() if len(values) else math.nan
    for metric in SIZES:  # logged before training starts, so failed runs have them too
        values = group.get(f"metrics.{metric}", pd.Series(dtype=float)).dropna()
        row[metric] = values.max() if len(values) else math.nan
    return pd.Series(row)


def configuration_table(runs: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """One row per configuration (model, then the swept settings), repeats over seeds aggregated."""
    keys = [MODEL, *axes]
    table = (runs.groupby(keys, dropna=False, sort=True)[list(runs.columns)]
             .apply(_summarise).reset_index())
    table = table.rename(columns={MODEL: "model"})
    table[["n", "n_failed", "n_pruned"]] = table[["n", "n_failed", "n_pruned"]].astype(int)
    table[list(SIZES)] = table[list(SIZES)].round().astype("Int64")  # counts, not measurements
    return table


def _axes_used_by(model: str, axes: list[str], attention_of: pd.Series) -> list[str]:
    unused = UNUSED_BY_ATTENTION.get(attention_of.get(model), ())
    return [a for a in axes if a not in unused]


def model_comparison(runs: pd.DataFrame, table: pd.DataFrame, axes: list[str],
                     baseline: str) -> pd.DataFrame:
    """Every other model beside the `baseline` model for the same other settings.

    Δ = model − baseline (accuracy, as a fraction); ratios are model / baseline (parameters,
    images/s). A setting one side's attention ignores (ViT's dim_coefficient) is not matched on:
    it stays a column of the side that uses it (`<setting>_baseline` for the baseline's), so
    every EANet memory size is compared with the one ViT of its other settings. Empty when the
    baseline or every other model is missing.
    """
    attention_of = (runs.groupby(MODEL)[ATTENTION].first() if ATTENTION in runs
                    else pd.Series(dtype=object))
    base, others = table[table["model"] == baseline], table[table["model"] != baseline]
    if base.empty or others.empty:
        return pd.DataFrame()
    base_axes = _axes_used_by(baseline, axes, attention_of)
    values = ["model", "n", "test_top1_mean", "test_top5_mean", "param_count_total",
              "throughput_img_per_s_mean"]
    pieces = []
    for model in others["model"].unique():
        own = _axes_used_by(model, axes, attention_of)
        shared = [a for a in own if a in base_axes]
        right = base[base_axes + values].rename(
            columns={a: f"{a}_baseline" for a in base_axes if a not in shared})
        pairs = others[others["model"] == model][own + values].merge(
            right, on=shared or None, how="inner" if shared else "cross", suffixes=("", "_baseline"))
        out = pairs[own + [f"{a}_baseline" for a in base_axes if a not in shared]].copy()
        out["model"], out["baseline"] = pairs["model"], pairs["model_baseline"]
        out["n"], out["n_baseline"] = pairs["n"], pairs["n_baseline"]
        for metric, name in (("test_top1_mean", "top1"), ("test_top5_mean", "top5")):
            out[name], out[f"{name}_baseline"] = pairs[metric], pairs[f"{metric}_baseline"]
            out[f"delta_{name}"] = pairs[metric] - pairs[f"{metric}_baseline"]
        out["params"] = pairs["param_count_total"]
        out["params_baseline"] = pairs["param_count_total_baseline"]
        out["param_ratio"] = pairs["param_count_total"] / pairs["param_count_total_baseline"]
        out["speed_ratio"] = (pairs["throughput_img_per_s_mean"]
                              / pairs["throughput_img_per_s_mean_baseline"])
        pieces.append(out)
    return pd.concat(pieces, ignore_index=True)
