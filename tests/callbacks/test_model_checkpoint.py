"""ModelCheckpoint semantics, driven by a scripted sequence of metrics."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from framework.callbacks.model_checkpoint import ModelCheckpoint
from framework.callbacks.monitor import MonitorError, infer_mode


class FakeTrainer(SimpleNamespace):
    def save_checkpoint(self, path: Path) -> Path:
        path.write_text(f"epoch {self.current_epoch}")
        self.saved.append(path.name)
        return path


def _drive(callback: ModelCheckpoint, scores: list[float], tmp_path: Path) -> FakeTrainer:
    trainer = FakeTrainer(
        log_dir=tmp_path,
        has_validation=True,
        callback_metrics={},
        current_epoch=0,
        global_step=0,
        saved=[],
    )
    callback.on_fit_start(trainer)
    for epoch, score in enumerate(scores):
        trainer.current_epoch = epoch
        trainer.global_step = (epoch + 1) * 10
        trainer.callback_metrics = {"loss": 1.0, "val_loss": score, "val_accuracy": 1 - score}
        callback.on_train_epoch_end(trainer)
    return trainer


def test_model_checkpoint_keeps_best_k_and_prunes(tmp_path: Path) -> None:
    callback = ModelCheckpoint(save_top_k=2)
    _drive(callback, [0.5, 0.4, 0.6, 0.3, 0.35], tmp_path)
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("epoch=*.ckpt"))
    assert kept == ["epoch=3-step=40.ckpt", "epoch=4-step=50.ckpt"]
    assert Path(callback.best_model_path).name == "epoch=3-step=40.ckpt"
    assert callback.best_model_score == pytest.approx(0.3)
    assert (tmp_path / "checkpoints" / "last.ckpt").read_text() == "epoch 4"


def test_model_checkpoint_max_mode_inferred_for_accuracy(tmp_path: Path) -> None:
    callback = ModelCheckpoint(monitor="val_accuracy", save_top_k=1)
    assert callback.mode == "max"
    _drive(callback, [0.5, 0.2, 0.6], tmp_path)  # accuracy = 1 - score: 0.5, 0.8, 0.4
    assert Path(callback.best_model_path).name == "epoch=1-step=20.ckpt"
    assert callback.best_model_score == pytest.approx(0.8)


def test_model_checkpoint_top_k_minus_one_keeps_all_and_every_n_epochs(tmp_path: Path) -> None:
    callback = ModelCheckpoint(save_top_k=-1, every_n_epochs=2, filename="e{epoch}-{val_loss:.2f}")
    _drive(callback, [0.5, 0.4, 0.6, 0.3], tmp_path)
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("e*.ckpt"))
    assert kept == ["e1-0.40.ckpt", "e3-0.30.ckpt"]


def test_model_checkpoint_state_round_trip(tmp_path: Path) -> None:
    callback = ModelCheckpoint(save_top_k=2)
    _drive(callback, [0.5, 0.4], tmp_path)
    restored = ModelCheckpoint(save_top_k=2)
    restored.load_state_dict(callback.state_dict())
    assert restored.best_model_path == callback.best_model_path
    assert restored.best_k_models == callback.best_k_models
    assert restored.state_key == "ModelCheckpoint[monitor=val_loss]"


def test_model_checkpoint_unlogged_metric_lists_logged_ones(tmp_path: Path) -> None:
    callback = ModelCheckpoint(monitor="val_los", mode="min")
    with pytest.raises(
        MonitorError,
        match="'val_los', which was never logged; logged metrics: loss, val_accuracy, val_loss",
    ):
        _drive(callback, [0.5], tmp_path)


def test_model_checkpoint_skips_epochs_without_validation(tmp_path: Path) -> None:
    callback = ModelCheckpoint()
    trainer = FakeTrainer(
        log_dir=tmp_path,
        has_validation=True,
        current_epoch=0,
        global_step=5,
        callback_metrics={"loss": 0.3},
        saved=[],
    )
    callback.on_fit_start(trainer)
    callback.on_train_epoch_end(trainer)
    assert trainer.saved == ["last.ckpt"]
    assert callback.best_model_path == ""


def test_model_checkpoint_val_monitor_without_validation_data_fails(tmp_path: Path) -> None:
    trainer = FakeTrainer(log_dir=tmp_path, has_validation=False)
    with pytest.raises(MonitorError, match="never logged"):
        ModelCheckpoint().on_fit_start(trainer)


def test_model_checkpoint_nan_is_never_best(tmp_path: Path) -> None:
    callback = ModelCheckpoint(save_top_k=1)
    _drive(callback, [0.5, float("nan")], tmp_path)
    assert Path(callback.best_model_path).name == "epoch=0-step=10.ckpt"


@pytest.mark.parametrize(
    ("monitor", "mode"),
    [
        ("val_loss", "min"),
        ("train_mean_squared_error", "min"),
        ("val_mae", "min"),
        ("val_accuracy", "max"),
        ("val_auc", "max"),
        ("precision", "max"),
        ("val_recall", "max"),
    ],
)
def test_infer_mode(monitor: str, mode: str) -> None:
    assert infer_mode(monitor, None) == mode


def test_infer_mode_unknown_metric_needs_explicit_mode() -> None:
    with pytest.raises(MonitorError, match="cannot infer .*'val_gain'.* mode='min' or mode='max'"):
        infer_mode("val_gain", None)
    assert infer_mode("val_gain", "max") == "max"
