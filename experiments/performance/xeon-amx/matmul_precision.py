"""The attention matmuls of one training step, in float32, float32 with bfloat16 inputs
(`trainer.matmul_precision=bfloat16`) and bfloat16 (`trainer.precision=mixed_bfloat16`), and
which oneDNN kernel runs each: why AMX gives EANet's step so little.

    python experiments/performance/xeon-amx/matmul_precision.py           # one fresh process per precision

Shapes at the seed config, batch 128: EANet's scores (G·S × D) · (D × N) = (256 × 64)·(64 × 256)
and read-out (D × G·S) · (G·S × N) = (64 × 256)·(256 × 256) per image; ViT's scores
(H·N × D) · (D × N) = (1024 × 64)·(64 × 256). TensorFlow reads the matmul precision once per
process, hence a process per row. Prints ms per call, GFLOP/s, and the oneDNN implementation
(`ONEDNN_VERBOSE`: `brg_matmul:avx10_1_512_amx` is AMX, `brg_matmul:avx512_core` is AVX-512).
"""
import os
import subprocess
import sys

SHAPES = {  # name: (batch, m, k, n)
    "EANet scores": (128, 256, 64, 256),
    "EANet read-out": (128, 64, 256, 256),
    "ViT scores": (128, 1024, 64, 256),
}
PRECISIONS = ("float32", "float32, bfloat16 inputs", "bfloat16")


def measure(precision: str) -> None:
    import time

    import eanet  # noqa: F401  (oneDNN on, as in a run, on every CPU kind)

    if precision == "float32, bfloat16 inputs":
        from eanet.training.precision import set_matmul_precision

        set_matmul_precision("bfloat16")
    import tensorflow as tf

    dtype = tf.bfloat16 if precision == "bfloat16" else tf.float32
    for name, (batch, m, k, n) in SHAPES.items():
        a = tf.cast(tf.random.normal((batch, m, k)), dtype)
        b = tf.cast(tf.random.normal((batch, k, n)), dtype)
        matmul = tf.function(tf.matmul)
        for _ in range(3):
            matmul(a, b)
        calls, start = 20, time.perf_counter()
        for _ in range(calls):
            result = matmul(a, b)
        result.numpy()
        ms = (time.perf_counter() - start) / calls * 1e3
        print(f"RESULT {precision:26s} {name:16s} {ms:7.2f} ms {2 * batch * m * k * n / ms / 1e6:6.0f} "
              "GFLOP/s", flush=True)


def main() -> None:
    print(f"{'precision':26s} {'matmul':16s} {'time':>10s} {'speed':>14s}  oneDNN kernel")
    for precision in PRECISIONS:
        env = {**os.environ, "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        env.pop("TF_SET_ONEDNN_FPMATH_MODE", None)
        out = subprocess.run([sys.executable, __file__, "--measure", precision], env=env,
                             capture_output=True, text=True, check=True).stdout.splitlines()
        kernels = sorted({line.split(",")[6] for line in out
                          if line.startswith("onednn_verbose") and ",exec,cpu,matmul," in line})
        for line in out:
            if line.startswith("RESULT "):
                print(line[len("RESULT "):], " ", " ".join(kernels))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--measure":
        measure(sys.argv[2])
    else:
        main()
