"""In-memory batches: the PyDataset path (JAX's default) and its tf.data-like calls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from framework.data.arrays import ArrayBatches, array_batches, resolve_input
from framework.data.shuffle import EpochShuffle


def _arrays(n: int = 10) -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(n, dtype=np.float32)[:, None]
    return x, 2 * x


def _rows(batches: ArrayBatches) -> list[int]:
    return [int(v) for i in range(len(batches)) for v in batches[i][0][:, 0]]


def test_unshuffled_batches_slice_in_order() -> None:
    batches = ArrayBatches(_arrays(10), batch_size=4)
    assert len(batches) == 3
    assert batches.cardinality() == 3
    assert _rows(batches) == list(range(10))
    x, y = batches[2]
    assert x.shape == (2, 1)  # the last batch holds the remainder
    np.testing.assert_array_equal(y, 2 * x)
    with pytest.raises(IndexError, match="batch 3 out of range for 3 batches"):
        batches[3]


def test_order_depends_only_on_seed_and_epoch() -> None:
    shuffler = EpochShuffle(seed=5)
    batches = ArrayBatches(_arrays(10), 4, shuffler)
    first = _rows(batches)
    assert sorted(first) == list(range(10))
    assert first != list(range(10))
    shuffler.set_epoch(1)
    second = _rows(batches)
    assert sorted(second) == list(range(10))
    assert second != first
    # A fresh object (a restarted run) at epoch 1 repeats epoch 1's order.
    again = EpochShuffle(seed=5)
    again.set_epoch(1)
    assert _rows(ArrayBatches(_arrays(10), 4, again)) == second
    x, y = batches[0]
    np.testing.assert_array_equal(y, 2 * x)  # inputs and targets stay paired


def test_take_and_skip_follow_the_epoch_order() -> None:
    shuffler = EpochShuffle(seed=3)
    batches = ArrayBatches(_arrays(10), 2, shuffler)
    whole = _rows(batches)
    assert _rows(batches.take(2)) == whole[:4]
    assert _rows(batches.skip(3)) == whole[6:]
    assert len(batches.skip(9)) == 0
    assert len(batches.take(99)) == 5
    rest = batches.skip(1)
    shuffler.set_epoch(4)
    assert _rows(rest) == _rows(batches)[2:]


def test_bad_arrays_and_input_are_refused() -> None:
    with pytest.raises(ValueError, match=r"same length; received lengths \{.*\}"):
        ArrayBatches((np.zeros(3), np.zeros(4)), 2)
    with pytest.raises(ValueError, match="batch_size must be at least 1; received 0"):
        ArrayBatches(_arrays(), 0)
    with pytest.raises(ValueError, match="one of auto, tf_data, arrays; received 'numpy'"):
        resolve_input("numpy")


def test_auto_input_is_tf_data_under_tensorflow() -> None:
    import tensorflow as tf

    assert resolve_input("auto") == "tf_data"  # the in-process tests run TensorFlow
    shuffler = EpochShuffle(seed=5)
    dataset = array_batches(_arrays(10), 4, shuffler)
    assert isinstance(dataset, tf.data.Dataset)
    rows = [int(v) for x, _ in dataset for v in x[:, 0]]
    assert sorted(rows) == list(range(10))
    assert isinstance(array_batches(_arrays(10), 4, shuffler, input="arrays"), ArrayBatches)


def test_trainer_fits_limits_and_resumes_mid_epoch_on_array_batches(tmp_path: Path) -> None:
    from framework.callbacks import ModelCheckpoint
    from framework.config import load_config
    from framework.trainer import Trainer
    from recipes.regression import RegressionSequential

    overrides = [
        f"trainer.default_root_dir={tmp_path}", "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false", "data.input=arrays", "data.n_train=96",
        "trainer.limit_train_batches=2", "trainer.save_every_n_steps=1",
    ]  # fmt: skip
    cfg = load_config("regression_sequential", overrides=overrides)
    recipe = RegressionSequential(cfg)
    trainer = Trainer.from_config(cfg)
    trainer.fit(recipe)
    assert trainer.num_training_batches == 2
    assert trainer.global_step == 4
    assert int(np.asarray(trainer.model.optimizer.iterations)) == 4
    assert isinstance(trainer.datamodule.train_dataloader(), ArrayBatches)

    # A checkpoint from the middle of epoch 1 resumes there: 1 batch left, then 2 more.
    middle = tmp_path / "middle.ckpt"
    trainer.current_epoch, trainer.epochs_completed, trainer.global_step = 1, 1, 3
    trainer.batch_idx = 1
    trainer.save_checkpoint(middle)
    cfg.trainer.max_epochs = 3
    resumed = Trainer.from_config(cfg, callbacks=[ModelCheckpoint()])
    resumed.fit(RegressionSequential(cfg), ckpt_path=str(middle))
    assert resumed.global_step == 3 + 1 + 2


def test_both_paths_give_the_same_batches() -> None:
    shuffler = EpochShuffle(seed=11)
    shuffler.set_epoch(3)
    dataset = array_batches(_arrays(10), 4, shuffler, input="tf_data")
    from_tf = [int(v) for x, _ in dataset for v in x[:, 0]]
    assert _rows(array_batches(_arrays(10), 4, shuffler, input="arrays")) == from_tf
