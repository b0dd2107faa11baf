"""report.html (eanet.report.html): one self-contained page, opened in headless Chromium (`browser`
marker) with its verdict line, tables and embedded plots. Made from runs made up in pandas, so
no store and no training; tests/test_shared_server.py opens a sweep's own in the MLflow UI."""
from __future__ import annotations

import re

import pandas as pd
import pytest

from conftest import headless_chromium
from eanet.report.files import write_files
from report_frames import report_tables, typed_frame


@pytest.fixture(scope="module")
def report_folder(tmp_path_factory):
    """A report on ea against vit over seeds 0-2 at two patch sizes (made once: tests read it)."""
    runs = pd.concat([
        typed_frame({"ea": {0: 0.40, 1: 0.42, 2: 0.44}, "vit": {0: 0.30, 1: 0.34, 2: 0.33}}),
        typed_frame({"ea": {0: 0.50, 1: 0.41, 2: 0.36}, "vit": {0: 0.38, 1: 0.45, 2: 0.40}},
                    patch_size=4),
    ], ignore_index=True)
    axes = ["model.patch_size"]
    table, comparison, differences = report_tables(runs, axes)
    out = tmp_path_factory.mktemp("html") / "report"
    write_files(out, runs, table, comparison, axes, "test_top1", "sweep multirun/made-up",
                differences=differences, sources=["sweep `multirun/made-up` (12 runs)"])
    return out, differences


def test_the_page_is_self_contained(report_folder):
    out, _ = report_folder
    page = (out / "report.html").read_text()
    plots = sorted(out.glob("*.png"))
    assert len(plots) == 3  # accuracy vs parameters, vs FLOPs, vs patch size
    assert page.count('src="data:image/png;base64,') == len(plots)
    assert not re.search(r"<script|<link|(src|href)=\"(?!data:)", page)


@pytest.mark.browser
def test_the_page_renders_in_chromium_with_its_verdict(report_folder, tmp_path):
    out, differences = report_folder
    top1 = differences[differences["metric"] == "test_top1"].set_index("model.patch_size")
    decisive, undecided = top1.loc[2, "verdict"], top1.loc[4, "verdict"]
    assert decisive.startswith("ea is ahead of vit by 9.7 pp")
    assert "not decisive at 95%" in undecided
    with headless_chromium(tmp_path) as context:
        page = context.new_page()
        fetched = []
        page.on("request", lambda request: fetched.append(request.url))
        page.goto((out / "report.html").as_uri())
        verdicts = page.locator("ul.verdicts li").all_inner_texts()
        assert verdicts == [f"test_top1 at patch_size=2: {decisive}",
                            f"test_top1 at patch_size=4: {undecided}"]
        headings = page.locator("h2").all_inner_texts()
        assert headings[:3] == ["Verdict: test_top1", "Configurations", "Models vs vit"]
        assert page.locator("table").count() == 3
        sizes = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)")
        assert len(sizes) == 3 and min(sizes) > 0  # every plot decoded
        page.screenshot(path=tmp_path / "report.png", full_page=True)
    assert all(url.startswith(("file:", "data:")) for url in fetched), fetched
