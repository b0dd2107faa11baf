"""The files of a report: CSV tables, PNG plots, and one page as Markdown and as HTML.

CSV files keep raw numbers (accuracies as fractions, 95% intervals as half-widths or bounds);
the pages and the terminal show the same tables formatted for reading (accuracies in %).
`report_sections` says what the page holds, once; `markdown_page` and eanet.report.html render it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import pandas as pd

from eanet.report.tables import ACCURACIES, COMPARED, MODEL

# A page is a list of (heading, blocks); a block is a paragraph (str, `code` marked with
# backticks), a table (DataFrame, already formatted), a bullet list (list of str) or a plot (Path).
Block = Union[str, pd.DataFrame, list, Path]
Section = tuple[str, list[Block]]


def _short(name: str, names: list[str]) -> str:
    """`model.patch_size` → `patch_size` unless another column ends the same way."""
    last = name.rsplit(".", 1)[-1]
    clashes = [n for n in names if n.rsplit(".", 1)[-1] == last]
    return last if len(clashes) == 1 else name


def _percent(value: float, digits: int = 2) -> str:
    return "" if pd.isna(value) else f"{100 * value:.{digits}f}"


def _number(value: float, fmt: str) -> str:
    return "" if pd.isna(value) else format(value, fmt)


def _flops(value: float) -> str:
    """839266816 → 839.3 M; 2.1e9 → 2.10 G."""
    if pd.isna(value):
        return ""
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.{2 if value < 10 * scale else 1}f} {prefix}"
    return f"{value:.0f}"


def _setting_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if "." in c]


def _delta(value: float, low: float, high: float) -> str:
    """+10.00 [-1.95, 21.95] in percentage points; the bare Δ without an interval."""
    if pd.isna(value):
        return ""
    text = f"{100 * value:+.2f}"
    return text if pd.isna(low) else f"{text} [{100 * low:.2f}, {100 * high:.2f}]"


def display_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The configuration table or the model-vs-baseline table, formatted for reading."""
    if frame.empty:
        return frame
    shown = pd.DataFrame(index=frame.index)
    setting_columns = _setting_columns(frame)
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
    for name, label in (("top1", "Δ top-1 pp [95% CI]"), ("top5", "Δ top-5 pp [95% CI]")):
        if f"delta_{name}" in frame:
            low = frame.get(f"delta_{name}_low", pd.Series(float("nan"), index=frame.index))
            high = frame.get(f"delta_{name}_high", low)
            shown[label] = [_delta(v, lo, hi) for v, lo, hi in zip(frame[f"delta_{name}"], low,
                                                                   high)]
            if f"delta_{name}_method" in frame:
                shown[f"{label.split(' pp')[0]} method"] = frame[f"delta_{name}_method"].fillna("")
    columns = {
        "best_val_top1_mean": ("best val top-1 %", _percent),
        "param_count_total": ("params", lambda v: _number(v, ",.0f")),
        "param_count_attention": ("attention params", lambda v: _number(v, ",.0f")),
        "flops_per_image": ("FLOPs/image", _flops),
        "train_time_s_mean": ("train s", lambda v: _number(v, ".1f")),
        "throughput_img_per_s_mean": ("img/s", lambda v: _number(v, ".1f")),
        "peak_rss_mb_mean": ("peak memory MB", lambda v: _number(v, ",.0f")),
        "peak_gpu_mb_mean": ("peak GPU MB", lambda v: _number(v, ",.0f")),
        "top1": ("top-1 %", _percent), "top1_baseline": ("baseline top-1 %", _percent),
        "top5": ("top-5 %", _percent), "top5_baseline": ("baseline top-5 %", _percent),
        "params": ("params", lambda v: _number(v, ",.0f")),
        "params_baseline": ("baseline params", lambda v: _number(v, ",.0f")),
        "param_ratio": ("param ratio", lambda v: _number(v, ".3f")),
        "flops_ratio": ("FLOPs ratio", lambda v: _number(v, ".3f")),
        "speed_ratio": ("speed ratio", lambda v: _number(v, ".2f")),
        "memory_ratio": ("memory ratio", lambda v: _number(v, ".2f")),
    }
    for column, (label, fmt) in columns.items():
        if column in frame:
            shown[label] = frame[column].map(fmt)
    empty = [c for c in shown.columns if (shown[c].astype(str) == "").all()]
    return shown.drop(columns=empty)  # what no run logged (top-5, GPU memory …): no column


def display_differences(differences: pd.DataFrame) -> pd.DataFrame:
    """differences.csv for reading: each Δ [95% CI] in its metric's unit, method, runs, seeds."""
    if differences.empty:
        return differences
    settings = _setting_columns(differences)
    shown = pd.DataFrame({_short(c, settings): differences[c].astype(object).where(
        differences[c].notna(), "") for c in settings}, index=differences.index)
    shown["model"], shown["baseline"] = differences["model"], differences["baseline"]
    shown["metric"] = differences["metric"]
    cells = []
    for row in differences.itertuples():
        w = COMPARED[row.metric]
        cell = f"{w.amount(row.delta, sign=True)}"
        cells.append(cell if pd.isna(row.low) else f"{cell} {w.interval(row.low, row.high)}")
    shown["Δ [95% CI]"] = cells
    shown["method"] = differences["method"]
    shown["n"] = [f"{a}" if m == "paired" else f"{a} / {b}" for a, b, m in
                  zip(differences["n"], differences["n_baseline"], differences["method"])]
    shown["decisive"] = ["" if m == "none" else "yes" if d else "no"
                         for d, m in zip(differences["decisive"], differences["method"])]
    shown["seeds/model for 80% power"] = differences["seeds_needed"].map(
        lambda v: "" if pd.isna(v) else f"{v}")
    return shown


def verdict_lines(differences: pd.DataFrame, metric: str) -> list[str]:
    """The verdicts on `metric`, one per comparison, each prefixed with the settings it is at."""
    if differences.empty:
        return []
    settings = _setting_columns(differences)
    lines = []
    for _, row in differences[differences["metric"] == metric].iterrows():
        where = ", ".join(f"{_short(c, settings)}={row[c]}" for c in settings if pd.notna(row[c]))
        lines.append(f"{metric}" + (f" at {where}" if where else "") + f": {row['verdict']}")
    return lines


def markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def report_sections(runs: pd.DataFrame, table: pd.DataFrame, comparison: pd.DataFrame,
                    differences: pd.DataFrame, axes: list[str], metric: str,
                    plots: list[Path], selection: Optional[str],
                    sources: Optional[list[str]] = None) -> list[Section]:
    """What the report page says, in order: what was read, the verdicts, the tables, the plots."""
    finished = int((runs["status"] == "FINISHED").sum())
    pruned = int(table["n_pruned"].sum()) if "n_pruned" in table else 0
    about = [f"{len(runs)} training runs ({finished} finished, "
             + (f"{pruned} pruned by a tuning sweep: counted in `n_pruned`, " if pruned else "")
             + f"{len(runs) - finished - pruned} failed or unfinished: counted in `n_failed`; "
             "neither is averaged). Swept settings: "
             f"{', '.join(f'`{a}`' for a in axes) or 'none (model only)'}; repeats over `seed` "
             "are aggregated (mean ± sample std; 95% t-interval half-width where n ≥ 2)."]
    if sources:
        about.append("Read: " + "; ".join(sources) + ".")
    if selection:
        about.append(f"Filter: `{selection}`")
    sections: list[Section] = [("", about)]
    if not comparison.empty:
        baseline = comparison["baseline"].iloc[0]
        verdicts = verdict_lines(differences, metric)
        sections.append((f"Verdict: {metric}", [verdicts] if verdicts else [
            f"No run logged `{metric}` on both sides of a comparison."]))
    sections.append(("Configurations", [display_table(table)]))
    if not comparison.empty:
        sections.append((f"Models vs {baseline}", [
            f"Δ = model − {baseline} in percentage points with its 95% interval: paired by seed "
            "where both sides ran the same seeds (t-interval on the per-seed differences), "
            "Welch's otherwise; ratios are model / "
            f"{baseline} (parameters; forward FLOPs per image; training images per second; "
            "peak resident memory).", display_table(comparison)]))
    if not differences.empty:
        sections.append(("Every metric", [
            "Δ = model − baseline with its 95% interval; decisive when the interval excludes 0; "
            "the seeds per model a two-sided t-test at 5% needs for 80% power to detect a "
            "true difference of this size at this spread.", display_differences(differences)]))
    sections.append(("Plots", list(plots)))
    return sections


def markdown_page(title: str, sections: list[Section]) -> str:
    lines = [f"# Report: {title}"]
    for heading, blocks in sections:
        if heading:
            lines += ["", f"## {heading}"]
        for block in blocks:
            if isinstance(block, pd.DataFrame):
                lines += ["", markdown_table(block)]
            elif isinstance(block, list):
                lines += [""] + [f"- {item}" for item in block]
            elif isinstance(block, Path):
                lines += ["", f"![{block.stem}]({block.name})"]
            else:
                lines += ["", block]
    return "\n".join(lines) + "\n"


# ---- plots ----

def _plot_accuracy_vs_parameters(runs: pd.DataFrame, metric: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    finished = runs[runs["status"] == "FINISHED"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for model, group in finished.groupby(MODEL):
        ax.scatter(group.get("metrics.param_count_total"), 100 * group[f"metrics.{metric}"],
                   label=model, alpha=0.8)
    ax.set(xlabel="parameters", ylabel=f"{metric} (%)", title=f"{metric} vs parameters (each run)")
    return _save(fig, ax, path)


def _plot_accuracy_vs_flops(table: pd.DataFrame, axes: list[str], metric: str,
                            path: Path) -> Optional[Path]:
    """One point per configuration: mean over seeds, error bar its 95% interval (none at n = 1);
    None when no run logged its FLOPs."""
    import matplotlib.pyplot as plt

    mean, ci = f"{metric}_mean", f"{metric}_ci95"
    if ("flops_per_image" not in table or mean not in table
            or table["flops_per_image"].isna().all()):
        return None
    rows = table.dropna(subset=["flops_per_image", mean])
    fig, ax = plt.subplots(figsize=(6, 4))
    for model, group in rows.groupby("model"):
        error = 100 * group[ci].fillna(0) if ci in group else None
        x = group["flops_per_image"].astype(float) / 1e9
        ax.errorbar(x, 100 * group[mean], yerr=error, fmt="o", capsize=4, label=model)
        for (_, row), xi in zip(group.iterrows(), x):
            label = ", ".join(f"{_short(a, axes)}={row[a]}" for a in axes if pd.notna(row[a]))
            if label:
                ax.annotate(label, (xi, 100 * row[mean]), fontsize=7, xytext=(4, 4),
                            textcoords="offset points")
    if rows["flops_per_image"].max() > 10 * rows["flops_per_image"].min():
        ax.set_xscale("log")  # e.g. patch sizes 2 to 8: 16× the patches
    ax.set(xlabel="forward GFLOPs per image", ylabel=f"{metric} (%)",
           title=f"{metric} vs FLOPs (mean over seeds, 95% interval)")
    ax.title.set_fontsize(9)
    return _save(fig, ax, path)


def _save(fig, ax, path: Path) -> Path:
    """The finish every plot shares: grid, model legend, tight layout, PNG."""
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
                axes: list[str], metric: str, title: str, selection: Optional[str] = None,
                differences: Optional[pd.DataFrame] = None,
                sources: Optional[list[str]] = None) -> list[Path]:
    """report.csv, comparison.csv and differences.csv (when the baseline and another model
    exist), runs.csv, the plots, report.md and report.html (the same page, self-contained)."""
    import matplotlib

    from eanet.report.html import html_page

    matplotlib.use("Agg")
    differences = pd.DataFrame() if differences is None else differences
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "report.csv"]
    table.to_csv(files[0], index=False)
    if not comparison.empty:
        comparison.to_csv(out / "comparison.csv", index=False)
        files.append(out / "comparison.csv")
    if not differences.empty:
        differences.to_csv(out / "differences.csv", index=False)
        files.append(out / "differences.csv")
    keep = ["run_id", "tags.mlflow.runName", "tags.eanet.sweep_id", "status", MODEL, *axes,
            "seed", *[c for c in runs.columns if c.startswith("metrics.")]]
    runs[[c for c in keep if c in runs]].to_csv(out / "runs.csv", index=False)
    files.append(out / "runs.csv")

    plots = [_plot_accuracy_vs_parameters(runs, metric, out / "accuracy_vs_parameters.png")]
    flops = _plot_accuracy_vs_flops(table, axes, metric, out / "accuracy_vs_flops.png")
    plots += [flops] if flops else []
    for axis in axes:
        name = axis.replace(".", "_")
        plots.append(_plot_accuracy_vs_setting(runs, axis, [a for a in axes if a != axis], metric,
                                               out / f"accuracy_vs_{name}.png"))
    sections = report_sections(runs, table, comparison, differences, axes, metric, plots,
                                selection, sources)
    (out / "report.md").write_text(markdown_page(title, sections))
    (out / "report.html").write_text(html_page(title, sections))
    return files + plots + [out / "report.md", out / "report.html"]
