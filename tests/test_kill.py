"""Real ``kiln run`` processes killed, interrupted, diverging and racing each other.

Every test here starts the command line in subprocesses (several seconds of TensorFlow start-up
each), so all are marked slow; CI runs them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from framework import checkpoint
from framework.checkpoint import CheckpointError

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
RECIPE = "regression_shortcut"
EVERY = 4  # trainer.save_every_n_steps
STEPS_PER_EPOCH = 64
# 64 steps an epoch, last.ckpt every EVERY steps, train rows logged after every call.
SMALL = [
    "data.n_train=512",
    "data.batch_size=8",
    "data.n_val=64",
    "data.n_test=64",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.deterministic=true",
    f"trainer.save_every_n_steps={EVERY}",
]


class Kiln:
    """One ``kiln`` command in a subprocess, its output kept in files."""

    def __init__(self, folder: Path, *argv: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.out = folder / f"out-{time.monotonic_ns()}.txt"
        self.err = self.out.with_suffix(".err")
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "framework", *argv],
                cwd=folder,
                env=ENV,
                stdout=out,
                stderr=err,
            )

    def wait(self, timeout: float = 300) -> int:
        return self.process.wait(timeout=timeout)

    @property
    def stdout(self) -> str:
        return self.out.read_text()

    @property
    def stderr(self) -> str:
        return self.err.read_text()

    def wait_for_row(self, metrics: Path, step: int, timeout: float = 240) -> None:
        """Poll ``metrics`` (metrics.csv) until it holds a row at ``step`` or later."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"kiln ended early:\n{self.stderr[-3000:]}"
            if metrics.is_file() and _max_step(metrics) >= step:
                return
            time.sleep(0.02)
        self.process.kill()
        pytest.fail(f"{metrics} did not reach step {step} in time:\n{self.stderr[-3000:]}")

    def wait_for_checkpoint(self, last: Path, step: int, timeout: float = 240) -> dict:
        """Poll ``last`` until it holds ``step`` or later; fail if the process ends first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"kiln ended early:\n{self.stderr[-3000:]}"
            try:
                state = checkpoint.read_state(last)
            except CheckpointError:
                state = None
            if state is not None and state["global_step"] >= step:
                return state
            time.sleep(0.02)
        self.process.kill()
        pytest.fail(f"{last} did not reach step {step} in time:\n{self.stderr[-3000:]}")


def _run(root: Path, *extra: str) -> list[str]:
    return ["run", RECIPE, *SMALL, f"trainer.default_root_dir={root}", *extra]


def _weights(path: Path) -> dict[str, np.ndarray]:
    """Every array in a checkpoint's weights file (model and optimizer), read with h5py."""
    with zipfile.ZipFile(path) as archive:
        data = archive.read("model.weights.h5")
    arrays: dict[str, np.ndarray] = {}
    with h5py.File(io.BytesIO(data), "r") as h5:
        h5.visititems(
            lambda name, node: (
                arrays.__setitem__(name, node[()]) if isinstance(node, h5py.Dataset) else None
            )
        )
    return arrays


def _rows(path: Path) -> list[dict[str, str]]:
    """metrics.csv without wall-clock columns (and rows that held nothing else)."""
    with open(path, newline="") as handle:
        rows = []
        for row in csv.DictReader(handle):
            kept = {k: v for k, v in row.items() if v and not k.startswith("time/")}
            if set(kept) != {"step"}:
                rows.append(kept)
    return rows


def _max_step(path: Path) -> int:
    with open(path, newline="") as handle:
        return max((int(row["step"]) for row in csv.DictReader(handle) if row["step"]), default=0)


def _comparable_state(path: Path, run_dir: Path) -> dict:
    state = checkpoint.read_state(path)
    for key in ("config", "log_dir"):
        state.pop(key)
    return json.loads(json.dumps(state).replace(str(run_dir), "<run>"))


def _kill_mid_epoch(run: Kiln, run_dir: Path, step: int) -> int:
    """SIGKILL ``run`` once last.ckpt passed ``step``; return the step it reached."""
    last = run_dir / "checkpoints/last.ckpt"
    run.wait_for_checkpoint(last, step)
    run.process.send_signal(signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL
    state = checkpoint.read_state(last)
    reached = _max_step(run_dir / "metrics.csv")  # a row is written every step
    assert state["batch_idx"] > 0, "the kill landed on an epoch boundary"
    assert reached - state["global_step"] <= EVERY, (reached, state["global_step"])
    return state["global_step"]


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    options = [
        "trainer.max_epochs=3",
        # Stopping bookkeeping that is not trivial: the epochs' training loss rarely improves
        # by 0.05, so the wait count moves, and it is judged on resumed epochs' means.
        "early_stopping.monitor=loss",
        "early_stopping.min_delta=0.05",
        "early_stopping.patience=10",
    ]
    reference = Kiln(tmp_path, *_run(tmp_path / "reference", *options))
    run_dir = tmp_path / "killed" / RECIPE / "version_0"

    first = Kiln(tmp_path, *_run(tmp_path / "killed", *options))
    at_first = _kill_mid_epoch(first, run_dir, STEPS_PER_EPOCH + 16)
    second = Kiln(tmp_path, *_run(tmp_path / "killed", *options, "trainer.ckpt_path=last"))
    at_second = _kill_mid_epoch(second, run_dir, 2 * STEPS_PER_EPOCH + 16)
    third = Kiln(tmp_path, "resume", str(run_dir))

    assert third.wait() == 0, third.stderr[-3000:]
    assert reference.wait() == 0, reference.stderr[-3000:]
    assert f"resumed from {run_dir}/checkpoints/last.ckpt" in second.stderr
    assert f"global step {at_first} " in second.stderr
    assert f"global step {at_second} " in third.stderr
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["version_0"]

    reference_dir = tmp_path / "reference" / RECIPE / "version_0"
    expected = _weights(reference_dir / "checkpoints/last.ckpt")
    received = _weights(run_dir / "checkpoints/last.ckpt")
    assert sorted(received) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(received[name], value, err_msg=name)
    state = _comparable_state(run_dir / "checkpoints/last.ckpt", run_dir)
    assert state == _comparable_state(reference_dir / "checkpoints/last.ckpt", reference_dir)
    assert state["callbacks"]["EarlyStopping[monitor=loss]"]["wait_count"] > 0
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt")) == sorted(
        p.name for p in (reference_dir / "checkpoints").glob("*.ckpt")
    )
    # Every logged value at the same step: losses, learning rates, validation and test.
    assert _rows(run_dir / "metrics.csv") == _rows(reference_dir / "metrics.csv")
    assert json.loads((run_dir / "status.json").read_text())["status"] == "success"


def test_sigint_checkpoints_prints_how_to_resume_and_exits_nonzero(tmp_path: Path) -> None:
    once_dir = tmp_path / "once" / RECIPE / "version_0"
    twice_dir = tmp_path / "twice" / RECIPE / "version_0"
    once = Kiln(tmp_path, *_run(tmp_path / "once", "trainer.max_epochs=3"))
    # A validation pass of seconds (one batch per call): time to press Ctrl-C twice in it.
    twice = Kiln(
        tmp_path,
        *_run(
            tmp_path / "twice", "trainer.max_epochs=3", "data.n_val=20000",
            "trainer.steps_per_execution=1",
        ),
    )  # fmt: skip

    once.wait_for_checkpoint(once_dir / "checkpoints/last.ckpt", STEPS_PER_EPOCH + 8)
    once.process.send_signal(signal.SIGINT)
    twice.wait_for_row(twice_dir / "metrics.csv", STEPS_PER_EPOCH)  # validation has begun
    twice.process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    twice.process.send_signal(signal.SIGINT)

    assert once.wait(timeout=60) == 130
    state = checkpoint.read_state(once_dir / "checkpoints/last.ckpt")
    step = state["global_step"]
    assert f"interrupted at epoch 1, step {step}; checkpoint written to" in once.stderr
    assert f"Resume with: kiln resume {once_dir}" in once.stderr
    assert "Traceback" not in once.stderr
    assert (state["epochs_completed"], state["batch_idx"]) == (1, step - STEPS_PER_EPOCH)
    assert _max_step(once_dir / "metrics.csv") == step  # it finished the step, then stopped
    assert json.loads((once_dir / "status.json").read_text())["status"] == "interrupted"

    assert twice.wait(timeout=60) == 130
    assert "error: interrupted; no new checkpoint was written" in twice.stderr
    assert "Traceback" not in twice.stderr
    kept = checkpoint.read_state(twice_dir / "checkpoints/last.ckpt")
    assert kept["global_step"] == STEPS_PER_EPOCH - EVERY  # the last one before validation
    assert sorted(p.name for p in (twice_dir / "checkpoints").iterdir()) == ["last.ckpt"]

    # The interrupted run's last.ckpt now arrives truncated: `last` falls back, and says so.
    last = once_dir / "checkpoints/last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    resumed = Kiln(
        tmp_path, *_run(tmp_path / "once", "trainer.max_epochs=2", "trainer.ckpt_path=last")
    )

    assert resumed.wait() == 0, resumed.stderr[-3000:]
    assert "skipping unloadable checkpoint: checkpoint" in resumed.stderr
    assert "last.ckpt' is truncated or not a Kiln checkpoint" in resumed.stderr
    assert f"falling back to epoch=0-step={STEPS_PER_EPOCH}.ckpt" in resumed.stderr
    final = checkpoint.read_state(last)
    assert (final["epochs_completed"], final["global_step"]) == (2, 2 * STEPS_PER_EPOCH)


def test_nan_loss_from_the_command_line_stops_and_keeps_a_finite_checkpoint(
    tmp_path: Path,
) -> None:
    run = Kiln(
        tmp_path,
        *_run(tmp_path, "trainer.max_epochs=2", "trainer.save_every_n_steps=1"),
        "optimizer.learning_rate=1e30",  # the first update throws the weights to ~1e30
    )

    assert run.wait() == 1
    assert "error: the training loss became inf at epoch 0, step 2; stopping." in run.stderr
    assert "Traceback" not in run.stderr
    run_dir = tmp_path / RECIPE / "version_0"
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed"
    assert "became inf at epoch 0, step 2" in status["reason"]
    last = run_dir / "checkpoints/last.ckpt"
    assert checkpoint.read_state(last)["global_step"] == 1
    assert all(np.isfinite(w).all() for w in _weights(last).values())
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["last.ckpt"]


# Waits for a start signal with Keras already imported, so the runs reach the point where they
# claim a run folder within milliseconds of each other.
STARTING_GUN = """
import os, sys, time
import keras
from framework.cli import main
gun = sys.argv[1]
open(gun + "." + str(os.getpid()), "w").close()
while not os.path.exists(gun):
    time.sleep(0.001)
sys.exit(main(sys.argv[2:]))
"""


def test_runs_started_together_get_separate_run_folders(tmp_path: Path) -> None:
    gun = tmp_path / "go"
    seeds = (11, 22)
    runs = []
    for seed in seeds:
        argv = _run(tmp_path / "runs", "trainer.max_epochs=1", f"trainer.seed={seed}")
        runs.append(
            subprocess.Popen(
                [sys.executable, "-c", STARTING_GUN, str(gun), *argv],
                cwd=tmp_path,
                env={**ENV, "KERAS_BACKEND": "tensorflow"},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("go.*"))) < len(seeds) and time.monotonic() < deadline:
        time.sleep(0.05)
    gun.touch()
    outputs = [run.communicate(timeout=300) for run in runs]

    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in outputs]
    folders = {}
    for seed, (stdout, _) in zip(seeds, outputs, strict=True):
        line = next(x for x in stdout.splitlines() if x.startswith("run written to "))
        folders[seed] = Path(line.removeprefix("run written to "))
    assert len(set(folders.values())) == len(seeds)
    assert sorted(p.name for p in (tmp_path / "runs" / RECIPE).iterdir()) == [
        "version_0",
        "version_1",
    ]
    for seed, folder in folders.items():
        assert f"seed: {seed}\n" in (folder / "config.yaml").read_text()
        state = checkpoint.read_state(folder / "checkpoints/last.ckpt")
        assert f"seed: {seed}\n" in state["config"]
        assert state["log_dir"] == str(folder)
        rows = _rows(folder / "metrics.csv")
        assert [r["step"] for r in rows if "epoch" in r] == [str(STEPS_PER_EPOCH)]
        assert len([r for r in rows if "test/loss" in r]) == 1
        steps = [int(r["step"]) for r in rows if "train/loss_step" in r]
        # A call of EVERY steps (auto steps_per_execution stops at each step checkpoint) and a
        # row after each call: one run's rows, no one else's.
        assert steps == list(range(EVERY, STEPS_PER_EPOCH + 1, EVERY))
        assert json.loads((folder / "status.json").read_text())["status"] == "success"
