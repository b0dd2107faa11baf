"""The difference between two models with its 95% interval and verdict (eanet.report.stats, and
the report tables built on it), checked against scipy.stats' own tests on made-up runs."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from eanet.report.stats import (MAX_SEEDS, NO_INTERVAL, PAIRED, POWER, WELCH, difference,
                                verdict)
from report_frames import report_tables, typed_frame

EA = pd.Series([0.231, 0.244, 0.219, 0.252], index=[0, 1, 2, 3])
VIT = pd.Series([0.205, 0.231, 0.199, 0.224], index=[0, 1, 2, 3])


def test_same_seeds_are_paired_as_scipy_ttest_rel():
    d = difference(EA, VIT.iloc[::-1])  # paired by seed, not by position
    expected = stats.ttest_rel(EA.to_numpy(), VIT.to_numpy())
    interval = expected.confidence_interval(0.95)
    assert d.method == PAIRED and (d.n, d.n_baseline) == (4, 4)
    assert d.delta == pytest.approx(float(np.mean(EA - VIT)))
    assert (d.low, d.high) == pytest.approx((interval.low, interval.high))
    assert d.decisive and d.low > 0


def test_other_seeds_are_welch_as_scipy_ttest_ind():
    vit = pd.Series([0.205, 0.231, 0.199], index=[4, 5, 6])
    d = difference(EA, vit)
    expected = stats.ttest_ind(EA.to_numpy(), vit.to_numpy(), equal_var=False)
    interval = expected.confidence_interval(0.95)
    assert d.method == WELCH and (d.n, d.n_baseline) == (4, 3)
    assert d.delta == pytest.approx(EA.mean() - vit.mean())
    assert (d.low, d.high) == pytest.approx((interval.low, interval.high))


def test_a_missing_seed_on_one_side_makes_it_welch():
    d = difference(EA, VIT.iloc[:3])
    interval = stats.ttest_ind(EA.to_numpy(), VIT.iloc[:3].to_numpy(),
                               equal_var=False).confidence_interval(0.95)
    assert d.method == WELCH and (d.low, d.high) == pytest.approx((interval.low, interval.high))


def _power_by_hand(size: float, sd: float, n: int) -> float:
    """The paired t-test's power, written out: P(|T| > t_crit) for T ~ noncentral t."""
    critical = stats.t.ppf(0.975, n - 1)
    shift = size * math.sqrt(n) / sd
    return stats.nct.sf(critical, n - 1, shift) + stats.nct.cdf(-critical, n - 1, shift)


def test_the_verdict_flips_with_the_spread():
    """The same 2 pp mean difference over 3 paired seeds: decisive when the per-seed differences
    agree, not when they scatter — and then the seeds per model that would resolve it."""
    vit = pd.Series([0.20, 0.21, 0.22], index=[0, 1, 2])
    tight = difference(vit + pd.Series([0.019, 0.020, 0.021], index=[0, 1, 2]), vit)
    line = verdict(tight, "ea", "vit")
    assert tight.decisive
    assert line == (f"ea is ahead of vit by 2.0 pp [{100 * tight.low:.1f}, "
                    f"{100 * tight.high:.1f}] (paired, n = 3)")

    loose = difference(vit + pd.Series([-0.01, 0.02, 0.05], index=[0, 1, 2]), vit)
    assert loose.delta == pytest.approx(tight.delta) and not loose.decisive
    n = loose.seeds_needed
    sd = float(np.std([-0.01, 0.02, 0.05], ddof=1))
    assert _power_by_hand(0.02, sd, n) >= POWER > _power_by_hand(0.02, sd, n - 1)
    assert verdict(loose, "ea", "vit").endswith(
        f"not decisive at 95%: with this spread about {n} seeds per model would resolve a "
        "difference this size (80% power)")

    behind = difference(vit, vit + pd.Series([0.019, 0.020, 0.021], index=[0, 1, 2]))
    assert verdict(behind, "ea", "vit").startswith("ea is behind vit by 2.0 pp [")


def test_one_seed_gives_no_interval_and_says_so():
    d = difference(EA.iloc[:1], VIT.iloc[:1])
    assert d.method == NO_INTERVAL and math.isnan(d.low) and not d.decisive
    line = verdict(d, "ea", "vit")
    assert "one seed per model" in line and "[" not in line and "decisive" not in line
    one_side = verdict(difference(EA, VIT.iloc[:1]), "ea", "vit")
    assert "one run of vit" in one_side and "(n = 4 and 1)" in one_side


def test_a_tiny_difference_in_a_wide_spread_needs_more_seeds_than_the_cap():
    vit = EA - 1e-5 + pd.Series([0.03, -0.03, 0.02, -0.02], index=EA.index)  # Δ = 0.001 pp
    d = difference(EA, vit)
    assert not d.decisive and d.seeds_needed == MAX_SEEDS + 1
    assert f"more than {MAX_SEEDS} seeds per model" in verdict(d, "ea", "vit")


def test_report_tables_carry_the_interval_and_method():
    """Paired where both models ran seeds 0-2; Welch at the patch size where ViT ran other seeds."""
    paired = typed_frame({"ea": {0: 0.40, 1: 0.42, 2: 0.44}, "vit": {0: 0.30, 1: 0.34, 2: 0.33}})
    welch = typed_frame({"ea": {0: 0.50, 1: 0.52, 2: 0.55}, "vit": {5: 0.36, 6: 0.37}},
                        patch_size=4)
    runs = pd.concat([paired, welch], ignore_index=True)
    _, comparison, differences = report_tables(runs, ["model.patch_size"])

    first = comparison[comparison["model.patch_size"] == 2].iloc[0]
    interval = stats.ttest_rel([0.40, 0.42, 0.44], [0.30, 0.34, 0.33]).confidence_interval(0.95)
    assert first["delta_top1_method"] == PAIRED
    assert (first["delta_top1_low"], first["delta_top1_high"]) == pytest.approx(interval)
    second = comparison[comparison["model.patch_size"] == 4].iloc[0]
    interval = stats.ttest_ind([0.50, 0.52, 0.55], [0.36, 0.37],
                               equal_var=False).confidence_interval(0.95)
    assert second["delta_top1_method"] == WELCH
    assert (second["delta_top1_low"], second["delta_top1_high"]) == pytest.approx(interval)
    assert second["flops_ratio"] == pytest.approx(201_732_608 / 839_266_816)

    top1 = differences[differences["metric"] == "test_top1"].set_index("model.patch_size")
    assert list(top1["method"]) == [PAIRED, WELCH] and top1["decisive"].all()
    assert top1.loc[2, "verdict"].startswith("ea is ahead of vit by 9.7 pp [")
    assert set(differences["metric"]) == {"test_top1", "throughput_img_per_s"}  # what was logged
