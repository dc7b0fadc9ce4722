"""The ``Callback`` base: Lightning's hook names, each receiving the trainer.

Callbacks read and steer the run only through the trainer's public attributes:
``current_epoch``, ``global_step``, ``callback_metrics``, ``model``, ``recipe``, ``logger``,
``log_dir``, ``should_stop``. ``state_dict``/``load_state_dict`` carry a callback's state
through a checkpoint, keyed by ``state_key``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from framework.trainer import Trainer

logger = logging.getLogger(__name__)

__all__ = ["Callback"]


class Callback:
    """Override the hooks you need; every hook does nothing by default."""

    @property
    def state_key(self) -> str:
        """The key of this callback's state in a checkpoint (unique per configuration)."""
        return type(self).__name__

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def setup(self, trainer: Trainer, stage: str) -> None:
        """Before a stage ('fit', 'validate', 'test', 'predict') starts."""

    def teardown(self, trainer: Trainer, stage: str) -> None:
        """After a stage ended, successfully or not."""

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None: ...

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_train_end(self, trainer: Trainer) -> None: ...

    def on_train_epoch_start(self, trainer: Trainer) -> None: ...

    def on_train_epoch_end(self, trainer: Trainer) -> None:
        """After the epoch's training and, when it ran, its validation."""

    def on_train_batch_start(self, trainer: Trainer, batch_idx: int) -> None: ...

    def on_train_batch_end(self, trainer: Trainer, outputs: dict[str, float], batch_idx: int):
        """``outputs`` holds the epoch's running loss and metrics, as Keras reports them."""

    def on_validation_start(self, trainer: Trainer) -> None: ...

    def on_validation_end(self, trainer: Trainer) -> None: ...

    def on_validation_epoch_end(self, trainer: Trainer) -> None:
        """Validation metrics of this epoch are in ``trainer.callback_metrics``."""

    def on_test_start(self, trainer: Trainer) -> None: ...

    def on_test_end(self, trainer: Trainer) -> None: ...

    def on_predict_start(self, trainer: Trainer) -> None: ...

    def on_predict_end(self, trainer: Trainer) -> None: ...

    def on_save_checkpoint(self, trainer: Trainer, checkpoint: dict[str, Any]) -> None:
        """Add to or inspect the checkpoint's state before it is written."""

    def on_load_checkpoint(self, trainer: Trainer, checkpoint: dict[str, Any]) -> None: ...

    def on_exception(self, trainer: Trainer, exception: BaseException) -> None:
        """The run is failing with ``exception``; it is re-raised afterwards."""
