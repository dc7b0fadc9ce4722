"""In-memory arrays as batches: ``tf.data`` under TensorFlow, a Keras ``PyDataset`` under JAX.

Keras's JAX trainer turns every ``tf.data`` batch into NumPy arrays in Python before the
compiled step, which costs more than the whole step of a small net. For data held in memory,
a ``keras.utils.PyDataset`` that slices NumPy arrays feeds JAX several times faster, while
under TensorFlow the ``tf.data`` pipeline (run inside the compiled loop) stays the fastest
(``benchmarks/throughput.py``). ``array_batches`` picks by backend; ``input`` forces either.

Both paths take each epoch's order from the same ``EpochShuffle`` (a function of seed and
epoch only), so a run resumed on the other backend, or on the other path, sees the same batches.
"""

from __future__ import annotations

import logging
from typing import Any

import keras
import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["INPUTS", "ArrayBatches", "array_batches", "resolve_input"]

INPUTS = ("auto", "tf_data", "arrays")


def resolve_input(value: str, strategy: str = "single") -> str:
    """``tf_data`` or ``arrays`` for a ``data.input`` of ``auto``, ``tf_data`` or ``arrays``.

    ``auto`` is ``arrays`` under JAX on one device (``trainer.strategy=single``) and
    ``tf_data`` otherwise: Keras shards only a ``tf.data`` dataset over several processes.
    """
    if value not in INPUTS:
        raise ValueError(f"data.input must be one of {', '.join(INPUTS)}; received {value!r}")
    if value != "auto":
        return value
    single = strategy == "single"
    path = "arrays" if keras.backend.backend() == "jax" and single else "tf_data"
    logger.info(
        "data.input auto: %s (%s backend, strategy %s)", path, keras.backend.backend(), strategy
    )
    return path


class ArrayBatches(keras.utils.PyDataset):
    """Batches sliced from NumPy arrays; with a ``shuffler`` (an ``EpochShuffle``) each epoch's
    order is its permutation for ``(seed, epoch)``, the same as on the ``tf.data`` path.

    It answers the few ``tf.data`` calls the trainer makes (``cardinality``, ``take``,
    ``skip``) so that batch limits and mid-epoch resumes work as with a dataset.
    """

    def __init__(
        self,
        arrays: tuple[np.ndarray, ...],
        batch_size: int,
        shuffler: Any = None,
        start: int = 0,
        stop: int | None = None,
    ) -> None:
        super().__init__()
        lengths = {len(a) for a in arrays}
        if len(lengths) != 1:
            raise ValueError(f"arrays must have the same length; received lengths {lengths}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1; received {batch_size}")
        self.arrays = tuple(arrays)
        self.batch_size = int(batch_size)
        self.shuffler = shuffler
        self._count = lengths.pop()
        total = -(-self._count // self.batch_size)
        self._start = min(start, total)
        self._stop = total if stop is None else min(stop, total)
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, permutation)

    def __len__(self) -> int:
        return max(0, self._stop - self._start)

    def __getitem__(self, index: int) -> tuple[np.ndarray, ...]:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range for {len(self)} batches")
        begin = (self._start + index) * self.batch_size
        rows = slice(begin, begin + self.batch_size)
        if self.shuffler is None:
            return tuple(a[rows] for a in self.arrays)
        picked = self._permutation()[rows]
        return tuple(a[picked] for a in self.arrays)

    def _permutation(self) -> np.ndarray:
        epoch = self.shuffler.epoch
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, self.shuffler.permutation(self._count))
        return self._order[1]

    # ------------------------------------------------------------ the tf.data-like calls
    def cardinality(self) -> int:
        return len(self)

    def take(self, count: int) -> ArrayBatches:
        return self._view(self._start, min(self._stop, self._start + int(count)))

    def skip(self, count: int) -> ArrayBatches:
        return self._view(min(self._stop, self._start + int(count)), self._stop)

    def _view(self, start: int, stop: int) -> ArrayBatches:
        return ArrayBatches(self.arrays, self.batch_size, self.shuffler, start, stop)


def array_batches(
    arrays: tuple[np.ndarray, ...],
    batch_size: int,
    shuffler: Any = None,
    input: str = "auto",
    strategy: str = "single",
) -> Any:
    """Batches of in-memory ``arrays`` on the input path ``input`` (see ``resolve_input``),
    shuffled each epoch by ``shuffler`` (an ``EpochShuffle``) when one is given."""
    if resolve_input(input, strategy) == "arrays":
        return ArrayBatches(arrays, batch_size, shuffler)
    import tensorflow as tf

    if shuffler is None:
        dataset = tf.data.Dataset.from_tensor_slices(tuple(arrays))
        return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    tensors = tuple(tf.constant(a) for a in arrays)
    examples = shuffler.shuffled(tensors, len(arrays[0]))
    # Batch last (before prefetch): Keras finds the batch size there to shard over processes.
    return examples.batch(batch_size).prefetch(tf.data.AUTOTUNE)
