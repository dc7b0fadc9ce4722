"""Decoding images with Pillow and resizing them to a fixed size, optionally to a region first.

``load_images`` turns a list of files in a zip archive or folder into one uint8 array, in
worker processes when there are many.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from framework.data.archives import DataError, FileTree, open_tree

logger = logging.getLogger(__name__)

__all__ = [
    "ImageJob",
    "decode_image",
    "image_suffixes",
    "load_images",
    "resize_image",
    "scale_box",
]

Box = tuple[float, float, float, float]

Image.init()
_FORMATS = dict(Image.registered_extensions())

# Below this many images, starting worker processes costs more than it saves.
_PARALLEL_FROM = 4096
_CHUNK = 1024


@dataclass(frozen=True)
class ImageJob:
    """One file to load. ``box`` (left, top, right, bottom) is given for an image of size
    ``declared`` (width, height) and scaled to the size the file really has."""

    member: str
    box: Box | None = None
    declared: tuple[int, int] | None = None


def image_suffixes() -> frozenset[str]:
    """File suffixes (lower case, with the dot) of the formats this Pillow can read."""
    Image.init()
    return frozenset(
        suffix for suffix, kind in Image.registered_extensions().items() if kind in Image.OPEN
    )


def decode_image(data: bytes, name: str, suffix: str = "") -> Image.Image:
    """Fully decode an image to RGB; a truncated or corrupt file raises DataError naming it.

    ``suffix`` (like ``.ppm``) lets Pillow try that format first instead of probing each one.
    """
    try:
        image = _open(data, suffix)
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"image {name} cannot be decoded ({exc}); the file is truncated, corrupt or not "
            "an image format Pillow reads"
        ) from exc
    return image if image.mode == "RGB" else image.convert("RGB")


def _open(data: bytes, suffix: str) -> Image.Image:
    hint = _FORMATS.get(suffix.lower())
    if hint is not None:
        try:
            return Image.open(io.BytesIO(data), formats=(hint,))
        except Image.UnidentifiedImageError:
            pass  # a file named like another format: let Pillow probe them all
    return Image.open(io.BytesIO(data))


def scale_box(box: Box, declared: tuple[int, int], actual: tuple[int, int]) -> Box:
    """Map a box given for an image of size ``declared`` (w, h) onto one of size ``actual``.

    Annotations keep the size of the original image; a copy that was resized since needs its
    boxes scaled by the same factors.
    """
    scale_x = actual[0] / declared[0]
    scale_y = actual[1] / declared[1]
    left, top, right, bottom = box
    return (left * scale_x, top * scale_y, right * scale_x, bottom * scale_y)


def resize_image(
    image: Image.Image, size: Sequence[int], box: Box | None = None, name: str = "image"
) -> np.ndarray:
    """Resize (bilinear) the whole image, or the region ``box`` of it, to ``size`` (w, h).

    ``box`` is ``(left, top, right, bottom)`` in pixels, right and bottom exclusive, and may
    hold fractions; it is clipped to the image. Returns an ``(h, w, 3)`` uint8 array.
    """
    width, height = int(size[0]), int(size[1])
    if box is not None:
        left, top, right, bottom = box
        clipped = (
            max(0.0, left),
            max(0.0, top),
            min(image.width, right),
            min(image.height, bottom),
        )
        if clipped[2] - clipped[0] <= 0 or clipped[3] - clipped[1] <= 0:
            raise DataError(
                f"{name} has an empty region of interest: the box {tuple(box)} lies outside "
                f"the image of {image.width}x{image.height} pixels; a box needs "
                "left < right and top < bottom inside the image"
            )
        box = clipped
    if box is None and image.size == (width, height):
        return np.asarray(image, dtype=np.uint8)
    resized = image.resize((width, height), Image.Resampling.BILINEAR, box=box)
    return np.asarray(resized, dtype=np.uint8)


def _decode_jobs(tree: FileTree, jobs: Sequence[ImageJob], size: tuple[int, int]) -> np.ndarray:
    images = np.empty((len(jobs), size[1], size[0], 3), dtype=np.uint8)
    for index, job in enumerate(jobs):
        where = tree.describe(job.member)
        image = decode_image(tree.read(job.member), where, PurePosixPath(job.member).suffix)
        box = job.box
        if box is not None and job.declared is not None:
            box = scale_box(box, job.declared, image.size)
        images[index] = resize_image(image, size, box, where)
    return images


# One open tree per worker process: reading a large archive's index costs about a second.
_WORKER_TREES: dict[str, FileTree] = {}


def _worker_chunk(location: str, jobs: Sequence[ImageJob], size: tuple[int, int]) -> np.ndarray:
    if location not in _WORKER_TREES:
        _WORKER_TREES[location] = open_tree(location)
    return _decode_jobs(_WORKER_TREES[location], jobs, size)


def load_images(
    location: str | Path,
    jobs: Sequence[ImageJob],
    size: tuple[int, int],
    *,
    workers: int | None = None,
    progress: str | None = None,
) -> np.ndarray:
    """Decode and resize ``jobs`` from the zip archive or folder ``location``: (N, h, w, 3).

    ``workers`` None uses up to 8 processes for a large list (when this process may fork);
    ``progress`` is the label of a progress bar (None: no bar). Errors name the file at fault.
    """
    location = str(location)
    chunks = [jobs[start : start + _CHUNK] for start in range(0, len(jobs), _CHUNK)]
    if workers is None:
        workers = min(8, os.cpu_count() or 1) if len(jobs) >= _PARALLEL_FROM else 1
    images = np.empty((len(jobs), size[1], size[0], 3), dtype=np.uint8)

    if workers > 1 and not _can_fork():
        # Limitation: worker processes are forked, which is only safe in a process that runs
        # no other thread; where TensorFlow or JAX is loaded, or off Linux, images are decoded
        # in this process. Spawned workers would lift this but re-run the caller's main
        # script, which breaks scripts without a __main__ guard.
        logger.debug("decoding %d images in this process: other threads run", len(jobs))
        workers = 1
    if workers <= 1:
        with open_tree(location) as tree, _progress_bar(progress, len(jobs)) as advance:
            for number, chunk in enumerate(chunks):
                start = number * _CHUNK
                images[start : start + len(chunk)] = _decode_jobs(tree, chunk, size)
                advance(len(chunk))
        return images

    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=context) as pool:
        # The first submit forks every worker, before the progress bar starts its thread.
        futures = [pool.submit(_worker_chunk, location, chunk, size) for chunk in chunks]
        try:
            with _progress_bar(progress, len(jobs)) as advance:
                for number, future in enumerate(futures):
                    chunk = future.result()
                    images[number * _CHUNK : number * _CHUNK + len(chunk)] = chunk
                    advance(len(chunk))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return images


def _can_fork() -> bool:
    # TensorFlow and JAX run native thread pools that threading cannot see.
    heavy = any(name in sys.modules for name in ("tensorflow", "jax", "torch"))
    return sys.platform.startswith("linux") and threading.active_count() == 1 and not heavy


@contextmanager
def _progress_bar(label: str | None, total: int) -> Iterator:
    if label is None:
        yield lambda count: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total)
        yield lambda count: bar.advance(task, count)
