"""LearningRateMonitor logs the scheduled learning rate per epoch and per logged step."""

from __future__ import annotations

import csv

import pytest

from framework.callbacks.lr_monitor import LearningRateMonitor
from framework.trainer import Trainer
from tests.conftest import TinyRecipe


class ScheduledRecipe(TinyRecipe):
    def configure_optimizers(self):  # noqa: ANN201
        import keras

        schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=8, decay_rate=0.5)
        return keras.optimizers.SGD(schedule)


def test_lr_monitor_logs_schedule_values(root) -> None:  # noqa: ANN001
    trainer = Trainer(
        max_epochs=2,
        default_root_dir=str(root),
        log_every_n_steps=4,
        steps_per_execution=1,  # a row exactly every 4 steps
        name="tiny",
        callbacks=[LearningRateMonitor()],
        enable_progress_bar=False,
        enable_checkpointing=False,
    )
    trainer.fit(ScheduledRecipe())
    trainer.finalize()
    with open(root / "tiny/version_0/metrics.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("lr-SGD")]
    logged = {int(r["step"]): float(r["lr-SGD"]) for r in rows}
    # lr(step) = 0.1 * 0.5 ** (step / 8), read after `step` optimizer updates.
    assert sorted(logged) == [4, 8, 12, 16]
    for step, value in logged.items():
        assert value == pytest.approx(0.1 * 0.5 ** (step / 8), rel=1e-5)


def test_lr_monitor_rejects_bad_interval() -> None:
    with pytest.raises(ValueError, match="logging_interval must be None, 'step' or 'epoch'"):
        LearningRateMonitor(logging_interval="batch")
