"""Kiln's built-in recipes, registered by name (importing this package imports no Keras)."""

from framework.registry import register_dataset, register_recipe

__all__: list[str] = []

_REGRESSION = "1-D regression of sin(3x) + 0.3x with noise"
register_recipe(
    "regression_sequential",
    "recipes.regression:RegressionSequential",
    f"{_REGRESSION}: Dense 64-32-1 sigmoid net, Sequential API",
)
register_recipe(
    "regression_functional",
    "recipes.regression:RegressionFunctional",
    f"{_REGRESSION}: the same net with the functional API",
)
register_recipe(
    "regression_shortcut",
    "recipes.regression:RegressionShortcut",
    f"{_REGRESSION}: the input concatenated to the second hidden layer",
)

_GTSRB = "recipes.gtsrb.recipe:GTSRBRecipe"
_AFTER = "GTSRB CNN, dropout"
for _name, _description in (
    ("gtsrb_cnn", "GTSRB CNN: two 5x5 conv + ELU + max-pool blocks, 97,771 parameters"),
    ("gtsrb_bn", "GTSRB CNN with batch norm after each convolution, before its ELU"),
    ("gtsrb_dropout", "GTSRB CNN with dropout at configurable positions (model.dropout)"),
    ("gtsrb_dropout_elu1", f"{_AFTER} 0.5 after the first ELU"),
    ("gtsrb_dropout_pool1", f"{_AFTER} 0.5 after the first pooling"),
    ("gtsrb_dropout_elus", f"{_AFTER} 0.5 after both ELUs"),
    ("gtsrb_dropout_pools", f"{_AFTER} 0.5 after both poolings"),
    ("gtsrb_dropout_flatten", f"{_AFTER} 0.5 after Flatten"),
    ("gtsrb_dropout_pools_flatten", f"{_AFTER} 0.5 after both poolings and Flatten"),
    ("gtsrb_dropout_rate02", f"{_AFTER} 0.2 after both poolings and Flatten"),
    ("gtsrb_dropout_rate05", f"{_AFTER} 0.5 after both poolings and Flatten"),
    ("gtsrb_dropout_rate08", f"{_AFTER} 0.8 after both poolings and Flatten"),
):
    register_recipe(_name, _GTSRB, _description)
register_recipe(
    "modes",
    "recipes.gtsrb.modes:ModesRecipe",
    "Dropout and BatchNormalization in training vs inference mode, measured on GTSRB",
)

register_dataset(
    "gtsrb",
    "recipes.gtsrb.prepare:prepare",
    "German Traffic Sign Recognition Benchmark: 43 classes, official archives resized to 32x32",
)
