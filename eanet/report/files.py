"""The files of a sweep report: CSV tables, a Markdown page and PNG plots.

CSV files keep raw numbers (accuracies as fractions, 95% intervals as half-widths); the Markdown
page and the terminal show the same tables formatted for reading (accuracies in %).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd

from eanet.report.tables import ACCURACIES, MODEL


def _short(name: str, names: list[str]) -> str:
    """`model.patch_size` → `patch_size` unless another column ends the same way."""
    last = name.rsplit(".", 1)[-1]
    clashes = [n for n in names if n.rsplit(".", 1)[-1] == last]
    return last if len(clashes) == 1 else name


def _percent(value: float, digits: int = 2) -> str:
    return "" if pd.isna(value) else f"{100 * value:.{digits}f}"


def _number(value: float, fmt: str) -> str:
    return "" if pd.isna(value) else format(value, fmt)


def display_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The configuration table or the model-vs-baseline table, formatted for reading."""
    if frame.empty:
        return frame
    shown = pd.DataFrame(index=frame.index)
    setting_columns = [c for c in frame.columns if "." in c]
    for column in frame.columns:
        if column in setting_columns or column in ("model", "baseline"):
            shown[_short(column, setting_columns)] = frame[column].astype(object).where(
                frame[column].notna(), "")
        elif column in ("n", "n_failed", "n_baseline") or (column == "n_pruned"
                                                            and frame[column].any()):
            shown[column] = frame[column]
    for metric, label in zip(ACCURACIES, ("top-1 %", "top-5 %")):
        if f"{metric}_mean" in frame:
            mean, std = frame[f"{metric}_mean"], frame[f"{metric}_std"]
            shown[label] = [_percent(m) + ("" if pd.isna(s) else f" ± {_percent(s)}")
                            for m, s in zip(mean, std)]
            shown[f"{label} 95% CI ±"] = frame[f"{metric}_ci95"].map(_percent)
    columns = {
        "best_val_top1_mean": ("best val top-1 %", _percent),
        "param_count_total": ("params", lambda v: _number(v, ",.0f")),
        "param_count_attention": ("attention params", lambda v: _number(v, ",.0f")),
        "train_time_s_mean": ("train s", lambda v: _number(v, ".1f")),
        "throughput_img_per_s_mean": ("img/s", lambda v: _number(v, ".1f")),
        "top1": ("top-1 %", _percent), "top1_baseline": ("baseline top-1 %", _percent),
        "delta_top1": ("Δ top-1 pp", _percent),
        "top5": ("top-5 %", _percent), "top5_baseline": ("baseline top-5 %", _percent),
        "delta_top5": ("Δ top-5 pp", _percent),
        "params": ("params", lambda v: _number(v, ",.0f")),
        "params_baseline": ("baseline params", lambda v: _number(v, ",.0f")),
        "param_ratio": ("param ratio", lambda v: _number(v, ".3f")),
        "speed_ratio": ("speed ratio", lambda v: _number(v, ".2f")),
    }
    for column, (label, fmt) in columns.items():
        if column in frame:
            shown[label] = frame[column].map(fmt)
    return shown


def markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _markdown(title: str, runs: pd.DataFrame, table: pd.DataFrame, comparison: pd.DataFrame,
              axes: list[str], plots: list[Path], selection: Optional[str]) -> str:
    finished = int((runs["status"] == "FINISHED").sum())
    pruned = int(table["n_pruned"].sum()) if "n_pruned" in table else 0
    lines = [f"# Report: {title}", "",
             f"{len(runs)} training runs ({finished} finished, "
             + (f"{pruned} pruned by a tuning sweep: counted in `n_pruned`, " if pruned else "")
             + f"{len(runs) - finished - pruned} failed or unfinished: counted in `n_failed`; "
             "neither is averaged). Swept settings: "
             f"{', '.join(f'`{a}`' for a in axes) or 'none (model only)'}; repeats over `seed` "
             "are aggregated (mean ± sample std; 95% t-interval half-width where n ≥ 2)."]
    if selection:
        lines += ["", f"Filter: `{selection}`"]
    lines += ["", "## Configurations", "", markdown_table(display_table(table))]
    if not comparison.empty:
        baseline = comparison["baseline"].iloc[0]
        lines += ["", f"## Models vs {baseline}", "",
                  f"Δ = model − {baseline} in percentage points; ratios are model / {baseline} "
                  "(parameters; training images per second).", "",
                  markdown_table(display_table(comparison))]
    lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def _plot_accuracy_vs_parameters(runs: pd.DataFrame, metric: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    finished = runs[runs["status"] == "FINISHED"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for model, group in finished.groupby(MODEL):
        ax.scatter(group.get("metrics.param_count_total"), 100 * group[f"metrics.{metric}"],
                   label=model, alpha=0.8)
    ax.set(xlabel="parameters", ylabel=f"{metric} (%)", title=f"{metric} vs parameters (each run)")
    return _save(fig, ax, path)


def _save(fig, ax, path: Path) -> Path:
    """The finish both plots share: grid, model legend, tight layout, PNG."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend(title="model")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_accuracy_vs_setting(runs: pd.DataFrame, axis: str, others: list[str], metric: str,
                              path: Path) -> Path:
    """Mean ± std over runs at each value of `axis`, one line per model."""
    import matplotlib.pyplot as plt

    finished = runs[runs["status"] == "FINISHED"].dropna(subset=[f"metrics.{metric}"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for model, group in finished.groupby(MODEL):
        stats = (group.dropna(subset=[axis]).groupby(axis)[f"metrics.{metric}"]
                 .agg(["mean", "std"]).reset_index())
        if stats.empty:
            continue  # the model ignores this setting (ViT and dim_coefficient)
        x = stats[axis].astype(float) if pd.api.types.is_numeric_dtype(stats[axis]) \
            else stats[axis].astype(str)
        ax.errorbar(x, 100 * stats["mean"], yerr=100 * stats["std"].fillna(0), marker="o",
                    capsize=4, label=model)
    if pd.api.types.is_numeric_dtype(finished[axis]):
        ax.set_xticks(sorted(finished[axis].dropna().astype(float).unique()))
    note = " (mean over seeds and other settings)" if others else " (mean ± std over seeds)"
    ax.set(xlabel=axis, ylabel=f"{metric} (%)", title=f"{metric} vs {axis}{note}")
    ax.title.set_fontsize(9)
    return _save(fig, ax, path)


def write_files(out: Path, runs: pd.DataFrame, table: pd.DataFrame, comparison: pd.DataFrame,
                axes: list[str], metric: str, title: str,
                selection: Optional[str] = None) -> list[Path]:
    """report.csv, comparison.csv (when the baseline and another model exist), runs.csv, the plots
    and report.md."""
    import matplotlib

    matplotlib.use("Agg")
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "report.csv"]
    table.to_csv(files[0], index=False)
    if not comparison.empty:
        comparison.to_csv(out / "comparison.csv", index=False)
        files.append(out / "comparison.csv")
    keep = ["run_id", "tags.mlflow.runName", "status", MODEL, *axes, "seed",
            *[c for c in runs.columns if c.startswith("metrics.")]]
    runs[[c for c in keep if c in runs]].to_csv(out / "runs.csv", index=False)
    files.append(out / "runs.csv")

    plots = [_plot_accuracy_vs_parameters(runs, metric, out / "accuracy_vs_parameters.png")]
    for axis in axes:
        name = axis.replace(".", "_")
        plots.append(_plot_accuracy_vs_setting(runs, axis, [a for a in axes if a != axis], metric,
                                               out / f"accuracy_vs_{name}.png"))
    (out / "report.md").write_text(_markdown(title, runs, table, comparison, axes, plots,
                                             selection))
    return files + plots + [out / "report.md"]

