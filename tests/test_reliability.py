"""Reliability with real faults: killed checkpoint writes, a full disk, NaN weights, unsafe
files, bad configs that must fail before Keras loads, and the board's bind address.

The whole-run kill, Ctrl-C and concurrency tests of ``kiln run`` live in ``test_kill.py``.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import random
import re
import resource
import signal
import subprocess
import sys
import time
import zipfile
from io import BytesIO
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from framework import checkpoint, cli
from framework.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from framework.callbacks.base import Callback
from framework.resume import resolve_ckpt_path
from framework.trainer import Trainer, TrainingFailed
from tests.conftest import TinyRecipe

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
HEAVY = ("tensorflow", "keras", "jax")


def _python(code: str, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ------------------------------------------------------------------- bad configs fail fast
# Runs the real CLI entry point, then reports whether a heavy framework was ever imported.
CLI_PROBE = f"""
import sys
from framework.cli import main
code = main(sys.argv[1:])
print("HEAVY=" + ",".join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)
sys.exit(code)
"""


def _kiln_probe(*argv: str, cwd: Path) -> tuple[int, str, str, list[str]]:
    done = _python(CLI_PROBE, *argv, cwd=cwd)
    lines = done.stderr.splitlines()
    heavy = [line for line in lines if line.startswith("HEAVY=")]
    assert heavy, f"the probe did not finish:\n{done.stderr}"
    imported = [m for m in heavy[-1].removeprefix("HEAVY=").split(",") if m]
    return done.returncode, done.stdout, done.stderr, imported


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["run", "regression_shortcut", "trainer.max_epoch=3"],
            "unknown config key 'trainer.max_epoch'.*did you mean 'trainer.max_epochs'",
        ),
        (
            ["run", "regression_shortcut", "trainer.max_epochs=three"],
            "trainer.max_epochs must be an integer >= 1; received 'three'",
        ),
        (
            ["run", "regression_shortcut", "trainer.limit_train_batches=1.5"],
            r"limit_train_batches must be null, an integer >= 1 .* received 1.5",
        ),
        (
            ["run", "regression_shortcut", "trainer.seed=-1"],
            r"trainer.seed must be an integer in \[0, 2\*\*32\); received -1",
        ),
        (
            ["run", "regression_shortcat"],
            "unknown recipe 'regression_shortcat'.*did you mean 'regression_shortcut'",
        ),
        (
            ["run", "regression_shortcut", "--config", "missing.yaml"],
            "missing required config value.*data.n_train",
        ),
        (
            ["run", "regression_shortcut", "trainer.ckpt_path=nowhere.ckpt"],
            "ckpt_path 'nowhere.ckpt' does not exist",
        ),
        (
            ["run", "regression_shortcut", "trainer.ckpt_path=broken.ckpt"],
            "checkpoint 'broken.ckpt' is truncated or not a Kiln checkpoint",
        ),
        (["resume", "no_such_run"], "no_such_run has no config.yaml"),
    ],
)
def test_cli_bad_config_exits_2_before_keras_is_imported(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    (tmp_path / "missing.yaml").write_text("data:\n  n_train: ???\n")
    (tmp_path / "broken.ckpt").write_bytes(b"PK\x03\x04 cut short")

    code, _, stderr, imported = _kiln_probe(*argv, cwd=tmp_path)

    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert any(line.startswith("error: ") for line in stderr.splitlines())
    assert re.search(message, stderr), stderr
    assert imported == [], f"{imported} were imported before the config error was reported"


def test_cli_numeric_strings_are_numbers_without_keras(tmp_path: Path) -> None:
    code, stdout, stderr, imported = _kiln_probe(
        "run",
        "regression_shortcut",
        "optimizer.learning_rate=1e-5",
        "trainer.max_epochs=3.0",
        "--print-config",
        cwd=tmp_path,
    )

    assert code == 0, stderr
    assert "learning_rate: 1.0e-05" in stdout
    assert "max_epochs: 3\n" in stdout
    assert imported == []


def test_cli_console_script_reports_a_typo_without_traceback(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("kiln")
    if not script.exists():
        pytest.skip("the kiln console script is not installed beside this Python")

    done = subprocess.run(
        [str(script), "run", "regression_shortcut", "optimizer.learnin_rate=0.1"],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 2
    assert "did you mean 'optimizer.learning_rate'" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_resume_refuses_a_config_with_python_tags(tmp_path: Path) -> None:
    run_dir = tmp_path / "regression_shortcut" / "version_0"
    run_dir.mkdir(parents=True)
    marker = tmp_path / "code-ran"
    (run_dir / "config.yaml").write_text(
        f"recipe: !!python/object/apply:os.system ['touch {marker}']\n"
    )

    code, _, stderr, imported = _kiln_probe("resume", str(run_dir), cwd=tmp_path)

    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert "config.yaml" in stderr
    assert not marker.exists()
    assert imported == []


# ------------------------------------------------------------------------------ kiln board
def test_cli_board_binds_to_localhost_unless_told(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    calls = []

    def fake_serve(logdir: str, host: str, port: int) -> str:
        calls.append((logdir, host, port))
        return f"http://{host}:{port}/"

    def stop(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("framework.board.serve", fake_serve)
    monkeypatch.setattr("time.sleep", stop)

    assert cli._build_parser().parse_args(["board"]).host == "127.0.0.1"
    assert cli.main(["board", str(tmp_path)]) == 0
    assert cli.main(["board", str(tmp_path), "--host", "0.0.0.0", "--port", "7000"]) == 0
    assert calls == [(str(tmp_path), "127.0.0.1", 6006), (str(tmp_path), "0.0.0.0", 7000)]


# ------------------------------------------------------------ loading never executes code
def _small_model() -> keras.Model:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="dense")])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


class _RunsCode:
    """Unpickling this creates ``path``: proof that a loader executed code from a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.path,))


@pytest.mark.parametrize("storage", ["bytes", "vlen", "opaque"])
def test_checkpoint_with_a_pickled_payload_is_refused_unexecuted(
    tmp_path: Path, storage: str
) -> None:
    good = checkpoint.save_checkpoint(tmp_path / "good.ckpt", _small_model(), {})
    with zipfile.ZipFile(good) as archive:
        weights = BytesIO(archive.read("model.weights.h5"))
    marker = tmp_path / "code-ran"
    blob = pickle.dumps(_RunsCode(marker))
    with h5py.File(weights, "r+") as h5:
        del h5["layers/dense/vars/0"]
        if storage == "bytes":
            h5.create_dataset("layers/dense/vars/0", data=np.array([blob]))
        elif storage == "vlen":
            cell = np.empty(1, dtype=object)
            cell[0] = np.frombuffer(blob, np.uint8)
            h5.create_dataset("layers/dense/vars/0", data=cell, dtype=h5py.vlen_dtype(np.uint8))
        else:
            h5.create_dataset("layers/dense/vars/0", data=np.void(blob))
    evil = tmp_path / "evil.ckpt"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("model.weights.h5", weights.getvalue())
        archive.writestr("state.json", json.dumps({"format_version": checkpoint.FORMAT_VERSION}))

    with pytest.raises(checkpoint.CheckpointError, match="evil.ckpt.*does not fit this model"):
        checkpoint.load_weights(evil, _small_model())
    assert not marker.exists()


def test_keras_file_with_a_lambda_is_refused_as_checkpoint(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    # The lambda's code creates the marker whenever it runs; only its source names the path.
    leaky = f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]"
    lambda_model = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(eval(leaky))])
    lambda_model.save(tmp_path / "lambda.keras")
    marker.unlink()  # building the model ran the lambda once, here, on purpose

    with pytest.raises(checkpoint.CheckpointError, match=r"lambda\.keras.*must hold"):
        checkpoint.load_weights(tmp_path / "lambda.keras", _small_model())
    with pytest.raises(checkpoint.CheckpointError, match=r"lambda\.keras"):
        resolve_ckpt_path(tmp_path / "lambda.keras", tmp_path, "tiny")
    export = pytest.importorskip("framework.export")
    with pytest.raises(ValueError, match="Lambda"):
        export.load_model(tmp_path / "lambda.keras")  # Kiln's model loader keeps safe mode on
    assert not marker.exists()


def test_framework_never_turns_off_safe_loading() -> None:
    sources = [*REPO.joinpath("framework").rglob("*.py"), *REPO.joinpath("recipes").rglob("*.py")]
    unsafe = r"safe_mode\s*=\s*False|allow_pickle\s*=\s*True|\bpickle\b|\byaml\.load\(|\beval\("
    found = [
        f"{path.relative_to(REPO)}: {match.group()}"
        for path in sources
        for match in re.finditer(unsafe, path.read_text())
    ]
    assert found == []


# ------------------------------------------------------- checkpoint writes that are killed
# A stand-in model whose weights file is large, so most of each save is spent writing; the
# saved state and the weights both carry the save's number, so a mix-up would show.
WRITER = """
import os, signal, sys
from pathlib import Path
from framework import checkpoint

class Payload:
    number = 0
    def save_weights(self, path):
        Path(path).write_bytes(self.number.to_bytes(8, "little") * (1 << 18))

path, mode = Path(sys.argv[1]), sys.argv[2]
model = Payload()
checkpoint.save_checkpoint(path, model, {"number": 0})
print("ready", flush=True)
if mode == "kill-before-rename":
    def replace_then_die(src, dst):
        os.kill(os.getpid(), signal.SIGKILL)
    os.replace = replace_then_die
while True:
    model.number += 1
    checkpoint.save_checkpoint(path, model, {"number": model.number})
"""


def _writer(path: Path, mode: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), mode],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "ready"
    return process


def _saved_number(path: Path) -> int:
    state = checkpoint.read_state(path)  # checks every member's CRC
    with zipfile.ZipFile(path) as archive:
        weights = archive.read("model.weights.h5")
    assert int.from_bytes(weights[:8], "little") == state["number"]
    return state["number"]


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name != "last.ckpt"]


def test_checkpoint_killed_while_writing_leaves_last_loadable(tmp_path: Path) -> None:
    folder = tmp_path / "tiny" / "version_0" / "checkpoints"
    folder.mkdir(parents=True)
    last = folder / "last.ckpt"
    rng = random.Random(0)
    numbers, mid_write = [], 0

    for _ in range(8):
        before = set(_leftovers(folder))
        writer = _writer(last, "loop")
        writer.stdout.close()
        time.sleep(rng.uniform(0.02, 0.4))
        writer.send_signal(signal.SIGKILL)
        assert writer.wait(timeout=30) == -signal.SIGKILL
        numbers.append(_saved_number(last))
        mid_write += bool(set(_leftovers(folder)) - before)

    assert mid_write >= 1, "no kill landed inside a write; the test proved nothing"
    assert max(numbers) > 0  # kills also came after last.ckpt had been replaced, not only written
    assert resolve_ckpt_path("last", tmp_path, "tiny").path == last  # temp files are ignored


def test_checkpoint_killed_between_temp_write_and_rename_keeps_previous(tmp_path: Path) -> None:
    last = tmp_path / "last.ckpt"
    writer = _writer(last, "kill-before-rename")

    assert writer.wait(timeout=30) == -signal.SIGKILL
    writer.stdout.close()
    assert _saved_number(last) == 0
    (temp,) = _leftovers(tmp_path)
    assert temp.name.startswith(".last.ckpt.")
    assert temp.suffix == ".tmp"
    assert _saved_number(temp) == 1  # complete, but never renamed: the kill came in between


FULL_DISK = """
import os, resource, signal, sys
import keras
from framework import checkpoint

model = keras.Sequential([keras.Input((256,)), keras.layers.Dense(256)])
model.compile(optimizer="adam", loss="mse")
model.optimizer.build(model.trainable_variables)
path = checkpoint.save_checkpoint(sys.argv[1], model, {"number": 0})
size = os.path.getsize(path)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
model.set_weights([w + 1 for w in model.get_weights()])
for number, limit in enumerate((size // 2, size - 64), start=1):
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    try:
        checkpoint.save_checkpoint(path, model, {"number": number})
    except OSError as error:
        print("failed", number, error.errno, flush=True)
"""


@pytest.mark.slow
def test_checkpoint_write_on_a_full_disk_keeps_previous(tmp_path: Path) -> None:
    last = tmp_path / "last.ckpt"
    if resource.getrlimit(resource.RLIMIT_FSIZE)[1] != resource.RLIM_INFINITY:
        pytest.skip("the file size limit is already capped here")

    done = _python(FULL_DISK, str(last), cwd=REPO)

    assert done.returncode == 0, done.stderr
    # One failure inside Keras's weights file, one while writing the archive around it.
    assert done.stdout.split("\n")[:2] == ["failed 1 27", "failed 2 27"]
    assert checkpoint.read_state(last)["number"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


# -------------------------------------------------------------------------------- NaN guard
def test_nan_weights_never_replace_a_good_checkpoint(tmp_path: Path) -> None:
    class BreakWeights(Callback):
        """Weights turn NaN after a step whose loss was still finite (an overflowing update)."""

        def on_train_batch_end(self, trainer, outputs, batch_idx) -> None:  # noqa: ANN001
            if trainer.global_step == 10:
                weights = trainer.model.get_weights()
                trainer.model.set_weights([np.full_like(w, np.nan) for w in weights])

    trainer = Trainer(
        default_root_dir=str(tmp_path),
        name="tiny",
        max_epochs=3,
        enable_progress_bar=False,
        callbacks=[BreakWeights(), ModelCheckpoint(every_n_train_steps=1)],
    )

    with pytest.raises(TrainingFailed, match="non-finite.*epoch 1, step 10"):
        trainer.fit(TinyRecipe())
    last = tmp_path / "tiny/version_0/checkpoints/last.ckpt"
    assert checkpoint.read_state(last)["global_step"] == 9
    model = _tiny_model()
    checkpoint.load_weights(last, model)
    assert all(np.isfinite(w).all() for w in model.get_weights())
    status = json.loads((tmp_path / "tiny/version_0/status.json").read_text())
    assert status["status"] == "failed"


def _tiny_model() -> keras.Model:
    model = TinyRecipe().configure_model()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse", metrics=["mae"])
    model.optimizer.build(model.trainable_variables)
    return model


# ------------------------------------------------- SIGKILL mid-epoch: schedule and metrics
class ScheduledRecipe(TinyRecipe):
    """Adam on a decaying learning rate: the schedule's position lives in the step counter."""

    def configure_optimizers(self):  # noqa: ANN201
        schedule = keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=5, decay_rate=0.7)
        return keras.optimizers.Adam(schedule)


class KillSelf(Callback):
    """SIGKILL this process after ``at_step``'s other hooks, before its checkpoint."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_end(self, trainer, outputs, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_step == self.at_step:
            os.kill(os.getpid(), signal.SIGKILL)


def scheduled_trainer(root: str, *extra: Callback) -> Trainer:
    return Trainer(
        default_root_dir=root,
        name="tiny",
        max_epochs=3,
        log_every_n_steps=1,
        enable_progress_bar=False,
        callbacks=[
            *extra,
            ModelCheckpoint(every_n_train_steps=3),
            LearningRateMonitor(),
            # Monitors the epoch's running training loss, so it sees a resumed epoch's mean.
            EarlyStopping(monitor="loss", min_delta=0.2, patience=5, restore_best_weights=False),
        ],
    )


KILLED_FIT = """
import sys
from tests.test_reliability import KillSelf, ScheduledRecipe, scheduled_trainer
scheduled_trainer(sys.argv[1], KillSelf(at_step=int(sys.argv[2]))).fit(ScheduledRecipe())
"""


def _metric_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        rows = []
        for row in csv.DictReader(handle):
            kept = {k: v for k, v in row.items() if v and not k.startswith("time/")}
            if set(kept) != {"step"}:
                rows.append(kept)
    return rows


@pytest.mark.slow
def test_sigkill_mid_epoch_resume_keeps_schedule_and_epoch_metrics(tmp_path: Path) -> None:
    done = _python(KILLED_FIT, str(tmp_path / "killed"), "14", cwd=REPO)
    assert done.returncode == -signal.SIGKILL, done.stderr
    last = tmp_path / "killed/tiny/version_0/checkpoints/last.ckpt"
    state = checkpoint.read_state(last)
    assert (state["epochs_completed"], state["batch_idx"], state["global_step"]) == (1, 4, 12)

    resumed = scheduled_trainer(str(tmp_path / "killed"))
    resumed.fit(ScheduledRecipe(), ckpt_path="last")
    reference = scheduled_trainer(str(tmp_path / "reference"))
    reference.fit(ScheduledRecipe())

    assert resumed.global_step == reference.global_step == 24
    assert resumed.learning_rate() == reference.learning_rate()
    for a, b in zip(reference.model.weights, resumed.model.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(
        reference.model.optimizer.variables, resumed.model.optimizer.variables, strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Every logged value, the resumed epoch's running means and the learning rates included.
    assert _metric_rows(tmp_path / "killed/tiny/version_0/metrics.csv") == _metric_rows(
        tmp_path / "reference/tiny/version_0/metrics.csv"
    )
    early = [c for c in reference.callbacks if isinstance(c, EarlyStopping)][0]
    early_resumed = [c for c in resumed.callbacks if isinstance(c, EarlyStopping)][0]
    assert early_resumed.state_dict() == early.state_dict()
    # The best epoch is the resumed one, judged on its whole-epoch mean; one epoch waited since.
    assert (early.best_epoch, early.wait_count) == (1, 1)


# --------------------------------------------------------------- kiln resume in its folder
def test_cli_resume_falls_back_within_its_own_run_folder(
    tmp_path: Path,
    caplog,
    monkeypatch,  # noqa: ANN001
) -> None:
    overrides = [
        "data.n_train=64",
        "data.n_val=16",
        "data.n_test=16",
        "data.batch_size=16",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "trainer.default_root_dir=runs",
    ]
    monkeypatch.chdir(tmp_path)  # the saved config names the relative root "runs"
    assert cli.main(["run", "regression_shortcut", *overrides]) == 0
    assert cli.main(["run", "regression_shortcut", *overrides]) == 0  # a newer version_1
    run_dir = tmp_path / "runs/regression_shortcut/version_0"
    (run_dir / "checkpoints/last.ckpt").write_bytes(b"PK\x03\x04 cut short")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    with caplog.at_level("WARNING"):
        code = cli.main(["resume", str(run_dir), "trainer.max_epochs=3"])

    assert code == 0
    assert re.search(r"falling back to epoch=\d-step=\d\.ckpt", caplog.text)
    state = checkpoint.read_state(run_dir / "checkpoints/last.ckpt")
    assert (state["epochs_completed"], state["global_step"]) == (3, 12)
    assert not (tmp_path / "runs/regression_shortcut/version_2").exists()
    assert not (elsewhere / "runs").exists()
    version_1 = checkpoint.read_state(
        tmp_path / "runs/regression_shortcut/version_1/checkpoints/last.ckpt"
    )
    assert version_1["epochs_completed"] == 2  # the other run was left alone
