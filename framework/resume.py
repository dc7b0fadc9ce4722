"""Finding the checkpoint a resume starts from: ``last``, ``best`` or an explicit path."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from framework.checkpoint import CheckpointError, read_state

logger = logging.getLogger(__name__)

__all__ = ["Resume", "last_checkpoint", "resolve_ckpt_path", "run_versions"]

_VERSION = re.compile(r"^version_(\d+)$")


@dataclass(frozen=True)
class Resume:
    path: Path
    #: The run folder's version to continue in, or None to start a new run folder.
    version: int | None


def run_versions(root: Path, name: str) -> list[tuple[int, Path]]:
    """``(N, folder)`` of every ``<root>/<name>/version_N``, newest first."""
    base = root / name
    if not base.is_dir():
        return []
    found = []
    for child in base.iterdir():
        match = _VERSION.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found, reverse=True)


def _loadable(path: Path) -> bool:
    try:
        read_state(path)
    except CheckpointError as error:
        logger.warning("skipping unloadable checkpoint: %s", error)
        return False
    return True


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint to resume one run folder from; None when it holds no loadable one.

    That is ``checkpoints/last.ckpt``, or, when it is missing or unloadable, the newest other
    loadable checkpoint of the folder (with a warning naming it).
    """
    checkpoints = Path(run_dir) / "checkpoints"
    if not checkpoints.is_dir():
        return None
    last = checkpoints / "last.ckpt"
    if last.is_file() and _loadable(last):
        return last
    others = sorted(
        (p for p in checkpoints.glob("*.ckpt") if p != last),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for candidate in others:
        if _loadable(candidate):
            logger.warning(
                "last.ckpt of %s is missing or unloadable; falling back to %s",
                run_dir,
                candidate.name,
            )
            return candidate
    return None


def _find_last(root: Path, name: str) -> Resume | None:
    for version, folder in run_versions(root, name):
        found = last_checkpoint(folder)
        if found is not None:
            return Resume(found, version)
    return None


def resolve_ckpt_path(ckpt_path: str | Path | None, root: Path, name: str) -> Resume | None:
    """Where to resume from; None for a fresh start.

    ``last`` is the newest run of ``name`` with a loadable checkpoint (falling back from a
    corrupt ``last.ckpt`` to the newest loadable one, with a warning); ``best`` is that run's
    best checkpoint; anything else is a path, which must be a loadable checkpoint.
    """
    if ckpt_path is None:
        return None
    if str(ckpt_path) == "last":
        found = _find_last(root, name)
        if found is None:
            logger.warning(
                "ckpt_path=last but no checkpoint of %r exists under %s; starting from scratch",
                name,
                root,
            )
        return found
    if str(ckpt_path) == "best":
        found = _find_last(root, name)
        if found is None:
            raise FileNotFoundError(
                f"ckpt_path=best but no checkpoint of {name!r} exists under {root}"
            )
        states = read_state(found.path).get("callbacks", {})
        best = next(
            (s.get("best_model_path") for s in states.values() if s.get("best_model_path")), None
        )
        if not best or not Path(best).is_file():
            raise FileNotFoundError(
                f"ckpt_path=best but the run {found.path.parent.parent} recorded no best "
                f"checkpoint that still exists (recorded: {best!r})"
            )
        return Resume(Path(best), found.version)

    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"ckpt_path {str(path)!r} does not exist; give 'last', 'best' or a .ckpt file"
        )
    read_state(path)  # a corrupt file is reported by name here
    version = None
    run = path.resolve().parent.parent
    match = _VERSION.match(run.name)
    if path.parent.name == "checkpoints" and match and run.parent == (root / name).resolve():
        version = int(match.group(1))
    return Resume(path, version)
