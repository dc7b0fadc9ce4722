"""GTSRB augmentation and ``tf.data`` pipelines, deterministic for a given seed.

Images stay uint8 until a batch is augmented, where they are scaled to [0, 1] exactly once.
Training batches get, each part switchable: a random 28x28 crop of the 32x32 image, a mirror
flip for signs that look the same mirrored, optionally a mirror flip that swaps the label of
mirror-image pairs, random brightness and random contrast; the result is clipped to [0, 1].
Evaluation batches get the central crop.

The whole split is held in memory as uint8 (the prepared cache, loaded once), and the pipeline
slices it from there. There is deliberately no ``Dataset.cache()``: it would only copy those
arrays a second time, and when the trainer cuts an epoch short (``limit_*_batches`` takes the
first batches) tf.data discards the half-filled cache and warns about it every epoch.

Per-image random values come from stateless random ops seeded by ``tf.data.Dataset.random``,
which gives each epoch new values while two runs with the same seed see the same ones. The
``tf.image.stateless_random_*`` functions draw one crop, brightness or contrast per call,
shared by a whole batch, and know nothing of classes; so the batch is cropped and mirrored with
per-image gathers, and brightness and contrast apply ``tf.image.adjust_*``'s formulas with one
factor per image. The pipelines run on TensorFlow's CPU ops under either Keras backend.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import tensorflow as tf
from omegaconf import OmegaConf

from framework.data.shuffle import EpochShuffle
from framework.registry import closest

logger = logging.getLogger(__name__)

__all__ = [
    "CROP_SIZE",
    "FLIP_INVARIANT_CLASSES",
    "FLIP_PAIRS",
    "AugmentOptions",
    "augment_batch",
    "evaluation_batch",
    "evaluation_dataset",
    "flip_batch",
    "flip_table",
    "sample_views",
    "training_dataset",
]

NUM_CLASSES = 43
CROP_SIZE = 28
#: Signs that look the same mirrored left to right (keep their label when flipped).
FLIP_INVARIANT_CLASSES = (11, 12, 13, 17, 18, 26, 30, 35)
#: Signs whose mirror image is another class (the flip swaps the two labels).
FLIP_PAIRS = ((19, 20), (33, 34), (36, 37), (38, 39))


@dataclass(frozen=True)
class AugmentOptions:
    """The ``data.augment`` section. ``brightness`` is the largest brightness change (0: off);
    ``contrast`` is the range the contrast factor is drawn from, uniformly (None: off)."""

    crop: bool = True
    flip: bool = True
    flip_pairs: bool = False
    brightness: float = 0.1
    contrast: tuple[float, float] | None = (0.5, 2.0)

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> AugmentOptions:
        """Options from a config mapping; unknown keys and bad values raise ValueError."""
        if OmegaConf.is_config(section):
            section = OmegaConf.to_container(section, resolve=True)
        section = dict(section or {})
        known = [spec.name for spec in fields(cls)]
        for key in section:
            if key not in known:
                hint = closest(str(key), known)
                raise ValueError(
                    f"unknown key data.augment.{key}; allowed: {', '.join(known)}"
                    + (f"; did you mean {hint!r}?" if hint else "")
                )
        options = cls(**section)
        for key in ("crop", "flip", "flip_pairs"):
            if not isinstance(getattr(options, key), bool):
                raise ValueError(
                    f"data.augment.{key} must be true or false. "
                    f"Received: {key}={getattr(options, key)!r}"
                )
        brightness = options.brightness
        if isinstance(brightness, bool) or not isinstance(brightness, int | float):
            brightness = -1.0
        if not 0.0 <= brightness <= 1.0:
            raise ValueError(
                "data.augment.brightness must be a number in [0, 1] (0: off). "
                f"Received: brightness={options.brightness!r}"
            )
        contrast = options.contrast
        if contrast is not None:
            pair = list(contrast) if isinstance(contrast, list | tuple) else []
            numbers = len(pair) == 2 and all(isinstance(v, int | float) for v in pair)
            if not numbers or not 0.0 < pair[0] <= pair[1]:
                raise ValueError(
                    "data.augment.contrast must be null or [lower, upper] with "
                    f"0 < lower <= upper. Received: contrast={contrast!r}"
                )
            contrast = (float(pair[0]), float(pair[1]))
        return cls(options.crop, options.flip, options.flip_pairs, float(brightness), contrast)


def flip_table(flip: bool, flip_pairs: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per class: whether a mirror flip is allowed, and the label after the flip."""
    allowed = np.zeros(NUM_CLASSES, dtype=bool)
    partner = np.arange(NUM_CLASSES, dtype=np.int32)
    if flip:
        allowed[list(FLIP_INVARIANT_CLASSES)] = True
    if flip_pairs:
        for first, second in FLIP_PAIRS:
            allowed[[first, second]] = True
            partner[first], partner[second] = second, first
    return allowed, partner


def _check_uint8(images: tf.Tensor) -> tf.Tensor:
    images = tf.convert_to_tensor(images)
    if images.dtype != tf.uint8:
        raise TypeError(
            "augmentation expects uint8 images (scaled to [0, 1] here, once). "
            f"Received: dtype={images.dtype.name}"
        )
    return images


def _to_unit(images: tf.Tensor) -> tf.Tensor:
    """The one place pixels go from uint8 [0, 255] to float32 [0, 1]."""
    return tf.cast(_check_uint8(images), tf.float32) * (1.0 / 255.0)


def _flip_decision(
    labels: tf.Tensor, want: tf.Tensor, options: AugmentOptions
) -> tuple[tf.Tensor, tf.Tensor]:
    """Which images to mirror (``want`` and their class allows it), and the labels after."""
    allowed, partner = flip_table(options.flip, options.flip_pairs)
    labels = tf.convert_to_tensor(labels)
    flip = tf.logical_and(want, tf.gather(tf.constant(allowed), labels))
    labels = tf.where(flip, tf.gather(tf.constant(partner, dtype=labels.dtype), labels), labels)
    return flip, labels


def _window(
    images: tf.Tensor, corners: tf.Tensor | None, flip: tf.Tensor | None, size: int
) -> tf.Tensor:
    """Per image: the ``size`` square at ``corners`` (top, left), mirrored where ``flip``.

    Both are one gather of rows and one of columns, so they cost the same as a crop alone.
    """
    steps = tf.range(size)[None, :]
    columns = steps
    if flip is not None:
        columns = tf.where(flip[:, None], size - 1 - steps, steps)
    if corners is None:
        return tf.gather(images, columns, axis=2, batch_dims=1)
    rows = tf.gather(images, corners[:, :1] + steps, axis=1, batch_dims=1)
    return tf.gather(rows, corners[:, 1:] + columns, axis=2, batch_dims=1)


def flip_batch(
    images: tf.Tensor, labels: tf.Tensor, want: tf.Tensor, options: AugmentOptions
) -> tuple[tf.Tensor, tf.Tensor]:
    """Mirror the images where ``want`` is true and their class allows it; swap pair labels."""
    images = tf.convert_to_tensor(images)
    flip, labels = _flip_decision(labels, want, options)
    return _window(images, None, flip, images.shape[2]), labels


def augment_batch(
    images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor, options: AugmentOptions
) -> tuple[tf.Tensor, tf.Tensor]:
    """Augment a uint8 batch (N, 32, 32, 3) into float32 in [0, 1]; ``seed`` has shape (2,)."""
    images = _check_uint8(images)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=4)
    count, side = tf.shape(images)[0], images.shape[1]

    # Cropping and mirroring move uint8 pixels, before the batch grows fourfold as float32.
    corners, flip, size = None, None, side
    if options.crop:
        size = CROP_SIZE
        corners = tf.random.stateless_uniform(
            [count, 2], seeds[0], minval=0, maxval=side - CROP_SIZE + 1, dtype=tf.int32
        )
    if options.flip or options.flip_pairs:
        want = tf.random.stateless_uniform([count], seeds[1]) < 0.5
        flip, labels = _flip_decision(labels, want, options)
    if corners is not None or flip is not None:
        images = _window(images, corners, flip, size)
    images = _to_unit(images)

    # Brightness adds delta; contrast then moves each channel from its mean by a factor, as
    # tf.image.adjust_contrast does, but with a factor per image. Both fold into one
    # multiply-add: x * factor + (1 - factor) * mean + delta.
    if options.brightness > 0 or options.contrast is not None:
        factor, offset = 1.0, 0.0
        if options.brightness > 0:
            bound = options.brightness
            offset = tf.random.stateless_uniform([count, 1, 1, 1], seeds[2], -bound, bound)
        if options.contrast is not None:
            lower, upper = options.contrast
            factor = tf.random.stateless_uniform([count, 1, 1, 1], seeds[3], lower, upper)
            mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
            offset = offset + (1.0 - factor) * mean
        images = images * factor + offset
    return tf.clip_by_value(images, 0.0, 1.0), labels


def evaluation_batch(images: tf.Tensor, crop: bool) -> tf.Tensor:
    """The evaluation view: float32 in [0, 1], the central crop when training crops."""
    images = _to_unit(images)
    if crop:
        images = tf.image.central_crop(images, CROP_SIZE / images.shape[1])
    return images


def training_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    options: AugmentOptions,
    seed: int,
    shuffle_buffer: int | None = None,
    epochs: EpochShuffle | None = None,
) -> tf.data.Dataset:
    """Shuffled, augmented batches of (float32 images, int32 labels); finite, re-iterable.

    With ``epochs`` (an ``EpochShuffle`` the trainer advances through ``set_epoch``), the
    order and the augmentations of a pass depend only on (seed, epoch), so a resumed run sees
    exactly the batches the uninterrupted run would have seen. Without it, ``shuffle_buffer``
    (None: the whole split) shuffles and each pass draws new values from the seed.
    """
    if epochs is not None:
        return _epoch_dataset(images, labels, batch_size, options, epochs)
    buffer = max(1, min(shuffle_buffer or len(labels), len(labels)))
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    # One (2,) seed per batch: new values each pass, the same passes for the same seed.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    @tf.autograph.experimental.do_not_convert
    def augment(batch: tuple[tf.Tensor, tf.Tensor], pair: tf.Tensor) -> Any:
        return augment_batch(batch[0], batch[1], pair, options)

    dataset = tf.data.Dataset.zip(dataset, seeds).map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _epoch_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    options: AugmentOptions,
    epochs: EpochShuffle,
) -> tf.data.Dataset:
    all_images = tf.constant(images)
    all_labels = tf.constant(labels)
    batches = epochs.indices(len(labels)).batch(batch_size).enumerate()

    @tf.autograph.experimental.do_not_convert
    def augment(index: tf.Tensor, chosen: tf.Tensor) -> Any:
        seed_and_epoch = epochs.epoch_seed()
        pair = tf.stack([seed_and_epoch[0] * 1_000_003 + seed_and_epoch[1], index])
        return augment_batch(
            tf.gather(all_images, chosen), tf.gather(all_labels, chosen), pair, options
        )

    dataset = batches.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def evaluation_dataset(
    images: np.ndarray, labels: np.ndarray, batch_size: int, crop: bool
) -> tf.data.Dataset:
    """Batches of (float32 images, int32 labels) in order, centrally cropped when ``crop``."""
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)

    @tf.autograph.experimental.do_not_convert
    def view(batch_images: tf.Tensor, batch_labels: tf.Tensor) -> Any:
        return evaluation_batch(batch_images, crop), batch_labels

    dataset = dataset.map(view, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def sample_views(
    images: np.ndarray, labels: np.ndarray, options: AugmentOptions, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(evaluation views, augmented views, labels after augmentation) as NumPy arrays."""
    if len(labels) == 0:
        side = CROP_SIZE if options.crop else images.shape[1]
        empty = np.zeros((0, side, side, 3), dtype=np.float32)
        return empty, empty.copy(), labels
    plain = evaluation_batch(tf.constant(images), options.crop)
    augmented, new_labels = augment_batch(
        tf.constant(images), tf.constant(labels), tf.constant([seed, 0], tf.int64), options
    )
    return plain.numpy(), augmented.numpy(), new_labels.numpy()
