"""HTTP downloads: complete, resumed with ranges, restarted without them, never half-used."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from framework.data.archives import DataError
from framework.data.download import download

PAYLOAD = bytes(range(256)) * 400  # 100 KiB


@pytest.fixture
def served(tmp_path: Path) -> Path:
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "file.bin").write_bytes(PAYLOAD)
    return folder


def _leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_download_writes_the_file_and_no_leftovers(served, file_server, tmp_path) -> None:
    server = file_server(served)
    dest = tmp_path / "out" / "file.bin"

    result = download(server.url + "file.bin", dest, progress=False)

    assert result == dest
    assert dest.read_bytes() == PAYLOAD
    assert _leftovers(dest.parent) == ["file.bin"]


def test_download_keeps_an_existing_file_without_a_request(served, file_server, tmp_path) -> None:
    server = file_server(served)
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"already here")

    download(server.url + "file.bin", dest, progress=False)

    assert dest.read_bytes() == b"already here"
    assert server.requests == []


def test_download_resumes_a_partial_file_with_a_range(served, file_server, tmp_path) -> None:
    server = file_server(served, ranges=True)
    dest = tmp_path / "file.bin"
    server.cut_after = 30_000

    with pytest.raises(ConnectionError, match=r"stopped at|ended at"):
        download(server.url + "file.bin", dest, progress=False, retries=0, chunk_size=4096)
    assert not dest.exists()
    assert (tmp_path / "file.bin.part").stat().st_size == 30_000

    download(server.url + "file.bin", dest, progress=False)

    assert dest.read_bytes() == PAYLOAD
    assert server.requests[-1]["Range"] == "bytes=30000-"
    assert server.status_codes() == [200, 206]
    assert _leftovers(tmp_path) == ["file.bin", "served"]


def test_download_restarts_when_the_server_ignores_ranges(served, file_server, tmp_path) -> None:
    server = file_server(served, ranges=False)
    dest = tmp_path / "file.bin"
    server.cut_after = 30_000
    with pytest.raises(ConnectionError):
        download(server.url + "file.bin", dest, progress=False, retries=0)

    download(server.url + "file.bin", dest, progress=False)

    assert dest.read_bytes() == PAYLOAD
    assert server.requests[-1]["Range"] == "bytes=30000-"
    assert server.status_codes() == [200, 200]


def test_download_retries_a_dropped_connection(served, file_server, tmp_path) -> None:
    server = file_server(served)
    server.cut_after = 10_000

    download(server.url + "file.bin", tmp_path / "file.bin", progress=False, retries=1)

    assert (tmp_path / "file.bin").read_bytes() == PAYLOAD
    assert server.status_codes() == [200, 206]


def test_download_restarts_when_the_file_changed(served, file_server, tmp_path) -> None:
    server = file_server(served)
    server.cut_after = 30_000
    with pytest.raises(ConnectionError):
        download(server.url + "file.bin", tmp_path / "file.bin", progress=False, retries=0)
    changed = PAYLOAD[::-1]
    (served / "file.bin").write_bytes(changed)

    download(server.url + "file.bin", tmp_path / "file.bin", progress=False)

    assert (tmp_path / "file.bin").read_bytes() == changed
    assert server.requests[-1]["If-Range"]  # the validator of the first response
    assert server.status_codes() == [200, 200]


def test_download_restarts_a_resumed_file_that_fails_validation(
    served, file_server, tmp_path
) -> None:
    server = file_server(served)
    part = tmp_path / "file.bin.part"
    server.cut_after = 30_000
    with pytest.raises(ConnectionError):
        download(server.url + "file.bin", tmp_path / "file.bin", progress=False, retries=0)
    part.write_bytes(b"x" * 30_000)  # same length, wrong bytes: only a check can tell

    def check(path: Path) -> None:
        if path.read_bytes() != PAYLOAD:
            raise DataError(f"{path} holds the wrong bytes")

    download(server.url + "file.bin", tmp_path / "file.bin", progress=False, validate=check)

    assert (tmp_path / "file.bin").read_bytes() == PAYLOAD
    assert server.status_codes() == [200, 206, 200]


def test_download_failing_validation_leaves_nothing(served, file_server, tmp_path) -> None:
    server = file_server(served)

    def refuse(path: Path) -> None:
        raise DataError(f"{path.name} is not what we want")

    with pytest.raises(DataError, match=r"file\.bin.*unusable.*not what we want"):
        download(server.url + "file.bin", tmp_path / "file.bin", progress=False, validate=refuse)
    assert _leftovers(tmp_path) == ["served"]


def test_download_missing_file_names_url_and_status(served, file_server, tmp_path) -> None:
    server = file_server(served)

    with pytest.raises(ConnectionError, match=r"absent\.bin failed: HTTP 404"):
        download(server.url + "absent.bin", tmp_path / "absent.bin", progress=False)
    assert _leftovers(tmp_path) == ["served"]


def test_download_unreachable_host_is_a_connection_error(tmp_path) -> None:
    with pytest.raises(ConnectionError, match=r"127\.0\.0\.1:9/x failed"):
        download("http://127.0.0.1:9/x", tmp_path / "x", progress=False, retries=0, timeout=5)


def test_download_with_progress_bar(
    served, file_server, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    server: Callable = file_server(served)

    download(server.url + "file.bin", tmp_path / "file.bin", progress=True)

    assert (tmp_path / "file.bin").read_bytes() == PAYLOAD
    assert "file.bin" in capsys.readouterr().err


def test_download_restarts_when_the_range_is_refused(served, file_server, tmp_path) -> None:
    server = file_server(served)
    server.cut_after = 30_000
    with pytest.raises(ConnectionError):
        download(server.url + "file.bin", tmp_path / "file.bin", progress=False, retries=0)
    (tmp_path / "file.bin.part").write_bytes(b"y" * len(PAYLOAD))  # nothing left to ask for

    download(server.url + "file.bin", tmp_path / "file.bin", progress=False)

    assert (tmp_path / "file.bin").read_bytes() == PAYLOAD
    assert server.status_codes() == [200, 416, 200]
