"""Training and inference modes of ``Dropout`` and ``BatchNormalization``, measured on data.

``kiln run modes`` takes one real GTSRB test batch and prints what each layer does with
``training=True`` and with ``training=False``. The measuring code is a pair of plain functions
per layer: ``run_*`` calls the Keras layer and keeps its raw outputs, ``*_figures`` reduces them
to numbers. Tests call both on synthetic arrays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from omegaconf import OmegaConf

from framework.recipe import Recipe
from recipes.gtsrb.recipe import check_section_keys

logger = logging.getLogger(__name__)

__all__ = [
    "BatchNormOutputs",
    "DropoutOutputs",
    "ModesRecipe",
    "batch_norm_figures",
    "dropout_figures",
    "print_table",
    "run_batch_norm",
    "run_dropout",
]

_MODEL_KEYS = ("dropout_rate", "bn_momentum", "bn_epsilon")


@dataclass
class DropoutOutputs:
    rate: float
    inputs: np.ndarray
    training: np.ndarray  # first call with training=True
    training_again: np.ndarray  # a second call, to show the mask is drawn anew
    inference: np.ndarray  # training=False


def run_dropout(images: np.ndarray, rate: float, seed: int = 0) -> DropoutOutputs:
    """Apply one ``Dropout(rate)`` layer to ``images`` in both modes."""
    layer = keras.layers.Dropout(rate, seed=seed)
    x = keras.ops.convert_to_tensor(np.asarray(images, dtype="float32"))
    return DropoutOutputs(
        rate=rate,
        inputs=np.asarray(images, dtype="float32"),
        training=keras.ops.convert_to_numpy(layer(x, training=True)),
        training_again=keras.ops.convert_to_numpy(layer(x, training=True)),
        inference=keras.ops.convert_to_numpy(layer(x, training=False)),
    )


def dropout_figures(out: DropoutOutputs) -> dict[str, float]:
    """Zeroed fraction, rescaling of the kept values, randomness, and inference identity."""
    x = out.inputs.astype("float64")
    y = out.training.astype("float64")
    # A pixel that is already 0 cannot show whether dropout removed it, so count only the rest.
    nonzero = x != 0
    kept = nonzero & (y != 0)
    redrawn = (out.training == 0) != (out.training_again == 0)
    return {
        "dropout.rate": float(out.rate),
        "dropout.train_zero_fraction": float(1.0 - kept.sum() / nonzero.sum()),
        "dropout.train_kept_scale": float(np.mean(y[kept] / x[kept])),
        "dropout.train_kept_error": float(np.max(np.abs(y[kept] - x[kept] / (1 - out.rate)))),
        "dropout.train_sum_ratio": float(y.sum() / x.sum()),
        "dropout.train_masks_differ": float(redrawn[nonzero].mean()),
        "dropout.infer_max_diff": float(np.max(np.abs(out.inference - out.inputs))),
    }


@dataclass
class BatchNormOutputs:
    momentum: float
    epsilon: float
    index: int  # the image followed alone and inside batches
    inputs: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    moving_mean_before: np.ndarray
    moving_variance_before: np.ndarray
    training: np.ndarray  # training=True on the whole batch
    moving_mean_after: np.ndarray  # after that one training call
    moving_variance_after: np.ndarray
    inference: np.ndarray  # training=False on the whole batch
    single_inference: np.ndarray  # the image alone, training=False
    other_batch_inference: np.ndarray  # the image inside a different batch, training=False
    single_training: np.ndarray  # the image alone, training=True


def _numpy(variable: keras.Variable) -> np.ndarray:
    # Through a tensor: NumPy 2 warns when it converts some backends' variables directly.
    return keras.ops.convert_to_numpy(keras.ops.copy(variable))


def run_batch_norm(
    images: np.ndarray,
    momentum: float = 0.99,
    epsilon: float = 1e-3,
    index: int = 0,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
) -> BatchNormOutputs:
    """Apply one ``BatchNormalization`` layer (over the last axis) to ``images`` in both modes.

    The layer makes one training call on the batch, then inference calls on the batch, on image
    ``index`` alone and on that image inside another batch (the second half of ``images``).
    ``gamma`` and ``beta`` replace the initial ones and zeros when given.
    """
    x = np.asarray(images, dtype="float32")
    if not 0 <= index < len(x):
        raise ValueError(f"index must be in [0, {len(x)}). Received: index={index}")
    layer = keras.layers.BatchNormalization(momentum=momentum, epsilon=epsilon)
    layer.build(x.shape)
    if gamma is not None:
        layer.gamma.assign(np.asarray(gamma, dtype="float32"))
    if beta is not None:
        layer.beta.assign(np.asarray(beta, dtype="float32"))

    def call(batch: np.ndarray, training: bool) -> np.ndarray:
        return keras.ops.convert_to_numpy(
            layer(keras.ops.convert_to_tensor(batch), training=training)
        )

    def moving() -> tuple[np.ndarray, np.ndarray]:
        return (
            _numpy(layer.moving_mean),
            _numpy(layer.moving_variance),
        )

    mean_before, variance_before = moving()
    training = call(x, True)
    mean_after, variance_after = moving()

    image = x[index : index + 1]
    other_batch = np.concatenate([x[len(x) // 2 :], image])
    inference = call(x, False)
    single_inference = call(image, False)[0]
    other_batch_inference = call(other_batch, False)[-1]

    # A training call updates the moving statistics; put them back so the layer stays as measured.
    single_training = call(image, True)[0]
    layer.moving_mean.assign(mean_after)
    layer.moving_variance.assign(variance_after)

    return BatchNormOutputs(
        momentum=momentum,
        epsilon=epsilon,
        index=index,
        inputs=x,
        gamma=_numpy(layer.gamma),
        beta=_numpy(layer.beta),
        moving_mean_before=mean_before,
        moving_variance_before=variance_before,
        training=training,
        moving_mean_after=mean_after,
        moving_variance_after=variance_after,
        inference=inference,
        single_inference=single_inference,
        other_batch_inference=other_batch_inference,
        single_training=single_training,
    )


def _normalise(x: np.ndarray, mean: Any, variance: Any, out: BatchNormOutputs) -> np.ndarray:
    return (x - mean) / np.sqrt(variance + out.epsilon) * out.gamma + out.beta


def batch_norm_figures(out: BatchNormOutputs) -> dict[str, float]:
    """Batch statistics in training, the moving-average update, and batch-free inference.

    Errors and differences are maximum absolute values over all elements. The per-channel
    mean and variance of the training output are taken before ``gamma`` and ``beta``, that is
    of ``(output - beta) / gamma``; the variance is ``var / (var + epsilon)``, just under 1.
    """
    x = out.inputs.astype("float64")
    axes = tuple(range(x.ndim - 1))
    batch_mean, batch_variance = x.mean(axis=axes), x.var(axis=axes)
    standardised = (out.training.astype("float64") - out.beta) / out.gamma
    train_mean, train_variance = standardised.mean(axis=axes), standardised.var(axis=axes)
    m = out.momentum
    expected_mean = m * out.moving_mean_before + (1 - m) * batch_mean
    expected_variance = m * out.moving_variance_before + (1 - m) * batch_variance
    inference_expected = _normalise(x, out.moving_mean_after, out.moving_variance_after, out)
    row = out.inference[out.index]

    def max_abs(a: Any) -> float:
        return float(np.max(np.abs(a)))

    return {
        "bn.train_channel_mean_abs_max": max_abs(train_mean),
        "bn.train_channel_var_min": float(train_variance.min()),
        "bn.train_channel_var_max": float(train_variance.max()),
        "bn.train_formula_error": max_abs(
            out.training - _normalise(x, batch_mean, batch_variance, out)
        ),
        "bn.moving_mean_shift": max_abs(out.moving_mean_after - out.moving_mean_before),
        "bn.moving_mean_update_error": max_abs(out.moving_mean_after - expected_mean),
        "bn.moving_var_update_error": max_abs(out.moving_variance_after - expected_variance),
        "bn.infer_formula_error": max_abs(out.inference - inference_expected),
        "bn.infer_alone_vs_batch": max_abs(out.single_inference - row),
        "bn.infer_alone_vs_other_batch": max_abs(out.other_batch_inference - row),
        "bn.train_alone_vs_batch": max_abs(out.single_training - out.training[out.index]),
    }


def _expectations(rate: float) -> dict[str, str]:
    return {
        "dropout.rate": "the rate asked for",
        "dropout.train_zero_fraction": f"close to the rate, {rate:g}",
        "dropout.train_kept_scale": f"1/(1-rate) = {1 / (1 - rate):.4g}",
        "dropout.train_kept_error": "0: kept = input/(1-rate)",
        "dropout.train_sum_ratio": "close to 1: the expected sum is kept",
        "dropout.train_masks_differ": f"close to 2r(1-r) = {2 * rate * (1 - rate):.3g}",
        "dropout.infer_max_diff": "0: identity",
        "bn.train_channel_mean_abs_max": "about 0 (float32 rounding): batch mean removed",
        "bn.train_channel_var_min": "just under 1: var/(var+eps)",
        "bn.train_channel_var_max": "just under 1: var/(var+eps)",
        "bn.train_formula_error": "about 0 (float32 rounding): uses the batch statistics",
        "bn.moving_mean_shift": "above 0: training moves the moving mean",
        "bn.moving_mean_update_error": "0: m*old + (1-m)*batch mean",
        "bn.moving_var_update_error": "0: m*old + (1-m)*batch variance",
        "bn.infer_formula_error": "0: uses the moving mean and variance",
        "bn.infer_alone_vs_batch": "0: alone = its row in the batch",
        "bn.infer_alone_vs_other_batch": "0: same in any batch",
        "bn.train_alone_vs_batch": "above 0: training output depends on the batch",
    }


class ModesRecipe(Recipe):
    """Measure Dropout and BatchNormalization in both modes on one real GTSRB batch."""

    description = "Dropout and BatchNormalization in training and inference modes, measured"

    def _options(self) -> dict[str, float]:
        section = self.config.get("model")
        section = OmegaConf.to_container(section, resolve=True) if section is not None else {}
        check_section_keys(section, _MODEL_KEYS, "model")
        options = {
            "rate": float(section.get("dropout_rate", 0.5)),
            "momentum": float(section.get("bn_momentum", 0.99)),
            "epsilon": float(section.get("bn_epsilon", 1e-3)),
        }
        for key, name in (("rate", "model.dropout_rate"), ("momentum", "model.bn_momentum")):
            if not 0.0 <= options[key] < 1.0:
                raise ValueError(f"{name} must be in [0, 1). Received: {name}={options[key]}")
        epsilon = options["epsilon"]
        if epsilon <= 0:
            raise ValueError(f"model.bn_epsilon must be positive. Received: bn_epsilon={epsilon}")
        return options

    def configure_datamodule(self) -> Any:
        from recipes.gtsrb.data import GTSRBDataModule

        return GTSRBDataModule(self.config)

    def real_batch(self) -> np.ndarray:
        """The first batch of the GTSRB test split, as float32 images."""
        datamodule = self.configure_datamodule()
        datamodule.prepare_data()
        datamodule.setup("test")
        images, _labels = next(iter(datamodule.test_dataloader()))
        return np.asarray(images, dtype="float32")

    def measure(self, images: np.ndarray) -> dict[str, float]:
        """Every figure for one batch of images."""
        options = self._options()
        trainer_section = self.config.get("trainer") or {}
        seed = int(trainer_section.get("seed", 0) or 0)
        figures = dropout_figures(run_dropout(images, options["rate"], seed=seed))
        figures.update(
            batch_norm_figures(run_batch_norm(images, options["momentum"], options["epsilon"]))
        )
        return figures

    def run(self, trainer: Any) -> dict[str, float]:
        images = self.real_batch()
        logger.info("measuring modes on a GTSRB test batch of shape %s", images.shape)
        figures = self.measure(images)
        print_table(figures, self._options()["rate"])
        return figures


def print_table(figures: dict[str, float], rate: float) -> None:
    """Show the figures beside what each should be."""
    from rich.console import Console
    from rich.table import Table

    expectations = _expectations(rate)
    table = Table(title="Training (training=True) vs inference (training=False) modes")
    table.add_column("figure", no_wrap=True)
    table.add_column("measured", justify="right")
    table.add_column("expected")
    for key, value in figures.items():
        table.add_row(key, f"{value:.6g}", expectations.get(key, ""))
    Console().print(table)
