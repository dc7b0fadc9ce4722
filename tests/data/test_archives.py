"""Zip archives and folders: unsafe member names, CRC checks, atomic extraction, checksums."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from framework.data.archives import (
    DataError,
    DirTree,
    ZipTree,
    check_member_name,
    extract_archive,
    open_archive,
    open_tree,
    read_checksums,
    verify_archive,
    verify_sha256,
)


def _zip(path: Path, members: dict[str, bytes], stored: bool = False) -> Path:
    method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return path


def _corrupt(path: Path, marker: bytes) -> None:
    """Change one byte of a stored member's data, leaving its recorded CRC as it was."""
    raw = bytearray(path.read_bytes())
    index = raw.index(marker)
    raw[index] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("name", ["a/b/c.ppm", "top.csv", "dir/", "a/..b/c"])
def test_check_member_name_accepts_relative_paths(name: str) -> None:
    assert check_member_name(name, "x.zip") == name


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../evil.ppm", "climbs out"),
        ("a/../../evil.ppm", "climbs out"),
        ("a\\..\\..\\evil.ppm", "climbs out"),
        ("/etc/evil.ppm", "absolute path"),
        ("\\evil.ppm", "absolute path"),
        ("C:evil.ppm", "drive letter"),
    ],
)
def test_check_member_name_refuses_paths_leaving_the_target(name: str, problem: str) -> None:
    with pytest.raises(DataError, match=problem) as caught:
        check_member_name(name, "data/x.zip")
    assert "data/x.zip" in str(caught.value)
    assert repr(name) in str(caught.value)


@pytest.mark.parametrize("name", ["../evil.txt", "/abs/evil.txt"])
def test_open_archive_refuses_unsafe_members(tmp_path: Path, name: str) -> None:
    path = _zip(tmp_path / "bad.zip", {"ok.txt": b"fine", name: b"evil"})

    with pytest.raises(DataError, match=r"bad\.zip.*evil\.txt"):
        open_archive(path)


def test_extract_archive_refuses_unsafe_members_and_writes_nothing(tmp_path: Path) -> None:
    path = _zip(tmp_path / "bad.zip", {"ok.txt": b"fine", "../evil.txt": b"evil"})

    with pytest.raises(DataError, match="climbs out"):
        extract_archive(path, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zip"]


def test_extract_archive_writes_members(tmp_path: Path) -> None:
    path = _zip(tmp_path / "good.zip", {"a/b.txt": b"one", "c.txt": b"two"})

    target = extract_archive(path, tmp_path / "out")

    assert (target / "a" / "b.txt").read_bytes() == b"one"
    assert (target / "c.txt").read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.zip", "out"]


def test_extract_archive_refuses_an_existing_target(tmp_path: Path) -> None:
    path = _zip(tmp_path / "good.zip", {"a.txt": b"one"})
    (tmp_path / "out").mkdir()

    with pytest.raises(FileExistsError, match="already exists"):
        extract_archive(path, tmp_path / "out")


def test_extract_archive_corrupt_member_leaves_no_target(tmp_path: Path) -> None:
    path = _zip(tmp_path / "crc.zip", {"a.txt": b"MARKER-one", "b.txt": b"two"}, stored=True)
    _corrupt(path, b"MARKER")

    with pytest.raises(DataError, match=r"crc\.zip"):
        extract_archive(path, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crc.zip"]


def test_verify_archive_counts_members_of_a_sound_archive(tmp_path: Path) -> None:
    path = _zip(tmp_path / "good.zip", {"a.txt": b"one", "b.txt": b"two"})

    assert verify_archive(path) == 2


def test_verify_archive_names_the_member_failing_its_crc(tmp_path: Path) -> None:
    path = _zip(tmp_path / "crc.zip", {"a.txt": b"fine", "b.txt": b"MARKER-data"}, stored=True)
    _corrupt(path, b"MARKER")

    with pytest.raises(DataError, match=r"crc\.zip.*'b\.txt'.*CRC-32"):
        verify_archive(path)


def test_zip_tree_read_names_a_member_failing_its_crc(tmp_path: Path) -> None:
    path = _zip(tmp_path / "crc.zip", {"b.txt": b"MARKER-data"}, stored=True)
    _corrupt(path, b"MARKER")

    with ZipTree(path) as tree, pytest.raises(DataError, match=r"crc\.zip.*'b\.txt'.*checksum"):
        tree.read("b.txt")


def test_open_archive_names_a_file_that_is_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "truncated.zip"
    path.write_bytes(_zip(tmp_path / "good.zip", {"a.txt": b"x" * 100}).read_bytes()[:40])

    with pytest.raises(DataError, match=r"truncated\.zip.*not a readable zip"):
        open_archive(path)


def test_open_archive_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"absent\.zip"):
        open_archive(tmp_path / "absent.zip")


def test_open_tree_reads_zip_and_folder_alike(tmp_path: Path) -> None:
    path = _zip(tmp_path / "t.zip", {"a/b.txt": b"one", "c.txt": b"two"})
    extract_archive(path, tmp_path / "folder")
    (tmp_path / "folder" / ".hidden").write_bytes(b"skip")

    with open_tree(path) as zipped, open_tree(tmp_path / "folder") as folder:
        assert isinstance(zipped, ZipTree)
        assert isinstance(folder, DirTree)
        assert sorted(zipped.names()) == folder.names() == ["a/b.txt", "c.txt"]
        assert zipped.read("a/b.txt") == folder.read("a/b.txt") == b"one"
        with pytest.raises(FileNotFoundError, match=r"absent\.txt"):
            folder.read("absent.txt")
        with pytest.raises(DataError, match="climbs out"):
            folder.read("../t.zip")


def test_read_checksums_and_verify_sha256(tmp_path: Path) -> None:
    data = tmp_path / "a.zip"
    data.write_bytes(b"content")
    digest = hashlib.sha256(b"content").hexdigest()
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{digest}  a.zip\n{'0' * 64} *b.zip\n")

    listed = read_checksums(sums)
    verify_sha256(data, listed["a.zip"], sums)

    assert listed == {"a.zip": digest, "b.zip": "0" * 64}
    with pytest.raises(DataError, match=r"a\.zip' fails its checksum.*SHA256SUMS"):
        verify_sha256(data, listed["b.zip"], sums)
    assert read_checksums(tmp_path / "absent") == {}


def test_read_checksums_refuses_a_malformed_line(tmp_path: Path) -> None:
    sums = tmp_path / "SHA256SUMS"
    sums.write_text("abc a.zip\n")

    with pytest.raises(DataError, match="line 1 must read"):
        read_checksums(sums)
