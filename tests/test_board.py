import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from framework.board import free_port, serve
from framework.loggers import TensorBoardLogger

REPO = Path(__file__).resolve().parents[1]
SERVER = (
    "import sys, threading\n"
    "from framework.board import serve\n"
    "print(serve(sys.argv[1], port=int(sys.argv[2])), flush=True)\n"
    "threading.Event().wait()\n"
)


def _start_server(logdir: Path, port: int, output: Path) -> subprocess.Popen:
    with open(output, "w") as log:
        return subprocess.Popen(
            [sys.executable, "-c", SERVER, str(logdir), str(port)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _get_json(url: str, deadline: float, server: subprocess.Popen, output: Path) -> dict:
    """GET ``url`` until it answers with a non-empty JSON object, or fail at ``deadline``."""
    while time.monotonic() < deadline:
        assert server.poll() is None, f"the server exited:\n{output.read_text()}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                data = json.load(response)
            if data:
                return data
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    pytest.fail(f"no answer from {url} in time:\n{output.read_text()}")


def test_serve_shows_the_runs_scalars_over_http(tmp_path):
    logdir = tmp_path / "runs"
    first = TensorBoardLogger(logdir, "demo")
    for step in range(10):
        first.log_metrics({"train/loss": float(step), "val/accuracy": 0.5}, step)
    first.finalize("interrupted")
    resumed = TensorBoardLogger(logdir, "demo", version=0, purge_step=5)
    for step in range(5, 8):
        resumed.log_metrics({"train/loss": 100.0 + step}, step)
    resumed.finalize("success")

    port = free_port()
    output = tmp_path / "server.log"
    server = _start_server(logdir, port, output)
    try:
        base = f"http://127.0.0.1:{port}/data/plugin/scalars"
        deadline = time.monotonic() + 60
        tags = _get_json(f"{base}/tags", deadline, server, output)
        points = _get_json(
            f"{base}/scalars?run=demo/version_0&tag=train/loss", deadline, server, output
        )
    finally:
        server.terminate()
        server.wait(timeout=10)

    assert f"http://127.0.0.1:{port}/" in output.read_text().splitlines()
    assert set(tags) == {"demo/version_0"}
    assert set(tags["demo/version_0"]) == {"train/loss", "val/accuracy"}
    # The server hides the steps the interrupted run wrote after its checkpoint.
    assert [(step, value) for _, step, value in points] == [
        (0, 0.0),
        (1, 1.0),
        (2, 2.0),
        (3, 3.0),
        (4, 4.0),
        (5, 105.0),
        (6, 106.0),
        (7, 107.0),
    ]


def test_serve_reports_a_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        output = tmp_path / "server.log"
        server = _start_server(tmp_path, port, output)
        try:
            returncode = server.wait(timeout=60)
        finally:
            server.kill()
            server.wait()

    assert returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in output.read_text()


def test_serve_rejects_a_missing_logdir(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        serve(tmp_path / "missing")


def test_free_port_can_be_bound():
    port = free_port()

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))
    assert 0 < port < 65536
