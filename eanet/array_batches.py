"""The input pipeline without TensorFlow: numpy batches for Keras' JAX (or any non-TF) backend.

`ArrayBatches` is a `keras.utils.PyDataset` yielding what the tf.data pipeline of
`eanet.data.make_dataset` yields — (float32 images, one-hot float32 labels) batches, training data
reshuffled every pass, the last batch of a pass partial, images resized only when data.image_size
differs — built with numpy alone. Keras' JAX trainer moves each batch to the device one step
ahead of the step that uses it, and JAX dispatches steps asynchronously, so preparing a batch on
the host (an indexed copy and a cast: tens of microseconds for 128 CIFAR images) overlaps the
device's work; no worker threads are needed.

Shuffling: pass k of the training data is ordered by `default_rng([seed, k])`, so the order of
every pass is fixed by the seed (tf.data's order depends on TensorFlow's random ops instead).
With `repeat` (trainer.steps_per_epoch set) the batches never end and an epoch is
steps_per_epoch batches of the endless sequence, as with tf.data's `repeat()`.
"""
from __future__ import annotations

import numpy as np
from keras.utils import PyDataset


class ArrayBatches(PyDataset):
    """(images, labels) arrays → (float32 (b, S, S, 3), one-hot float32 (b, classes)) batches."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int,
                 image_size: int, training: bool, seed: int, repeat: bool = False):
        super().__init__(workers=1, use_multiprocessing=False)
        if batch_size <= 0:
            raise ValueError(f"Expected batch_size > 0. Received: batch_size={batch_size}")
        if len(images) != len(labels):
            raise ValueError(f"Expected as many labels as images. Received: {len(images)} "
                             f"images, {len(labels)} labels")
        self.images, self.labels = images, np.asarray(labels).reshape(-1)
        self.batch_size, self.image_size = batch_size, image_size
        self.training, self.seed, self.repeat = training, seed, repeat
        self.one_hot = np.eye(num_classes, dtype=np.float32)
        self.batches_per_pass = -(-len(labels) // batch_size)  # the last one may be partial
        self.resize = images.shape[1] != image_size or images.shape[2] != image_size
        self._order: tuple[int, np.ndarray] | None = None  # (pass, permutation) cache

    @property
    def num_batches(self):
        return None if self.repeat else self.batches_per_pass  # None: endless (Keras' convention)

    def __len__(self) -> int:
        return self.batches_per_pass

    def order(self, pass_index: int) -> np.ndarray:
        """The sample order of one pass: a seeded permutation when training, else as stored."""
        if not self.training:
            return np.arange(len(self.labels))
        if self._order is None or self._order[0] != pass_index:
            rng = np.random.default_rng([self.seed, pass_index])
            self._order = (pass_index, rng.permutation(len(self.labels)))
        return self._order[1]

    def __getitem__(self, index: int):
        pass_index, batch = divmod(index, self.batches_per_pass)
        if not self.repeat and pass_index:
            raise IndexError(f"batch {index} of {self.batches_per_pass}")
        picked = self.order(pass_index)[batch * self.batch_size:(batch + 1) * self.batch_size]
        x = self.images[picked].astype(np.float32)
        if self.resize:
            x = resize_images(x, self.image_size)
        return x, self.one_hot[self.labels[picked]]


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of float (b, H, W, C) images to (b, size, size, C), as tf.image.resize."""
    from keras import ops

    return ops.convert_to_numpy(ops.image.resize(images, (size, size), interpolation="bilinear"))
