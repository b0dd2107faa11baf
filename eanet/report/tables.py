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
5. `metric_differences`: for each of those pairs and each metric in `COMPARED`, Δ with its 95%
   interval (paired by seed where both sides ran the same seeds, else Welch's), the verdict and
   the seeds that would settle it (eanet.report.stats); `with_intervals` puts the accuracies'
   intervals into the comparison table.
"""
from __future__ import annotations

import math

import pandas as pd
from scipy import stats

from eanet.config import NOT_COMPUTED
from eanet.report.stats import ACCURACY, Wording, difference, verdict

MODEL = "model.name"
PRUNED = "tags.eanet.pruned"  # "true" on a run a tuning sweep's pruner stopped (eanet.sweeps.trial)
ATTENTION = "model.attention"
ATTENTION_LAYER = "model.attention_layer"  # a model's own attention layer: _target_ and arguments
FINISHED = "FINISHED"

# Params that never define a configuration: the repeat index, and those that never change what is
# computed (where files are, how runs are logged, how much is printed: eanet.config.NOT_COMPUTED).
REPEAT = "seed"

# Settings a run's model ignores are set missing, so they neither split its rows nor count as a
# swept axis: the run's tag (eanet.sweeps.identity), else, for runs recorded before it, ViT's.
IGNORED = "tags.eanet.ignored_settings"
FINGERPRINT = "tags.eanet.fingerprint"
UNUSED_BY_ATTENTION = {"self": ("model.dim_coefficient", "model.projection_dropout")}

# Final metrics of a training run (see eanet.tracking) and how the table summarises them.
ACCURACIES = ("test_top1", "test_top5")  # mean, std and 95% interval over seeds
MEANS = ("best_val_top1", "train_time_s", "throughput_img_per_s",  # mean over seeds
         "peak_rss_mb", "peak_gpu_mb")
SIZES = ("param_count_total", "param_count_attention", "flops_per_image")  # identical across seeds


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


def distinct_computations(frame: pd.DataFrame) -> pd.DataFrame:
    """One run per computation (tag eanet.fingerprint; runs without it are their own): the
    FINISHED one if any, else the newest. Two sweeps, or two jobs differing only in settings the
    model ignores, share one run; n counts what was computed, not how often it was asked for."""
    if FINGERPRINT not in frame or frame.empty:
        return frame
    order = frame.assign(_finished=frame.get("status", pd.Series(index=frame.index)) == FINISHED)
    if "start_time" in order:
        order = order.sort_values(["_finished", "start_time"], ascending=False)
    else:
        order = order.sort_values("_finished", ascending=False, kind="stable")
    keys = order[FINGERPRINT].where(order[FINGERPRINT].notna(), order.get("run_id"))
    return order[~keys.duplicated()].drop(columns="_finished").sort_index()


def typed_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """One run per computation (`distinct_computations`), every `params.*` column typed and
    its prefix dropped (`params.model.patch_size` → `model.patch_size`).

    Settings the run's model ignores (its eanet.ignored_settings tag) are set missing.
    """
    frame = distinct_computations(frame)
    params = {c: c[len("params."):] for c in frame.columns if c.startswith("params.")}
    runs = frame.drop(columns=list(params)).copy()
    for column, name in params.items():
        runs[name] = _typed(frame[column])
    for index, unused in ignored_by_run(runs).items():
        for name in unused:
            if name in runs:
                runs.at[index, name] = pd.NA
    return runs


def ignored_by_run(runs: pd.DataFrame) -> pd.Series:
    """The settings each run's model ignores: its eanet.ignored_settings tag, else (a run
    recorded before the tag) what its attention type is known to ignore."""
    def of(row) -> frozenset:
        tag = row.get(IGNORED)
        if isinstance(tag, str):
            return frozenset(name for name in tag.split(",") if name)
        return frozenset(UNUSED_BY_ATTENTION.get(row.get(ATTENTION), ()))
    return runs.apply(of, axis=1) if not runs.empty else pd.Series(dtype=object)


def _is_setting(name: str) -> bool:
    return (name not in (REPEAT, MODEL, ATTENTION)
            and not any(name == p or name.startswith(p) for p in NOT_COMPUTED))


def swept_settings(runs: pd.DataFrame, params: list[str]) -> list[str]:
    """The params (among `params`) whose value differs between runs, in config order.

    A setting a run's attention type ignores is compared only among the runs that use it; the
    arguments of a model's own attention layer (`model.attention_layer.*`) only among the runs of
    one model, as they belong to its definition.
    """
    ignored = ignored_by_run(runs)
    axes = []
    for name in params:
        if not _is_setting(name):
            continue
        values = runs[name]
        if not ignored.empty:
            values = values[~ignored.map(lambda unused: name in unused)]
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
    # A pruned run that was resumed and finished counts once, as finished (whatever its tags).
    pruned = int(((group[PRUNED] == "true") & (group["status"] != FINISHED)).sum()) \
        if PRUNED in group else 0
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


def _axes_used_by(model: str, axes: list[str], runs: pd.DataFrame) -> list[str]:
    mine = ignored_by_run(runs)[runs[MODEL] == model] if not runs.empty else []
    unused = frozenset().union(*mine) if len(mine) else frozenset()
    return [a for a in axes if a not in unused]


def model_comparison(runs: pd.DataFrame, table: pd.DataFrame, axes: list[str],
                     baseline: str) -> pd.DataFrame:
    """Every other model beside the `baseline` model for the same other settings.

    Δ = model − baseline (accuracy, as a fraction); ratios are model / baseline (parameters,
    FLOPs per image, images/s, peak memory). A setting one side's attention ignores (ViT's
    dim_coefficient) is not matched on: it stays a column of the side that uses it
    (`<setting>_baseline` for the baseline's), so every EANet memory size is compared with the
    one ViT of its other settings. Empty when the baseline or every other model is missing.
    """
    base, others = table[table["model"] == baseline], table[table["model"] != baseline]
    if base.empty or others.empty:
        return pd.DataFrame()
    base_axes = _axes_used_by(baseline, axes, runs)
    values = ["model", "n", "test_top1_mean", "test_top5_mean", "param_count_total",
              "flops_per_image", "throughput_img_per_s_mean", "peak_rss_mb_mean"]
    pieces = []
    for model in others["model"].unique():
        own = _axes_used_by(model, axes, runs)
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
        out["flops"] = pairs["flops_per_image"]
        out["flops_baseline"] = pairs["flops_per_image_baseline"]
        out["flops_ratio"] = (pairs["flops_per_image"]
                              / pairs["flops_per_image_baseline"]).astype(float)
        out["speed_ratio"] = (pairs["throughput_img_per_s_mean"]
                              / pairs["throughput_img_per_s_mean_baseline"])
        out["memory_ratio"] = pairs["peak_rss_mb_mean"] / pairs["peak_rss_mb_mean_baseline"]
        pieces.append(out)
    return pd.concat(pieces, ignore_index=True)


# ---- differences with their intervals (eanet.report.stats) ----

# The metrics compared model against baseline, and how a difference of each reads.
COMPARED: dict[str, Wording] = {
    "test_top1": ACCURACY, "test_top5": ACCURACY, "best_val_top1": ACCURACY,
    "throughput_img_per_s": Wording(1, "img/s", 1, "is faster than", "is slower than"),
    "peak_rss_mb": Wording(1, "MB", 0, "needs more memory than", "needs less memory than"),
    "peak_gpu_mb": Wording(1, "MB", 0, "needs more GPU memory than",
                           "needs less GPU memory than"),
}


def _runs_of(runs: pd.DataFrame, model: str, settings: dict) -> pd.DataFrame:
    """The finished runs of `model` at these settings (a missing value matches a missing one)."""
    mask = (runs[MODEL] == model) & (runs["status"] == FINISHED)
    for name, value in settings.items():
        mask &= runs[name].isna() if pd.isna(value) else (runs[name] == value).fillna(False)
    return runs[mask]


def _by_seed(runs: pd.DataFrame, metric: str) -> pd.Series:
    values = runs.get(f"metrics.{metric}", pd.Series(index=runs.index, dtype=float))
    if REPEAT in runs:
        values = values.set_axis(runs[REPEAT].astype(object))
    return values.dropna()


def metric_differences(runs: pd.DataFrame, comparison: pd.DataFrame, axes: list[str],
                       metrics: dict[str, Wording] = COMPARED) -> pd.DataFrame:
    """One row per comparison row and metric both sides logged: Δ = model − baseline with its
    95% interval, the method (paired by seed, or Welch's), the runs on each side, whether it is
    decisive, the seeds per model that would resolve it, and the verdict in words. The index is
    the comparison row's."""
    rows, index = [], []
    if comparison.empty:
        return pd.DataFrame()
    for label, pair in comparison.iterrows():
        model, baseline = pair["model"], pair["baseline"]
        own = _axes_used_by(model, axes, runs)
        base_axes = _axes_used_by(baseline, axes, runs)
        settings = {a: pair[a] for a in own}
        settings.update({f"{a}_baseline": pair[f"{a}_baseline"] for a in base_axes
                         if a not in own})
        model_runs = _runs_of(runs, model, {a: pair[a] for a in own})
        base_runs = _runs_of(runs, baseline, {
            a: pair[a] if a in own else pair[f"{a}_baseline"] for a in base_axes})
        for metric, wording in metrics.items():
            a, b = _by_seed(model_runs, metric), _by_seed(base_runs, metric)
            if a.empty or b.empty:
                continue
            d = difference(a, b)
            rows.append({**settings, "model": model, "baseline": baseline, "metric": metric,
                         "delta": d.delta, "low": d.low, "high": d.high, "method": d.method,
                         "n": d.n, "n_baseline": d.n_baseline, "decisive": d.decisive,
                         "seeds_needed": d.seeds_needed,
                         "verdict": verdict(d, str(model), str(baseline), wording)})
            index.append(label)
    frame = pd.DataFrame(rows, index=index)
    if not frame.empty:
        frame["seeds_needed"] = frame["seeds_needed"].astype("Int64")
    return frame


def with_intervals(comparison: pd.DataFrame, differences: pd.DataFrame) -> pd.DataFrame:
    """comparison.csv's Δ top-1 and Δ top-5 with their interval and method beside them:
    `delta_top1_low`, `delta_top1_high`, `delta_top1_method` (from `metric_differences`)."""
    if comparison.empty or differences.empty:
        return comparison
    out = comparison.copy()
    for metric, name in (("test_top1", "top1"), ("test_top5", "top5")):
        mine = differences[differences["metric"] == metric].reindex(out.index)  # by row
        position = list(out.columns).index(f"delta_{name}") + 1
        for offset, field in enumerate(("low", "high", "method")):
            out.insert(position + offset, f"delta_{name}_{field}", mine[field])
    return out
