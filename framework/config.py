"""Loading, merging and validating run configs (no Keras imported here).

Precedence, lowest first: ``configs/defaults.yaml`` < the files a recipe lists under
``defaults:`` < ``configs/<recipe>.yaml`` < ``--config FILE`` < ``key=value`` overrides.

Every key a user sets must already exist (the recipe file may add keys to its own ``model``,
``data`` and ``optimizer`` sections; ``+key=value`` adds a key on purpose). A value must have
the type of the default it replaces; numbers written as strings such as ``1e-5`` are numbers.
Errors name the key, what is allowed and what was received, with the closest valid key for a
typo, before anything is imported or built.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from framework import registry

logger = logging.getLogger(__name__)

__all__ = [
    "ConfigError",
    "config_dir",
    "flatten",
    "load_config",
    "parse_overrides",
    "validate",
]

# Sections a recipe file may extend with keys of its own.
OPEN_SECTIONS = ("model", "data", "optimizer")
BACKENDS = ("tensorflow", "jax")
PRECISIONS = ("32", "bf16-mixed", "16-mixed")


class ConfigError(ValueError):
    """A config that cannot run: unknown key, wrong type, bad value or missing value."""


def config_dir() -> Path:
    """The folder holding ``defaults.yaml`` and one YAML per recipe."""
    override = os.environ.get("KILN_CONFIG_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / "configs"


def _read_yaml(path: Path, what: str) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist")
    try:
        loaded = OmegaConf.load(path)
    except Exception as error:  # omegaconf/yaml raise many types for a malformed file
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML: {error}") from error
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{what} {str(path)!r} must hold a mapping; received a list")
    return loaded


def parse_overrides(items: Iterable[str]) -> list[tuple[str, Any, bool]]:
    """Parse ``key=value`` strings into (dotted key, value, adds_key) with YAML typing."""
    parsed = []
    for item in items:
        key, sep, raw = item.partition("=")
        adds = key.startswith("+")
        key = key.lstrip("+").strip()
        if not sep or not key:
            raise ConfigError(
                f"an override must look like key=value (or +key=value to add a key); "
                f"received {item!r}"
            )
        value = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={raw}"]))["v"]
        parsed.append((key, value, adds))
    return parsed


def _leaf_paths(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=False)
    if isinstance(node, Mapping):
        paths = []
        for key in node:
            path = f"{prefix}.{key}" if prefix else str(key)
            paths.append(path)
            paths.extend(_leaf_paths(node[key], path))
        return paths
    return []


def _unknown_key(path: str, cfg: DictConfig, source: str) -> ConfigError:
    message = f"unknown config key {path!r} (from {source})"
    parent = path.rpartition(".")[0]
    node = OmegaConf.select(cfg, parent, throw_on_missing=False) if parent else cfg
    if OmegaConf.is_dict(node):
        message += f"; valid keys here: {', '.join(str(k) for k in node.keys())}"  # noqa: SIM118 - keys() lists missing (???) keys too
    suggestion = registry.closest(path, _leaf_paths(cfg))
    if suggestion:
        message += f"; did you mean {suggestion!r}?"
    return ConfigError(message + " (+key=value adds a new key on purpose)")


def _coerce(path: str, old: Any, new: Any, source: str) -> Any:
    """``new`` converted to the type of the value it replaces, or a ConfigError."""
    if old is None or new is None or new == "???" or path in VALIDATORS:
        return new

    def fail(kind: str) -> ConfigError:
        return ConfigError(
            f"{path} must be {kind} (like its default {old!r}); "
            f"received {new!r} ({type(new).__name__}) from {source}"
        )

    if isinstance(old, bool):
        if not isinstance(new, bool):
            raise fail("true or false")
        return new
    if isinstance(old, int):
        if isinstance(new, float) and new.is_integer():
            return int(new)
        if isinstance(new, bool) or not isinstance(new, int):
            raise fail("an integer")
        return new
    if isinstance(old, float):
        if isinstance(new, bool) or not isinstance(new, int | float):
            raise fail("a number")
        return float(new)
    if isinstance(old, str):
        if isinstance(new, int | float) and not isinstance(new, bool):
            return str(new)
        if not isinstance(new, str):
            raise fail("a string")
        return new
    if isinstance(old, list | tuple):
        if not isinstance(new, list | tuple):
            raise fail("a list")
        return list(new)
    if isinstance(old, Mapping) and not isinstance(new, Mapping):
        raise fail("a mapping")
    return new


def _set(cfg: DictConfig, path: str, value: Any, source: str, allow_new: bool) -> None:
    parent_path, _, leaf = path.rpartition(".")
    parent = OmegaConf.select(cfg, parent_path, throw_on_missing=False) if parent_path else cfg
    current = OmegaConf.to_container(parent, resolve=False) if OmegaConf.is_dict(parent) else None
    exists = current is not None and leaf in current
    if not exists and not allow_new:
        raise _unknown_key(path, cfg, source)
    old = current[leaf] if exists else None
    if old == "???":
        old = None
    if isinstance(old, Mapping) and isinstance(value, Mapping):
        for key, sub in value.items():
            _set(cfg, f"{path}.{key}", sub, source, allow_new)
        return
    value = _coerce(path, old, value, source)
    OmegaConf.update(cfg, path, value, merge=False, force_add=True)


def _merge_file(cfg: DictConfig, patch: DictConfig, source: str, open_top: Iterable[str]) -> None:
    opened = set(open_top)
    for key in patch:
        value = (
            OmegaConf.to_container(patch[key], resolve=False)
            if OmegaConf.is_config(patch[key])
            else patch[key]
        )
        if key in opened and isinstance(value, Mapping):
            for sub_key, sub_value in value.items():
                _set(cfg, f"{key}.{sub_key}", sub_value, source, allow_new=True)
        else:
            _set(cfg, str(key), value, source, allow_new=False)


def load_config(
    recipe: str,
    config_file: str | os.PathLike | None = None,
    overrides: Iterable[str] = (),
) -> DictConfig:
    """The validated config of a recipe with a user file and ``key=value`` overrides applied."""
    registry.get_recipe(recipe)  # unknown recipe: KeyError naming the closest one
    root = config_dir()
    cfg = _read_yaml(root / "defaults.yaml", "defaults file")
    recipe_file = _read_yaml(root / f"{recipe}.yaml", f"config of recipe {recipe!r}")

    for name in recipe_file.pop("defaults", None) or []:
        extra = _read_yaml(root / f"{name}.yaml", f"defaults entry {name!r} of {recipe!r}")
        _merge_file(cfg, extra, f"configs/{name}.yaml", open_top=OPEN_SECTIONS)
    _merge_file(cfg, recipe_file, f"configs/{recipe}.yaml", open_top=OPEN_SECTIONS)
    if cfg.recipe != recipe:
        raise ConfigError(
            f"configs/{recipe}.yaml must set recipe: {recipe}; received {cfg.recipe!r}"
        )

    if config_file is not None:
        user = _read_yaml(Path(config_file), "--config file")
        user.pop("defaults", None)
        _merge_file(cfg, user, str(config_file), open_top=())
    for key, value, adds in parse_overrides(overrides):
        _set(cfg, key, value, "the command line", allow_new=adds)

    validate(cfg)
    return cfg


def _choice(allowed: tuple[str, ...]) -> Callable[[str, Any], Any]:
    def check(path: str, value: Any) -> Any:
        text = str(value)
        if text not in allowed:
            suggestion = registry.closest(text, allowed)
            hint = f"; did you mean {suggestion!r}?" if suggestion else ""
            raise ConfigError(
                f"{path} must be one of {', '.join(allowed)}; received {value!r}{hint}"
            )
        return text

    return check


def _int(minimum: int, optional: bool = False, auto: bool = False) -> Callable[[str, Any], Any]:
    def check(path: str, value: Any) -> Any:
        if (value is None and optional) or (value == "auto" and auto):
            return value
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            allowed = f"an integer >= {minimum}" + (" or null" if optional else "")
            allowed = f"auto or {allowed}" if auto else allowed
            raise ConfigError(f"{path} must be {allowed}; received {value!r}")
        return value

    return check


def _limit(path: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        ok = False
    elif isinstance(value, int):
        ok = value >= 1
    else:
        ok = 0.0 < value <= 1.0
    if not ok:
        raise ConfigError(
            f"{path} must be null, an integer >= 1 (batches) or a float in (0, 1] (fraction); "
            f"received {value!r}"
        )
    return value


def _positive_float(path: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{path} must be null or a number > 0; received {value!r}")
    return float(value)


def _bool(path: str, value: Any) -> Any:
    if not isinstance(value, bool):
        raise ConfigError(f"{path} must be true or false; received {value!r}")
    return value


def _jit(path: str, value: Any) -> Any:
    if value in (True, False, "auto"):
        return value
    raise ConfigError(f"{path} must be auto, true or false; received {value!r}")


def _optional_str(path: str, value: Any) -> Any:
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{path} must be null or a string; received {value!r}")
    return value


def _seed(path: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise ConfigError(f"{path} must be an integer in [0, 2**32); received {value!r}")
    return value


VALIDATORS: dict[str, Callable[[str, Any], Any]] = {
    "backend": _choice(BACKENDS),
    "trainer.max_epochs": _int(1),
    "trainer.limit_train_batches": _limit,
    "trainer.limit_val_batches": _limit,
    "trainer.limit_test_batches": _limit,
    "trainer.fast_dev_run": _bool,
    "trainer.check_val_every_n_epoch": _int(1),
    "trainer.log_every_n_steps": _int(1),
    "trainer.gradient_clip_val": _positive_float,
    "trainer.accumulate_grad_batches": _int(1),
    "trainer.precision": _choice(PRECISIONS),
    "trainer.seed": _seed,
    "trainer.deterministic": _bool,
    "trainer.enable_progress_bar": _bool,
    "trainer.enable_checkpointing": _bool,
    "trainer.ckpt_path": _optional_str,
    "trainer.save_every_n_steps": _int(1, optional=True),
    "trainer.jit_compile": _jit,
    "trainer.steps_per_execution": _int(1, auto=True),
    "trainer.jax_preallocate": _bool,
    "trainer.strategy": _choice(("single", "data_parallel")),
    "trainer.devices": _int(1, auto=True),
    "checkpoint.save_top_k": _int(-1),
    "checkpoint.every_n_epochs": _int(1),
    "checkpoint.mode": lambda p, v: v if v is None else _choice(("min", "max"))(p, v),
    "early_stopping.patience": _int(0),
    "early_stopping.mode": lambda p, v: v if v is None else _choice(("min", "max"))(p, v),
    "early_stopping.monitor": _optional_str,
    "checkpoint.monitor": _optional_str,
    # Read by recipes that hold their data in memory (framework.data.arrays).
    "data.input": _choice(("auto", "tf_data", "arrays")),
}


def validate(cfg: DictConfig) -> None:
    """Check required values and per-key rules in place; normalise values like precision."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"missing required config value(s): {', '.join(missing)}; "
            f"set them with key=value on the command line or in --config FILE"
        )
    for path, check in VALIDATORS.items():
        if OmegaConf.select(cfg, path, default="<absent>") == "<absent>":
            continue
        OmegaConf.update(cfg, path, check(path, OmegaConf.select(cfg, path)), merge=False)

    trainer = cfg.trainer
    if trainer.fast_dev_run and trainer.ckpt_path:
        raise ConfigError(
            "trainer.fast_dev_run writes no checkpoints and cannot resume; received "
            f"trainer.ckpt_path={trainer.ckpt_path!r}. Drop one of the two."
        )


def flatten(cfg: DictConfig | Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"trainer.max_epochs": 10, ...}`` (lists become strings)."""
    container = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg
    flat: dict[str, Any] = {}
    for key, value in container.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, path))
        else:
            flat[path] = str(value) if isinstance(value, list | tuple) else value
    return flat
