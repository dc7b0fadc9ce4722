"""One run of a recipe from a resolved config: fit, test, finalize (used by run and sweep)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from framework import registry

logger = logging.getLogger(__name__)

__all__ = ["RunResult", "instantiate_recipe", "run_recipe"]


@dataclass
class RunResult:
    """Where a run was written (None for fast_dev_run) and its final metrics."""

    log_dir: Path | None
    metrics: dict[str, float] = field(default_factory=dict)
    custom: bool = False


def instantiate_recipe(cfg: DictConfig) -> Any:
    """Select the config's backend and devices, then import and build the recipe."""
    from framework import distribution
    from framework.backend import select_backend

    distribution.configure_devices(cfg)
    select_backend(str(cfg.backend))
    recipe_cls = registry.resolve(registry.get_recipe(str(cfg.recipe)))
    return recipe_cls(cfg)


def run_recipe(cfg: DictConfig) -> RunResult:
    """Train, validate and test the recipe ``cfg`` names; a custom ``run`` replaces that."""
    recipe = instantiate_recipe(cfg)
    from framework.trainer import Trainer

    trainer = Trainer.from_config(cfg)
    custom = recipe.run(trainer)
    if custom is not None:
        return RunResult(trainer.log_dir, dict(custom), custom=True)

    trainer.fit(recipe)
    results = {k: v for k, v in trainer.callback_metrics.items() if k != "epoch"}
    results.update(trainer.test())
    trainer.finalize(results)
    return RunResult(trainer.log_dir, results)
