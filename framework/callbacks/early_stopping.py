"""``EarlyStopping``: stop when a metric stops improving; restore the best weights at the end."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from framework.callbacks.base import Callback
from framework.callbacks.monitor import improved, infer_mode, missing_metric_error

if TYPE_CHECKING:
    from framework.trainer import Trainer

logger = logging.getLogger(__name__)

__all__ = ["EarlyStopping"]


class EarlyStopping(Callback):
    """Stop after ``patience`` epochs without an improvement larger than ``min_delta``.

    With ``restore_best_weights`` the model ends fit with the weights of its best epoch,
    whether patience ran out or ``max_epochs`` was reached.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 3,
        min_delta: float = 0.0,
        mode: str | None = None,
        restore_best_weights: bool = True,
    ) -> None:
        if patience < 0:
            raise ValueError(f"patience must be >= 0; received {patience}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0; received {min_delta}")
        self.monitor = monitor
        self.mode = infer_mode(monitor, mode)
        self.patience = patience
        self.min_delta = min_delta
        self.restore_best_weights = restore_best_weights
        self.wait_count = 0
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.best_weights: list[Any] | None = None

    @property
    def state_key(self) -> str:
        return f"EarlyStopping[monitor={self.monitor}]"

    def state_dict(self) -> dict[str, Any]:
        return {
            "wait_count": self.wait_count,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "stopped_epoch": self.stopped_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait_count = int(state.get("wait_count", 0))
        self.best_score = state.get("best_score")
        self.best_epoch = state.get("best_epoch")
        self.stopped_epoch = state.get("stopped_epoch")

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.monitor.startswith("val_") and not trainer.has_validation:
            raise missing_metric_error(
                "EarlyStopping", self.monitor, ["(no validation data: only training metrics)"]
            )

    def on_train_epoch_end(self, trainer: Trainer) -> None:
        metrics = trainer.callback_metrics
        score = metrics.get(self.monitor)
        if score is None:
            if self.monitor.startswith("val_") and not any(k.startswith("val_") for k in metrics):
                return  # validation did not run this epoch
            raise missing_metric_error("EarlyStopping", self.monitor, list(metrics))

        if improved(score, self.best_score, self.mode, self.min_delta):
            self.best_score = float(score)
            self.best_epoch = trainer.current_epoch
            self.wait_count = 0
            if self.restore_best_weights:
                self.best_weights = trainer.model.get_weights()
            return
        self.wait_count += 1
        if self.wait_count >= self.patience:
            self.stopped_epoch = trainer.current_epoch
            trainer.should_stop = True
            logger.info(
                "early stopping at epoch %d: %s did not improve on %.6g for %d epoch(s)",
                trainer.current_epoch,
                self.monitor,
                self.best_score if self.best_score is not None else float("nan"),
                self.wait_count,
            )

    def on_fit_end(self, trainer: Trainer) -> None:
        if not self.restore_best_weights or self.best_epoch is None:
            return
        if self.best_weights is None:
            # Limitation: the best weights live in memory; after a resume they are only known
            # if the best epoch came after the resume point. Restoring them from the best
            # checkpoint would need the checkpoint to monitor the same metric.
            logger.warning(
                "EarlyStopping cannot restore the weights of epoch %d: they were kept in the "
                "interrupted process; keeping the final weights",
                self.best_epoch,
            )
            return
        trainer.model.set_weights(self.best_weights)
        logger.info(
            "restored the weights of epoch %d (%s=%.6g)",
            self.best_epoch,
            self.monitor,
            self.best_score,
        )
