"""The GTSRB convolutional networks: the base CNN and its batch-norm and dropout variants.

Pure Keras builders with no config handling. Every variant is the same stack,

    conv1 [bn1] elu1 pool1 conv2 [bn2] elu2 pool2 flatten dense

with optional batch normalisation between each convolution and its ELU, and optional dropout
after any of ``elu1``, ``pool1``, ``elu2``, ``pool2`` and ``flatten``. Layers carry readable
names (``conv1``, ``bn1``, ``dropout_pool1``, ...) so that summaries and tests can refer to them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import keras

logger = logging.getLogger(__name__)

__all__ = ["DROPOUT_POSITIONS", "INPUT_SHAPE", "NUM_CLASSES", "build_cnn"]

INPUT_SHAPE: tuple[int, int, int] = (28, 28, 3)
NUM_CLASSES = 43

#: Where dropout may go, in the order the layers appear in the network.
DROPOUT_POSITIONS: tuple[str, ...] = ("elu1", "pool1", "elu2", "pool2", "flatten")


def _check_dropout(positions: Sequence[str], rate: float) -> frozenset[str]:
    if isinstance(positions, str):
        raise ValueError(
            "dropout_positions must be a list of position names, not one string; "
            f"allowed names: {', '.join(DROPOUT_POSITIONS)}. Received: {positions!r}"
        )
    positions = list(positions)
    unknown = [p for p in positions if p not in DROPOUT_POSITIONS]
    if unknown:
        raise ValueError(
            f"unknown dropout position(s) {unknown}; allowed names: "
            f"{', '.join(DROPOUT_POSITIONS)}. Received: dropout_positions={positions}"
        )
    if len(set(positions)) != len(positions):
        raise ValueError(
            f"each dropout position may appear once. Received: dropout_positions={positions}"
        )
    if positions and not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1). Received: dropout_rate={rate}")
    return frozenset(positions)


def build_cnn(
    input_shape: tuple[int, int, int] = INPUT_SHAPE,
    num_classes: int = NUM_CLASSES,
    batch_norm: bool = False,
    dropout_positions: Sequence[str] = (),
    dropout_rate: float = 0.5,
    sd_init: float = 0.01,
    name: str = "gtsrb_cnn",
) -> keras.Model:
    """Build the GTSRB CNN (97,771 parameters for 28x28x3 inputs without batch norm).

    Args:
        input_shape: height, width and channels of one image.
        num_classes: width of the softmax output.
        batch_norm: insert ``BatchNormalization`` after each convolution, before its ELU.
        dropout_positions: names from ``DROPOUT_POSITIONS`` after which a ``Dropout`` layer
            goes, in any order.
        dropout_rate: the fraction of units each dropout layer zeroes while training.
        sd_init: mean and standard deviation of the truncated normal that initialises the
            convolution biases.
        name: the model's name.
    """
    positions = _check_dropout(dropout_positions, dropout_rate)
    if sd_init <= 0:
        raise ValueError(f"sd_init must be positive. Received: sd_init={sd_init}")

    def maybe_dropout(x: keras.KerasTensor, position: str) -> keras.KerasTensor:
        if position in positions:
            return keras.layers.Dropout(dropout_rate, name=f"dropout_{position}")(x)
        return x

    def conv_block(x: keras.KerasTensor, index: int, filters: int) -> keras.KerasTensor:
        # The course initialises biases from N(sd_init, sd_init) truncated at two deviations.
        bias_init = keras.initializers.TruncatedNormal(mean=sd_init, stddev=sd_init)
        x = keras.layers.Conv2D(filters, 5, bias_initializer=bias_init, name=f"conv{index}")(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
        x = keras.layers.ELU(name=f"elu{index}")(x)
        x = maybe_dropout(x, f"elu{index}")
        x = keras.layers.MaxPooling2D(2, name=f"pool{index}")(x)
        return maybe_dropout(x, f"pool{index}")

    inputs = keras.Input(shape=input_shape, name="image")
    x = conv_block(inputs, 1, 32)
    x = conv_block(x, 2, 64)
    x = keras.layers.Flatten(name="flatten")(x)
    x = maybe_dropout(x, "flatten")
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="dense")(x)

    model = keras.Model(inputs, outputs, name=name)
    logger.debug(
        "built %s: batch_norm=%s, dropout=%s at rate %s, %d parameters",
        name,
        batch_norm,
        [p for p in DROPOUT_POSITIONS if p in positions],
        dropout_rate,
        model.count_params(),
    )
    return model
