"""Config precedence, typing and errors (no Keras needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from framework.config import ConfigError, flatten, load_config, parse_overrides


def test_config_precedence_defaults_recipe_file_overrides(tmp_path: Path) -> None:
    defaults_only = load_config("regression_shortcut")
    assert defaults_only.trainer.check_val_every_n_epoch == 1  # from defaults.yaml
    assert defaults_only.trainer.max_epochs == 300  # the recipe file beats the defaults
    assert defaults_only.data.noise_std == 0.1  # from the recipe's defaults list

    user = tmp_path / "user.yaml"
    user.write_text("trainer:\n  max_epochs: 7\n  seed: 3\n")
    with_file = load_config("regression_shortcut", user)
    assert (with_file.trainer.max_epochs, with_file.trainer.seed) == (7, 3)

    with_both = load_config("regression_shortcut", user, ["trainer.max_epochs=9"])
    assert (with_both.trainer.max_epochs, with_both.trainer.seed) == (9, 3)


def test_config_typo_suggests_closest_key() -> None:
    with pytest.raises(
        ConfigError,
        match="unknown config key 'trainer.max_epoch'.*did you mean 'trainer.max_epochs'",
    ):
        load_config("regression_shortcut", overrides=["trainer.max_epoch=3"])


def test_config_typo_in_user_file_names_the_file(tmp_path: Path) -> None:
    user = tmp_path / "bad.yaml"
    user.write_text("optimizer:\n  learnin_rate: 0.1\n")
    with pytest.raises(
        ConfigError,
        match=r"'optimizer.learnin_rate' \(from .*bad.yaml\).*"
        "did you mean 'optimizer.learning_rate'",
    ):
        load_config("regression_shortcut", user)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epochs=abc", "max_epochs must be an integer >= 1; received 'abc'"),
        ("trainer.max_epochs=0", "max_epochs must be an integer >= 1; received 0"),
        ("trainer.max_epochs=2.5", "max_epochs must be an integer >= 1; received 2.5"),
        ("trainer.fast_dev_run=yes please", "fast_dev_run must be true or false"),
        ("trainer.precision=64", "precision must be one of 32, bf16-mixed, 16-mixed; received 64"),
        (
            "backend=jaxx",
            "backend must be one of tensorflow, jax; received 'jaxx'; did you mean 'jax'",
        ),
        ("optimizer.learning_rate=fast", "optimizer.learning_rate must be a number"),
        ("trainer.limit_train_batches=0", "limit_train_batches must be null, an integer >= 1"),
        ("data.n_train=[1, 2]", "data.n_train must be an integer"),
    ],
)
def test_config_wrong_values_are_named(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config("regression_shortcut", overrides=[override])


def test_config_numeric_strings_are_numbers() -> None:
    cfg = load_config(
        "regression_shortcut",
        overrides=[
            "optimizer.learning_rate=1e-5",
            "trainer.max_epochs=3.0",
            "trainer.precision=32",
        ],
    )
    assert cfg.optimizer.learning_rate == pytest.approx(1e-5)
    assert isinstance(cfg.optimizer.learning_rate, float)
    assert cfg.trainer.max_epochs == 3
    assert cfg.trainer.precision == "32"


def test_config_plus_adds_a_key_on_purpose() -> None:
    cfg = load_config("regression_shortcut", overrides=["+optimizer.weight_decay=0.01"])
    assert cfg.optimizer.weight_decay == 0.01


def test_config_missing_required_value(tmp_path: Path) -> None:
    user = tmp_path / "user.yaml"
    user.write_text("data:\n  n_train: ???\n")
    with pytest.raises(ConfigError, match="missing required config value.*data.n_train"):
        load_config("regression_shortcut", user)


def test_config_unknown_recipe_suggests_closest() -> None:
    with pytest.raises(
        KeyError, match="unknown recipe 'regression_shortcat'.*did you mean 'regression_shortcut'"
    ):
        load_config("regression_shortcat")


def test_config_fast_dev_run_with_resume_is_rejected() -> None:
    with pytest.raises(ConfigError, match="fast_dev_run writes no checkpoints"):
        load_config(
            "regression_shortcut",
            overrides=["trainer.fast_dev_run=true", "trainer.ckpt_path=last"],
        )


def test_config_malformed_override() -> None:
    with pytest.raises(ConfigError, match="must look like key=value.*received 'trainer'"):
        parse_overrides(["trainer"])


def test_flatten_dotted_keys() -> None:
    flat = flatten({"a": {"b": 1, "c": [1, 2]}, "d": "x"})
    assert flat == {"a.b": 1, "a.c": "[1, 2]", "d": "x"}
