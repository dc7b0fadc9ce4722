"""Shared fixtures: a tiny model and tiny data, and a run folder under tmp_path.

The in-process tests run on the TensorFlow backend; JAX runs go through a subprocess.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
from omegaconf import OmegaConf

from framework.data.datamodule import DataModule
from framework.recipe import Recipe


class TinyData(DataModule):
    """y = 2x - 1 on 64 points; batches of 8 (8 train batches, 2 val, 2 test)."""

    def __init__(self, n_train: int = 64, batch_size: int = 8) -> None:
        rng = np.random.default_rng(0)
        self.x = rng.uniform(-1, 1, size=(n_train + 32, 1)).astype("float32")
        self.y = (2 * self.x - 1).astype("float32")
        self.n_train = n_train
        self.batch_size = batch_size
        self.shuffle = None

    def set_epoch(self, epoch: int) -> None:
        if self.shuffle is not None:
            self.shuffle.set_epoch(epoch)

    def _ds(self, lo: int, hi: int, shuffle: bool = False):  # noqa: ANN202
        import tensorflow as tf

        from framework.data.shuffle import EpochShuffle

        x, y = tf.constant(self.x[lo:hi]), tf.constant(self.y[lo:hi])
        if shuffle:
            self.shuffle = self.shuffle or EpochShuffle(seed=0)
            ds = self.shuffle.indices(hi - lo).map(lambda i: (tf.gather(x, i), tf.gather(y, i)))
        else:
            ds = tf.data.Dataset.from_tensor_slices((x, y))
        return ds.batch(self.batch_size)

    def train_dataloader(self):  # noqa: ANN201
        return self._ds(0, self.n_train, shuffle=True)

    def val_dataloader(self):  # noqa: ANN201
        return self._ds(self.n_train, self.n_train + 16)

    def test_dataloader(self):  # noqa: ANN201
        return self._ds(self.n_train + 16, self.n_train + 32)


class TinyRecipe(Recipe):
    """One Dense unit: the smallest model that can learn TinyData."""

    def __init__(self, config=None, learning_rate: float = 0.05) -> None:  # noqa: ANN001
        super().__init__(config or OmegaConf.create({"recipe": "tiny"}))
        self.learning_rate = learning_rate

    def configure_model(self):  # noqa: ANN201
        import keras

        return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, name="dense")])

    def configure_optimizers(self):  # noqa: ANN201
        import keras

        return keras.optimizers.Adam(self.learning_rate)

    def configure_loss(self) -> str:
        return "mse"

    def configure_metrics(self) -> list:
        return ["mae"]

    def configure_datamodule(self) -> TinyData:
        return TinyData()


@pytest.fixture
def tiny_recipe() -> TinyRecipe:
    return TinyRecipe()


@pytest.fixture
def root(tmp_path):  # noqa: ANN001, ANN201
    return tmp_path / "runs"
