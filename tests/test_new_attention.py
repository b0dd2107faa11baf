"""A new attention is one layer and one YAML: tests/toy_attention.py's LinearAttention, named by
a conf/model YAML in a config folder of the test's own (`hydra.searchpath`), swept beside EANet
and reported against it; eanet's code and conf/ are not touched. The report compares every model
with a baseline model."""
from __future__ import annotations

import os

import pandas as pd
import pytest

from conftest import ROOT, client_for, run_eanet, training_runs
from eanet.report.tables import configuration_table, model_comparison, swept_settings, typed_runs

LINEAR_YAML = """\
# Linear attention (tests/toy_attention.py): the layer's import path and its arguments.
name: linear
attention: linear
attention_layer:
  _target_: toy_attention.LinearAttention
  embedding_dim: ${model.embedding_dim}
  num_heads: ${model.num_heads}
  dropout: ${model.attention_dropout}
patch_size: 2
embedding_dim: 64
mlp_dim: 64
num_blocks: 8
num_heads: 4
dim_coefficient: 4
attention_dropout: 0.2
projection_dropout: 0.2
mlp_dropout: 0.2
"""


def test_a_new_attention_sweeps_beside_eanet_and_is_reported(tmp_path):
    conf = tmp_path / "my_conf"
    (conf / "model").mkdir(parents=True)
    (conf / "model" / "linear.yaml").write_text(LINEAR_YAML)
    result = run_eanet(tmp_path, "-m", "model=ea,linear", f"hydra.searchpath=[file://{conf}]",
                       "hydra.callbacks.sweep_report.baseline=ea", "trainer.epochs=1",
                       "tracking.log_model=false",
                       env={"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
                            "PYTHONWARNINGS": None})  # Python's warnings shown
    assert result.returncode == 0, result.stderr[-3000:]
    # the sweep-start checks ran (Hydra turns a callback's exception into a warning and goes on)
    assert "raised" not in result.stderr, result.stderr[-3000:]

    runs = {run.info.run_name: run.data for run in training_runs(client_for(tmp_path))}
    assert set(runs) == {"ea-p2-h2-dc2-s0", "linear-p2-h2-s0"}
    linear = runs["linear-p2-h2-s0"]
    assert linear.params["model.attention_layer._target_"] == "toy_attention.LinearAttention"
    assert linear.params["model.attention_layer.embedding_dim"] == "16"  # TINY's, interpolated
    d = 16  # one block: the qkv projection (d → 3d) and the output projection (d → d)
    assert linear.metrics["param_count_attention"] == (d * 3 * d + 3 * d) + (d * d + d)

    [report] = tmp_path.glob("multirun/*/*/report")
    table = pd.read_csv(report / "report.csv")
    assert list(table["model"]) == ["ea", "linear"]  # the layer's arguments are no sweep axis
    comparison = pd.read_csv(report / "comparison.csv")
    assert list(comparison["model"]) == ["linear"] and list(comparison["baseline"]) == ["ea"]
    assert comparison["delta_top1"][0] == pytest.approx(
        linear.metrics["test_top1"] - runs["ea-p2-h2-dc2-s0"].metrics["test_top1"])
    assert "## Models vs ea" in (report / "report.md").read_text()


def _runs(rows):
    """An MLflow run frame: (model, attention, dim_coefficient, test_top1, params) per run."""
    return pd.DataFrame([{
        "status": "FINISHED", "params.model.name": model, "params.model.attention": attention,
        "params.model.dim_coefficient": str(dc), "params.seed": "0",
        "metrics.test_top1": top1, "metrics.test_top5": top1 + 0.3,
        "metrics.param_count_total": params, "metrics.throughput_img_per_s": 100.0,
    } for model, attention, dc, top1, params in rows])


@pytest.mark.parametrize("baseline", ["vit", "ea"])
def test_every_model_is_compared_with_the_baseline(baseline):
    frame = _runs([("ea", "external", 2, 0.40, 1000), ("ea", "external", 4, 0.44, 1200),
                   ("vit", "self", 4, 0.30, 2000), ("linear", "linear", 4, 0.35, 800)])
    runs = typed_runs(frame)
    params = ["model.name", "model.attention", "model.dim_coefficient", "seed"]
    axes = swept_settings(runs, params)
    assert axes == ["model.dim_coefficient"]
    comparison = model_comparison(runs, configuration_table(runs, axes), axes, baseline)
    assert set(comparison["baseline"]) == {baseline}
    top1 = {"vit": 0.30, "linear": 0.35}
    if baseline == "vit":  # the seed study's table: each EANet memory size against the one ViT
        assert list(comparison["model"]) == ["ea", "ea", "linear"]
        assert list(comparison["model.dim_coefficient"]) == [2, 4, 4]
        assert comparison["delta_top1"].tolist() == pytest.approx([0.10, 0.14, 0.05])
        assert comparison["param_ratio"].tolist() == pytest.approx([0.5, 0.6, 0.4])
    else:  # ViT ignores dim_coefficient: it meets every EANet; linear matches EANet's dc=4
        vit = comparison[comparison["model"] == "vit"].sort_values("model.dim_coefficient_baseline")
        assert list(vit["model.dim_coefficient_baseline"]) == [2, 4]
        assert vit["delta_top1"].tolist() == pytest.approx([0.30 - 0.40, 0.30 - 0.44])
        [linear] = comparison[comparison["model"] == "linear"].itertuples()
        assert linear.delta_top1 == pytest.approx(top1["linear"] - 0.44)


def test_no_comparison_without_the_baseline():
    runs = typed_runs(_runs([("ea", "external", 4, 0.4, 1000), ("linear", "linear", 4, 0.3, 800)]))
    table = configuration_table(runs, [])
    assert model_comparison(runs, table, [], "vit").empty
