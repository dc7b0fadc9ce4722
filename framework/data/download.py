"""Downloading a file over HTTP(S): resumable, checked, and never half-used.

Bytes go to ``<dest>.part``; the finished file is renamed to ``dest`` only after its size
matches what the server announced and the caller's ``validate`` check passed. An interrupted
download keeps its ``.part`` file and the next call resumes it with a ``Range`` request when
the server honours ranges (and the file has not changed, checked with ``If-Range``), or starts
over when it does not.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from framework.data.archives import DataError

logger = logging.getLogger(__name__)

__all__ = ["download"]

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass
class _Response:
    """What one request gave: where the body starts, and the file's total size if known."""

    start: int
    total: int | None
    validator: str | None


def download(
    url: str,
    dest: str | Path,
    *,
    progress: bool = True,
    validate: Callable[[Path], object] | None = None,
    retries: int = 2,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``; an existing ``dest`` is kept as is.

    ``validate`` receives the complete ``.part`` file and raises ``DataError`` when it is
    unusable. A resumed file that fails it is downloaded once more from the start; a fresh one
    that fails it is deleted and the error raised. A connection that drops is resumed up to
    ``retries`` times before a ``ConnectionError`` is raised (the ``.part`` file stays).
    """
    dest = Path(dest)
    if dest.is_file():
        logger.debug("%s is already downloaded to %s", url, dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    sidecar = dest.with_name(dest.name + ".part.json")

    for attempt in range(retries + 1):
        try:
            resumed = _fetch(url, part, sidecar, progress, timeout, chunk_size)
            break
        except ConnectionError as exc:
            if attempt == retries:
                raise
            logger.warning("%s; retrying (attempt %d of %d)", exc, attempt + 2, retries + 1)

    if validate is not None:
        try:
            validate(part)
        except DataError as exc:
            _remove(part, sidecar)
            if not resumed:
                raise DataError(f"download of {url} is unusable: {exc}") from exc
            logger.warning("resumed download of %s is unusable (%s); starting over", url, exc)
            _fetch(url, part, sidecar, progress, timeout, chunk_size)
            try:
                validate(part)
            except DataError as again:
                _remove(part, sidecar)
                raise DataError(f"download of {url} is unusable: {again}") from again

    os.replace(part, dest)
    _remove(sidecar)
    logger.info("downloaded %s to %s", url, dest)
    return dest


def _fetch(
    url: str, part: Path, sidecar: Path, progress: bool, timeout: float, chunk_size: int
) -> bool:
    """Complete ``part`` from ``url``; returns whether earlier bytes were kept (resumed)."""
    have = part.stat().st_size if part.is_file() else 0
    known = _read_sidecar(sidecar, url) if have else None
    if have and known is None:
        have = 0  # a .part without a matching record comes from elsewhere: start over

    headers = {"User-Agent": "kiln-data/1", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        if known:
            headers["If-Range"] = known
    with _open(url, headers, timeout) as (response, info):
        if info.start not in (0, have):
            _remove(part, sidecar)
            raise ConnectionError(
                f"download of {url} failed: asked for bytes from {have}, the server sent them "
                f"from {info.start}; the partial file was discarded"
            )
        if info.start == 0 and have:
            logger.info("server sent %s from the start; the partial download is discarded", url)
        mode = "ab" if info.start else "wb"
        _write_sidecar(sidecar, url, info.validator)
        written = info.start
        bar_context = _progress_bar(part.name, info.total, written, progress)
        with open(part, mode) as sink, bar_context as bar:
            try:
                while chunk := response.read(chunk_size):
                    sink.write(chunk)
                    written += len(chunk)
                    bar(len(chunk))
            except (OSError, http.client.HTTPException) as exc:
                raise ConnectionError(
                    f"download of {url} stopped at {written} of {info.total or '?'} bytes "
                    f"({exc}); the partial file '{part}' is resumed next time"
                ) from exc
    if info.total is not None and written != info.total:
        raise ConnectionError(
            f"download of {url} ended at {written} of {info.total} bytes; the partial file "
            f"'{part}' is resumed next time"
        )
    return info.start > 0


@contextlib.contextmanager
def _open(url: str, headers: dict[str, str], timeout: float) -> Iterator[tuple[object, _Response]]:
    """Send the request, turning a refused range into a plain request for the whole file."""
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and "Range" in headers:
            exc.close()
            plain = {k: v for k, v in headers.items() if k not in ("Range", "If-Range")}
            with _open(url, plain, timeout) as opened:
                yield opened
            return
        raise ConnectionError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConnectionError(f"download of {url} failed: {reason}") from exc

    with response:
        validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
        length = response.headers.get("Content-Length")
        if response.status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
            if match is None:
                raise ConnectionError(
                    f"download of {url} failed: a partial response (206) needs a Content-Range "
                    f"header like 'bytes 100-199/200'. Received: "
                    f"{response.headers.get('Content-Range')!r}"
                )
            start = int(match.group(1))
            total = None if match.group(3) == "*" else int(match.group(3))
            yield response, _Response(start, total, validator)
        else:
            total = int(length) if length and length.isdigit() else None
            yield response, _Response(0, total, validator)


@contextlib.contextmanager
def _progress_bar(
    name: str, total: int | None, done: int, enabled: bool
) -> Iterator[Callable[[int], None]]:
    """A rich progress bar for one file, or a no-op when progress is off."""
    if not enabled:
        yield lambda advance: None
        return

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    # stderr keeps stdout free for the summary a command prints when it is done.
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(name.removesuffix(".part"), total=total, completed=done)
        yield lambda advance: bar.advance(task, advance)


def _read_sidecar(sidecar: Path, url: str) -> str | None:
    """The validator (ETag or Last-Modified) recorded for ``url``; "" when none; None: unusable."""
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("url") != url:
        return None
    return str(record.get("validator") or "")


def _write_sidecar(sidecar: Path, url: str, validator: str | None) -> None:
    sidecar.write_text(json.dumps({"url": url, "validator": validator}))


def _remove(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
