"""How much one GPU does with K training jobs at once: `python -m eanet.bench.packing`.

    python -m eanet.bench.packing                                   K = 1, 2, 4, 8; EANet, seed config
    python -m eanet.bench.packing --jobs 1 4 --steps 400 -- model=vit trainer.precision=mixed_bfloat16
    python -m eanet.bench.packing --jobs 1 2 --steps 200 --warmup 5 -- data.image_size=8 …  (a CPU check)

For each K, starts K processes at once, each with the environment the gpu_pack launcher preset
gives a sweep job (conf/hydra/launcher/gpu_pack.yaml: on JAX 0.9/K of the GPU's memory,
preallocated; on TensorFlow memory growth). Each builds and compiles the model `eanet.run` would
train (any overrides), trains `--warmup` steps on random images, and waits at a barrier until all
K have; then all train `--steps` more steps, timed. Total images/s = K × steps × batch / (time from
the barrier to the last job's end): the K jobs are measured over the same window. Prints one
`BENCH` JSON line per K (total images/s and its ratio to K = 1) and a table; `--out DIR` writes
packing.csv there.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from eanet.bench.records import emit, print_table, write_csv
from eanet.config import gpu_share

COLUMNS = ["jobs", "total_img_per_s", "speedup", "per_job_img_per_s", "peak_gpu_mb", "wall_s",
           "failed"]


def job_environment(jobs: int) -> dict[str, str]:
    """What hydra/launcher=gpu_pack sets in each job's environment for K = `jobs`."""
    return {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "true",
            "XLA_PYTHON_CLIENT_MEM_FRACTION": gpu_share(jobs), "TF_FORCE_GPU_ALLOW_GROWTH": "true",
            "TF_CPP_MIN_LOG_LEVEL": "2"}


def train_at_barrier(index: int, jobs: int, steps: int, warmup: int, overrides: list[str],
                     folder: Path) -> None:
    """One job of a packed measurement (a child process): compile and warm up, wait for all
    `jobs`, train `steps` timed steps, write result-<index>.json into `folder`."""
    import keras
    import numpy as np
    from hydra import compose, initialize_config_dir

    from eanet.bench.measure import peak_gpu_mb
    from eanet.config import register_configs
    from eanet.data import channel_statistics, make_dataset
    from eanet.training.train import build_compiled_model
    from eanet.validation import validate

    register_configs()
    with initialize_config_dir(str(Path(__file__).resolve().parents[2] / "conf"),
                               version_base="1.3"):
        cfg = validate(compose("config", overrides=overrides))
    t, d = cfg.trainer, cfg.data
    keras.utils.set_random_seed(cfg.seed + index)
    rng = np.random.default_rng(cfg.seed + index)
    n = t.batch_size * 16
    x = rng.integers(0, 256, size=(n, d.image_size, d.image_size, 3), dtype=np.uint8)
    y = rng.integers(0, d.num_classes, size=(n,))
    train_ds = make_dataset(x, y, d.num_classes, t.batch_size, d.image_size, training=True,
                            seed=cfg.seed, repeat=True)
    mean, variance = channel_statistics(x)
    model = build_compiled_model(cfg, mean, variance, d.num_classes)
    model.fit(train_ds, epochs=1, steps_per_epoch=warmup, verbose=0)  # compiles; ends in sync

    (folder / f"ready-{index}").touch()
    while len(list(folder.glob("ready-*"))) < jobs:
        time.sleep(0.005)
    start = time.time()  # wall clock: compared across processes
    model.fit(train_ds, epochs=1, steps_per_epoch=steps, verbose=0)  # the same compiled step
    end = time.time()
    (folder / f"result-{index}.json").write_text(json.dumps({
        "start": start, "end": end, "images": steps * t.batch_size,
        "img_per_s": steps * t.batch_size / (end - start), "peak_gpu_mb": peak_gpu_mb()}))


def measure_packed(jobs: int, steps: int, warmup: int, overrides: list[str],
                   log_dir: Path) -> dict[str, Any]:
    """K = `jobs` processes of `train_at_barrier`; their images/s over one window."""
    folder = log_dir / f"k{jobs}"
    if folder.exists():
        for old in folder.iterdir():
            old.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    begin = time.perf_counter()
    processes = []
    for i in range(jobs):
        command = [sys.executable, "-m", "eanet.bench.packing", "--worker", str(i),
                   "--jobs", str(jobs), "--steps", str(steps), "--warmup", str(warmup),
                   "--out", str(folder), "--", *overrides]
        log = open(folder / f"job{i}.log", "w")
        processes.append((subprocess.Popen(command, env=job_environment(jobs), stdout=log,
                                           stderr=subprocess.STDOUT), log))
    for process, log in processes:
        process.wait()
        log.close()
    results = [json.loads(p.read_text()) for p in sorted(folder.glob("result-*.json"))]
    record: dict[str, Any] = {"measurement": "packing", "jobs": jobs,
                              "failed": jobs - len(results), "overrides": overrides,
                              "wall_s": round(time.perf_counter() - begin, 1)}
    if results:
        window = max(r["end"] for r in results) - min(r["start"] for r in results)
        record.update(total_img_per_s=round(sum(r["images"] for r in results) / window, 1),
                      per_job_img_per_s=[round(r["img_per_s"], 1) for r in results],
                      peak_gpu_mb=[r["peak_gpu_mb"] for r in results])
    else:
        record.update(total_img_per_s=0.0, per_job_img_per_s=[], peak_gpu_mb=[])
    return record


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, default=100, help="timed steps per job")
    parser.add_argument("--warmup", type=int, default=10, help="steps before timing, per job")
    parser.add_argument("--out", type=Path, default=None, help="folder for packing.csv and logs")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every job (after --)")
    args = parser.parse_args(argv)
    if args.worker is not None:  # one job of a measurement, started by measure_packed
        train_at_barrier(args.worker, args.jobs[0], args.steps, args.warmup, args.overrides,
                         args.out)
        return 0
    if any(k <= 0 for k in args.jobs):
        parser.error(f"Expected --jobs > 0. Received: {args.jobs}")
    log_dir = (args.out or Path("outputs/bench/packing")) / "logs"
    records = []
    for jobs in args.jobs:
        record = measure_packed(jobs, args.steps, args.warmup, args.overrides, log_dir)
        records.append(record)
        base = records[0]["total_img_per_s"] if args.jobs[0] == 1 else None  # K = 1's
        record["speedup"] = round(record["total_img_per_s"] / base, 2) if base else None
        emit(record)
    print_table(records, COLUMNS)
    if args.out:
        write_csv(records, args.out / "packing.csv")
    return 1 if any(r["failed"] for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
