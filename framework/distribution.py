"""Device setup and data-parallel scopes (placeholder: single device only for now)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["configure_devices", "scope"]


def configure_devices(cfg: Any) -> None:
    """Prepare device flags that must be set before the backend is imported."""


@contextlib.contextmanager
def scope(strategy: str, devices: int | str) -> Iterator[None]:
    """The context in which the model and optimizer are built."""
    if strategy != "single":
        raise NotImplementedError(f"trainer.strategy={strategy!r} is not available yet")
    yield
