"""`python -m eanet.bench` and `python -m eanet.bench.compare` run and report sane measurements.

Benchmarks are not tests: these only check, on a tiny config, that every mode runs end to end
and that what it reports is well-formed and plausible (positive times, consistent images/s, the
model's own parameter count, files written).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import ROOT, TINY, run_module, run_python
from eanet.bench.scaling import fit_exponents

TINY_EA_PARAMS = 2_356  # PatchEmbedding 272 + block 1,944 + head 68 + norms and biases


def records(stdout: str, prefix: str = "BENCH ") -> list[dict]:
    return [json.loads(line[len(prefix):]) for line in stdout.splitlines()
            if line.startswith(prefix)]


def test_bench_all_modes_on_a_tiny_config(tmp_path):
    out = tmp_path / "results"
    result = run_module(
        "eanet.bench", *TINY, "trainer.epochs=1", "bench.mode=all", "bench.steps=2", "bench.warmup=1", f"bench.out={out}",
        "bench.scaling.image_sizes=[8,16]", "bench.scaling.models=[ea]",
        "bench.scaling.steps=2", "bench.scaling.warmup=1", "tracking.log_model=false",
        f"hydra.run.dir={tmp_path / 'hydra'}", cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    by_kind = {}
    for record in records(result.stdout):
        by_kind.setdefault(record["measurement"], []).append(record)

    (throughput,) = by_kind["throughput"]
    assert throughput["model"] == "ea" and throughput["batch"] == 16
    assert throughput["trainable_params"] == TINY_EA_PARAMS
    assert throughput["median_step_s"] > 0 and throughput["steps_timed"] == 2
    assert throughput["img_per_s"] == pytest.approx(16 / throughput["median_step_s"], rel=0.01)
    assert throughput["peak_rss_mb"] > 100  # TensorFlow alone is a few hundred MB

    (overhead,) = by_kind["overhead"]
    for phase in ("startup_s", "data_s", "model_s", "tracking_s", "fit_s", "evaluate_s"):
        assert overhead[phase] > 0, phase
    assert 0 < overhead["overhead_fraction"] < 1
    assert overhead["total_s"] > overhead["fit_s"] + overhead["evaluate_s"]
    assert overhead["startup_s"] < overhead["first_step_age_s"] < overhead["total_s"]
    assert 0 < overhead["import_s"] < overhead["startup_s"] and overhead["data_load_s"] > 0
    assert overhead["startup_s"] < overhead["fit_start_age_s"] < overhead["first_step_age_s"]
    assert overhead["first_step_s"] > 0
    assert overhead["pipeline_step_s"] > 0 and overhead["cached_step_s"] > 0
    assert not (tmp_path / "mlflow.db").exists()  # measured in a temporary store, not the cwd's

    points = by_kind["scaling"]
    assert [p["num_patches"] for p in points] == [16, 64]
    assert all(p["train_ms_per_image"] > 0 and p["forward_ms_per_image"] > 0 for p in points)
    assert all(p["model"] == "ea" and p["attention"] == "external" for p in points)
    assert any(f["model"] == "ea" for f in by_kind["scaling_fit"])
    for name in ("throughput.csv", "overhead.csv", "scaling.csv", "scaling_exponents.csv",
                 "scaling.png"):
        assert (out / name).stat().st_size > 0, name


def test_unknown_bench_mode_fails_before_any_work(tmp_path):
    result = run_module("eanet.bench", "bench.mode=fastest",
                        f"hydra.run.dir={tmp_path / 'hydra'}", cwd=tmp_path)
    assert result.returncode != 0
    assert "bench.mode='fastest'" in result.stderr
    assert "Valid values: all, overhead, profile, scaling, throughput" in result.stderr


def test_fit_exponents_recover_linear_and_quadratic_growth():
    points = []
    for n in (64, 256, 1024):
        for model, attention, power in (("ea", "external", 1), ("vit", "self", 2)):
            value = 3e-3 * n ** power
            points.append({"model": model, "attention": attention, "num_patches": n, "forward_ms_per_image": value,
                           "train_ms_per_image": 2 * value, "train_peak_mb_per_image": value})
    fits = {(f["model"], f["quantity"]): f for f in fit_exponents(points)}
    assert fits[("ea", "train_ms_per_image")]["exponent"] == pytest.approx(1.0, abs=1e-6)
    assert fits[("vit", "forward_ms_per_image")]["exponent"] == pytest.approx(2.0, abs=1e-6)
    assert fits[("vit", "train_peak_mb_per_image")]["exponent_last_two"] == \
        pytest.approx(2.0, abs=1e-6)
    assert np.isfinite([f["exponent"] for f in fits.values()]).all()


SEED_BENCH = ROOT.parent / "shared" / "bench" / "seed_throughput.py"


@pytest.mark.skipif(not SEED_BENCH.is_file(), reason=f"no seed benchmark at {SEED_BENCH}")
def test_compare_with_the_seed_prints_ratios(tmp_path):
    result = run_module("eanet.bench.compare", "--batch", "4", "--steps", "2", "--warmup", "1",
                        "--rounds", "1", "--image-size", "8", cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    seed, eanet = records(result.stdout, "COMPARE ")
    assert seed["contender"] == "seed" and eanet["contender"] == "eanet"
    assert seed["throughput_ratio"] == 1.0
    assert seed["trainable_params"] == eanet["trainable_params"] == 346_020  # 16 patches: 240 fewer position embeddings
    assert eanet["throughput_ratio"] > 0 and eanet["peak_rss_mb"] > 0
    assert "CPU flags: " in result.stdout  # the kind of CPU the ratios hold for
    assert "[attention=" in result.stdout  # each eanet round names its speed paths


def test_bench_compare_reads_environment_assignments():
    from eanet.bench.compare import split_contender

    assert split_contender("seed") == ({}, "seed", [])
    assert split_contender("TF_ENABLE_ONEDNN_OPTS=0 eanet model=vit trainer.batch_size=8") == (
        {"TF_ENABLE_ONEDNN_OPTS": "0"}, "eanet", ["model=vit", "trainer.batch_size=8"])
    with pytest.raises(SystemExit, match="no contender"):
        split_contender("A=1")


@pytest.mark.parametrize("preset, expected", [(None, "1"), ("0", "0")])
def test_importing_eanet_turns_onednn_on_unless_the_user_chose(preset, expected):
    done = run_python("-c", "import os, eanet; print(os.environ['TF_ENABLE_ONEDNN_OPTS'], "
                      "eanet.ONEDNN_CHOSEN_BY_USER)", env={"TF_ENABLE_ONEDNN_OPTS": preset})
    assert done.returncode == 0, done.stderr
    out = done.stdout.split()
    assert out == [expected, str(preset is not None)]
