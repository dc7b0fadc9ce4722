"""The ``Recipe``: a named, configured experiment (Kiln's LightningModule).

A recipe builds everything a run needs from its config: the model, the optimizer, the loss and
metrics, and a ``DataModule``. The ``Trainer`` compiles and drives it with Keras's own
train and test steps.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

if TYPE_CHECKING:
    import keras

    from framework.callbacks.base import Callback
    from framework.data.datamodule import DataModule

logger = logging.getLogger(__name__)

__all__ = ["Recipe"]


class Recipe:
    """Base class for recipes. Subclasses override the ``configure_*`` methods.

    ``config`` is the whole resolved run config; recipes read their own sections
    (``model``, ``optimizer``, ``data``) and may look at ``trainer``.
    """

    #: One line shown by ``kiln list``; the registry's description wins when both exist.
    description: str = ""

    def __init__(self, config: DictConfig) -> None:
        self.config = config

    def configure_model(self) -> keras.Model:
        raise NotImplementedError(f"{type(self).__name__} must implement configure_model()")

    def configure_optimizers(self) -> keras.optimizers.Optimizer:
        """The optimizer, built from the ``optimizer`` section (Adam by default)."""
        import keras

        section = self.config.get("optimizer", {}) or {}
        name = str(section.get("name", "adam"))
        kwargs = {k: v for k, v in section.items() if k != "name"}
        return keras.optimizers.get({"class_name": name, "config": kwargs})

    def configure_loss(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement configure_loss()")

    def configure_metrics(self) -> list[Any]:
        return []

    def configure_datamodule(self) -> DataModule:
        raise NotImplementedError(f"{type(self).__name__} must implement configure_datamodule()")

    def configure_callbacks(self) -> list[Callback]:
        """Extra callbacks this recipe always wants (for example image logging)."""
        return []

    def run(self, trainer: Any) -> dict[str, float] | None:
        """Override for a recipe that is not a plain fit-then-test (``kiln run`` calls it).

        Return the figures to print, or None to use the default fit, validate, test flow.
        """
        return None
