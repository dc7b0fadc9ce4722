"""Shared rules for callbacks that watch a metric: inferring ``mode`` and comparing scores."""

from __future__ import annotations

import logging
import math

logger = logging.getLogger(__name__)

__all__ = ["MonitorError", "improved", "infer_mode", "missing_metric_error"]

_MINIMISED = ("loss", "error", "mse", "mae", "mape", "crossentropy", "hinge", "divergence")
_MAXIMISED = ("accuracy", "acc", "auc", "precision", "recall", "f1", "iou")


class MonitorError(ValueError):
    """A monitored metric that is unknown, never logged, or has no inferable mode."""


def infer_mode(monitor: str, mode: str | None) -> str:
    """``mode`` if given, else 'min' for losses and errors, 'max' for accuracy-like metrics."""
    if mode is not None:
        if mode not in ("min", "max"):
            raise MonitorError(f"mode must be 'min' or 'max'; received {mode!r}")
        return mode
    name = monitor.lower()
    for prefix in ("val_", "train_", "test_"):
        name = name.removeprefix(prefix)
    if any(word in name for word in _MINIMISED):
        return "min"
    if any(word in name for word in _MAXIMISED):
        return "max"
    raise MonitorError(
        f"cannot infer whether {monitor!r} should be minimised or maximised; losses and errors "
        "are minimised and accuracy, AUC, precision and recall maximised. Give mode='min' or "
        "mode='max' explicitly."
    )


def improved(score: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """Whether ``score`` beats ``best`` by more than ``min_delta``; NaN never improves."""
    if score is None or math.isnan(score):
        return False
    if best is None:
        return True
    if mode == "min":
        return score < best - min_delta
    return score > best + min_delta


def missing_metric_error(owner: str, monitor: str, logged: list[str]) -> MonitorError:
    return MonitorError(
        f"{owner} monitors {monitor!r}, which was never logged; logged metrics: "
        f"{', '.join(sorted(logged)) or 'none'}"
    )
