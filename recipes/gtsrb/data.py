"""GTSRB's ``DataModule``: the prepared cache, a validation split by track, tf.data pipelines.

The cache comes from ``kiln data prepare gtsrb`` (``recipes.gtsrb.prepare``). Nothing here
imports TensorFlow until a dataloader is built.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from framework.data.datamodule import DataModule
from recipes.gtsrb.prepare import (
    ARCHIVES,
    DEFAULT_SOURCE,
    NUM_CLASSES,
    GTSRBArrays,
    _resolve_root,
    default_root,
    find_cache,
    load_cache,
    prepare,
    prepare_command,
    split_by_track,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ARCHIVES",
    "DEFAULT_SOURCE",
    "NUM_CLASSES",
    "GTSRBDataModule",
    "default_root",
    "find_cache",
    "load_cache",
    "prepare",
    "split_by_track",
]


class GTSRBDataModule(DataModule):
    """GTSRB from its prepared cache: a track-held-out validation split and tf.data pipelines.

    Reads ``config.data`` (see ``configs/data/gtsrb.yaml``) and the seed ``config.trainer.seed``.
    """

    num_classes = NUM_CLASSES

    def __init__(self, config: DictConfig) -> None:
        from recipes.gtsrb.augment import AugmentOptions

        data = config.get("data") or {}
        trainer = config.get("trainer") or {}
        self.root = _resolve_root(data.get("root"))
        self.source = str(data.get("source") or DEFAULT_SOURCE)
        self.crop_roi = _flag(data, "crop_roi", False)
        self.val_fraction = data.get("val_fraction", 0.1)
        if isinstance(self.val_fraction, bool) or not isinstance(self.val_fraction, int | float):
            self.val_fraction = -1.0
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(
                "data.val_fraction must be a number in [0, 1). "
                f"Received: val_fraction={data.get('val_fraction')!r}"
            )
        self.val_fraction = float(self.val_fraction)
        self.batch_size = _positive_int(data, "batch_size", 128)
        self.shuffle_buffer = _positive_int(data, "shuffle_buffer", None)
        self.num_samples_logged = _positive_int(data, "num_samples_logged", 16, minimum=0)
        self.augment = AugmentOptions.from_config(data.get("augment"))
        self.seed = int(trainer.get("seed", 0) or 0)
        self.cache: Path | None = None
        self.arrays: GTSRBArrays | None = None
        self.train_index: np.ndarray | None = None
        self.val_index: np.ndarray | None = None
        self._epochs: Any = None  # an EpochShuffle once the training data is built

    def prepare_data(self) -> None:
        self.cache = find_cache(self.root, self.source, self.crop_roi)
        if self.cache is None:
            command = prepare_command(self.source, self.root, self.crop_roi)
            raise FileNotFoundError(
                f"no prepared GTSRB cache under {self.root} (crop_roi={self.crop_roi}); "
                f"make it with: {command}"
            )

    def setup(self, stage: str) -> None:
        if self.arrays is None:
            if self.cache is None:
                self.prepare_data()
            self.arrays = load_cache(self.cache)
            self.train_index, self.val_index = split_by_track(
                self.arrays.train_labels, self.arrays.train_tracks, self.val_fraction, self.seed
            )
            logger.info(
                "GTSRB: %d training, %d validation (by track), %d test images from %s",
                len(self.train_index),
                len(self.val_index),
                len(self.arrays.test_labels),
                self.cache,
            )

    def _split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        self.setup("fit" if name != "test" else "test")
        arrays = self.arrays
        if name == "test":
            return arrays.test_images, arrays.test_labels
        index = self.train_index if name == "train" else self.val_index
        return arrays.train_images[index], arrays.train_labels[index]

    def train_dataloader(self) -> Any:
        from framework.data.shuffle import EpochShuffle
        from recipes.gtsrb.augment import training_dataset

        images, labels = self._split("train")
        if self.shuffle_buffer is None and self._epochs is None:
            self._epochs = EpochShuffle(self.seed)
        return training_dataset(
            images,
            labels,
            self.batch_size,
            self.augment,
            self.seed,
            self.shuffle_buffer,
            epochs=self._epochs if self.shuffle_buffer is None else None,
        )

    def set_epoch(self, epoch: int) -> None:
        if self._epochs is not None:
            self._epochs.set_epoch(epoch)

    def val_dataloader(self) -> Any:
        if self.val_fraction == 0:
            return None
        return self._evaluation_dataset("val")

    def test_dataloader(self) -> Any:
        return self._evaluation_dataset("test")

    def _evaluation_dataset(self, name: str) -> Any:
        from recipes.gtsrb.augment import evaluation_dataset

        images, labels = self._split(name)
        return evaluation_dataset(images, labels, self.batch_size, self.augment.crop)

    def augmented_samples(self, count: int | None = None) -> tuple[np.ndarray, np.ndarray, Any]:
        """``count`` training images (evaluation view, augmented view) in [0, 1], and labels.

        The same images and augmentations for a given seed, spread over the training split.
        """
        from recipes.gtsrb.augment import sample_views

        count = self.num_samples_logged if count is None else count
        self.setup("fit")
        rng = np.random.default_rng(self.seed)
        size = min(count, len(self.train_index))
        picked = np.sort(rng.choice(self.train_index, size=size, replace=False))
        images, labels = self.arrays.train_images[picked], self.arrays.train_labels[picked]
        return sample_views(images, labels, self.augment, self.seed)


def _flag(section: Any, key: str, default: bool) -> bool:
    value = section.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"data.{key} must be true or false. Received: {key}={value!r}")
    return value


def _positive_int(section: Any, key: str, default: int | None, minimum: int = 1) -> int | None:
    value = section.get(key, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an integer >= {minimum}" + (" or null" if default is None else "")
        raise ValueError(f"data.{key} must be {allowed}. Received: {key}={value!r}")
    return value
