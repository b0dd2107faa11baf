"""How long deleting a tf.data iterator waits, with tf.data's autotuner on and off.

Keras' `fit` deletes the validation iterator at every validation after the first (and the
training iterator when `fit` returns). With the autotuner on, the deletion waits for the
autotuner's thread; on a 2-core CPU busy with training that wait was up to 37 s per epoch of
`trainer=quick` (experiments/performance/iterator_wait.md). This reproduces it without a model:
the validation pipeline of eanet.data (`make_dataset`), 4 batches read, then
`busy` seconds of matrix products (the training steps until the next validation), then `del`.

    python experiments/performance/iterator_wait.py on 15 30 60 120
    python experiments/performance/iterator_wait.py off 15 30 60 120
"""
import sys
import time

import numpy as np

import eanet  # noqa: F401  (oneDNN on, as in a run)
import tensorflow as tf

from eanet.data import make_dataset

images = np.random.default_rng(0).integers(0, 256, (10000, 32, 32, 3), dtype=np.uint8)
labels = np.random.default_rng(1).integers(0, 100, (10000,))


def main(autotuner: str, busy_seconds: list[float]) -> None:
    # The run's own validation pipeline (autotuner off), or the same with it turned back on.
    dataset = make_dataset(images, labels, 100, batch_size=128, image_size=32, training=False,
                           seed=0)
    options = tf.data.Options()
    options.autotune.enabled = autotuner == "on"
    dataset = dataset.with_options(options)
    a = tf.random.normal((1024, 1024))
    for busy in busy_seconds:
        iterator = iter(dataset)
        for _ in range(4):  # a validation pass of trainer=quick
            next(iterator)
        start = time.perf_counter()
        while time.perf_counter() - start < busy:  # the training steps until the next one
            a = tf.matmul(a, a) / 1024.0
        start = time.perf_counter()
        del iterator
        print(f"autotuner {autotuner}, busy {busy:.0f} s: deleting the iterator took "
              f"{time.perf_counter() - start:.2f} s", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("on", "off"):
        sys.exit(__doc__)
    main(sys.argv[1], [float(s) for s in sys.argv[2:]])
