"""The checkpoint format: one ``.ckpt`` file, written atomically.

A checkpoint is a zip archive holding ``model.weights.h5`` (Keras's own weights file: the
model's variables and the optimizer's, step counter and slots included) and ``state.json``
(epoch, global step, callback states, metrics and the resolved config). It is written to a
temporary file in the same folder and renamed over the target, so a crash mid-write leaves the
previous checkpoint intact. Loading reads JSON and HDF5 only: nothing in a checkpoint can run
code.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "load_weights",
    "read_state",
    "remove_stale_temporaries",
    "save_checkpoint",
]

FORMAT_VERSION = 1
_WEIGHTS = "model.weights.h5"
_STATE = "state.json"


class CheckpointError(ValueError):
    """A checkpoint file that is missing, truncated, corrupt or of another format."""


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike, model: Any, state: dict[str, Any]) -> Path:
    """Write ``model`` (with its optimizer) and ``state`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({"format_version": FORMAT_VERSION, **state}, indent=1, default=str)

    # A process killed while writing leaves this hidden file (or the ``.weights-`` scratch
    # folder) behind; ``remove_stale_temporaries`` clears them when the run starts again.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a checkpoint is as readable as its folder
    try:
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".weights-") as scratch:
            weights = Path(scratch) / _WEIGHTS
            model.save_weights(weights)
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
                archive.write(weights, _WEIGHTS)
                archive.writestr(_STATE, payload)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.debug("checkpoint written: %s", path)
    return path


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete what killed checkpoint writes left in ``folder``; return how many were removed.

    Call it only while no other process writes checkpoints into the folder (a run's own
    folder when that run starts).
    """
    folder = Path(folder)
    removed = 0
    for leftover in [*folder.glob(".*.ckpt.*.tmp"), *folder.glob(".weights-*")]:
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        removed += 1
    if removed:
        logger.info(
            "removed %d leftover temporary file(s) of interrupted writes in %s", removed, folder
        )
    return removed


def _open(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is truncated or not a Kiln checkpoint ({error})"
        ) from error
    names = set(archive.namelist())
    if not {_WEIGHTS, _STATE} <= names:
        archive.close()
        raise CheckpointError(
            f"checkpoint {str(path)!r} must hold {_WEIGHTS} and {_STATE}; it holds {sorted(names)}"
        )
    return archive


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    """The ``state.json`` of a checkpoint, after checking the archive's CRCs."""
    path = Path(path)
    with _open(path) as archive:
        try:
            bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise CheckpointError(f"checkpoint {str(path)!r} is corrupt ({error})") from error
        if bad is not None:
            raise CheckpointError(f"checkpoint {str(path)!r} is corrupt: {bad} fails its CRC")
        try:
            state = json.loads(archive.read(_STATE))
        except ValueError as error:
            raise CheckpointError(f"checkpoint {str(path)!r} has unreadable state") from error
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format version {state.get('format_version')!r}; "
            f"this Kiln reads version {FORMAT_VERSION}"
        )
    return state


def load_weights(path: str | os.PathLike, model: Any) -> dict[str, Any]:
    """Load weights and optimizer state into ``model`` (optimizer already built); return state.

    The optimizer must be built first (``optimizer.build(model.trainable_variables)``):
    Keras silently skips the optimizer's variables when it has none to load them into.
    """
    path = Path(path)
    state = read_state(path)
    with _open(path) as archive, tempfile.TemporaryDirectory(prefix="kiln-ckpt-") as scratch:
        archive.extract(_WEIGHTS, scratch)
        try:
            model.load_weights(Path(scratch) / _WEIGHTS)
        except (ValueError, OSError, KeyError) as error:
            raise CheckpointError(
                f"checkpoint {str(path)!r} does not fit this model: {error}"
            ) from error
    return state
