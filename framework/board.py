"""``kiln board``: TensorBoard's server, started inside this process over a runs folder."""

from __future__ import annotations

import logging
import os
import socket
import sys
import types
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["free_port", "serve"]


def serve(logdir: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 6006) -> str:
    """Start TensorBoard over ``logdir`` in a background thread and return its URL.

    The server lives as long as this process; the caller blocks (until Ctrl-C) to keep it up.
    It listens on ``127.0.0.1`` unless told otherwise, so a shared machine does not expose runs.

    Unless TensorBoard has already loaded TensorFlow in this process, it is told to read files
    with its own TensorFlow-free file layer, for this process's lifetime: starting takes about a
    second instead of seven.
    """
    path = Path(logdir)
    if not path.is_dir():
        raise FileNotFoundError(
            f"The TensorBoard log folder must be an existing folder. Received: logdir={path}"
        )
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"The port must be an integer in 0..65535. Received: port={port!r}")

    # Imported here: the TensorBoard program pulls in every plugin, which `kiln` commands other
    # than `board` should not pay for.
    _read_without_tensorflow()
    from tensorboard import program

    board = program.TensorBoard()
    # The Python loader honours the resume marker (a START session log) that hides the steps an
    # interrupted run wrote after its last checkpoint; the Rust loader of `load_fast` ignores
    # it and drops such points only once the resumed run writes the same tag again.
    # Limitation: the Python loader is slower than the Rust one on logdirs with thousands of
    # runs; `tensorboard --logdir DIR --load_fast=true` serves those faster, at the price above.
    board.configure(logdir=str(path), host=host, port=port, load_fast="false")
    try:
        url = board.launch()
    except program.TensorBoardPortInUseError as error:
        raise OSError(
            f"TensorBoard cannot listen on {host}:{port}: the port is in use; "
            f"pick another port. Details: {error}"
        ) from None
    logger.info("TensorBoard serves %s at %s", path, url)
    return url


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free right now (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _read_without_tensorflow() -> None:
    """Make TensorBoard's lazily loaded ``tf`` resolve to its bundled stub, not TensorFlow.

    ``tensorboard.compat`` picks the stub when a module named ``tensorboard.compat.notf`` can be
    imported (a marker its own builds ship); an empty module under that name is the marker. It
    has no effect once TensorBoard has resolved its ``tf`` already.
    """
    # Limitation: the stub reads local folders (and fsspec URLs) only, not TensorFlow-specific
    # file systems; serve() accepts local folders only, so nothing is lost here.
    marker = "tensorboard.compat.notf"
    if marker not in sys.modules:
        sys.modules[marker] = types.ModuleType(marker)
