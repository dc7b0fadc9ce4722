"""Kiln's built-in recipes, registered by name (importing this package imports no Keras)."""

from framework.registry import register_recipe

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
