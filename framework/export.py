"""Exporting a trained model as one ``.keras`` file that loads under either backend.

A ``.keras`` file holds the architecture, the weights and the optimizer state in Keras's own
backend-neutral format: a model trained under JAX loads under TensorFlow and back. The file is
written next to its target and renamed into place, so a crash never leaves half a model.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["export_model", "load_model"]


def export_model(model: Any, path: str | os.PathLike) -> Path:
    """Save ``model`` (architecture, weights, optimizer) to the ``.keras`` file ``path``."""
    import keras

    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"an exported model's file name must end in .keras; received {path}")
    if keras.backend.backend() == "jax" and hasattr(model, "jax_state_sync"):
        model.jax_state_sync()  # mid-fit, JAX keeps the live values outside the variables
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".keras", dir=path.parent)
    os.close(fd)
    try:
        model.save(tmp_name)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    logger.info("model exported to %s", path)
    return path


def load_model(path: str | os.PathLike, compile: bool = True) -> Any:  # noqa: A002 - Keras's name
    """Load a ``.keras`` file written by ``export_model`` (under either backend)."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no exported model at {str(path)!r}")
    # safe_mode refuses files that would run arbitrary code (lambda layers) on load.
    return keras.saving.load_model(path, compile=compile, safe_mode=True)
