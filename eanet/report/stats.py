"""The difference between two models on one metric, with its 95% interval and a verdict.

Each side is a configuration's finished runs, one value per seed. When both sides ran the same
seeds (each once, at least two), the seed pairs them: the same data split, initial weights and
augmentation stream, so the per-seed differences d_i = model_i − baseline_i carry less noise
than either side, and the interval is the t-interval of their mean (`scipy.stats.ttest_rel`'s).
Otherwise the runs are independent samples and the interval is Welch's (unequal variances,
Welch–Satterthwaite degrees of freedom: `ttest_ind(equal_var=False)`'s). tests/test_stats.py
checks both against scipy.stats.

A difference is decisive at 95% when its interval excludes 0. When it is not, `seeds_needed` is
how many seeds per model a two-sided t-test at 5% would need to detect a true difference of
the observed size with 80% power, at the observed spread: "about N seeds per model would resolve
a difference this size". With one run on a side there is no spread, so no interval either.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
POWER = 0.80  # of the seeds_needed estimate
MAX_SEEDS = 1000  # seeds_needed beyond this is reported as "more than"

PAIRED, WELCH, NO_INTERVAL = "paired", "Welch", "none"  # Difference.method


@dataclass(frozen=True)
class Difference:
    """model − baseline of one metric over seeds (the metric's own units)."""
    delta: float  # mean difference (= difference of the means)
    low: float  # 95% interval; NaN without one (a side with one run)
    high: float
    method: str  # PAIRED (t-interval on per-seed differences), WELCH, or NO_INTERVAL (one run)
    n: int  # runs of the model (pairs when paired)
    n_baseline: int
    # std of a paired difference; Welch: of the difference between one model and one baseline run
    spread: float
    seeds_needed: Optional[int]  # per model, for 80% power at this size and spread; None: unknown

    @property
    def has_interval(self) -> bool:
        return not math.isnan(self.low)

    @property
    def decisive(self) -> bool:
        return self.has_interval and (self.low > 0 or self.high < 0)


def _paired(model: pd.Series, baseline: pd.Series) -> bool:
    """Both sides ran the same seeds, each once, at least two of them."""
    return (model.index.is_unique and baseline.index.is_unique and len(model) >= 2
            and set(model.index) == set(baseline.index))


def difference(model: pd.Series, baseline: pd.Series, confidence: float = CONFIDENCE) -> Difference:
    """model − baseline, each a metric's values indexed by seed (NaN values are dropped)."""
    model, baseline = model.dropna().astype(float), baseline.dropna().astype(float)
    if model.empty or baseline.empty:
        raise ValueError(f"Expected at least one value on each side. Received: "
                         f"{len(model)} model values, {len(baseline)} baseline values")
    quantile = (1 + confidence) / 2
    if _paired(model, baseline):
        d = model - baseline.reindex(model.index)
        n, mean, sd = len(d), float(d.mean()), float(d.std(ddof=1))
        half = stats.t.ppf(quantile, n - 1) * sd / math.sqrt(n)
        return Difference(mean, float(mean - half), float(mean + half), PAIRED, n, n, sd,
                          _seeds_needed(abs(mean), sd, sd))
    delta = float(model.mean() - baseline.mean())
    n_a, n_b = len(model), len(baseline)
    if n_a < 2 or n_b < 2:
        return Difference(delta, math.nan, math.nan, NO_INTERVAL, n_a, n_b, math.nan, None)
    var_a, var_b = float(model.var(ddof=1)), float(baseline.var(ddof=1))
    se = math.sqrt(var_a / n_a + var_b / n_b)
    df = _welch_df(var_a, n_a, var_b, n_b)
    half = stats.t.ppf(quantile, df) * se if se > 0 else 0.0
    return Difference(delta, float(delta - half), float(delta + half), WELCH, n_a, n_b,
                      math.sqrt(var_a + var_b), _seeds_needed(abs(delta), math.sqrt(var_a),
                                                              math.sqrt(var_b), paired=False))


def _welch_df(var_a: float, n_a: int, var_b: float, n_b: int) -> float:
    a, b = var_a / n_a, var_b / n_b
    if a + b == 0:
        return math.inf
    return (a + b) ** 2 / (a ** 2 / (n_a - 1) + b ** 2 / (n_b - 1))


def power(size: float, sd_a: float, sd_b: float, n: int, paired: bool = True,
          alpha: float = 1 - CONFIDENCE) -> float:
    """Power of the two-sided t-test at level alpha to detect a true difference `size` with n
    seeds per model: paired, sd_a is the per-seed differences' std; else Welch's with the two
    sides' stds."""
    if paired:
        df, se = n - 1, sd_a / math.sqrt(n)
    else:
        df, se = _welch_df(sd_a ** 2, n, sd_b ** 2, n), math.sqrt((sd_a ** 2 + sd_b ** 2) / n)
    critical = stats.t.ppf(1 - alpha / 2, df)
    noncentrality = size / se
    return float(stats.nct.sf(critical, df, noncentrality) + stats.nct.cdf(-critical, df,
                                                                           noncentrality))


def _seeds_needed(size: float, sd_a: float, sd_b: float, paired: bool = True) -> Optional[int]:
    """Fewest seeds per model with POWER at this size and spread; MAX_SEEDS + 1 when more are
    needed; None for a zero difference (no number of seeds resolves it) or zero spread (every
    interval is a point)."""
    if size == 0 or (sd_a == 0 and sd_b == 0):
        return None
    low, high = 2, 2
    while power(size, sd_a, sd_b, high, paired) < POWER:  # power grows with n: double, then bisect
        if high > MAX_SEEDS:
            return MAX_SEEDS + 1
        low, high = high, high * 2
    while low < high:
        middle = (low + high) // 2
        if power(size, sd_a, sd_b, middle, paired) >= POWER:
            high = middle
        else:
            low = middle + 1
    return high


# ---- the verdict, in words ----

@dataclass(frozen=True)
class Wording:
    """How a metric's difference reads: its unit after scaling, and the comparison both ways."""
    scale: float = 100.0  # accuracies are fractions: percentage points
    unit: str = "pp"
    digits: int = 1
    more: str = "is ahead of"
    less: str = "is behind"

    def amount(self, value: float, sign: bool = False) -> str:
        return f"{value * self.scale:{'+' if sign else ''}.{self.digits}f} {self.unit}"

    def interval(self, low: float, high: float) -> str:
        return f"[{low * self.scale:.{self.digits}f}, {high * self.scale:.{self.digits}f}]"


ACCURACY = Wording()


def verdict(d: Difference, model: str, baseline: str, wording: Wording = ACCURACY) -> str:
    """One line: "ea is ahead of vit by 2.1 pp [0.8, 3.4] (paired, n = 3)", or why it is not
    decisive and about how many seeds per model would make it so."""
    sample = (f"n = {d.n}" if d.method == PAIRED or d.n == d.n_baseline
              else f"n = {d.n} and {d.n_baseline}")
    if not d.has_interval:
        single = ("one seed per model" if max(d.n, d.n_baseline) < 2 else
                  f"one run of {model if d.n < 2 else baseline}")
        return (f"{model} − {baseline} = {wording.amount(d.delta, sign=True)} ({sample}): "
                f"{single}, so no interval and no verdict; a second seed gives one")
    if d.decisive:
        words = wording.more if d.delta > 0 else wording.less
        low, high = sorted((abs(d.low), abs(d.high)))  # the gap in the direction stated
        return (f"{model} {words} {baseline} by {wording.amount(abs(d.delta))} "
                f"{wording.interval(low, high)} ({d.method}, {sample})")
    line = (f"{model} − {baseline} = {wording.amount(d.delta, sign=True)} "
            f"{wording.interval(d.low, d.high)} ({d.method}, {sample}): "
            f"not decisive at {CONFIDENCE:.0%}")
    if d.seeds_needed is None:
        return line + (": the means are equal" if d.delta == 0 else "")
    about = (f"more than {MAX_SEEDS}" if d.seeds_needed > MAX_SEEDS
             else f"about {d.seeds_needed}")
    return (line + f": with this spread {about} seeds per model would resolve a difference "
            f"this size ({POWER:.0%} power)")
