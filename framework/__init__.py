"""Kiln: a Lightning-style trainer for Keras 3 recipes.

Importing ``framework`` imports no Keras: ``Trainer`` and the callbacks load on first use, so
the backend can be chosen first (``framework.backend.select_backend``).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Callback",
    "DataModule",
    "EarlyStopping",
    "LearningRateMonitor",
    "ModelCheckpoint",
    "ProgressBar",
    "Recipe",
    "Trainer",
    "load_config",
    "select_backend",
]

__version__ = "0.1.0"

_LAZY = {
    "Trainer": "framework.trainer",
    "Callback": "framework.callbacks.base",
    "EarlyStopping": "framework.callbacks.early_stopping",
    "LearningRateMonitor": "framework.callbacks.lr_monitor",
    "ModelCheckpoint": "framework.callbacks.model_checkpoint",
    "ProgressBar": "framework.callbacks.progress",
    "Recipe": "framework.recipe",
    "DataModule": "framework.data.datamodule",
    "load_config": "framework.config",
    "select_backend": "framework.backend",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'framework' has no attribute {name!r}")
