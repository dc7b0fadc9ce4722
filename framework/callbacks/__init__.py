"""Callbacks: the ``Callback`` base and the ones Kiln ships."""

from __future__ import annotations

from typing import Any

from framework.callbacks.base import Callback
from framework.callbacks.early_stopping import EarlyStopping
from framework.callbacks.lr_monitor import LearningRateMonitor
from framework.callbacks.model_checkpoint import ModelCheckpoint
from framework.callbacks.progress import ProgressBar

__all__ = [
    "Callback",
    "EarlyStopping",
    "LearningRateMonitor",
    "ModelCheckpoint",
    "ProgressBar",
    "default_callbacks",
]


def default_callbacks(cfg: Any) -> list[Callback]:
    """The callbacks a run config asks for: checkpoints, early stopping, lr, progress."""
    trainer = cfg.trainer
    callbacks: list[Callback] = []
    if trainer.enable_checkpointing and not trainer.fast_dev_run:
        ck = cfg.checkpoint
        callbacks.append(
            ModelCheckpoint(
                monitor=ck.monitor,
                mode=ck.mode,
                save_top_k=ck.save_top_k,
                save_last=ck.save_last,
                every_n_epochs=ck.every_n_epochs,
                filename=ck.filename,
                every_n_train_steps=trainer.save_every_n_steps,
            )
        )
    es = cfg.early_stopping
    if es.monitor:
        callbacks.append(
            EarlyStopping(
                monitor=es.monitor,
                patience=es.patience,
                min_delta=es.min_delta,
                mode=es.mode,
                restore_best_weights=es.restore_best_weights,
            )
        )
    if cfg.get("lr_monitor", True):
        callbacks.append(LearningRateMonitor())
    if trainer.enable_progress_bar:
        callbacks.append(ProgressBar())
    return callbacks
