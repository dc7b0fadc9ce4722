"""Shuffling whose order depends only on (seed, epoch), so a resumed run sees the same batches.

``tf.data``'s own ``shuffle(seed=...)`` reshuffles per iteration of one dataset object: after a
restart, epoch 5 would get the order of epoch 0. ``EpochShuffle`` reads the epoch from a
variable that the trainer sets before each epoch (``DataModule.set_epoch``).
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["EpochShuffle"]


class EpochShuffle:
    """Index orders fixed by ``seed`` and the current epoch (set with ``set_epoch``)."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        #: The epoch whose order is in use (also read by ``ArrayBatches``).
        self.epoch = 0
        self._variable: Any = None  # made for the first tf.data pipeline that reads the epoch

    @property
    def _epoch(self) -> Any:
        """The epoch as a TensorFlow variable, which ``tf.data`` pipelines read at iteration."""
        if self._variable is None:
            import tensorflow as tf

            with tf.device("/CPU:0"):
                self._variable = tf.Variable(
                    self.epoch, dtype=tf.int64, trainable=False, name="kiln_epoch"
                )
        return self._variable

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if self._variable is not None:  # only tf.data pipelines need it (a TF op per epoch)
            self._variable.assign(self.epoch)

    def permutation(self, n: int) -> Any:
        """This epoch's order of ``0..n-1`` as a NumPy array (the one ``indices`` yields).

        TensorFlow draws it, so the NumPy path and ``tf.data`` see the same batches (about
        0.25 ms per epoch for 1,000 rows, eagerly; a ``tf.function`` call was slower)."""
        import tensorflow as tf

        key = tf.constant([self.seed, self.epoch], tf.int64)
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=key)
        return order.numpy()

    def indices(self, n: int) -> Any:
        """A dataset of the indices ``0..n-1`` in this epoch's order (read at iteration)."""
        return self.shuffled((), n)

    def shuffled(self, tensors: tuple[Any, ...], n: int) -> Any:
        """A dataset of the rows of ``tensors`` (``n`` each) in this epoch's order, or of the
        indices themselves when ``tensors`` is empty. Each epoch gathers the whole tensors
        once in the new order and slices them, instead of a gather per row."""
        import tensorflow as tf

        seed = tf.constant(self.seed, tf.int64)
        epoch = self._epoch

        def rows(_: Any) -> Any:
            key = tf.stack([seed, epoch.read_value()])
            permutation = tf.random.experimental.stateless_shuffle(
                tf.range(n, dtype=tf.int64), seed=key
            )
            parts = tuple(tf.gather(t, permutation) for t in tensors) if tensors else permutation
            return tf.data.Dataset.from_tensor_slices(parts)

        # Limitation: the per-epoch function costs tf.data about 5 ms each epoch over a plain
        # shuffle(); on a 1,000-row epoch of a tiny net that halves TensorFlow's steps/s.
        ordered = tf.data.Dataset.from_tensors(0).flat_map(rows)
        return ordered.apply(tf.data.experimental.assert_cardinality(n))

    def epoch_seed(self) -> Any:
        """A (2,) int64 tensor ``[seed, epoch]`` for stateless random ops in a data pipeline."""
        import tensorflow as tf

        return tf.stack([tf.constant(self.seed, tf.int64), self._epoch.read_value()])
