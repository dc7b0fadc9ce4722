"""The checkpoint file: round trip, atomic writes, corrupt files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from framework import checkpoint
from framework.checkpoint import CheckpointError


def _model() -> keras.Model:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    model.fit(np.ones((8, 2)), np.ones((8, 1)), epochs=2, verbose=0)
    return model


def _fresh() -> keras.Model:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def test_checkpoint_round_trip_keeps_weights_optimizer_and_state(tmp_path: Path) -> None:
    model = _model()
    path = checkpoint.save_checkpoint(tmp_path / "a.ckpt", model, {"epochs_completed": 2})
    other = _fresh()
    state = checkpoint.load_weights(path, other)
    assert state["epochs_completed"] == 2
    assert int(other.optimizer.iterations) == int(model.optimizer.iterations) == 2
    for a, b in zip(model.get_weights(), other.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(model.optimizer.variables, other.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_checkpoint_failed_write_leaves_previous_intact(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    model = _model()
    path = checkpoint.save_checkpoint(tmp_path / "last.ckpt", model, {"epochs_completed": 1})
    before = path.read_bytes()

    def disk_full(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "writestr", disk_full)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save_checkpoint(path, model, {"epochs_completed": 2})
    assert path.read_bytes() == before
    assert checkpoint.read_state(path)["epochs_completed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temp files left


def test_checkpoint_truncated_file_is_named(tmp_path: Path) -> None:
    path = checkpoint.save_checkpoint(tmp_path / "a.ckpt", _model(), {})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"a\.ckpt.*truncated or not a Kiln checkpoint"):
        checkpoint.read_state(path)


def test_checkpoint_flipped_byte_fails_crc(tmp_path: Path) -> None:
    path = checkpoint.save_checkpoint(tmp_path / "a.ckpt", _model(), {})
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF  # inside the stored weights file
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"a\.ckpt.*(corrupt|truncated)"):
        checkpoint.read_state(path)


def test_checkpoint_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.read_state(tmp_path / "nope.ckpt")


def test_checkpoint_stale_temporaries_are_removed_on_start(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from framework.callbacks.model_checkpoint import ModelCheckpoint

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / ".last.ckpt.abc123.tmp").write_bytes(b"half")
    (folder / ".weights-xyz").mkdir()
    (folder / "last.ckpt").write_bytes(b"keep")
    ModelCheckpoint(dirpath=folder).on_fit_start(SimpleNamespace(has_validation=True))
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]


def test_checkpoint_file_is_readable_by_others(tmp_path: Path) -> None:
    path = checkpoint.save_checkpoint(tmp_path / "a.ckpt", _model(), {})
    assert path.stat().st_mode & 0o044 == 0o044
