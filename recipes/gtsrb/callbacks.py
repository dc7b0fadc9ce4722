"""A callback that shows a few training images, plain and augmented, in TensorBoard."""

from __future__ import annotations

import logging
from typing import Any

from framework.callbacks.base import Callback

logger = logging.getLogger(__name__)

__all__ = ["AugmentedSamplesLogger"]


class AugmentedSamplesLogger(Callback):
    """At the start of fit, log ``num_samples`` training images as the model sees them.

    Writes two image tags: ``<tag>/plain`` (the evaluation view) and ``<tag>/augmented`` (the
    same images after training augmentation). The datamodule must offer
    ``augmented_samples(count)`` returning (plain, augmented, labels); ``num_samples`` None
    takes the datamodule's own ``num_samples_logged``. Does nothing without a logger.
    """

    def __init__(self, num_samples: int | None = None, tag: str = "data/samples") -> None:
        super().__init__()
        if num_samples is not None and (isinstance(num_samples, bool) or num_samples < 0):
            raise ValueError(
                f"num_samples must be None or an integer >= 0. Received: {num_samples!r}"
            )
        self.num_samples = num_samples
        self.tag = tag

    def on_fit_start(self, trainer: Any) -> None:
        sink = getattr(trainer, "logger", None)
        datamodule = getattr(trainer, "datamodule", None)
        if sink is None or datamodule is None:
            return
        sampler = getattr(datamodule, "augmented_samples", None)
        if sampler is None:
            logger.debug("%s offers no augmented_samples(); no images logged", datamodule)
            return
        plain, augmented, labels = sampler(self.num_samples)
        if len(labels) == 0:
            return
        step = int(getattr(trainer, "global_step", 0) or 0)
        sink.log_images(f"{self.tag}/plain", plain, step)
        sink.log_images(f"{self.tag}/augmented", augmented, step)
        logger.debug("logged %d sample images (labels %s)", len(labels), list(labels))
