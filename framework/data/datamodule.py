"""``DataModule``: where a recipe's data comes from (Lightning's vocabulary).

Each ``*_dataloader`` returns a batched ``tf.data.Dataset`` of ``(inputs, targets)`` pairs (or
``inputs`` alone for predict). ``tf.data`` feeds Keras's fit under both backends.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["DataModule"]


class DataModule:
    """Base class. ``prepare_data`` checks or makes files; ``setup`` loads them for a stage."""

    def prepare_data(self) -> None:
        """Check that the data exists (fail early with the command that makes it)."""

    def setup(self, stage: str) -> None:
        """Load what ``stage`` ('fit', 'validate', 'test' or 'predict') needs."""

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer before each training epoch (for per-epoch shuffling)."""

    def train_dataloader(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no training data")

    def val_dataloader(self) -> Any:
        return None

    def test_dataloader(self) -> Any:
        return None

    def predict_dataloader(self) -> Any:
        return self.test_dataloader()
