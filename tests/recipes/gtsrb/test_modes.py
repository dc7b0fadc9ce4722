"""Dropout and BatchNormalization in training and inference modes, checked with numbers."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from omegaconf import DictConfig, OmegaConf

from framework.data.datamodule import DataModule
from recipes.gtsrb.modes import (
    ModesRecipe,
    batch_norm_figures,
    dropout_figures,
    run_batch_norm,
    run_dropout,
)

GAMMA = np.array([1.5, 0.5, 2.0], dtype="float32")
BETA = np.array([0.1, -0.2, 0.3], dtype="float32")


@pytest.fixture
def images() -> np.ndarray:
    """Positive images whose three channels have clearly different means and spreads."""
    rng = np.random.default_rng(0)
    x = rng.normal(loc=[0.2, 0.5, 0.8], scale=[0.05, 0.1, 0.15], size=(64, 16, 16, 3))
    return np.clip(x, 0.01, 1.0).astype("float32")


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_run_dropout_training_zeroes_rate_and_rescales_the_rest(
    images: np.ndarray, rate: float
) -> None:
    out = run_dropout(images, rate, seed=3)
    kept = out.training != 0

    # 49,152 values: the zeroed fraction is within 0.01 of the rate (over 5 sigma).
    assert abs((1 - kept.mean()) - rate) < 0.01
    np.testing.assert_allclose(out.training[kept], images[kept] / (1 - rate), rtol=1e-6)
    assert out.training.sum() / images.sum() == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_run_dropout_inference_is_identity(images: np.ndarray, rate: float) -> None:
    out = run_dropout(images, rate, seed=3)

    np.testing.assert_array_equal(out.inference, images)


def test_run_dropout_draws_a_new_mask_each_training_call(images: np.ndarray) -> None:
    out = run_dropout(images, 0.5, seed=3)
    differ = (out.training == 0) != (out.training_again == 0)

    # Two independent masks disagree with probability 2 * r * (1 - r) = 0.5.
    assert differ.mean() == pytest.approx(0.5, abs=0.01)


def test_dropout_figures_ignore_pixels_that_were_already_zero(images: np.ndarray) -> None:
    images = images.copy()
    images[:, :8] = 0.0  # half of every image is black
    figures = dropout_figures(run_dropout(images, 0.2, seed=5))

    assert figures["dropout.rate"] == 0.2
    assert figures["dropout.train_zero_fraction"] == pytest.approx(0.2, abs=0.01)
    assert figures["dropout.train_kept_scale"] == pytest.approx(1.25, rel=1e-6)
    assert figures["dropout.train_kept_error"] < 1e-6
    assert figures["dropout.train_masks_differ"] == pytest.approx(0.32, abs=0.015)
    assert figures["dropout.infer_max_diff"] == 0.0


def test_run_batch_norm_training_uses_batch_statistics(images: np.ndarray) -> None:
    out = run_batch_norm(images, momentum=0.9, epsilon=1e-3, gamma=GAMMA, beta=BETA)
    mean = images.mean(axis=(0, 1, 2), dtype="float64")
    variance = images.var(axis=(0, 1, 2), dtype="float64")
    standardised = (out.training - BETA) / GAMMA

    np.testing.assert_allclose(standardised.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(
        standardised.var(axis=(0, 1, 2)), variance / (variance + 1e-3), rtol=1e-4
    )
    expected = (images - mean) / np.sqrt(variance + 1e-3) * GAMMA + BETA
    np.testing.assert_allclose(out.training, expected, atol=1e-4)


@pytest.mark.parametrize("momentum", [0.9, 0.99])
def test_run_batch_norm_training_moves_moving_statistics_by_momentum(
    images: np.ndarray, momentum: float
) -> None:
    out = run_batch_norm(images, momentum=momentum)
    mean = images.mean(axis=(0, 1, 2), dtype="float64")
    variance = images.var(axis=(0, 1, 2), dtype="float64")

    np.testing.assert_array_equal(out.moving_mean_before, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(out.moving_variance_before, [1.0, 1.0, 1.0])
    np.testing.assert_allclose(out.moving_mean_after, (1 - momentum) * mean, rtol=1e-5)
    np.testing.assert_allclose(
        out.moving_variance_after, momentum + (1 - momentum) * variance, rtol=1e-5
    )


def test_run_batch_norm_inference_uses_moving_statistics(images: np.ndarray) -> None:
    out = run_batch_norm(images, momentum=0.9, epsilon=1e-3, gamma=GAMMA, beta=BETA)
    # After one training call from (0, 1): moving mean 0.1 * mean, variance 0.9 + 0.1 * var.
    moving_mean = 0.1 * images.mean(axis=(0, 1, 2), dtype="float64")
    moving_variance = 0.9 + 0.1 * images.var(axis=(0, 1, 2), dtype="float64")
    expected = (images - moving_mean) / np.sqrt(moving_variance + 1e-3) * GAMMA + BETA

    np.testing.assert_allclose(out.inference, expected, atol=1e-5)
    # Not the batch-statistics output: inference does not normalise with this batch.
    assert np.max(np.abs(out.inference - out.training)) > 0.5


@pytest.mark.parametrize("index", [0, 5, 63])
def test_run_batch_norm_inference_of_one_image_is_batch_independent(
    images: np.ndarray, index: int
) -> None:
    out = run_batch_norm(images, index=index, gamma=GAMMA, beta=BETA)

    np.testing.assert_allclose(out.single_inference, out.inference[index], atol=1e-6)
    np.testing.assert_allclose(out.other_batch_inference, out.inference[index], atol=1e-6)
    # In training mode the same image alone is normalised by its own statistics instead.
    assert np.max(np.abs(out.single_training - out.training[index])) > 0.1


def test_run_batch_norm_restores_moving_statistics_after_the_single_training_call(
    images: np.ndarray,
) -> None:
    out = run_batch_norm(images, momentum=0.5)
    # Had the single-image call leaked, inference would not match the recorded statistics.
    expected = (images - out.moving_mean_after) / np.sqrt(out.moving_variance_after + 1e-3)

    np.testing.assert_allclose(out.inference, expected, atol=1e-5)


def test_run_batch_norm_rejects_index_outside_batch(images: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"index must be in \[0, 64\). Received: index=64"):
        run_batch_norm(images, index=64)


def test_batch_norm_figures(images: np.ndarray) -> None:
    figures = batch_norm_figures(run_batch_norm(images, momentum=0.9, gamma=GAMMA, beta=BETA))
    variance = images.var(axis=(0, 1, 2), dtype="float64")
    mean = images.mean(axis=(0, 1, 2), dtype="float64")

    assert figures["bn.train_channel_mean_abs_max"] < 1e-5
    assert figures["bn.train_channel_var_min"] == pytest.approx(
        np.min(variance / (variance + 1e-3)), rel=1e-4
    )
    assert figures["bn.train_channel_var_max"] == pytest.approx(
        np.max(variance / (variance + 1e-3)), rel=1e-4
    )
    assert figures["bn.moving_mean_shift"] == pytest.approx(0.1 * mean.max(), rel=1e-5)
    for key in (
        "bn.train_formula_error",
        "bn.moving_mean_update_error",
        "bn.moving_var_update_error",
        "bn.infer_formula_error",
        "bn.infer_alone_vs_batch",
        "bn.infer_alone_vs_other_batch",
    ):
        assert figures[key] < 1e-4, key
    assert figures["bn.train_alone_vs_batch"] > 0.1


class _ArrayDataModule(DataModule):
    def __init__(self, images: np.ndarray) -> None:
        self.images = images
        self.stages: list[str] = []

    def prepare_data(self) -> None:
        self.stages.append("prepare")

    def setup(self, stage: str) -> None:
        self.stages.append(stage)

    def test_dataloader(self) -> tf.data.Dataset:
        labels = np.zeros(len(self.images), dtype="int64")
        return tf.data.Dataset.from_tensor_slices((self.images, labels)).batch(32)


def _modes_config(**model: float) -> DictConfig:
    return OmegaConf.create({"recipe": "modes", "trainer": {"seed": 7}, "model": model})


def test_modes_recipe_run_measures_the_first_test_batch(
    images: np.ndarray, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    datamodule = _ArrayDataModule(images)
    recipe = ModesRecipe(_modes_config(dropout_rate=0.2, bn_momentum=0.9, bn_epsilon=1e-3))
    monkeypatch.setattr(recipe, "configure_datamodule", lambda: datamodule)

    figures = recipe.run(trainer=None)

    assert datamodule.stages == ["prepare", "test"]
    assert figures["dropout.rate"] == 0.2
    # Only the first batch of 32 is measured: the shift is 0.1 of that batch's largest mean.
    first_mean = images[:32].mean(axis=(0, 1, 2), dtype="float64")
    assert figures["bn.moving_mean_shift"] == pytest.approx(0.1 * first_mean.max(), rel=1e-5)
    assert all(isinstance(value, float) for value in figures.values())
    printed = capsys.readouterr().out
    assert "dropout.train_zero_fraction" in printed
    assert "bn.infer_alone_vs_batch" in printed


def test_modes_recipe_rejects_unknown_model_key() -> None:
    recipe = ModesRecipe(_modes_config(dropout=0.5))

    with pytest.raises(KeyError, match="did you mean model.dropout_rate"):
        recipe.measure(np.ones((2, 4, 4, 3), dtype="float32"))


def test_modes_recipe_on_a_real_gtsrb_batch(request: pytest.FixtureRequest) -> None:
    try:
        root = request.getfixturevalue("gtsrb_root")
    except pytest.FixtureLookupError:
        pytest.skip("needs the gtsrb_root fixture (tests/recipes/gtsrb/conftest.py)")
    from framework.config import load_config

    config = load_config("modes", overrides=[f"data.root={root}"])
    figures = ModesRecipe(config).run(trainer=None)

    assert figures["dropout.train_zero_fraction"] == pytest.approx(0.5, abs=0.03)
    assert figures["dropout.train_kept_scale"] == pytest.approx(2.0, rel=1e-6)
    assert figures["dropout.infer_max_diff"] == 0.0
    assert figures["bn.train_channel_mean_abs_max"] < 1e-3
    assert 0.9 < figures["bn.train_channel_var_min"] <= figures["bn.train_channel_var_max"] < 1
    assert figures["bn.moving_mean_shift"] > 0
    assert figures["bn.moving_mean_update_error"] < 1e-5
    assert figures["bn.infer_formula_error"] < 1e-5
    assert figures["bn.infer_alone_vs_batch"] < 1e-5
    assert figures["bn.infer_alone_vs_other_batch"] < 1e-5


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"dropout_rate": 1.0}, r"model.dropout_rate must be in \[0, 1\)"),
        ({"bn_momentum": 1.5}, r"model.bn_momentum must be in \[0, 1\)"),
        ({"bn_epsilon": 0.0}, "model.bn_epsilon must be positive"),
    ],
)
def test_modes_recipe_rejects_out_of_range_settings(model: dict, message: str) -> None:
    recipe = ModesRecipe(_modes_config(**model))

    with pytest.raises(ValueError, match=message):
        recipe.measure(np.ones((2, 4, 4, 3), dtype="float32"))
