"""Training throughput of eanet against the seed implementation, alternating A B A B.

    python -m eanet.bench.compare                          seed vs eanet, EANet, batch 128
    python -m eanet.bench.compare --model vit              the same for ViT (any conf/model option)
    python -m eanet.bench.compare --rounds 3 seed eanet "eanet trainer.precision=mixed_bfloat16"
    python -m eanet.bench.compare seed "TF_ENABLE_ONEDNN_OPTS=1 seed" eanet "TF_ENABLE_ONEDNN_OPTS=0 eanet"
    git worktree add /tmp/eanet-base HEAD~1
    python -m eanet.bench.compare --model vit "PYTHONPATH=/tmp/eanet-base eanet" eanet
                                                           a previous version against this one

Each contender is `seed` (../shared/bench/seed_throughput.py, `--seed-bench` to point elsewhere)
or `eanet` followed by Hydra overrides for `python -m eanet.bench`, either optionally preceded by
environment assignments as in a shell (`TF_ENABLE_ONEDNN_OPTS=0 eanet`: eanet turns TensorFlow's
oneDNN kernels on unless told otherwise, the seed runs with TensorFlow's default). Every round runs each
contender once, in its own process, in the order given; on a shared machine the load drifts, so
only medians over rounds and ratios to the first contender measured in the same invocation mean
anything. Peak resident memory is read per process (os.wait4), the same way for both. The
table names the CPU's vector and matrix extensions (AVX2, AVX-512, AMX), on which the seed's
speed and so every ratio depends, and each eanet contender's speed paths (eanet.models.speed).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from eanet import ONEDNN_CHOSEN_BY_USER

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SEED_BENCH = ROOT.parent / "shared" / "bench" / "seed_throughput.py"
MODEL_CONFIGS = ROOT / "conf" / "model"
SEED_ATTENTIONS = ("external", "self")  # what the seed benchmark's --attention takes


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's AVX2, AVX-512 and AMX flags, as `grep -o 'avx512[a-z_0-9]*\\|amx[a-z_0-9]*\\|avx2'
    /proc/cpuinfo | sort -u` lists them ("unknown" where there is no /proc/cpuinfo)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return "unknown"
    return " ".join(sorted(set(re.findall(r"avx512[a-z_0-9]*|amx[a-z_0-9]*|avx2", text))))


def model_options() -> list[str]:
    return sorted(path.stem for path in MODEL_CONFIGS.glob("*.yaml"))


def split_contender(contender: str) -> tuple[dict[str, str], str, list[str]]:
    """'VAR=1 eanet model.x=2' → ({'VAR': '1'}, 'eanet', ['model.x=2'])."""
    words = shlex.split(contender)
    env = {}
    while words and "=" in words[0] and words[0].split("=", 1)[0].isidentifier():
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    if not words:
        raise SystemExit(f"eanet.bench.compare: no contender in {contender!r}. Valid: seed, eanet [overrides]")
    return env, words[0], words[1:]


def command(contender: str, args: argparse.Namespace, out_dir: str) -> list[str]:
    _, name, overrides = split_contender(contender)  # name: seed | eanet
    common = ["--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
              "--image-size", str(args.image_size), "--patch-size", str(args.patch_size)]
    if name == "seed":
        if overrides:
            raise SystemExit(f"eanet.bench.compare: the seed takes no overrides. Received: {contender!r}")
        if not args.seed_bench.is_file():
            raise SystemExit(f"eanet.bench.compare: no seed benchmark at {args.seed_bench} "
                             "(--seed-bench PATH)")
        attention = OmegaConf.load(MODEL_CONFIGS / f"{args.model}.yaml").attention
        if attention not in SEED_ATTENTIONS:
            raise SystemExit(f"eanet.bench.compare: the seed has no {attention!r} attention "
                             f"(--model {args.model}). Valid: a model with model.attention in "
                             f"{', '.join(SEED_ATTENTIONS)}")
        return [sys.executable, str(args.seed_bench), "--attention", attention, *common]
    if name == "eanet":
        # -P (Python >= 3.11): the working folder is not put on sys.path, so PYTHONPATH decides
        # which eanet runs: `PYTHONPATH=<another checkout> eanet` measures another version.
        safe_path = ["-P"] if sys.version_info >= (3, 11) else []
        return [sys.executable, *safe_path, "-m", "eanet.bench", "bench.mode=throughput",
                f"model={args.model}", f"trainer.batch_size={args.batch}",
                f"bench.steps={args.steps}", f"bench.warmup={args.warmup}",
                f"data.image_size={args.image_size}", f"model.patch_size={args.patch_size}",
                f"hydra.run.dir={out_dir}", "hydra.output_subdir=null", *overrides]
    raise SystemExit(f"eanet.bench.compare: unknown contender {name!r}. Valid: seed, eanet [overrides]")


def run_once(cmd: list[str], threads: int | None = None,
             extra_env: dict[str, str] | None = None) -> dict:
    """Run one benchmark process; its JSON line plus the process' own peak resident memory."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    if not ONEDNN_CHOSEN_BY_USER:  # importing eanet set it here; each contender keeps its default
        env.pop("TF_ENABLE_ONEDNN_OPTS", None)
    env.update(extra_env or {})
    if threads:  # TensorFlow's own thread pools and oneDNN's OpenMP, for both contenders alike
        env.update(TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS=str(threads),
                   OMP_NUM_THREADS=str(threads))
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"eanet.bench.compare: {' '.join(cmd)} failed ({process.returncode}):\n"
                         f"{output[-3000:]}")
    lines = [line.removeprefix("BENCH ") for line in output.splitlines()
             if line.startswith("{") or line.startswith("BENCH {")]
    record = json.loads(lines[-1])
    record["process_peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    return record


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("contenders", nargs="*", default=["seed", "eanet"],
                        help="'seed' or 'eanet [hydra overrides]'; ratios are to the first")
    parser.add_argument("--model", choices=model_options(), default="ea",
                        help="the conf/model option every contender runs (default: ea)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--patch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None,
                        help="TensorFlow threads per process (default: TensorFlow's choice); "
                        "1 gives steadier ratios on a machine shared with other work")
    parser.add_argument("--seed-bench", type=Path, default=DEFAULT_SEED_BENCH)
    args = parser.parse_args(argv)
    results: dict[str, list[dict]] = {c: [] for c in args.contenders}
    with tempfile.TemporaryDirectory() as out_dir:
        # Every contender parsed and its command built before the first (minutes-long) process:
        # a bad one fails here, not after the others have run.
        runs = {c: (command(c, args, out_dir), split_contender(c)[0]) for c in args.contenders}
        for round_index in range(args.rounds):
            for contender, (cmd, env) in runs.items():
                record = run_once(cmd, args.threads, env)
                results[contender].append(record)
                paths = f" [{record['speed_paths']}]" if record.get("speed_paths") else ""
                print(f"round {round_index + 1} {contender}: {record['median_step_s']} s/step, "
                      f"{record['img_per_s']} img/s, peak RSS {record['process_peak_rss_mb']} MB, "
                      f"CPU {record.get('median_step_cpu_s', float('nan')):.2f} s/step, "
                      f"first step {record.get('first_step_s', float('nan')):.1f} s{paths}",
                      flush=True)

    summary = []
    for contender, records in results.items():
        step = statistics.median(r["median_step_s"] for r in records)
        summary.append({"contender": contender, "model": args.model, "batch": args.batch,
                        "rounds": len(records), "trainable_params": records[0]["trainable_params"],
                        "median_step_s": round(step, 6), "img_per_s": round(args.batch / step, 2),
                        "peak_rss_mb": statistics.median(r["process_peak_rss_mb"]
                                                         for r in records),
                        "first_step_s": statistics.median(r.get("first_step_s", float("nan"))
                                                          for r in records),
                        # the process' own CPU time per step (eanet's benchmark measures it):
                        # steadier than wall time where other work shares the machine
                        "step_cpu_s": statistics.median(r.get("median_step_cpu_s", float("nan"))
                                                        for r in records),
                        "step_s_per_round": [r["median_step_s"] for r in records]})
    base = summary[0]
    for row in summary:
        row["throughput_ratio"] = round(base["median_step_s"] / row["median_step_s"], 3)
        row["memory_ratio"] = round(row["peak_rss_mb"] / base["peak_rss_mb"], 3)
        print("COMPARE " + json.dumps(row), flush=True)
    print(f"\nCPU flags: {cpu_flags()}")
    print(f"{'contender':40s} {'s/step':>8s} {'img/s':>8s} {'RSS MB':>8s} {'speed×':>7s} "
          f"{'mem×':>6s} {'CPU s':>6s} {'1st s':>6s}")
    for row in summary:
        print(f"{row['contender'][:40]:40s} {row['median_step_s']:8.3f} {row['img_per_s']:8.1f} "
              f"{row['peak_rss_mb']:8.0f} {row['throughput_ratio']:7.2f} {row['memory_ratio']:6.2f} "
              f"{row['step_cpu_s']:6.2f} {row['first_step_s']:6.1f}")
    return summary


if __name__ == "__main__":
    main()
