"""The regression recipes: parameter counts, layer structure, training end to end."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from framework.config import load_config
from framework.run import run_recipe
from recipes.regression import RegressionShortcut, target_function


@pytest.mark.parametrize(
    ("recipe", "params"),
    [
        ("regression_sequential", 2241),
        ("regression_functional", 2241),
        ("regression_shortcut", 2242),
    ],
)
def test_regression_parameter_counts(recipe: str, params: int) -> None:
    from framework.registry import get_recipe, resolve

    model = resolve(get_recipe(recipe))(load_config(recipe)).configure_model()
    assert model.count_params() == params
    assert [layer.name for layer in model.layers if "hidden" in layer.name] == [
        "hidden1",
        "hidden2",
    ]


def test_regression_shortcut_feeds_input_to_output_layer() -> None:
    model = RegressionShortcut(load_config("regression_shortcut")).configure_model()
    concat = model.get_layer("shortcut")
    assert concat.output.shape[-1] == 33  # 32 hidden units + the input


def test_regression_data_is_noisy_target(tmp_path: Path) -> None:
    cfg = load_config("regression_shortcut")
    recipe = RegressionShortcut(cfg)
    data = recipe.configure_datamodule()
    data.setup("fit")
    x, y = data.splits["test"]
    assert x.shape == (2000, 1)
    residual = y - target_function(x)
    assert residual.std() == pytest.approx(0.1, rel=0.08)
    assert (x.min(), x.max()) >= (-2.0, -2.0)
    assert x.max() <= 2.0


@pytest.mark.parametrize(
    "recipe", ["regression_sequential", "regression_functional", "regression_shortcut"]
)
def test_regression_recipe_trains_end_to_end(recipe: str, tmp_path: Path) -> None:
    cfg = load_config(
        recipe,
        overrides=[
            "trainer.max_epochs=3",
            f"trainer.default_root_dir={tmp_path}",
            "trainer.enable_progress_bar=false",
        ],
    )
    result = run_recipe(cfg)
    assert result.log_dir == tmp_path / recipe / "version_0"
    assert {"loss", "val_loss", "test_loss", "test_mae"} <= set(result.metrics)
    # Three epochs already beat predicting the mean (variance of the target ~0.6).
    assert result.metrics["test_loss"] < 0.6


@pytest.mark.slow
def test_regression_reaches_noise_floor(tmp_path: Path) -> None:
    cfg = load_config(
        "regression_shortcut",
        overrides=[f"trainer.default_root_dir={tmp_path}", "trainer.enable_progress_bar=false"],
    )
    result = run_recipe(cfg)
    # The noise variance is 0.01: the recipe's own figure must come close to it.
    assert result.metrics["test_loss"] < 0.0125


@pytest.mark.jax
def test_regression_runs_under_jax(tmp_path: Path) -> None:
    env = {**os.environ, "KERAS_BACKEND": "", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("KERAS_BACKEND")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "framework",
            "run",
            "regression_functional",
            "backend=jax",
            "trainer.max_epochs=2",
            f"trainer.default_root_dir={tmp_path}",
            "trainer.enable_progress_bar=false",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "backend jax" in result.stderr
    run = tmp_path / "regression_functional" / "version_0"
    info = json.loads((run / "backend.json").read_text())
    assert info["backend"] == "jax"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    with open(run / "metrics.csv") as handle:
        test_losses = [float(r["test/loss"]) for r in csv.DictReader(handle) if r["test/loss"]]
    assert len(test_losses) == 1
    assert 0.0 < test_losses[0] < 0.6
