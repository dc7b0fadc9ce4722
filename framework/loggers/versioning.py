"""Run folders ``<save_dir>/<name>/version_<N>``, allocated so that no two runs share one."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["existing_versions", "resolve_run_dir"]

_VERSION_DIR = re.compile(r"version_(\d+)")


def existing_versions(root: str | os.PathLike[str]) -> list[int]:
    """The ``N`` of every ``version_<N>`` folder under ``root``, sorted; empty if none."""
    root = Path(root)
    if not root.is_dir():
        return []
    versions = []
    for entry in root.iterdir():
        match = _VERSION_DIR.fullmatch(entry.name)
        if match and entry.is_dir():
            versions.append(int(match.group(1)))
    return sorted(versions)


def resolve_run_dir(
    save_dir: str | os.PathLike[str], name: str, version: int | None = None
) -> tuple[int, Path]:
    """Return ``(version, folder)`` for a run, creating the folder.

    With ``version=None`` the next free ``version_<N>`` is claimed with ``os.mkdir``, which
    succeeds for exactly one caller, so processes started at the same moment never share a
    folder. With a given ``version`` (a resumed run) the folder is reused, or created if missing.
    """
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(
            "The logger name must be a non-empty folder name without path separators. "
            f"Received: name={name!r}"
        )
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 0
    ):
        raise ValueError(
            f"The run version must be an integer >= 0, or None for the next free one. "
            f"Received: version={version!r}"
        )

    root = Path(save_dir) / name
    root.mkdir(parents=True, exist_ok=True)

    if version is not None:
        run_dir = root / f"version_{version}"
        if run_dir.is_dir():
            logger.debug("Reusing run folder %s", run_dir)
        run_dir.mkdir(exist_ok=True)
        return version, run_dir

    # Start after the highest existing version; a folder that another process creates between
    # the scan and the mkdir only moves this one on to the next number.
    versions = existing_versions(root)
    candidate = versions[-1] + 1 if versions else 0
    while True:
        run_dir = root / f"version_{candidate}"
        try:
            os.mkdir(run_dir)
        except FileExistsError:
            candidate += 1
            continue
        logger.debug("Allocated run folder %s", run_dir)
        return candidate, run_dir
