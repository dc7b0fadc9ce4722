import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from framework.loggers.versioning import existing_versions, resolve_run_dir

REPO = Path(__file__).resolve().parents[2]
# Each process says it is ready, waits for the shared start signal, then claims a folder, so
# that all of them scan and create at the same moment.
CLAIM = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from framework.loggers.versioning import resolve_run_dir\n"
    "signals = Path(sys.argv[2])\n"
    "(signals / f'ready_{sys.argv[3]}').touch()\n"
    "while not (signals / 'go').exists():\n"
    "    time.sleep(0.0005)\n"
    "print(resolve_run_dir(sys.argv[1], 'race')[0])\n"
)


def test_resolve_run_dir_allocates_next_version(tmp_path):
    assert resolve_run_dir(tmp_path, "demo")[0] == 0
    (tmp_path / "demo" / "version_7").mkdir()
    (tmp_path / "demo" / "version_x").mkdir()

    version, run_dir = resolve_run_dir(tmp_path, "demo")

    assert version == 8
    assert run_dir == tmp_path / "demo" / "version_8"
    assert existing_versions(tmp_path / "demo") == [0, 7, 8]


def test_resolve_run_dir_reuses_a_given_version(tmp_path):
    _, run_dir = resolve_run_dir(tmp_path, "demo")
    (run_dir / "keep.txt").write_text("old")

    version, again = resolve_run_dir(tmp_path, "demo", version=0)

    assert (version, again) == (0, run_dir)
    assert (again / "keep.txt").read_text() == "old"
    assert resolve_run_dir(tmp_path, "demo", version=5)[1].is_dir()


def test_resolve_run_dir_concurrent_processes_get_distinct_folders(tmp_path):
    workers = 8
    signals = tmp_path / "signals"
    signals.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIM, str(tmp_path / "runs"), str(signals), str(index)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for index in range(workers)
    ]
    deadline = time.monotonic() + 30
    while len(list(signals.glob("ready_*"))) < workers and time.monotonic() < deadline:
        time.sleep(0.01)
    (signals / "go").touch()
    versions = sorted(int(process.communicate(timeout=30)[0]) for process in processes)

    assert versions == list(range(workers))
    assert existing_versions(tmp_path / "runs" / "race") == list(range(workers))


@pytest.mark.parametrize(
    ("name", "version"), [("", None), ("a/b", None), ("..", None), ("demo", -1), ("demo", True)]
)
def test_resolve_run_dir_rejects_bad_arguments(tmp_path, name, version):
    with pytest.raises(ValueError, match="Received"):
        resolve_run_dir(tmp_path, name, version)
