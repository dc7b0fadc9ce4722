"""TensorBoard event files written with the ``tensorboard`` package alone, no TensorFlow."""

from __future__ import annotations

import io
import logging
import os
import re
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2, summary_v2
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.text.summary_v2 import text_pb
from tensorboard.summary.writer.record_writer import RecordWriter

from framework.loggers.base import (
    Logger,
    check_status,
    check_step,
    flatten_params,
    scalar_metrics,
)
from framework.loggers.versioning import resolve_run_dir

logger = logging.getLogger(__name__)

__all__ = ["TensorBoardLogger"]

# More images than this in one call is almost always a whole batch passed by mistake.
MAX_IMAGES = 16
# Final metrics given to log_hyperparams are written under this prefix, so that they never
# share a tag (and so a step) with the curves written by log_metrics.
HPARAMS_METRIC_PREFIX = "hparams/"

_EVENT_FILE = re.compile(r"events\.out\.tfevents\.(\d+)\..*")
_END_STATUS = {"success": api_pb2.STATUS_SUCCESS, "failed": api_pb2.STATUS_FAILURE}
_COLORSPACE = {1: 1, 2: 2, 3: 3, 4: 4}  # channels -> Summary.Image colorspace (L, LA, RGB, RGBA)


def _event_files(run_dir: Path) -> dict[Path, int]:
    """The event files in ``run_dir`` and the time stamp in each name."""
    found = {}
    for path in run_dir.iterdir():
        if match := _EVENT_FILE.fullmatch(path.name):
            found[path] = int(match.group(1))
    return found


class _EventFile:
    """One append-only event file in a run folder.

    ``tensorboard``'s own ``EventFileWriter`` opens files through ``tf.io.gfile``, which imports
    TensorFlow (seconds, and a second framework under JAX); plain files and its record framing
    are all a local run folder needs.
    """

    def __init__(self, run_dir: Path) -> None:
        # Readers replay a run's event files in name order, and a resumed run's purge marker
        # only works if its file comes after the interrupted one, so the time field of the name
        # is kept past every existing file even when two files start within one second.
        stamp = max([int(time.time()), *(t + 1 for t in _event_files(run_dir).values())])
        name = f"events.out.tfevents.{stamp:010d}.{socket.gethostname()}.{os.getpid()}.kiln"
        self.path = run_dir / name
        self._records = RecordWriter(open(self.path, "xb"))  # noqa: SIM115 (closed in close())
        self.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        self.flush()

    def write(self, event: event_pb2.Event) -> None:
        self._records.write(event.SerializeToString())

    def flush(self) -> None:
        self._records.flush()

    def close(self) -> None:
        self._records.close()


class TensorBoardLogger(Logger):
    """Writes scalars, hyperparameters, images, figures and text for TensorBoard.

    Each run gets ``<save_dir>/<name>/version_<N>``; ``version=None`` claims the next free
    number. A resumed run passes its ``version`` and the ``purge_step`` it restarts from: events
    at ``purge_step`` or later that the interrupted run wrote are then hidden by TensorBoard, so
    no step shows twice.

    Works the same under the TensorFlow and the JAX backend: values are plain ``simple_value``
    scalars, and TensorFlow is never imported.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        name: str,
        version: int | None = None,
        purge_step: int | None = None,
    ) -> None:
        if purge_step is not None:
            purge_step = check_step(purge_step)
        self._version, self._log_dir = resolve_run_dir(save_dir, name, version)

        # TensorBoard takes a run's first START session log as its beginning and every later
        # one as a restart that hides the events at or after its step from earlier files. So a
        # fresh run folder gets its START first, a resumed one a START at the purge step, and a
        # logger that only adds to an existing run (or reopens after finalize) writes none.
        has_events = bool(_event_files(self._log_dir))
        if not has_events:
            self._start_step: int | None = purge_step or 0
        elif purge_step is not None:
            self._start_step = purge_step
            logger.info(
                "TensorBoard log of %s resumes at step %d; earlier events at that step or later "
                "are hidden",
                self._log_dir,
                purge_step,
            )
        else:
            self._start_step = None
        # Final metrics from log_hyperparams go at the last step logged; a resumed run that
        # has logged nothing yet is at its purge step.
        self._last_step = purge_step or 0
        self._hparams: dict[str, Any] | None = None
        self._file: _EventFile | None = None
        self._open()

    @property
    def log_dir(self) -> Path:
        return self._log_dir

    @property
    def version(self) -> int:
        return self._version

    def _open(self) -> _EventFile:
        if self._file is not None:
            return self._file
        self._file = _EventFile(self._log_dir)
        logger.debug("Writing TensorBoard events to %s", self._file.path)
        if self._start_step is not None:
            start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
            self._write(event_pb2.Event(step=self._start_step, session_log=start))
            self._start_step = None
        return self._file

    def _write(self, event: event_pb2.Event) -> None:
        if not event.wall_time:
            event.wall_time = time.time()
        file = self._open()
        file.write(event)
        # Flushing each call keeps a live board current and loses nothing on a crash; a log call
        # carries one small record, so the cost is one write system call.
        file.flush()

    def _write_summary(self, summary: summary_pb2.Summary, step: int) -> None:
        self._last_step = max(self._last_step, step)
        self._write(event_pb2.Event(step=step, summary=summary))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        step = check_step(step)
        values = scalar_metrics(metrics)
        if not values:
            return
        summary = summary_pb2.Summary()
        for tag, value in values.items():
            summary.value.add(tag=tag, simple_value=value)
        self._write_summary(summary, step)

    def log_hyperparams(
        self, params: Mapping[str, Any], metrics: Mapping[str, float] | None = None
    ) -> None:
        """Record ``params`` for TensorBoard's HPARAMS tab, and ``metrics`` as its columns.

        Metrics are written as scalars named ``hparams/<name>`` at the last step logged; the
        tab also lists the last value of every other scalar of the run.
        """
        flat = flatten_params(params)
        if self._hparams is None:
            start = summary_v2.hparams_pb(flat, start_time_secs=time.time())
            self._write_summary(start, step=0)
            self._hparams = flat
        elif flat != self._hparams:
            logger.warning(
                "Hyperparameters of %s were already recorded and TensorBoard keeps the first "
                "set; the changed values are not written",
                self._log_dir,
            )
        if metrics:
            values = scalar_metrics(metrics)
            prefixed = {f"{HPARAMS_METRIC_PREFIX}{key}": value for key, value in values.items()}
            self.log_metrics(prefixed, self._last_step)

    def log_images(self, tag: str, images: Any, step: int) -> None:
        """Write images (N, H, W, C) as PNG, tagged ``<tag>`` if N is 1, else ``<tag>/<i>``."""
        step = check_step(step)
        batch = _to_uint8_images(tag, images)
        if len(batch) > MAX_IMAGES:
            logger.warning(
                "log_images(%r) received %d images; writing only the first %d",
                tag,
                len(batch),
                MAX_IMAGES,
            )
            batch = batch[:MAX_IMAGES]
        summary = summary_pb2.Summary()
        for index, image in enumerate(batch):
            image_tag = tag if len(batch) == 1 else f"{tag}/{index}"
            summary.value.add(tag=image_tag, image=_png_image(image))
        self._write_summary(summary, step)

    def log_figure(self, tag: str, figure: Any, step: int) -> None:
        """Render a matplotlib figure to PNG with the Agg renderer; the figure stays open."""
        step = check_step(step)
        if not hasattr(figure, "savefig"):
            raise ValueError(
                f"log_figure({tag!r}) expects a matplotlib Figure. "
                f"Received: {type(figure).__name__}"
            )
        buffer = io.BytesIO()
        # savefig picks the Agg canvas for PNG whatever backend pyplot uses.
        figure.savefig(buffer, format="png")
        from PIL import Image

        with Image.open(io.BytesIO(buffer.getvalue())) as png:
            width, height = png.size
            channels = len(png.getbands())
        image = summary_pb2.Summary.Image(
            height=height,
            width=width,
            colorspace=_COLORSPACE[channels],
            encoded_image_string=buffer.getvalue(),
        )
        summary = summary_pb2.Summary()
        summary.value.add(tag=tag, image=image)
        self._write_summary(summary, step)

    def log_text(self, tag: str, text: str, step: int) -> None:
        step = check_step(step)
        if not isinstance(text, str):
            raise ValueError(f"log_text({tag!r}) expects a str. Received: {type(text).__name__}")
        self._write_summary(text_pb(tag, text), step)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def finalize(self, status: str) -> None:
        """Close the event file; with hyperparameters logged, record how the run ended.

        A later log call opens a new event file in the same folder.
        """
        check_status(status)
        # Limitation: TensorBoard keeps the first session end it reads for a run, so a run
        # that ended 'failed' and was resumed to success still shows as failed in the HPARAMS
        # tab. 'interrupted' runs are expected to resume and so record no end at all. Fixing
        # this needs a reader that honours the last session end instead of the first.
        if self._hparams is not None and status in _END_STATUS:
            end = plugin_data_pb2.SessionEndInfo(
                status=_END_STATUS[status], end_time_secs=time.time()
            )
            plugin_data = plugin_data_pb2.HParamsPluginData(session_end_info=end)
            summary = summary_pb2.Summary()
            summary.value.add(
                tag=hparams_metadata.SESSION_END_INFO_TAG,
                metadata=hparams_metadata.create_summary_metadata(plugin_data),
                tensor=hparams_metadata.NULL_TENSOR,
            )
            self._write_summary(summary, self._last_step)
        if self._file is not None:
            self._file.close()
            self._file = None
        logger.debug("Closed TensorBoard log %s (%s)", self._log_dir, status)

    def __repr__(self) -> str:
        return f"TensorBoardLogger(log_dir={str(self._log_dir)!r})"


def _to_uint8_images(tag: str, images: Any) -> np.ndarray:
    """Check an (N, H, W, C) batch and return it as uint8."""
    array = np.asarray(images)
    if array.ndim != 4 or array.shape[-1] not in _COLORSPACE or 0 in array.shape:
        raise ValueError(
            f"log_images({tag!r}) expects a non-empty array (N, H, W, C) with C in 1, 2, 3 or 4. "
            f"Received: shape={array.shape}"
        )
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"log_images({tag!r}) expects uint8 images or floats in [0, 1]. "
            f"Received: dtype={array.dtype}"
        )
    low, high = float(np.nanmin(array)), float(np.nanmax(array))
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"log_images({tag!r}) expects float images in [0, 1]. "
            f"Received: values in [{low:g}, {high:g}]"
        )
    return np.round(np.nan_to_num(array) * 255.0).astype(np.uint8)


def _png_image(image: np.ndarray) -> summary_pb2.Summary.Image:
    from PIL import Image

    height, width, channels = image.shape
    pixels = image[..., 0] if channels == 1 else image
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return summary_pb2.Summary.Image(
        height=height,
        width=width,
        colorspace=_COLORSPACE[channels],
        encoded_image_string=buffer.getvalue(),
    )
