"""GTSRB augmentation: which classes flip, value range, shapes, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from recipes.gtsrb.augment import (
    CROP_SIZE,
    FLIP_INVARIANT_CLASSES,
    FLIP_PAIRS,
    AugmentOptions,
    augment_batch,
    evaluation_batch,
    evaluation_dataset,
    flip_batch,
    training_dataset,
)

OTHER_CLASSES = sorted(
    set(range(43)) - set(FLIP_INVARIANT_CLASSES) - {c for pair in FLIP_PAIRS for c in pair}
)
FLIP_ONLY = AugmentOptions(crop=False, flip=True, flip_pairs=False, brightness=0.0, contrast=None)


def _batch(labels: list[int], size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(len(labels), size, size, 3), dtype=np.uint8)
    return images, np.array(labels, dtype=np.int32)


def _flip_all(images: np.ndarray, labels: np.ndarray, options: AugmentOptions) -> tuple:
    want = tf.ones([len(labels)], dtype=tf.bool)
    flipped, new_labels = flip_batch(tf.constant(images), tf.constant(labels), want, options)
    return flipped.numpy(), new_labels.numpy()


def test_flip_batch_invariant_classes_mirror_and_keep_label() -> None:
    images, labels = _batch(list(FLIP_INVARIANT_CLASSES))

    flipped, new_labels = _flip_all(images, labels, FLIP_ONLY)

    np.testing.assert_array_equal(flipped, images[:, :, ::-1, :])
    np.testing.assert_array_equal(new_labels, labels)


def test_flip_batch_pairs_swap_labels_and_twice_restores() -> None:
    firsts = [first for first, _ in FLIP_PAIRS]
    seconds = [second for _, second in FLIP_PAIRS]
    images, labels = _batch(firsts + seconds)
    options = AugmentOptions(flip=False, flip_pairs=True)

    flipped, new_labels = _flip_all(images, labels, options)
    restored, restored_labels = _flip_all(flipped, new_labels, options)

    np.testing.assert_array_equal(flipped, images[:, :, ::-1, :])
    np.testing.assert_array_equal(new_labels, seconds + firsts)
    np.testing.assert_array_equal(restored, images)
    np.testing.assert_array_equal(restored_labels, labels)


def test_flip_batch_other_classes_never_flip() -> None:
    pair_classes = [c for pair in FLIP_PAIRS for c in pair]
    images, labels = _batch(OTHER_CLASSES + pair_classes)

    flipped, new_labels = _flip_all(images, labels, FLIP_ONLY)
    _, with_pairs_off = _flip_all(images, labels, AugmentOptions(flip=True, flip_pairs=False))

    np.testing.assert_array_equal(flipped, images)
    np.testing.assert_array_equal(new_labels, labels)
    np.testing.assert_array_equal(with_pairs_off, labels)


def test_augment_batch_flips_only_allowed_classes_at_random() -> None:
    labels = [11] * 16 + [25] * 16 + [19] * 16
    images, labels = _batch(labels, seed=1)
    mirrored = 0
    for step in range(8):
        out, new_labels = augment_batch(images, labels, tf.constant([step, 7]), FLIP_ONLY)
        out = np.round(out.numpy() * 255).astype(np.uint8)
        for index, label in enumerate(labels):
            same = np.array_equal(out[index], images[index])
            flipped = np.array_equal(out[index], images[index, :, ::-1])
            if label == 11:
                assert same or flipped
                mirrored += flipped
            else:
                assert same, f"class {label} must never be flipped"
        np.testing.assert_array_equal(new_labels.numpy(), labels)
    assert 0 < mirrored < 8 * 16  # about half of the class-11 images were mirrored


def test_augment_batch_values_in_unit_range_float32() -> None:
    images = np.concatenate(
        [np.zeros((4, 32, 32, 3), np.uint8), np.full((4, 32, 32, 3), 255, np.uint8)]
    )
    images = np.concatenate([images, _batch(list(range(8)))[0]])
    labels = np.array([11, 19, 20, 33, 0, 1, 2, 3] * 2, dtype=np.int32)
    options = AugmentOptions(flip_pairs=True, brightness=0.5, contrast=(0.2, 5.0))

    for step in range(4):
        out, _ = augment_batch(images, labels, tf.constant([step, 0]), options)
        out = out.numpy()
        assert out.dtype == np.float32
        assert out.min() >= 0.0
        assert out.max() <= 1.0


def test_augment_batch_changes_brightness_and_contrast() -> None:
    images, labels = _batch([0] * 8)
    plain = AugmentOptions(crop=False, flip=False, brightness=0.0, contrast=None)
    varied = AugmentOptions(crop=False, flip=False, brightness=0.1, contrast=(0.5, 2.0))

    unchanged, _ = augment_batch(images, labels, tf.constant([1, 2]), plain)
    changed, _ = augment_batch(images, labels, tf.constant([1, 2]), varied)

    np.testing.assert_allclose(unchanged.numpy(), images / 255.0, atol=1e-6)
    assert np.abs(changed.numpy() - images / 255.0).mean() > 0.01


def test_augment_batch_random_crop_is_a_window_of_the_image() -> None:
    images, labels = _batch([0] * 6)
    options = AugmentOptions(crop=True, flip=False, brightness=0.0, contrast=None)

    out, _ = augment_batch(images, labels, tf.constant([3, 4]), options)
    out = np.round(out.numpy() * 255).astype(np.uint8)

    assert out.shape == (6, CROP_SIZE, CROP_SIZE, 3)
    corners = []
    for index in range(6):
        windows = [
            (top, left)
            for top in range(32 - CROP_SIZE + 1)
            for left in range(32 - CROP_SIZE + 1)
            if np.array_equal(
                out[index], images[index, top : top + CROP_SIZE, left : left + CROP_SIZE]
            )
        ]
        assert len(windows) == 1
        corners.append(windows[0])
    assert len(set(corners)) > 1  # each image gets its own place


def test_augment_batch_same_seed_same_result_other_seed_differs() -> None:
    images, labels = _batch([11, 19, 20, 0] * 4)
    options = AugmentOptions(flip_pairs=True)

    first, first_labels = augment_batch(images, labels, tf.constant([5, 6]), options)
    again, again_labels = augment_batch(images, labels, tf.constant([5, 6]), options)
    other, _ = augment_batch(images, labels, tf.constant([5, 7]), options)

    np.testing.assert_array_equal(first.numpy(), again.numpy())
    np.testing.assert_array_equal(first_labels.numpy(), again_labels.numpy())
    assert not np.array_equal(first.numpy(), other.numpy())


def test_evaluation_batch_is_central_crop_scaled_once() -> None:
    images = np.full((2, 32, 32, 3), 255, dtype=np.uint8)
    images[:, 2:30, 2:30] = 51

    out = evaluation_batch(tf.constant(images), crop=True).numpy()
    whole = evaluation_batch(tf.constant(images), crop=False).numpy()

    assert out.shape == (2, CROP_SIZE, CROP_SIZE, 3)
    np.testing.assert_allclose(out, 0.2, atol=1e-7)
    assert whole.shape == (2, 32, 32, 3)
    assert whole.max() == 1.0


def test_augment_batch_refuses_images_already_scaled() -> None:
    images = tf.zeros([1, 32, 32, 3], tf.float32)

    with pytest.raises(TypeError, match="expects uint8 images.*float32"):
        augment_batch(images, tf.constant([0]), tf.constant([0, 0]), AugmentOptions())


@pytest.mark.parametrize("crop", [True, False])
def test_training_and_evaluation_batches_have_the_same_shape(crop: bool) -> None:
    images, labels = _batch(list(range(20)))
    options = AugmentOptions(crop=crop)

    train_x, train_y = next(iter(training_dataset(images, labels, 8, options, seed=0)))
    eval_x, eval_y = next(iter(evaluation_dataset(images, labels, 8, crop)))

    assert train_x.shape == eval_x.shape
    assert train_x.dtype == eval_x.dtype == tf.float32
    assert train_y.shape == eval_y.shape


def test_training_dataset_deterministic_per_seed_and_new_each_pass() -> None:
    images, labels = _batch(list(range(43)) * 2, seed=3)

    def passes(seed: int) -> list[np.ndarray]:
        dataset = training_dataset(images, labels, 16, AugmentOptions(), seed=seed)
        return [np.concatenate([x.numpy().ravel() for x, _ in dataset]) for _ in range(2)]

    first, second = passes(0)
    again_first, again_second = passes(0)
    other_first, _ = passes(1)

    np.testing.assert_array_equal(first, again_first)
    np.testing.assert_array_equal(second, again_second)
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, other_first)


def test_training_dataset_is_finite_with_known_length() -> None:
    images, labels = _batch(list(range(10)))

    dataset = training_dataset(images, labels, 4, AugmentOptions(), seed=0)

    assert int(dataset.cardinality()) == 3
    assert sum(1 for _ in dataset) == 3
    assert sum(1 for _ in dataset) == 3


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"crops": True}, "unknown key data.augment.crops.*did you mean 'crop'"),
        ({"brightness": -0.1}, "brightness must be a number in"),
        ({"contrast": [2.0, 0.5]}, "contrast must be null or"),
        ({"contrast": 3}, "contrast must be null or"),
        ({"flip": "yes"}, "flip must be true or false"),
    ],
)
def test_augment_options_reject_bad_values(section: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AugmentOptions.from_config(section)


def test_augment_options_read_config_lists() -> None:
    options = AugmentOptions.from_config({"contrast": [0.5, 2], "brightness": 0})

    assert options.contrast == (0.5, 2.0)
    assert options.brightness == 0.0
