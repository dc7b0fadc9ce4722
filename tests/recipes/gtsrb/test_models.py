"""The GTSRB CNN builders and ``GTSRBRecipe``: parameter counts, layer order, configs."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from omegaconf import OmegaConf

from recipes.gtsrb.models import build_cnn
from recipes.gtsrb.recipe import GTSRBRecipe, model_options

CONFIGS = Path(__file__).resolve().parents[3] / "configs"

BASE = ["image", "conv1", "elu1", "pool1", "conv2", "elu2", "pool2", "flatten", "dense"]


def _counts(layer: keras.layers.Layer) -> tuple[int, int]:
    trainable = sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
    frozen = sum(int(np.prod(w.shape)) for w in layer.non_trainable_weights)
    return trainable, frozen


def _layer_names(model: keras.Model) -> list[str]:
    return [layer.name for layer in model.layers]


def _recipe(name: str) -> GTSRBRecipe:
    return GTSRBRecipe(OmegaConf.load(CONFIGS / f"{name}.yaml"))


def test_build_cnn_parameter_counts() -> None:
    model = build_cnn()

    assert model.count_params() == 97_771
    assert _counts(model.get_layer("conv1")) == (2_432, 0)
    assert _counts(model.get_layer("conv2")) == (51_264, 0)
    assert _counts(model.get_layer("dense")) == (44_075, 0)
    assert _layer_names(model) == BASE
    assert model.output_shape == (None, 43)


def test_build_cnn_batch_norm_parameter_counts() -> None:
    model = build_cnn(batch_norm=True)
    per_layer = {layer.name: _counts(layer) for layer in model.layers}

    assert per_layer["conv1"] == (2_432, 0)
    assert per_layer["bn1"] == (64, 64)
    assert per_layer["conv2"] == (51_264, 0)
    assert per_layer["bn2"] == (128, 128)
    assert per_layer["dense"] == (44_075, 0)
    assert sum(t for t, _ in per_layer.values()) == 97_963
    assert sum(f for _, f in per_layer.values()) == 192
    assert model.count_params() == 98_155


def test_build_cnn_batch_norm_sits_between_convolution_and_elu() -> None:
    names = _layer_names(build_cnn(batch_norm=True))

    assert names == [
        "image", "conv1", "bn1", "elu1", "pool1",
        "conv2", "bn2", "elu2", "pool2", "flatten", "dense",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("recipe", "order"),
    [
        ("gtsrb_dropout_elu1", ["conv1", "elu1", "dropout_elu1", "pool1", "conv2"]),
        ("gtsrb_dropout_pool1", ["elu1", "pool1", "dropout_pool1", "conv2", "elu2"]),
        ("gtsrb_dropout_elus", ["elu1", "dropout_elu1", "pool1", "elu2", "dropout_elu2", "pool2"]),
        ("gtsrb_dropout_pools", ["pool1", "dropout_pool1", "conv2", "pool2", "dropout_pool2"]),
        ("gtsrb_dropout_flatten", ["pool2", "flatten", "dropout_flatten", "dense"]),
        (
            "gtsrb_dropout_pools_flatten",
            ["pool1", "dropout_pool1", "pool2", "dropout_pool2", "flatten", "dropout_flatten"],
        ),
    ],
)
def test_named_dropout_recipes_place_dropout(recipe: str, order: list[str]) -> None:
    names = _layer_names(_recipe(recipe).configure_model())
    dropouts = [name for name in names if name.startswith("dropout_")]

    assert [name for name in names if name in order] == order
    assert [name for name in names if not name.startswith("dropout_")] == BASE
    assert dropouts == [name for name in order if name.startswith("dropout_")]


@pytest.mark.parametrize(
    ("recipe", "rate"),
    [("gtsrb_dropout_rate02", 0.2), ("gtsrb_dropout_rate05", 0.5), ("gtsrb_dropout_rate08", 0.8)],
)
def test_dropout_rate_recipes_use_their_rate(recipe: str, rate: float) -> None:
    model = _recipe(recipe).configure_model()
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]

    assert [layer.name for layer in dropouts] == [
        "dropout_pool1",
        "dropout_pool2",
        "dropout_flatten",
    ]
    assert [layer.rate for layer in dropouts] == [rate] * 3
    # Dropout adds no parameters.
    assert model.count_params() == 97_771


def test_dropout_recipe_positions_come_from_config() -> None:
    config = OmegaConf.load(CONFIGS / "gtsrb_dropout.yaml")
    config.model.dropout.positions = ["flatten", "elu2"]  # any order: placed in network order
    config.model.dropout.rate = 0.3
    model = GTSRBRecipe(config).configure_model()

    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert [layer.name for layer in dropouts] == ["dropout_elu2", "dropout_flatten"]
    assert [layer.rate for layer in dropouts] == [0.3, 0.3]


def test_build_cnn_rejects_unknown_dropout_position() -> None:
    with pytest.raises(ValueError, match="elu1, pool1, elu2, pool2, flatten") as error:
        build_cnn(dropout_positions=["pool1", "pool3"])

    assert "pool3" in str(error.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dropout_positions": "pool1"}, "list of position names"),
        ({"dropout_positions": ["pool1", "pool1"]}, "may appear once"),
        ({"dropout_positions": ["pool1"], "dropout_rate": 1.0}, r"dropout_rate=1\.0"),
        ({"sd_init": 0.0}, "sd_init=0.0"),
    ],
)
def test_build_cnn_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_cnn(**kwargs)


def test_build_cnn_bias_initialiser_is_truncated_normal_around_sd_init() -> None:
    keras.utils.set_random_seed(0)
    biases = np.concatenate(
        [
            keras.ops.convert_to_numpy(keras.ops.copy(build_cnn().get_layer(n).bias))
            for n in ("conv1", "conv2")
        ]
    )

    # Truncated at two deviations: N(0.01, 0.01) restricted to [-0.01, 0.03].
    assert biases.min() >= -0.01 - 1e-7
    assert biases.max() <= 0.03 + 1e-7
    assert abs(biases.mean() - 0.01) < 0.004
    assert biases.std() > 0.004


def test_model_options_rejects_unknown_key_with_suggestion() -> None:
    config = OmegaConf.create({"model": {"batchnorm": True}})

    with pytest.raises(KeyError, match="did you mean model.batch_norm"):
        model_options(config)


def test_model_options_defaults_to_the_base_network() -> None:
    options = model_options(OmegaConf.create({"model": {}}))

    assert options == {
        "batch_norm": False,
        "dropout_positions": (),
        "dropout_rate": 0.5,
        "sd_init": 0.01,
    }


def test_recipe_trains_one_step_with_course_defaults() -> None:
    recipe = _recipe("gtsrb_bn")
    model = recipe.configure_model()
    optimizer = recipe.configure_optimizers()
    metrics = recipe.configure_metrics()

    assert isinstance(optimizer, keras.optimizers.Adam)
    assert optimizer.epsilon == pytest.approx(0.1)
    assert float(
        keras.ops.convert_to_numpy(keras.ops.copy(optimizer.learning_rate))
    ) == pytest.approx(1e-3)
    assert isinstance(recipe.configure_loss(), keras.losses.SparseCategoricalCrossentropy)
    assert [metric.name for metric in metrics] == ["accuracy"]

    model.compile(optimizer=optimizer, loss=recipe.configure_loss(), metrics=metrics)
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(8, 28, 28, 3)).astype("float32")
    labels = rng.integers(0, 43, size=(8,))
    logs = model.train_on_batch(images, labels, return_dict=True)

    # An untrained 43-way softmax starts near log(43) = 3.76.
    assert 2.5 < logs["loss"] < 5.5
    assert 0.0 <= logs["accuracy"] <= 1.0
    assert model.name == "gtsrb_bn"


POOLS_FLATTEN = ("pool1", "pool2", "flatten")
RECIPE_MODELS = {
    "gtsrb_cnn": (False, (), 0.5),
    "gtsrb_bn": (True, (), 0.5),
    "gtsrb_dropout": (False, POOLS_FLATTEN, 0.5),
    "gtsrb_dropout_elu1": (False, ("elu1",), 0.5),
    "gtsrb_dropout_pool1": (False, ("pool1",), 0.5),
    "gtsrb_dropout_elus": (False, ("elu1", "elu2"), 0.5),
    "gtsrb_dropout_pools": (False, ("pool1", "pool2"), 0.5),
    "gtsrb_dropout_flatten": (False, ("flatten",), 0.5),
    "gtsrb_dropout_pools_flatten": (False, POOLS_FLATTEN, 0.5),
    "gtsrb_dropout_rate02": (False, POOLS_FLATTEN, 0.2),
    "gtsrb_dropout_rate05": (False, POOLS_FLATTEN, 0.5),
    "gtsrb_dropout_rate08": (False, POOLS_FLATTEN, 0.8),
}


@pytest.mark.parametrize("recipe", sorted(RECIPE_MODELS))
def test_recipe_config_loads_with_course_defaults(recipe: str) -> None:
    from framework.config import load_config

    config = load_config(recipe)
    batch_norm, positions, rate = RECIPE_MODELS[recipe]

    assert model_options(config) == {
        "batch_norm": batch_norm,
        "dropout_positions": positions,
        "dropout_rate": rate,
        "sd_init": 0.01,
    }
    assert dict(config.optimizer) == {"name": "adam", "learning_rate": 0.001, "epsilon": 0.1}
    assert config.data.batch_size == 128
