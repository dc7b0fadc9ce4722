"""Where a run's metrics go: TensorBoard event files and ``metrics.csv``.

The loggers are imported on first use, so that importing ``framework.loggers.base`` (the
interface) or ``framework.loggers.versioning`` does not load TensorBoard and NumPy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from framework.loggers.base import Logger
    from framework.loggers.csv_logger import CSVLogger
    from framework.loggers.tensorboard import TensorBoardLogger

__all__ = ["CSVLogger", "Logger", "TensorBoardLogger"]

_HOMES = {
    "CSVLogger": "framework.loggers.csv_logger",
    "Logger": "framework.loggers.base",
    "TensorBoardLogger": "framework.loggers.tensorboard",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
