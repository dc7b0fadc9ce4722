"""The homework's 1-D regression with a small dense network, in three forms.

The homework did not publish its data, so the target is our choice:
``y = sin(3x) + 0.3 x + noise`` with ``x`` uniform on ``[-2, 2]`` and Gaussian noise of standard
deviation ``data.noise_std`` (0.1, so the best reachable test MSE is about 0.01).
"""

from __future__ import annotations

import logging
from typing import Any

import keras
import numpy as np
from omegaconf import DictConfig

from framework.data.datamodule import DataModule
from framework.recipe import Recipe

logger = logging.getLogger(__name__)

__all__ = [
    "RegressionDataModule",
    "RegressionFunctional",
    "RegressionSequential",
    "RegressionShortcut",
    "target_function",
]


def target_function(x: np.ndarray) -> np.ndarray:
    """The noise-free target: ``sin(3x) + 0.3 x``."""
    return np.sin(3.0 * x) + 0.3 * x


class RegressionDataModule(DataModule):
    """Noisy samples of ``target_function``, split into train, validation and test."""

    def __init__(self, config: DictConfig) -> None:
        self.data = config.data
        self.seed = int(config.trainer.seed)
        self.strategy = config.trainer.get("strategy", "single")
        self.splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._shuffle = None

    def set_epoch(self, epoch: int) -> None:
        if self._shuffle is not None:
            self._shuffle.set_epoch(epoch)

    def setup(self, stage: str) -> None:
        if self.splits:
            return
        d = self.data
        rng = np.random.default_rng(d.data_seed)
        sizes = {"train": d.n_train, "val": d.n_val, "test": d.n_test}
        for split, n in sizes.items():
            x = rng.uniform(d.x_min, d.x_max, size=(n, 1)).astype("float32")
            noise = rng.normal(0.0, d.noise_std, size=(n, 1))
            self.splits[split] = (x, (target_function(x) + noise).astype("float32"))

    def _dataset(self, split: str, shuffle: bool) -> Any:
        """``tf.data`` under TensorFlow, NumPy batches under JAX (``data.input``)."""
        from framework.data.arrays import array_batches
        from framework.data.shuffle import EpochShuffle

        if shuffle:
            # The order depends on (seed, epoch) only, so a resumed run repeats it exactly.
            self._shuffle = self._shuffle or EpochShuffle(self.seed)
        return array_batches(
            self.splits[split],
            int(self.data.batch_size),
            shuffler=self._shuffle if shuffle else None,
            input=str(self.data.get("input", "auto")),
            strategy=str(self.strategy),
        )

    def train_dataloader(self):  # noqa: ANN201
        return self._dataset("train", shuffle=True)

    def val_dataloader(self):  # noqa: ANN201
        return self._dataset("val", shuffle=False)

    def test_dataloader(self):  # noqa: ANN201
        return self._dataset("test", shuffle=False)


class _RegressionRecipe(Recipe):
    def configure_loss(self) -> str:
        return "mse"

    def configure_metrics(self) -> list:
        return [keras.metrics.MeanAbsoluteError(name="mae")]

    def configure_datamodule(self) -> RegressionDataModule:
        return RegressionDataModule(self.config)

    def _sizes(self) -> tuple[int, int, str]:
        m = self.config.model
        return int(m.hidden1), int(m.hidden2), str(m.activation)


class RegressionSequential(_RegressionRecipe):
    """Dense 64 sigmoid, Dense 32 sigmoid, Dense 1, built with ``keras.Sequential``."""

    def configure_model(self) -> keras.Model:
        h1, h2, act = self._sizes()
        return keras.Sequential(
            [
                keras.Input(shape=(1,)),
                keras.layers.Dense(h1, activation=act, name="hidden1"),
                keras.layers.Dense(h2, activation=act, name="hidden2"),
                keras.layers.Dense(1, name="output"),
            ],
            name="regression_sequential",
        )


class RegressionFunctional(_RegressionRecipe):
    """The same network with the functional API."""

    def configure_model(self) -> keras.Model:
        h1, h2, act = self._sizes()
        inputs = keras.Input(shape=(1,), name="x")
        hidden = keras.layers.Dense(h1, activation=act, name="hidden1")(inputs)
        hidden = keras.layers.Dense(h2, activation=act, name="hidden2")(hidden)
        outputs = keras.layers.Dense(1, name="output")(hidden)
        return keras.Model(inputs, outputs, name="regression_functional")


class RegressionShortcut(_RegressionRecipe):
    """The input concatenated to the second hidden layer's output before the output layer."""

    def configure_model(self) -> keras.Model:
        h1, h2, act = self._sizes()
        inputs = keras.Input(shape=(1,), name="x")
        hidden = keras.layers.Dense(h1, activation=act, name="hidden1")(inputs)
        hidden = keras.layers.Dense(h2, activation=act, name="hidden2")(hidden)
        joined = keras.layers.Concatenate(name="shortcut")([hidden, inputs])
        outputs = keras.layers.Dense(1, name="output")(joined)
        return keras.Model(inputs, outputs, name="regression_shortcut")
