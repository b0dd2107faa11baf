"""`python -m eanet.bench` (eanet/bench/__main__.py): how fast and how lean eanet trains, on the config a run would use.

    python -m eanet.bench                                   EANet training throughput, seed config
    python -m eanet.bench model=vit trainer.batch_size=64   the same for ViT at batch 64
    python -m eanet.bench bench.mode=scaling bench.out=experiments/scaling
    python -m eanet.bench bench.mode=overhead data.path=../shared/data/cifar100.npz
    python -m eanet.bench bench.mode=all

The app composes the same `conf/` as `eanet.run` (conf/bench.yaml = config.yaml + a `bench`
section), so every override of a run applies here too. Modes:
- throughput: median training-step time after warm-up, images/s, peak resident (and GPU) memory;
  the procedure of `../shared/bench/seed_throughput.py` (model.fit on uint8 images, a per-batch
  timer), so the two can be compared side by side (`python -m eanet.bench.compare`).
- scaling: cost per image and memory of each of `bench.scaling.models` (conf/model options: ea,
  vit, or any other) as the number of patches grows, with fitted growth exponents
  (eanet.bench.scaling).
- overhead: where a real run's wall time goes outside fit/evaluate (eanet.bench.overhead).
- profile: a training step's op time by TensorFlow op type (eanet.bench.profile).
Each measurement prints one JSON line (prefixed `BENCH `) and a table; bench.out=<dir> writes CSVs
(and the scaling plot) there.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

_IMPORT_START = time.perf_counter()

from hydra.core.config_store import ConfigStore  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from eanet.bench.records import emit, print_table, write_csv  # noqa: E402
from eanet.config import Config, ConfigError, ModelConfig, check_choice  # noqa: E402

log = logging.getLogger("eanet.bench")

MODES = ("throughput", "scaling", "overhead", "profile", "all")  # all: every mode but profile


@dataclass
class ScalingSettings:
    # Each (image_size, patch_size) pair gives N = (image_size / patch_size)^2 patches.
    image_sizes: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    patch_size: int = 2
    models: list[str] = field(default_factory=lambda: ["ea", "vit"])  # conf/model options
    # Self-attention's (B, heads, N, N) scores outgrow a small machine: at 4,096 patches one image
    # needs several GB to train. Points above this many patches are skipped for it.
    max_self_attention_patches: int = 1024
    batch_size: int = 4
    steps: int = 5
    warmup: int = 2


@dataclass
class BenchSettings:
    mode: str = "throughput"  # throughput | scaling | overhead | profile | all
    steps: int = 12  # timed training steps after warm-up
    warmup: int = 3
    out: Optional[str] = None  # folder for CSV/PNG results; None prints only
    scaling: ScalingSettings = field(default_factory=ScalingSettings)


@dataclass
class BenchConfig(Config):
    bench: BenchSettings = field(default_factory=BenchSettings)


def register_configs() -> None:
    """The run's schema extended by `bench`, under the name config.yaml's defaults list uses.

    conf/bench.yaml starts from config.yaml, whose first default is `eanet_schema`; registering
    the extended schema under that name (in this process only) keeps one composition for both
    apps, with every key typed.
    """
    ConfigStore.instance().store(name="eanet_schema", node=BenchConfig)


def validate_bench(cfg: BenchConfig) -> None:
    b, s = cfg.bench, cfg.bench.scaling
    check_choice("bench.mode", b.mode, MODES)
    for name in ("steps", "warmup"):
        if getattr(b, name) < (1 if name == "steps" else 0):
            raise ConfigError(f"Expected bench.{name} >= {1 if name == 'steps' else 0}. "
                              f"Received: bench.{name}={getattr(b, name)}")
    for name in ("batch_size", "steps", "patch_size", "max_self_attention_patches"):
        if getattr(s, name) <= 0:
            raise ConfigError(f"Expected bench.scaling.{name} > 0. "
                              f"Received: bench.scaling.{name}={getattr(s, name)}")
    for size in s.image_sizes:
        if size % s.patch_size:
            raise ConfigError(f"Expected every bench.scaling.image_sizes divisible by "
                              f"bench.scaling.patch_size. Received: {size} and {s.patch_size}")


def scaling_models(cfg: BenchConfig) -> list[ModelConfig]:
    """The model of each `bench.scaling.models` option, composed as `model=<option>` would be with
    this command's other overrides (config folders added by `hydra.searchpath` included)."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from eanet.validation import validate

    options = GlobalHydra.instance().config_loader().get_group_options("model")
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("model=")]
    models = []
    for option in cfg.bench.scaling.models:
        check_choice("bench.scaling.models", option, options)
        models.append(validate(compose("bench", overrides=[*overrides, f"model={option}"])).model)
    return models


# --- throughput --------------------------------------------------------------------------------

def measure_throughput(cfg: Config, steps: int, warmup: int) -> dict[str, Any]:
    """Median training-step time of the model `eanet.run` would train, on random uint8 images.

    The seed benchmark's procedure: (warmup + steps) batches of random images, one epoch of
    model.fit, per-batch timer, median of the steps after warm-up. The data go through the run's
    own tf.data pipeline and the model is compiled by the run's own `compile_model`.
    """
    from eanet.bench.measure import (StepTimer, median, peak_gpu_mb, peak_rss_mb, random_training,
                                     reset_gpu_peak)
    from eanet.models.model import count_parameters
    from eanet.training.train import model_speed_paths

    t, d = cfg.trainer, cfg.data
    model, train_ds = random_training(cfg, steps, warmup)
    counts = count_parameters(model)
    speed = model_speed_paths(cfg, model)

    timer = StepTimer()
    reset_gpu_peak()
    model.fit(train_ds, epochs=1, steps_per_epoch=steps + warmup, callbacks=[timer], verbose=0)
    step = timer.median_step_s(warmup)
    return {
        "measurement": "throughput", "implementation": "eanet", "model": cfg.model.name,
        "attention": cfg.model.attention, "batch": t.batch_size, "image_size": d.image_size,
        "patch_size": cfg.model.patch_size, "precision": t.precision,
        "trainable_params": counts["trainable"], "total_params": counts["total"],
        "median_step_s": round(step, 6), "img_per_s": round(t.batch_size / step, 2),
        "median_step_cpu_s": round(median(timer.cpu_times[warmup:]), 4),
        "first_step_s": round(timer.step_times[0], 3), "steps_timed": len(timer.step_times) - warmup,
        "loop_gap_s": round(median(timer.gaps[warmup:]), 5),
        "peak_rss_mb": round(peak_rss_mb(), 1), "peak_gpu_mb": peak_gpu_mb(),
        "speed_paths": str(speed),
    }


THROUGHPUT_COLUMNS = ["model", "batch", "precision", "trainable_params", "median_step_s",
                      "img_per_s", "median_step_cpu_s", "first_step_s", "peak_rss_mb", "peak_gpu_mb"]


def _publish(record: dict[str, Any], columns, out: Optional[Path],
             csv_name: str) -> dict[str, Any]:
    """One measurement: its JSON line, its table, and its CSV under bench.out."""
    emit(record)
    print_table([record], columns)
    if out:
        write_csv([record], out / csv_name)
    return record


def run_bench(cfg: BenchConfig, raw_cfg: DictConfig,
              scaling: Optional[list[ModelConfig]] = None) -> list[dict[str, Any]]:
    """Every measurement of bench.mode; `scaling`: the models of bench.scaling.models
    (`scaling_models`), composed by default."""
    b = cfg.bench
    out = Path(b.out) if b.out else None
    records: list[dict[str, Any]] = []
    if b.mode in ("overhead", "all"):
        # First, so its start-up and first-step figures are those of a fresh process.
        from eanet.bench.overhead import OVERHEAD_COLUMNS, measure_overhead

        record = measure_overhead(cfg, raw_cfg, b.steps, b.warmup, import_s=_IMPORT_S)
        records.append(_publish(record, OVERHEAD_COLUMNS, out, "overhead.csv"))
    if b.mode in ("throughput", "all"):
        record = measure_throughput(cfg, b.steps, b.warmup)
        records.append(_publish(record, THROUGHPUT_COLUMNS, out, "throughput.csv"))
    if b.mode == "profile":
        from eanet.bench.profile import PROFILE_COLUMNS, measure_profile

        rows = measure_profile(cfg, b.steps, b.warmup)
        print_table(rows[:25], PROFILE_COLUMNS)
        records.extend(rows)
        if out:
            write_csv(rows, out / f"profile_{cfg.model.name}.csv")
    if b.mode in ("scaling", "all"):
        from eanet.bench.scaling import SCALING_COLUMNS, measure_scaling, plot_scaling

        points, fits = measure_scaling(cfg, scaling or scaling_models(cfg))
        print_table(points, SCALING_COLUMNS)
        for fit in fits:
            emit(fit)
        print_table(fits, ["model", "attention", "quantity", "exponent", "points"])
        records.extend(points + fits)
        if out:
            write_csv(points, out / "scaling.csv")
            write_csv(fits, out / "scaling_exponents.csv")
            plot_scaling(points, fits, out / "scaling.png")
    return records


_IMPORT_S = time.perf_counter() - _IMPORT_START
register_configs()
