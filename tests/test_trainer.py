"""Trainer flags, resume and files, on the tiny recipe (TensorFlow backend)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from framework import checkpoint
from framework.callbacks import ModelCheckpoint
from framework.callbacks.base import Callback
from framework.config import ConfigError
from framework.trainer import Trainer
from tests.conftest import TinyRecipe


class Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[tuple[str, int, int]] = []

    def on_fit_start(self, trainer) -> None:  # noqa: ANN001
        self.events.append(("fit_start", trainer.current_epoch, trainer.global_step))

    def on_train_epoch_start(self, trainer) -> None:  # noqa: ANN001
        self.events.append(("epoch_start", trainer.current_epoch, trainer.global_step))

    def on_validation_epoch_end(self, trainer) -> None:  # noqa: ANN001
        self.events.append(("val_end", trainer.current_epoch, trainer.global_step))

    def on_train_epoch_end(self, trainer) -> None:  # noqa: ANN001
        self.events.append(("epoch_end", trainer.current_epoch, trainer.global_step))

    def on_fit_end(self, trainer) -> None:  # noqa: ANN001
        self.events.append(("fit_end", trainer.current_epoch, trainer.global_step))


def _csv_rows(path) -> list[dict[str, str]]:  # noqa: ANN001
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_trainer_fit_hook_order_epochs_and_steps(root) -> None:  # noqa: ANN001
    recorder = Recorder()
    trainer = Trainer(
        max_epochs=2,
        default_root_dir=str(root),
        callbacks=[recorder],
        enable_progress_bar=False,
        name="tiny",
    )
    trainer.fit(TinyRecipe())
    assert recorder.events == [
        ("fit_start", 0, 0),
        ("epoch_start", 0, 0),
        ("val_end", 0, 8),
        ("epoch_end", 0, 8),
        ("epoch_start", 1, 8),
        ("val_end", 1, 16),
        ("epoch_end", 1, 16),
        ("fit_end", 1, 16),
    ]
    assert trainer.global_step == 16
    assert int(trainer.model.optimizer.iterations) == 16
    assert set(trainer.callback_metrics) >= {"loss", "mae", "val_loss", "val_mae"}


def test_trainer_limits_and_validation_frequency(root) -> None:  # noqa: ANN001
    recorder = Recorder()
    trainer = Trainer(
        max_epochs=4,
        limit_train_batches=3,
        limit_val_batches=0.5,
        check_val_every_n_epoch=2,
        default_root_dir=str(root),
        callbacks=[recorder],
        logger=False,
        name="tiny",
    )
    trainer.fit(TinyRecipe())
    assert trainer.global_step == 12
    assert [e for e in recorder.events if e[0] == "val_end"] == [
        ("val_end", 1, 6),
        ("val_end", 3, 12),
    ]


def test_trainer_fast_dev_run_writes_nothing(root) -> None:  # noqa: ANN001
    trainer = Trainer(
        fast_dev_run=True,
        max_epochs=5,
        default_root_dir=str(root),
        callbacks=[ModelCheckpoint(dirpath=root / "ck")],
        name="tiny",
    )
    metrics = trainer.fit(TinyRecipe())
    assert trainer.global_step == 1
    assert "val_loss" in metrics
    assert not root.exists()
    assert trainer.log_dir is None


def test_trainer_writes_run_folder_files(root) -> None:  # noqa: ANN001
    trainer = Trainer(
        max_epochs=2,
        default_root_dir=str(root),
        log_every_n_steps=4,
        name="tiny",
        callbacks=[ModelCheckpoint()],
        enable_progress_bar=False,
    )
    trainer.fit(TinyRecipe())
    trainer.test()
    trainer.finalize()
    run = root / "tiny" / "version_0"
    assert trainer.log_dir == run
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert "dense" in (run / "model_summary.txt").read_text()
    assert json.loads((run / "status.json").read_text())["status"] == "success"
    rows = _csv_rows(run / "metrics.csv")
    step_rows = [int(r["step"]) for r in rows if r.get("train/loss_step")]
    assert step_rows == [8, 16]  # one call per 8-batch epoch, each passing a multiple of 4
    assert any(r.get("test/loss") for r in rows)
    assert list(root.glob("tiny/version_*")) == [run]


def test_trainer_resume_continues_epoch_step_and_optimizer(root) -> None:  # noqa: ANN001
    first = Trainer(
        max_epochs=2,
        default_root_dir=str(root),
        log_every_n_steps=4,
        name="tiny",
        callbacks=[ModelCheckpoint()],
        enable_progress_bar=False,
    )
    first.fit(TinyRecipe())
    state = checkpoint.read_state(root / "tiny/version_0/checkpoints/last.ckpt")
    assert state["epochs_completed"] == 2
    assert state["global_step"] == 16
    assert state["optimizer_iterations"] == 16

    recorder = Recorder()
    second = Trainer(
        max_epochs=3,
        default_root_dir=str(root),
        log_every_n_steps=4,
        name="tiny",
        callbacks=[ModelCheckpoint(), recorder],
        enable_progress_bar=False,
    )
    second.fit(TinyRecipe(), ckpt_path="last")
    assert recorder.events[0] == ("fit_start", 2, 16)
    assert recorder.events[1] == ("epoch_start", 2, 16)
    assert second.global_step == 24
    assert int(second.model.optimizer.iterations) == 24
    assert second.log_dir == root / "tiny" / "version_0"
    assert not (root / "tiny" / "version_1").exists()
    steps = [
        int(r["step"])
        for r in _csv_rows(root / "tiny/version_0/metrics.csv")
        if r.get("train/loss_step")
    ]
    assert steps == [8, 16, 24]  # one call per epoch, each passing a multiple of 4


def test_trainer_resume_restores_optimizer_slots(root) -> None:  # noqa: ANN001
    first = Trainer(
        max_epochs=1,
        default_root_dir=str(root),
        name="tiny",
        callbacks=[ModelCheckpoint()],
        enable_progress_bar=False,
    )
    first.fit(TinyRecipe())
    saved = [np.asarray(v).copy() for v in first.model.optimizer.variables]
    saved_weights = [w.copy() for w in first.model.get_weights()]

    second = Trainer(
        max_epochs=1,
        default_root_dir=str(root),
        name="tiny",
        callbacks=[ModelCheckpoint()],
        enable_progress_bar=False,
    )
    second.fit(TinyRecipe(), ckpt_path="last")  # nothing left to train: state only
    loaded = [np.asarray(v) for v in second.model.optimizer.variables]
    assert len(saved) == len(loaded) > 2
    for before, after in zip(saved, loaded, strict=True):
        np.testing.assert_allclose(before, after)
    for before, after in zip(saved_weights, second.model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


def test_trainer_gradient_clip_and_accumulation_reach_the_optimizer(root) -> None:  # noqa: ANN001
    trainer = Trainer(
        max_epochs=1,
        gradient_clip_val=0.5,
        accumulate_grad_batches=4,
        logger=False,
        name="tiny",
        enable_progress_bar=False,
    )
    trainer.fit(TinyRecipe())
    assert trainer.model.optimizer.global_clipnorm == 0.5
    assert trainer.model.optimizer.gradient_accumulation_steps == 4
    # 8 batches with accumulation over 4 apply the update twice.
    assert trainer.global_step == 8


def test_trainer_precision_sets_policy(root) -> None:  # noqa: ANN001
    import keras

    trainer = Trainer(
        max_epochs=1,
        precision="bf16-mixed",
        logger=False,
        name="tiny",
        limit_train_batches=1,
        enable_progress_bar=False,
    )
    try:
        trainer.fit(TinyRecipe())
        assert trainer.model.layers[0].compute_dtype == "bfloat16"
        assert trainer.model.layers[0].variable_dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_trainer_rejects_bad_flags() -> None:
    with pytest.raises(ConfigError, match="precision must be one of 32, bf16-mixed, 16-mixed"):
        Trainer(precision="fp8")
    with pytest.raises(TypeError, match="unknown Trainer flag"):
        Trainer(max_epoch=3)
    with pytest.raises(ConfigError, match="limit_train_batches"):
        Trainer(limit_train_batches=1.5)


def test_trainer_predict_shape(root) -> None:  # noqa: ANN001
    trainer = Trainer(max_epochs=1, logger=False, name="tiny", enable_progress_bar=False)
    recipe = TinyRecipe()
    trainer.fit(recipe)
    outputs = trainer.predict()
    assert outputs.shape == (16, 1)
