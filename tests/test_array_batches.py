"""ArrayBatches, the input pipeline without TensorFlow (Keras' JAX backend): the batches the
tf.data pipeline gives, from numpy alone. Runs on any backend (`make test` and `make test-jax`)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from eanet.array_batches import ArrayBatches


def data(n=50, size=8, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(n) % 256  # a tag per image, to follow it through the batches
    return images, rng.integers(0, classes, n)


def one_pass(batches, first_index=0):
    return [batches[i] for i in range(first_index, first_index + batches.batches_per_pass)]


def test_batches_are_float_images_and_one_hot_labels_with_a_partial_last_batch():
    images, labels = data()
    batches = ArrayBatches(images, labels, 5, 16, 8, training=False, seed=0)
    assert len(batches) == batches.num_batches == 4
    got = one_pass(batches)
    assert [len(x) for x, _ in got] == [16, 16, 16, 2]
    x, y = got[0]
    assert x.dtype == np.float32 and y.dtype == np.float32 and y.shape == (16, 5)
    np.testing.assert_array_equal(x, images[:16].astype(np.float32))  # evaluation: stored order
    np.testing.assert_array_equal(y.argmax(1), labels[:16])
    np.testing.assert_array_equal(y.sum(1), 1.0)
    with pytest.raises(IndexError):
        batches[4]


def test_training_passes_are_seeded_shuffles_of_every_image():
    images, labels = data()
    batches = ArrayBatches(images, labels, 5, 16, 8, training=True, seed=3)
    orders = []
    for pass_index in range(2):
        tags = np.concatenate([x[:, 0, 0, 0] for x, _ in
                               one_pass(_repeating(images, labels, 3), pass_index * 4)])
        assert sorted(tags.astype(int)) == list(range(50))  # each image once per pass
        orders.append(tags)
    assert not np.array_equal(orders[0], orders[1])  # reshuffled every pass
    first = np.concatenate([x[:, 0, 0, 0] for x, _ in one_pass(batches)])
    np.testing.assert_array_equal(first, orders[0])  # the seed fixes the order
    other_seed = ArrayBatches(images, labels, 5, 16, 8, training=True, seed=4)
    assert not np.array_equal(np.concatenate([x[:, 0, 0, 0] for x, _ in one_pass(other_seed)]),
                              first)
    for x, y in one_pass(batches):  # labels travel with their images
        np.testing.assert_array_equal(y.argmax(1), labels[x[:, 0, 0, 0].astype(int)])


def _repeating(images, labels, seed):
    return ArrayBatches(images, labels, 5, 16, 8, training=True, seed=seed, repeat=True)


def test_repeat_is_endless():
    images, labels = data()
    batches = _repeating(images, labels, 0)
    assert batches.num_batches is None  # Keras' convention for an endless PyDataset
    x, _ = batches[4 * 10 + 3]  # pass 10, its partial last batch
    assert len(x) == 2


def test_images_are_resized_to_the_configured_size():
    images, labels = data(size=8)
    x, _ = ArrayBatches(images, labels, 5, 16, 16, training=False, seed=0)[0]
    assert x.shape == (16, 16, 16, 3) and x.dtype == np.float32


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow")
def test_same_batches_as_the_tf_data_pipeline():
    from eanet.data import _tf_dataset

    images, labels = data()
    tf_batches = [(x.numpy(), y.numpy()) for x, y in
                  _tf_dataset(images, labels, 5, 16, 8, False, 0, False)]
    for (x, y), (x_tf, y_tf) in zip(one_pass(ArrayBatches(images, labels, 5, 16, 8, False, 0)),
                                    tf_batches, strict=True):
        np.testing.assert_array_equal(x, x_tf)
        np.testing.assert_array_equal(y, y_tf)
