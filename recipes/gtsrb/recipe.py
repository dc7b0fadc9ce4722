"""``GTSRBRecipe``: traffic-sign classification with the CNN of ``recipes.gtsrb.models``.

One class serves every GTSRB model recipe (``gtsrb_cnn``, ``gtsrb_bn``, the dropout variants);
they differ only in their config's ``model`` section:

    model:
      batch_norm: false            # BatchNormalization after each convolution, before its ELU
      dropout: {positions: [], rate: 0.5}   # positions: elu1, pool1, elu2, pool2, flatten
      sd_init: 0.01                # mean and stddev of the convolution bias initialiser
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from framework.recipe import Recipe
from framework.registry import closest

if TYPE_CHECKING:
    import keras

    from framework.data.datamodule import DataModule

logger = logging.getLogger(__name__)

__all__ = ["GTSRBRecipe", "check_section_keys", "model_options"]

_MODEL_KEYS = ("batch_norm", "dropout", "sd_init")
_DROPOUT_KEYS = ("positions", "rate")


def check_section_keys(section: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in section:
        if key not in allowed:
            message = f"unknown key {where}.{key}; allowed keys: {', '.join(allowed)}"
            suggestion = closest(str(key), allowed)
            if suggestion:
                message += f"; did you mean {where}.{suggestion}?"
            raise KeyError(message)


def model_options(config: DictConfig) -> dict[str, Any]:
    """The ``build_cnn`` keyword arguments that the config's ``model`` section asks for."""
    section = config.get("model")
    section = OmegaConf.to_container(section, resolve=True) if section is not None else {}
    check_section_keys(section, _MODEL_KEYS, "model")
    dropout = section.get("dropout") or {}
    if not isinstance(dropout, dict):
        raise ValueError(
            "model.dropout must be a mapping like {positions: [pool1, pool2], rate: 0.5}. "
            f"Received: {dropout!r}"
        )
    check_section_keys(dropout, _DROPOUT_KEYS, "model.dropout")
    return {
        "batch_norm": bool(section.get("batch_norm", False)),
        "dropout_positions": tuple(dropout.get("positions") or ()),
        "dropout_rate": float(dropout.get("rate", 0.5)),
        "sd_init": float(section.get("sd_init", 0.01)),
    }


class GTSRBRecipe(Recipe):
    """The GTSRB CNN, trained with sparse categorical cross-entropy and reported by accuracy."""

    description = "GTSRB traffic-sign CNN (batch norm and dropout set in the model section)"

    def configure_model(self) -> keras.Model:
        from recipes.gtsrb.models import build_cnn

        name = str(self.config.get("recipe") or "gtsrb_cnn")
        return build_cnn(name=name, **model_options(self.config))

    def configure_loss(self) -> Any:
        import keras

        return keras.losses.SparseCategoricalCrossentropy()

    def configure_metrics(self) -> list[Any]:
        import keras

        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    def configure_datamodule(self) -> DataModule:
        from recipes.gtsrb.data import GTSRBDataModule

        return GTSRBDataModule(self.config)

    def configure_callbacks(self) -> list[Any]:
        from recipes.gtsrb.callbacks import AugmentedSamplesLogger

        return [AugmentedSamplesLogger()]
