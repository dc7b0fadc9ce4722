"""Reading zip archives and folders of files safely, with errors that name the file at fault.

A dataset's files arrive either as zip archives or as a folder someone already unpacked.
``open_tree`` gives both the same small interface (list the files, read one), so that a dataset
reader is written once. Every member name is checked before anything is read or written: a
name that is absolute or climbs out with ``..`` is refused, whether we extract it or not.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = [
    "DataError",
    "DirTree",
    "FileTree",
    "ZipTree",
    "check_member_name",
    "extract_archive",
    "open_archive",
    "open_tree",
    "read_checksums",
    "verify_archive",
    "verify_sha256",
]


class DataError(ValueError):
    """Input data that is corrupt, incomplete, inconsistent or unsafe to unpack."""


def check_member_name(name: str, archive: str | Path) -> str:
    """The member's path with ``/`` separators, or a DataError when it would land outside.

    Allowed are relative paths without ``..`` parts; refused are absolute paths (``/x``,
    ``\\x``), Windows drive paths (``C:x``) and names with NUL bytes.
    """
    posix = name.replace("\\", "/")
    problem = None
    if "\x00" in name:
        problem = "contains a NUL byte"
    elif posix.startswith("/"):
        problem = "is an absolute path"
    elif len(posix) >= 2 and posix[1] == ":":
        problem = "starts with a drive letter"
    elif ".." in posix.split("/"):
        problem = "climbs out of the target folder with '..'"
    if problem:
        raise DataError(
            f"archive '{archive}' holds the member {name!r}, which {problem}; only relative "
            "paths that stay inside the target folder are allowed"
        )
    return posix


def open_archive(path: str | Path) -> zipfile.ZipFile:
    """Open a zip archive after checking that it exists, parses and has only safe names."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"archive '{path}' does not exist")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(
            f"archive '{path}' is not a readable zip file ({exc}); it may be truncated or "
            "corrupt: download or copy it again"
        ) from exc
    try:
        for info in archive.infolist():
            check_member_name(info.filename, path)
    except DataError:
        archive.close()
        raise
    return archive


def verify_archive(path: str | Path) -> int:
    """Check every member's CRC (``ZipFile.testzip``); returns the number of members."""
    path = Path(path)
    with open_archive(path) as archive:
        try:
            bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise DataError(f"archive '{path}' cannot be read to its end: {exc}") from exc
        if bad is not None:
            raise DataError(
                f"archive '{path}' fails its checksum test: member {bad!r} does not match its "
                "stored CRC-32; the archive is corrupt"
            )
        return len(archive.infolist())


def read_checksums(path: str | Path) -> dict[str, str]:
    """``{file name: sha256 hex}`` from a ``sha256sum``-style file; {} when there is none."""
    path = Path(path)
    if not path.is_file():
        return {}
    sums = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        digest, _, name = line.strip().partition(" ")
        if not line.strip():
            continue
        if len(digest) != 64 or not name.strip():
            raise DataError(
                f"checksum file '{path}' line {number} must read '<64 hex digits>  <file>'. "
                f"Received: {line!r}"
            )
        sums[name.strip().lstrip("*")] = digest.lower()
    return sums


def verify_sha256(path: str | Path, expected: str, listed_in: str | Path) -> None:
    """Raise DataError naming ``path`` when its sha256 differs from ``expected``."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != expected.lower():
        raise DataError(
            f"file '{path}' fails its checksum: '{listed_in}' lists sha256 {expected}; "
            f"received {digest.hexdigest()}"
        )


def extract_archive(path: str | Path, target: str | Path) -> Path:
    """Unpack a zip archive into ``target``, which must not exist yet.

    The members go to a temporary sibling folder first, which is renamed to ``target`` only
    after every member was written, so a failure leaves no half-filled ``target`` behind.
    """
    path, target = Path(path), Path(target)
    if target.exists():
        raise FileExistsError(f"cannot extract '{path}': the target '{target}' already exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with open_archive(path) as archive:
            for info in archive.infolist():
                relative = check_member_name(info.filename, path)
                destination = staging.joinpath(*relative.split("/"))
                if info.is_dir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, open(destination, "wb") as sink:
                    shutil.copyfileobj(source, sink)
        os.replace(staging, target)
    except zipfile.BadZipFile as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"archive '{path}' is corrupt: {exc}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.debug("extracted %s into %s", path, target)
    return target


class FileTree:
    """Files addressed by relative POSIX names, from a zip archive or a folder."""

    #: What the tree is, for error messages: the archive or folder path.
    location: str

    def names(self) -> list[str]:
        """Relative POSIX names of all files (no folders)."""
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def describe(self, name: str) -> str:
        """Where a file lives, for messages: ``'archive.zip' member 'a/b'`` or a path."""
        raise NotImplementedError

    def close(self) -> None:
        """Release open files."""

    def __enter__(self) -> FileTree:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ZipTree(FileTree):
    """A zip archive's members; reading a member checks its CRC."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self._archive = open_archive(self.path)

    def names(self) -> list[str]:
        return [info.filename for info in self._archive.infolist() if not info.is_dir()]

    def read(self, name: str) -> bytes:
        try:
            return self._archive.read(name)
        except KeyError as exc:
            raise FileNotFoundError(f"{self.describe(name)} does not exist") from exc
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            # zipfile raises BadZipFile("Bad CRC-32 ...") when a member's bytes were altered.
            raise DataError(
                f"{self.describe(name)} cannot be read: {exc}; the archive is corrupt or its "
                "checksum does not match"
            ) from exc

    def describe(self, name: str) -> str:
        return f"archive '{self.path}' member {name!r}"

    def close(self) -> None:
        self._archive.close()


class DirTree(FileTree):
    """The files below a folder (hidden files and folders are left out)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"folder '{self.path}' does not exist")

    def names(self) -> list[str]:
        return sorted(self._walk())

    def _walk(self) -> Iterator[str]:
        for folder, subfolders, files in os.walk(self.path):
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
            relative = Path(folder).relative_to(self.path)
            for name in files:
                if not name.startswith("."):
                    yield (relative / name).as_posix()

    def read(self, name: str) -> bytes:
        relative = check_member_name(name, self.path)
        path = self.path.joinpath(*relative.split("/"))
        if not path.is_file():
            raise FileNotFoundError(f"file '{path}' does not exist")
        return path.read_bytes()

    def describe(self, name: str) -> str:
        return f"file '{self.path / name}'"


def open_tree(path: str | Path) -> FileTree:
    """A ``ZipTree`` for a ``.zip`` file, a ``DirTree`` for a folder."""
    path = Path(path)
    if path.is_dir():
        return DirTree(path)
    if path.is_file():
        return ZipTree(path)
    raise FileNotFoundError(f"'{path}' is neither a folder nor a zip archive: it does not exist")
