"""Resuming: exact continuation from epoch-end and mid-epoch checkpoints, interrupts, NaN."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

from framework import checkpoint
from framework.callbacks import ModelCheckpoint
from framework.callbacks.base import Callback
from framework.trainer import Trainer, TrainingFailed, TrainingInterrupted
from tests.conftest import TinyRecipe


class Crash(Callback):
    """Raises at a given global step, like a process dying mid-epoch."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_end(self, trainer, outputs, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_step == self.at_step:
            raise RuntimeError("simulated crash")


class SendSigint(Callback):
    def __init__(self, at_steps: tuple[int, ...]) -> None:
        self.at_steps = at_steps

    def on_train_batch_end(self, trainer, outputs, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_step in self.at_steps:
            os.kill(os.getpid(), signal.SIGINT)


def _trainer(root, *callbacks, **flags) -> Trainer:  # noqa: ANN001
    return Trainer(
        default_root_dir=str(root),
        name="tiny",
        enable_progress_bar=False,
        callbacks=[ModelCheckpoint(every_n_train_steps=flags.pop("every", None)), *callbacks],
        **{"max_epochs": 3, **flags},
    )


def test_resume_mid_epoch_matches_uninterrupted_run(tmp_path) -> None:  # noqa: ANN001
    reference = _trainer(tmp_path / "a")
    reference.fit(TinyRecipe())

    crashing = _trainer(tmp_path / "b", Crash(at_step=13), every=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.fit(TinyRecipe())
    last = tmp_path / "b/tiny/version_0/checkpoints/last.ckpt"
    state = checkpoint.read_state(last)
    assert (state["epochs_completed"], state["batch_idx"], state["global_step"]) == (1, 4, 12)
    status = json.loads((tmp_path / "b/tiny/version_0/status.json").read_text())
    assert status["status"] == "failed"

    resumed = _trainer(tmp_path / "b", every=2)
    resumed.fit(TinyRecipe(), ckpt_path="last")
    assert resumed.global_step == reference.global_step == 24
    assert int(resumed.model.optimizer.iterations) == 24
    for a, b in zip(reference.model.get_weights(), resumed.model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_first_sigint_checkpoints_after_the_step_and_stops(tmp_path) -> None:  # noqa: ANN001
    trainer = _trainer(tmp_path, SendSigint(at_steps=(11,)))
    with pytest.raises(TrainingInterrupted, match="epoch 1, step 11.*kiln resume"):
        trainer.fit(TinyRecipe())
    state = checkpoint.read_state(tmp_path / "tiny/version_0/checkpoints/last.ckpt")
    assert (state["global_step"], state["batch_idx"]) == (11, 3)
    assert json.loads((tmp_path / "tiny/version_0/status.json").read_text())["status"] == (
        "interrupted"
    )
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_second_sigint_stops_at_once_and_keeps_previous_checkpoint(tmp_path) -> None:  # noqa: ANN001
    class Twice(Callback):
        def on_train_batch_end(self, trainer, outputs, batch_idx) -> None:  # noqa: ANN001
            if trainer.global_step == 11:
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)

    trainer = _trainer(tmp_path, Twice())
    with pytest.raises(KeyboardInterrupt) as caught:
        trainer.fit(TinyRecipe())
    assert not isinstance(caught.value, TrainingInterrupted)
    state = checkpoint.read_state(tmp_path / "tiny/version_0/checkpoints/last.ckpt")
    assert state["global_step"] == 8  # the end of epoch 0: the previous checkpoint, intact


def test_nan_loss_stops_with_epoch_and_step_and_keeps_good_checkpoint(tmp_path) -> None:  # noqa: ANN001
    class Poison(Callback):
        def on_train_batch_end(self, trainer, outputs, batch_idx) -> None:  # noqa: ANN001
            if trainer.global_step == 10:
                weights = trainer.model.get_weights()
                trainer.model.set_weights([np.full_like(w, np.nan) for w in weights])

    trainer = _trainer(tmp_path, Poison())
    with pytest.raises(TrainingFailed, match="became nan at epoch 1, step 11"):
        trainer.fit(TinyRecipe())
    last = tmp_path / "tiny/version_0/checkpoints/last.ckpt"
    assert checkpoint.read_state(last)["global_step"] == 8
    restored = Trainer(max_epochs=2, logger=False, name="tiny", enable_progress_bar=False)
    restored.fit(TinyRecipe(), ckpt_path=last)
    assert all(np.isfinite(w).all() for w in restored.model.get_weights())
    status = json.loads((tmp_path / "tiny/version_0/status.json").read_text())
    assert status["status"] == "failed"
    assert "nan" in status["reason"]


def test_resume_last_falls_back_from_corrupt_last_ckpt(tmp_path, caplog) -> None:  # noqa: ANN001
    first = _trainer(tmp_path, max_epochs=2)
    first.fit(TinyRecipe())
    folder = tmp_path / "tiny/version_0/checkpoints"
    (folder / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    resumed = _trainer(tmp_path, max_epochs=3)
    with caplog.at_level("WARNING"):
        resumed.fit(TinyRecipe(), ckpt_path="last")
    assert resumed.resumed_from is not None
    assert resumed.resumed_from.name.startswith("epoch=")
    assert "falling back" in caplog.text
    assert resumed.global_step == 24


def test_resume_corrupt_explicit_path_is_named(tmp_path) -> None:  # noqa: ANN001
    bad = tmp_path / "broken.ckpt"
    bad.write_bytes(b"not a zip")
    trainer = _trainer(tmp_path)
    with pytest.raises(checkpoint.CheckpointError, match="broken.ckpt"):
        trainer.fit(TinyRecipe(), ckpt_path=bad)
