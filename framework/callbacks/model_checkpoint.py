"""``ModelCheckpoint``: keep the best k checkpoints by a metric and always a real ``last``."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framework.callbacks.base import Callback
from framework.callbacks.monitor import improved, infer_mode, missing_metric_error
from framework.checkpoint import remove_stale_temporaries

if TYPE_CHECKING:
    from framework.trainer import Trainer

logger = logging.getLogger(__name__)

__all__ = ["ModelCheckpoint"]


class ModelCheckpoint(Callback):
    """Save checkpoints into ``dirpath`` (default ``<run folder>/checkpoints``).

    ``monitor=None`` keeps no ranking, only ``last.ckpt``. ``save_top_k=-1`` keeps every
    checkpoint, ``0`` none but ``last``. ``every_n_train_steps`` also rewrites ``last.ckpt``
    within an epoch, so a crash loses at most that many steps.
    """

    def __init__(
        self,
        dirpath: str | Path | None = None,
        monitor: str | None = "val_loss",
        mode: str | None = None,
        save_top_k: int = 1,
        save_last: bool = True,
        every_n_epochs: int = 1,
        filename: str = "epoch={epoch}-step={step}",
        every_n_train_steps: int | None = None,
    ) -> None:
        if save_top_k < -1:
            raise ValueError(f"save_top_k must be >= -1; received {save_top_k}")
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1; received {every_n_epochs}")
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.monitor = monitor
        self.mode = infer_mode(monitor, mode) if monitor else None
        self.save_top_k = save_top_k
        self.save_last = save_last
        self.every_n_epochs = every_n_epochs
        self.filename = filename
        self.every_n_train_steps = every_n_train_steps
        self.best_k_models: dict[str, float] = {}
        self.best_model_path = ""
        self.best_model_score: float | None = None
        self.last_model_path = ""

    @property
    def state_key(self) -> str:
        return f"ModelCheckpoint[monitor={self.monitor}]"

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "best_k_models": self.best_k_models,
            "best_model_path": self.best_model_path,
            "best_model_score": self.best_model_score,
            "last_model_path": self.last_model_path,
            "dirpath": str(self.dirpath) if self.dirpath else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_k_models = {p: s for p, s in state.get("best_k_models", {}).items()}
        self.best_model_path = state.get("best_model_path", "")
        self.best_model_score = state.get("best_model_score")
        self.last_model_path = state.get("last_model_path", "")

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.dirpath is None:
            if trainer.log_dir is None:
                raise ValueError(
                    "ModelCheckpoint needs a dirpath when the trainer has no run folder "
                    "(logger=False)"
                )
            self.dirpath = Path(trainer.log_dir) / "checkpoints"
        self.dirpath.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.dirpath)
        if self.monitor and self.monitor.startswith("val_") and not trainer.has_validation:
            raise missing_metric_error(
                "ModelCheckpoint", self.monitor, ["(no validation data: only training metrics)"]
            )

    def on_train_batch_end(self, trainer: Trainer, outputs: dict, batch_idx: int) -> None:
        n = self.every_n_train_steps
        last_batch = trainer.batch_idx == trainer.num_training_batches  # the epoch end saves
        if n and self.save_last and trainer.global_step % n == 0 and not last_batch:
            self._save_last(trainer)

    def on_train_epoch_end(self, trainer: Trainer) -> None:
        epoch = trainer.current_epoch
        if self.monitor and (epoch + 1) % self.every_n_epochs == 0:
            self._save_top_k(trainer)
        if self.save_last:
            self._save_last(trainer)

    def _save_top_k(self, trainer: Trainer) -> None:
        metrics = trainer.callback_metrics
        score = metrics.get(self.monitor)
        if score is None:
            validation_skipped = self.monitor.startswith("val_") and not any(
                k.startswith("val_") for k in metrics
            )
            if validation_skipped:
                return
            raise missing_metric_error("ModelCheckpoint", self.monitor, list(metrics))
        if self.save_top_k == 0 or math.isnan(score):
            return
        worst = self._worst()
        full = self.save_top_k != -1 and len(self.best_k_models) >= self.save_top_k
        if full and not improved(score, self.best_k_models[worst], self.mode):
            return

        name = self.filename.format(
            **{**metrics, "epoch": trainer.current_epoch, "step": trainer.global_step}
        )
        path = self.dirpath / f"{name}.ckpt"
        self.best_k_models[str(path)] = float(score)
        if full:
            del self.best_k_models[worst]
        best = min if self.mode == "min" else max
        self.best_model_path = best(self.best_k_models, key=self.best_k_models.get)
        self.best_model_score = self.best_k_models[self.best_model_path]
        trainer.save_checkpoint(path)
        logger.info("checkpoint %s (%s=%.6g)", path.name, self.monitor, score)
        if full and Path(worst) != path:
            Path(worst).unlink(missing_ok=True)

    def _worst(self) -> str | None:
        if not self.best_k_models:
            return None
        worst = max if self.mode == "min" else min
        return worst(self.best_k_models, key=self.best_k_models.get)

    def _save_last(self, trainer: Trainer) -> None:
        path = self.dirpath / "last.ckpt"
        self.last_model_path = str(path)
        trainer.save_checkpoint(path)
        logger.debug(
            "last checkpoint at epoch %d step %d", trainer.current_epoch, trainer.global_step
        )
