"""EarlyStopping: patience, min_delta, state, and restoring the best weights."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from framework.callbacks.early_stopping import EarlyStopping
from framework.trainer import Trainer
from tests.conftest import TinyRecipe


class FakeModel:
    def __init__(self) -> None:
        self.weights = [np.zeros(1)]

    def get_weights(self) -> list[np.ndarray]:
        return [w.copy() for w in self.weights]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        self.weights = [w.copy() for w in weights]


def _run(callback: EarlyStopping, scores: list[float]) -> SimpleNamespace:
    trainer = SimpleNamespace(
        model=FakeModel(),
        should_stop=False,
        has_validation=True,
        current_epoch=0,
        callback_metrics={},
    )
    callback.on_fit_start(trainer)
    for epoch, score in enumerate(scores):
        trainer.current_epoch = epoch
        trainer.model.weights = [np.full(1, float(epoch))]
        trainer.callback_metrics = {"val_loss": score}
        callback.on_train_epoch_end(trainer)
        if trainer.should_stop:
            break
    callback.on_fit_end(trainer)
    return trainer


def test_early_stopping_stops_after_patience() -> None:
    callback = EarlyStopping(patience=2)
    trainer = _run(callback, [1.0, 0.8, 0.9, 0.85, 0.1])
    assert trainer.should_stop
    assert callback.stopped_epoch == 3
    assert callback.best_epoch == 1
    assert callback.best_score == pytest.approx(0.8)
    assert trainer.model.weights[0][0] == 1.0  # the best epoch's weights were restored


def test_early_stopping_min_delta_counts_small_gains_as_none() -> None:
    callback = EarlyStopping(patience=2, min_delta=0.05)
    trainer = _run(callback, [1.0, 0.97, 0.96, 0.5])
    assert trainer.should_stop
    assert callback.stopped_epoch == 2
    assert callback.best_epoch == 0


def test_early_stopping_restores_best_even_without_stopping() -> None:
    callback = EarlyStopping(patience=5)
    trainer = _run(callback, [1.0, 0.5, 0.7, 0.8])
    assert not trainer.should_stop
    assert trainer.model.weights[0][0] == 1.0


def test_early_stopping_state_round_trip() -> None:
    callback = EarlyStopping(patience=5)
    _run(callback, [1.0, 0.5, 0.7])
    restored = EarlyStopping(patience=5)
    restored.load_state_dict(callback.state_dict())
    assert (restored.wait_count, restored.best_score, restored.best_epoch) == (1, 0.5, 1)


def test_early_stopping_in_a_real_fit_restores_best_weights(root) -> None:  # noqa: ANN001
    # A learning rate this high makes the loss jump around, so the last epoch is not the best.
    callback = EarlyStopping(monitor="loss", patience=100)
    trainer = Trainer(
        max_epochs=6, logger=False, callbacks=[callback], name="tiny", enable_progress_bar=False
    )
    trainer.fit(TinyRecipe(learning_rate=0.5))
    assert callback.best_weights is not None
    for best, now in zip(callback.best_weights, trainer.model.get_weights(), strict=True):
        np.testing.assert_array_equal(best, now)
