"""The logger interface the trainer and callbacks write through."""

from __future__ import annotations

import logging
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["STATUSES", "Logger", "check_status", "check_step", "flatten_params", "scalar_metrics"]

STATUSES = ("success", "failed", "interrupted")


class Logger:
    """Where a run's metrics, hyperparameters, images and text go.

    ``log_dir`` is the run folder (``<root>/<name>/version_<N>``); the trainer writes its
    checkpoints, ``config.yaml`` and model summary there too.
    """

    @property
    def log_dir(self) -> Path:
        raise NotImplementedError

    @property
    def version(self) -> int:
        raise NotImplementedError

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        raise NotImplementedError

    def log_hyperparams(
        self, params: Mapping[str, Any], metrics: Mapping[str, float] | None = None
    ) -> None:
        """Record hyperparameters (flattened dotted keys) with the run's final metrics."""

    def log_images(self, tag: str, images: Any, step: int) -> None:
        """Images as an array (N, H, W, C), uint8 or float in [0, 1]."""

    def log_figure(self, tag: str, figure: Any, step: int) -> None:
        """A matplotlib figure, rendered to an image."""

    def log_text(self, tag: str, text: str, step: int) -> None:
        """Text (markdown) shown in TensorBoard's text tab."""

    def flush(self) -> None:
        """Make everything written so far visible to readers."""

    def finalize(self, status: str) -> None:
        """Close files; ``status`` is 'success', 'failed' or 'interrupted'."""


def check_status(status: Any) -> str:
    """Return ``status`` if it is one that ``Logger.finalize`` accepts, else raise."""
    if status not in STATUSES:
        raise ValueError(
            f"Unknown run status {status!r}; allowed statuses: {', '.join(STATUSES)}."
        )
    return status


def check_step(step: Any) -> int:
    """Return ``step`` as an int, or raise if it is not an integer >= 0."""
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise ValueError(f"A logging step must be an integer >= 0. Received: step={step!r}")
    return int(step)


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Return ``metrics`` as plain floats; NumPy, JAX and TensorFlow scalars are accepted."""
    result = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"Metric names must be non-empty strings. Received: name={key!r}")
        error = ValueError(
            f"Metric {key!r} must be a real number or a 0-d array. "
            f"Received: {type(value).__name__} {value!r}"
        )
        # float() would also accept text such as "1.5" and one-element arrays of any rank.
        if isinstance(value, str | bytes) or getattr(value, "ndim", 0) != 0:
            raise error
        try:
            result[key] = float(value)
        except (TypeError, ValueError):
            raise error from None
    return result


def flatten_params(
    params: Mapping[str, Any], prefix: str = ""
) -> dict[str, bool | int | float | str]:
    """Flatten nested mappings into dotted keys; values that are not bool/int/float/str become str.

    ``{"optimizer": {"lr": 0.1}, "layers": [8, 16]}`` becomes
    ``{"optimizer.lr": 0.1, "layers": "[8, 16]"}``.
    """
    flat: dict[str, bool | int | float | str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
            value = value.item()  # NumPy and JAX scalars become Python numbers
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
        elif isinstance(value, bool | str):
            flat[name] = value
        elif isinstance(value, numbers.Integral):
            flat[name] = int(value)
        elif isinstance(value, numbers.Real):
            flat[name] = float(value)
        else:
            flat[name] = str(value)
    return flat
