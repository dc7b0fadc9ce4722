"""``LearningRateMonitor``: the learning rate as a scalar each epoch and each logged step."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from framework.callbacks.base import Callback

if TYPE_CHECKING:
    from framework.trainer import Trainer

logger = logging.getLogger(__name__)

__all__ = ["LearningRateMonitor"]


class LearningRateMonitor(Callback):
    """Logs ``lr`` (the optimizer's current rate, schedules included) under ``lr-<Optimizer>``."""

    def __init__(self, logging_interval: str | None = None) -> None:
        if logging_interval not in (None, "step", "epoch"):
            raise ValueError(
                f"logging_interval must be None, 'step' or 'epoch'; received {logging_interval!r}"
            )
        self.logging_interval = logging_interval

    def _tag(self, trainer: Trainer) -> str:
        return f"lr-{type(trainer.model.optimizer).__name__}"

    def on_train_batch_end(self, trainer: Trainer, outputs: dict, batch_idx: int) -> None:
        if self.logging_interval == "epoch" or not trainer.loggers:
            return
        if trainer.passed_step_multiple(trainer.flags.log_every_n_steps):
            trainer.log_metrics({self._tag(trainer): trainer.learning_rate()})

    def on_train_epoch_end(self, trainer: Trainer) -> None:
        if self.logging_interval == "step" or not trainer.loggers:
            return
        trainer.log_metrics({self._tag(trainer): trainer.learning_rate()})
