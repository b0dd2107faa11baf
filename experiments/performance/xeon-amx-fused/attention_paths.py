"""One attention call, forward and backward, computed two ways in one process and timed in
alternation: the fused whole-attention op (eanet/models/csrc/fused_attention.cc) against
TensorFlow's matmuls around the fused normalisation (normalized_dropout.cc, what runs when
TensorFlow's matmuls are on bfloat16). Alternating calls in one process see the same host load,
which a busy shared machine does not give separate processes.

    python experiments/performance/xeon-amx-fused/attention_paths.py ea  [--calls 12]
    python experiments/performance/xeon-amx-fused/attention_paths.py vit [--calls 8]

Seed config, batch 128, attention dropout 0.1 (so the keep-mask is drawn too). Prints the median
ms of each and the median of the per-pair ratios (> 1: the whole-attention op is faster).
"""
import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["ea", "vit"])
    parser.add_argument("--calls", type=int, default=10, help="calls of each, alternating")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    import eanet  # noqa: F401  (oneDNN on, as in a run)
    from eanet.models import kernels, native

    rng = np.random.default_rng(0)
    generator = keras.random.SeedGenerator(3)
    if args.model == "ea":  # x (B, N, D), score kernel (D, G·S), bias, read kernel (G·S, D)
        shapes, out_shape = [(128, 256, 64), (64, 256), (256,), (256, 64)], (128, 256, 64)

        def attend(*inputs):
            return kernels.external_attention_context(*inputs, 4, 1e-9, 0.1, generator)
    else:  # query (B, N, H, D), keys (B, N, D), values (B, N, D + 1)
        shapes, out_shape = [(128, 256, 4, 64), (128, 256, 64), (128, 256, 65)], (128, 256, 4, 65)

        def attend(*inputs):
            return kernels.self_attention_context(*inputs, 0.1, generator)
    inputs = [tf.constant(rng.normal(0, 0.2, shape), tf.float32) for shape in shapes]
    upstream = tf.constant(rng.normal(0, 1, out_shape), tf.float32)

    def traced(whole: bool):
        @tf.function
        def step():
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                out = attend(*inputs)
            return tape.gradient(out, inputs, upstream)

        def split_path() -> bool:  # native's rule for "TensorFlow's matmuls are faster"
            return not whole

        chosen = native.matmuls_on_bfloat16
        native.matmuls_on_bfloat16 = split_path
        try:
            step()  # traced (and warmed up) with this path
        finally:
            native.matmuls_on_bfloat16 = chosen
        return step

    if native.fused_ops_for(tf.float32) is None:
        raise SystemExit("eanet's fused CPU kernels are not available here")
    paths = {"whole-attention op": traced(True), "TF matmuls + fused normalisation": traced(False)}
    times = {name: [] for name in paths}
    for _ in range(args.calls):
        for name, step in paths.items():
            start = time.perf_counter()
            [g.numpy() for g in step() if g is not None]
            times[name].append(time.perf_counter() - start)
    whole, split = times.values()
    for name, values in times.items():
        print(f"{args.model} {name}: {1000 * np.median(values):.1f} ms")
    print(f"{args.model} speed of the whole-attention op: "
          f"{np.median(np.array(split) / np.array(whole)):.3f}x (median of {args.calls} pairs)")


if __name__ == "__main__":
    main()
