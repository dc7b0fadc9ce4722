"""GTSRB preparation, cache, track split and DataModule, on the real archives and fakes."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from framework.data.archives import DataError, extract_archive
from recipes.gtsrb.callbacks import AugmentedSamplesLogger
from recipes.gtsrb.data import (
    ARCHIVES,
    DEFAULT_SOURCE,
    GTSRBDataModule,
    default_root,
    find_cache,
    load_cache,
    prepare,
    split_by_track,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
TRAIN_ZIP, TEST_ZIP, LABELS_ZIP = ARCHIVES


def _config(root: Path, source: str | Path | None = None, seed: int = 0, **data) -> DictConfig:
    config = OmegaConf.load(REPO_ROOT / "configs" / "data" / "gtsrb.yaml")
    config.data.root = str(root)
    if source is not None:
        config.data.source = str(source)
    config.data.batch_size = 8
    for key, value in data.items():
        OmegaConf.update(config, f"data.{key}", value, merge=False)
    config.trainer = {"seed": seed}
    return config


def _read_ppm(data: bytes) -> np.ndarray:
    """A binary PPM (P6, 8 bit, comments allowed in the header) decoded without Pillow."""
    tokens, position = [], 0
    while len(tokens) < 4:
        if data[position : position + 1].isspace():
            position += 1
        elif data[position : position + 1] == b"#":
            position = data.index(b"\n", position) + 1
        else:
            end = position
            while not data[end : end + 1].isspace():
                end += 1
            tokens.append(data[position:end])
            position = end
    magic, width, height, maxval = tokens
    assert (magic, maxval) == (b"P6", b"255")
    width, height = int(width), int(height)
    pixels = data[position + 1 :]
    assert len(pixels) == width * height * 3
    return np.frombuffer(pixels, np.uint8).reshape(height, width, 3)


def _csv_labels(archive: zipfile.ZipFile, folder: str) -> dict[str, int]:
    labels = {}
    for name in archive.namelist():
        if name.endswith(".csv") and not name.endswith(".test.csv"):
            rows = csv.DictReader(io.StringIO(archive.read(name).decode()), delimiter=";")
            for row in rows:
                labels[f"{folder}{row['Filename']}"] = int(row["ClassId"])
    return labels


def _no_cache_left(root: Path) -> bool:
    return not root.exists() or not [p for p in root.iterdir() if "gtsrb-" in p.name]


# ------------------------------------------------------------------------------ real archives
def test_prepare_real_archives_counts(gtsrb_source: Path, gtsrb_root: Path) -> None:
    summary = prepare(str(gtsrb_source), gtsrb_root, progress=False)

    assert summary["reused"] is True
    assert summary["train_images"] == 39_209
    assert summary["test_images"] == 12_630
    assert summary["classes"] == 43
    assert summary["tracks"] == 1_307


def test_prepare_real_cache_matches_archives(gtsrb_source: Path, gtsrb_root: Path) -> None:
    cache = load_cache(find_cache(gtsrb_root, str(gtsrb_source), crop_roi=False))
    train = zipfile.ZipFile(gtsrb_source / TRAIN_ZIP)
    test = zipfile.ZipFile(gtsrb_source / TEST_ZIP)
    with train, test, zipfile.ZipFile(gtsrb_source / LABELS_ZIP) as labels:
        train_labels = {}
        for name in train.namelist():
            if name.endswith(".csv"):
                train_labels.update(_csv_labels_of(train, name))
        test_labels = _csv_labels(labels, "GTSRB/Final_Test/Images/")
        ppm = sorted(name for name in train.namelist() if name.endswith(".ppm"))
        assert sorted(cache.train_files) == ppm
        assert sorted(cache.test_files) == sorted(test_labels)

        rng = np.random.default_rng(0)
        for index in rng.choice(len(cache.train_files), size=300, replace=False):
            name = str(cache.train_files[index])
            np.testing.assert_array_equal(cache.train_images[index], _read_ppm(train.read(name)))
            assert cache.train_labels[index] == train_labels[name]
        for index in rng.choice(len(cache.test_files), size=100, replace=False):
            name = str(cache.test_files[index])
            np.testing.assert_array_equal(cache.test_images[index], _read_ppm(test.read(name)))
            assert cache.test_labels[index] == test_labels[name]
    assert np.bincount(cache.test_labels).size == 43


def _csv_labels_of(archive: zipfile.ZipFile, csv_name: str) -> dict[str, int]:
    folder = csv_name.rpartition("/")[0] + "/"
    rows = csv.DictReader(io.StringIO(archive.read(csv_name).decode()), delimiter=";")
    return {folder + row["Filename"]: int(row["ClassId"]) for row in rows}


def test_datamodule_on_real_cache(gtsrb_root: Path) -> None:
    module = GTSRBDataModule(_config(gtsrb_root, batch_size=128))
    module.prepare_data()
    module.setup("fit")

    train_x, train_y = next(iter(module.train_dataloader()))
    val_x, val_y = next(iter(module.val_dataloader()))
    tracks = module.arrays.train_tracks
    train_tracks = set(tracks[module.train_index])
    val_tracks = set(tracks[module.val_index])

    assert tuple(train_x.shape) == tuple(val_x.shape) == (128, 28, 28, 3)
    assert float(train_x.numpy().min()) >= 0.0
    assert float(train_x.numpy().max()) <= 1.0
    assert train_tracks.isdisjoint(val_tracks)
    assert 0.07 < len(module.val_index) / len(tracks) < 0.13
    assert len(np.unique(module.arrays.train_labels[module.val_index])) == 43


@pytest.mark.slow
def test_prepare_real_archives_over_http(
    gtsrb_source: Path, gtsrb_root: Path, serve_folder: Callable, tmp_path: Path
) -> None:
    url = serve_folder(gtsrb_source)

    summary = prepare(url, tmp_path / "root", progress=False)

    assert (summary["train_images"], summary["test_images"]) == (39_209, 12_630)
    downloaded = load_cache(summary["cache"])
    local = load_cache(find_cache(gtsrb_root, str(gtsrb_source), crop_roi=False))
    for name in ("train_images", "train_labels", "train_tracks", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(downloaded, name), getattr(local, name))


# ----------------------------------------------------------------------- full-size fake images
def _resized(image: np.ndarray, box: tuple[float, ...] | None = None) -> np.ndarray:
    resized = Image.fromarray(image).resize((32, 32), Image.Resampling.BILINEAR, box=box)
    return np.asarray(resized)


def test_prepare_full_size_images_resized_whole(make_gtsrb, tmp_path: Path) -> None:
    fake = make_gtsrb(size=(48, 40), roi=(6, 5, 42, 35))

    summary = prepare(str(fake.folder), tmp_path / "root", progress=False)
    cache = load_cache(summary["cache"])

    assert (summary["train_images"], summary["test_images"]) == (30, 10)
    for files, images, labels, written in (
        (cache.train_files, cache.train_images, cache.train_labels, fake.train),
        (cache.test_files, cache.test_images, cache.test_labels, fake.test),
    ):
        for name, image, label in zip(files, images, labels, strict=True):
            original, expected_label = written[str(name)]
            np.testing.assert_array_equal(image, _resized(original))
            assert label == expected_label
    assert (cache.train_images[:, 0, 0] == 90).all()  # the grey border is kept


def test_prepare_crop_roi_of_full_size_images(make_gtsrb, tmp_path: Path) -> None:
    roi = (6, 5, 42, 35)
    fake = make_gtsrb(size=(48, 40), roi=roi)

    summary = prepare(str(fake.folder), tmp_path / "root", crop_roi=True, progress=False)
    cache = load_cache(summary["cache"])

    assert summary["crop_roi"] is True
    for name, image in zip(cache.train_files, cache.train_images, strict=True):
        np.testing.assert_array_equal(image, _resized(fake.train[str(name)][0], roi))
    assert (cache.train_images[:, 3:-3, 3:-3] != 90).all()  # no border inside the crop


def test_prepare_crop_roi_scales_the_box_to_small_copies(make_gtsrb, tmp_path: Path) -> None:
    declared, roi = (64, 56), (8, 7, 56, 49)
    fake = make_gtsrb(size=declared, roi=roi, stored_size=(32, 32))

    summary = prepare(str(fake.folder), tmp_path / "root", crop_roi=True, progress=False)
    cache = load_cache(summary["cache"])

    box = (8 * 32 / 64, 7 * 32 / 56, 56 * 32 / 64, 49 * 32 / 56)
    for name, image in zip(cache.test_files, cache.test_images, strict=True):
        np.testing.assert_array_equal(image, _resized(fake.test[str(name)][0], box))
    assert (cache.test_images[:, 4:-4, 4:-4] != 90).all()


def test_prepare_reuses_the_cache_for_the_same_inputs(make_gtsrb, tmp_path: Path) -> None:
    fake = make_gtsrb()
    root = tmp_path / "root"

    first = prepare(str(fake.folder), root, progress=False)
    second = prepare(str(fake.folder), root, progress=False)
    cropped = prepare(str(fake.folder), root, crop_roi=True, progress=False)
    os.utime(fake.folder / TRAIN_ZIP, (1, 1))
    touched = prepare(str(fake.folder), root, progress=False)

    assert (first["reused"], second["reused"]) == (False, True)
    assert second["cache"] == first["cache"]
    assert cropped["reused"] is False
    assert cropped["cache"] != first["cache"]
    assert touched["reused"] is False
    assert touched["cache"] != first["cache"]


def test_prepare_root_defaults_to_the_user_cache(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    assert default_root() == tmp_path / "xdg" / "kiln" / "gtsrb"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_root() == tmp_path / "home" / ".cache" / "kiln" / "gtsrb"


# ------------------------------------------------------------------------------- other layouts
def test_prepare_extracted_tree_equals_archives(make_gtsrb, tmp_path: Path) -> None:
    fake = make_gtsrb()
    tree = tmp_path / "tree"
    for name in ARCHIVES:
        with zipfile.ZipFile(fake.folder / name) as archive:
            archive.extractall(tree)

    from_tree = load_cache(
        prepare(str(tree), tmp_path / "a", crop_roi=True, progress=False)["cache"]
    )
    from_zip = load_cache(
        prepare(str(fake.folder), tmp_path / "b", crop_roi=True, progress=False)["cache"]
    )

    for name in ("train_images", "train_labels", "train_tracks", "train_files", "test_images"):
        np.testing.assert_array_equal(getattr(from_tree, name), getattr(from_zip, name))


def _class_folders(root: Path) -> dict[str, tuple[np.ndarray, int]]:
    written = {}
    for split, count in (("train", 4), ("test", 2)):
        for label in (3, 17):
            folder = root / split / f"{label:05d}"
            folder.mkdir(parents=True)
            for index in range(count):
                suffix = ".png" if index % 2 else ".ppm"
                name = f"{index // 2:05d}_{index:05d}{suffix}"
                image = np.full((40 + index, 36, 3), 10 * index + label, dtype=np.uint8)
                Image.fromarray(image).save(folder / name)
                written[f"{label:05d}/{name}"] = (image, label)
        (root / split / "README.txt").write_text("not an image")
    return written


def test_prepare_class_folders_of_png_and_ppm(tmp_path: Path) -> None:
    written = _class_folders(tmp_path / "src")

    summary = prepare(str(tmp_path / "src"), tmp_path / "root", progress=False)
    cache = load_cache(summary["cache"])

    assert (summary["train_images"], summary["test_images"], summary["classes"]) == (8, 4, 2)
    for files, images, labels in (
        (cache.train_files, cache.train_images, cache.train_labels),
        (cache.test_files, cache.test_images, cache.test_labels),
    ):
        for name, image, label in zip(files, images, labels, strict=True):
            original, expected = written[str(name)]
            np.testing.assert_array_equal(image, _resized(original))
            assert label == expected
    assert len(np.unique(cache.train_tracks)) == 4  # two tracks (TTTTT_) in each class
    with pytest.raises(ValueError, match="crop_roi needs the official CSV"):
        prepare(str(tmp_path / "src"), tmp_path / "root", crop_roi=True, progress=False)


def test_prepare_class_folders_need_class_numbers(tmp_path: Path) -> None:
    _class_folders(tmp_path / "src")
    (tmp_path / "src" / "train" / "stop").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "src" / "train" / "stop" / "a.png")

    with pytest.raises(DataError, match="class folder 'stop' .* is not a class number"):
        prepare(str(tmp_path / "src"), tmp_path / "root", progress=False)


# ----------------------------------------------------------------------------------- downloads
def test_prepare_downloads_archives_by_url(make_gtsrb, serve_folder, tmp_path: Path) -> None:
    fake = make_gtsrb()
    url = serve_folder(fake.folder)

    summary = prepare(url.rstrip("/"), tmp_path / "root", progress=False)
    again = prepare(url, tmp_path / "root", progress=False)
    local = load_cache(prepare(str(fake.folder), tmp_path / "local", progress=False)["cache"])

    assert (summary["train_images"], summary["test_images"], summary["reused"]) == (30, 10, False)
    assert again["reused"] is True
    downloaded = sorted(p.name for p in (tmp_path / "root" / "downloads").rglob("*.zip"))
    assert downloaded == sorted(ARCHIVES)
    np.testing.assert_array_equal(load_cache(summary["cache"]).train_images, local.train_images)


def test_prepare_by_url_never_uses_a_truncated_archive(
    make_gtsrb, serve_folder, tmp_path: Path
) -> None:
    fake = make_gtsrb()
    archive = fake.folder / TRAIN_ZIP
    archive.write_bytes(archive.read_bytes()[:-200])
    root = tmp_path / "root"

    with pytest.raises(DataError, match=rf"{TRAIN_ZIP}.*not a readable zip"):
        prepare(serve_folder(fake.folder), root, progress=False)
    assert not list((root / "downloads").rglob(TRAIN_ZIP + "*"))
    assert _no_cache_left(root)


def test_prepare_by_url_checks_published_sha256(make_gtsrb, serve_folder, tmp_path) -> None:
    fake = make_gtsrb()
    (fake.folder / "SHA256SUMS").write_text(f"{'0' * 64}  {TRAIN_ZIP}\n")

    with pytest.raises(DataError, match=rf"{TRAIN_ZIP}.*fails its checksum"):
        prepare(serve_folder(fake.folder), tmp_path / "root", progress=False)
    assert _no_cache_left(tmp_path / "root")


# ------------------------------------------------------------------------------------ bad input
def _rewrite(path: Path, change: Callable[[dict[str, bytes]], None]) -> None:
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    change(members)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data)


def _train_member(name: str) -> str:
    return f"GTSRB/Final_Training/Images/00011/{name}"


def _truncate(members: dict[str, bytes]) -> None:
    key = _train_member("00001_00001.ppm")
    members[key] = members[key][: len(members[key]) // 2]


def _garble(members: dict[str, bytes]) -> None:
    members[_train_member("00001_00001.ppm")] = b"garbage, not a picture"


def _drop_image(members: dict[str, bytes]) -> None:
    del members[_train_member("00001_00001.ppm")]


def _extra_image(members: dict[str, bytes]) -> None:
    members[_train_member("00009_00000.ppm")] = members[_train_member("00001_00001.ppm")]


def _bad_row(members: dict[str, bytes]) -> None:
    key = _train_member("GT-00011.csv")
    members[key] = members[key].replace(b"00000_00001.ppm;48", b"00000_00001.ppm;wide")


def _climb_out(members: dict[str, bytes]) -> None:
    members["GTSRB/../../evil.ppm"] = b"P6"


def _absolute(members: dict[str, bytes]) -> None:
    members["/tmp/evil.ppm"] = b"P6"


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (_truncate, DataError, r"00011/00001_00001\.ppm' cannot be decoded.*truncated"),
        (_garble, DataError, r"00011/00001_00001\.ppm' cannot be decoded"),
        (_drop_image, DataError, r"GT-00011\.csv.*names '00001_00001\.ppm', which is absent"),
        (_extra_image, DataError, r"00009_00000\.ppm' has no row in GT-00011\.csv"),
        (_bad_row, DataError, r"GT-00011\.csv' line 3 must hold integers"),
        (_climb_out, DataError, r"evil\.ppm', which climbs out"),
        (_absolute, DataError, r"evil\.ppm', which is an absolute path"),
    ],
)
def test_prepare_bad_training_archive(make_gtsrb, tmp_path: Path, change, error, message) -> None:
    fake = make_gtsrb()
    _rewrite(fake.folder / TRAIN_ZIP, change)

    with pytest.raises(error, match=message) as caught:
        prepare(str(fake.folder), tmp_path / "root", progress=False)
    assert TRAIN_ZIP in str(caught.value)
    assert _no_cache_left(tmp_path / "root")


def test_prepare_names_a_member_failing_its_crc(make_gtsrb, tmp_path: Path) -> None:
    fake = make_gtsrb()
    _rewrite(fake.folder / TRAIN_ZIP, lambda members: None)  # stored: the bytes are plain
    raw = bytearray((fake.folder / TRAIN_ZIP).read_bytes())
    header = raw.index(_train_member("00002_00000.ppm").encode())
    raw[raw.index(b"P6", header) + 40] ^= 0xFF
    (fake.folder / TRAIN_ZIP).write_bytes(bytes(raw))

    with pytest.raises(DataError, match=rf"{TRAIN_ZIP}' member .*00002_00000\.ppm.*checksum"):
        prepare(str(fake.folder), tmp_path / "root", progress=False)
    assert _no_cache_left(tmp_path / "root")


def test_prepare_checks_sha256sums_in_the_folder(make_gtsrb, tmp_path: Path) -> None:
    fake = make_gtsrb()
    digest = hashlib.sha256((fake.folder / TEST_ZIP).read_bytes()).hexdigest()
    (fake.folder / "SHA256SUMS").write_text(f"{digest}  {TEST_ZIP}\n{'f' * 64}  {LABELS_ZIP}\n")

    with pytest.raises(DataError, match=rf"{LABELS_ZIP}' fails its checksum.*SHA256SUMS"):
        prepare(str(fake.folder), tmp_path / "root", progress=False)


def test_prepare_names_a_missing_archive(make_gtsrb, tmp_path: Path) -> None:
    fake = make_gtsrb()
    (fake.folder / LABELS_ZIP).unlink()

    with pytest.raises(FileNotFoundError, match=rf"archive '{LABELS_ZIP}' is missing from"):
        prepare(str(fake.folder), tmp_path / "root", progress=False)


def test_prepare_names_a_labelled_test_image_that_is_absent(make_gtsrb, tmp_path: Path) -> None:
    fake = make_gtsrb()
    _rewrite(fake.folder / TEST_ZIP, lambda m: m.pop("GTSRB/Final_Test/Images/00003.ppm"))

    with pytest.raises(DataError, match=r"GT-final_test\.csv.*'00003\.ppm', which is absent"):
        prepare(str(fake.folder), tmp_path / "root", progress=False)


def test_prepare_interrupted_leaves_no_cache(make_gtsrb, tmp_path: Path, monkeypatch) -> None:
    fake = make_gtsrb()
    root = tmp_path / "root"
    real_save, calls = np.save, []

    def failing_save(path, array, **kwargs) -> None:  # noqa: ANN001
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        real_save(path, array, **kwargs)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        prepare(str(fake.folder), root, progress=False)
    monkeypatch.setattr(np, "save", real_save)

    assert list(root.iterdir()) == []
    assert find_cache(root, str(fake.folder), crop_roi=False) is None
    assert prepare(str(fake.folder), root, progress=False)["reused"] is False


# --------------------------------------------------------------------------- validation split
def test_split_by_track_keeps_each_track_on_one_side() -> None:
    labels = np.repeat(np.arange(5), 40)
    tracks = np.repeat(np.arange(50), 4)  # ten tracks per class

    train, val = split_by_track(labels, tracks, 0.2, seed=3)
    again_train, _ = split_by_track(labels, tracks, 0.2, seed=3)
    other_train, _ = split_by_track(labels, tracks, 0.2, seed=4)

    assert set(tracks[train]).isdisjoint(tracks[val])
    assert sorted(np.concatenate([train, val])) == list(range(200))
    assert len(val) == 5 * 2 * 4  # two of ten tracks per class, four frames each
    assert set(labels[val]) == set(range(5))
    np.testing.assert_array_equal(train, again_train)
    assert not np.array_equal(train, other_train)


def test_split_by_track_edges() -> None:
    labels, tracks = np.array([0, 0, 1, 1]), np.array([0, 1, 2, 2])

    train, val = split_by_track(labels, tracks, 0.5, seed=0)
    assert len(val) == 1  # class 1 has one track: it stays in training
    assert len(split_by_track(labels, tracks, 0.0, seed=0)[1]) == 0
    with pytest.raises(ValueError, match=r"must be in \[0, 1\). Received: 1.0"):
        split_by_track(labels, tracks, 1.0, seed=0)


# --------------------------------------------------------------------------------- DataModule
@pytest.fixture
def fake_root(make_gtsrb, tmp_path: Path) -> Path:
    fake = make_gtsrb(classes=(0, 11, 19, 20, 25), tracks=4, frames=3)
    root = tmp_path / "root"
    prepare(str(fake.folder), root, progress=False)
    return root


def test_datamodule_without_cache_names_the_command(tmp_path: Path) -> None:
    root = tmp_path / "empty root"
    module = GTSRBDataModule(_config(root, source="/data/gtsrb", crop_roi=True))

    with pytest.raises(FileNotFoundError) as caught:
        module.prepare_data()
    command = f"kiln data prepare gtsrb --source /data/gtsrb --root '{root}' --crop-roi"
    assert command in str(caught.value)


def test_datamodule_default_source_in_the_command(tmp_path: Path) -> None:
    module = GTSRBDataModule(_config(tmp_path))

    with pytest.raises(FileNotFoundError, match=f"--source {DEFAULT_SOURCE} --root {tmp_path}"):
        module.prepare_data()


def test_datamodule_batches_share_shape_and_range(fake_root: Path) -> None:
    module = GTSRBDataModule(_config(fake_root, val_fraction=0.25))
    module.prepare_data()
    module.setup("fit")

    batches = [
        next(iter(loader))
        for loader in (
            module.train_dataloader(),
            module.val_dataloader(),
            module.test_dataloader(),
        )
    ]

    for images, labels in batches:
        assert tuple(images.shape) == (8, 28, 28, 3)
        assert images.dtype.name == "float32"
        assert labels.dtype.name == "int32"
        assert float(images.numpy().min()) >= 0.0
        assert float(images.numpy().max()) <= 1.0
    assert set(module.arrays.train_tracks[module.train_index]).isdisjoint(
        module.arrays.train_tracks[module.val_index]
    )


def test_datamodule_datasets_finite_and_reiterable(fake_root: Path) -> None:
    module = GTSRBDataModule(_config(fake_root, val_fraction=0.25))
    module.setup("fit")
    train = module.train_dataloader()

    first = [labels.numpy() for _, labels in train]
    repeat = [labels.numpy() for _, labels in train]
    module.set_epoch(1)  # the trainer does this before each epoch
    second = [labels.numpy() for _, labels in train]

    assert int(train.cardinality()) == len(first) == len(second) == 6  # 45 images, batches of 8
    assert sorted(np.concatenate(first)) == sorted(np.concatenate(second))
    # The order depends on (seed, epoch) only: the same epoch again repeats it exactly.
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(repeat))
    assert not np.array_equal(np.concatenate(first), np.concatenate(second))
    limited = module.val_dataloader().take(1)  # what the trainer's limit_val_batches does
    assert [len(list(limited)) for _ in range(2)] == [1, 1]


def test_datamodule_same_seed_same_batches(fake_root: Path) -> None:
    def first_epoch(seed: int) -> np.ndarray:
        module = GTSRBDataModule(_config(fake_root, seed=seed, val_fraction=0.25))
        return np.concatenate([images.numpy().ravel() for images, _ in module.train_dataloader()])

    np.testing.assert_array_equal(first_epoch(0), first_epoch(0))
    assert not np.array_equal(first_epoch(0), first_epoch(1))


def test_datamodule_finds_a_cache_prepared_from_another_source(fake_root: Path) -> None:
    module = GTSRBDataModule(_config(fake_root))  # the default URL; the cache came from a folder

    module.prepare_data()

    assert module.cache is not None
    assert module.cache.parent == fake_root


def test_datamodule_without_validation(fake_root: Path) -> None:
    module = GTSRBDataModule(_config(fake_root, val_fraction=0.0))
    module.setup("fit")

    assert module.val_dataloader() is None
    assert len(module.train_index) == 60


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("val_fraction", 1.0, r"val_fraction must be a number in \[0, 1\)"),
        ("batch_size", 0, "batch_size must be an integer >= 1"),
        ("shuffle_buffer", -5, "shuffle_buffer must be an integer >= 1 or null"),
        ("crop_roi", "yes", "crop_roi must be true or false"),
        ("augment", {"flip_pair": True}, "did you mean 'flip_pairs'"),
    ],
)
def test_datamodule_rejects_bad_config(tmp_path: Path, key: str, value, message: str) -> None:
    config = _config(tmp_path)
    OmegaConf.update(config, f"data.{key}", value, merge=False)

    with pytest.raises(ValueError, match=message):
        GTSRBDataModule(config)


class _Recorder:
    def __init__(self) -> None:
        self.images: dict[str, tuple[np.ndarray, int]] = {}

    def log_images(self, tag: str, images: np.ndarray, step: int) -> None:
        self.images[tag] = (images, step)


def test_augmented_samples_logger_writes_plain_and_augmented(fake_root: Path) -> None:
    module = GTSRBDataModule(_config(fake_root, num_samples_logged=6))
    recorder = _Recorder()
    trainer = SimpleNamespace(logger=recorder, datamodule=module, global_step=7)

    AugmentedSamplesLogger().on_fit_start(trainer)

    assert sorted(recorder.images) == ["data/samples/augmented", "data/samples/plain"]
    for images, step in recorder.images.values():
        assert images.shape == (6, 28, 28, 3)
        assert images.min() >= 0.0
        assert images.max() <= 1.0
        assert step == 7
    plain, augmented = (
        recorder.images["data/samples/plain"][0],
        recorder.images["data/samples/augmented"][0],
    )
    assert not np.array_equal(plain, augmented)


def test_augmented_samples_logger_without_logger_does_nothing(fake_root: Path) -> None:
    module = GTSRBDataModule(_config(fake_root))
    trainer = SimpleNamespace(logger=None, datamodule=module, global_step=0)

    AugmentedSamplesLogger(num_samples=4).on_fit_start(trainer)

    assert module.arrays is None  # nothing was even loaded


_JAX_FIT = """
import os, sys
os.environ["KERAS_BACKEND"] = "jax"
import keras
from omegaconf import OmegaConf
from recipes.gtsrb.data import GTSRBDataModule

module = GTSRBDataModule(OmegaConf.load(sys.argv[1]))
module.prepare_data()
module.setup("fit")
layers = [keras.Input((28, 28, 3)), keras.layers.Flatten(), keras.layers.Dense(43)]
model = keras.Sequential(layers)
model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
history = model.fit(
    module.train_dataloader(), validation_data=module.val_dataloader(), epochs=2, verbose=0
)
print(keras.backend.backend(), len(history.history["val_loss"]))
"""


@pytest.mark.jax
def test_datamodule_feeds_keras_under_jax(fake_root: Path, tmp_path: Path) -> None:
    config_path = tmp_path / "run.yaml"
    OmegaConf.save(_config(fake_root, val_fraction=0.25), config_path)

    completed = subprocess.run(
        [sys.executable, "-c", _JAX_FIT, str(config_path)],
        cwd=REPO_ROOT,
        env={**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.split()[-2:] == ["jax", "2"]


def test_extract_archive_of_fake_training_images(make_gtsrb, tmp_path: Path) -> None:
    fake = make_gtsrb()

    target = extract_archive(fake.folder / TRAIN_ZIP, tmp_path / "extracted")

    assert len(list(target.rglob("*.ppm"))) == len(fake.train)


def test_datamodule_epoch_order_is_the_same_in_a_fresh_module(fake_root: Path) -> None:
    # A resumed run builds a new data module and jumps to epoch 2: it must see epoch 2's batches.
    def epoch_images(epoch: int) -> np.ndarray:
        module = GTSRBDataModule(_config(fake_root, val_fraction=0.25))
        module.setup("fit")
        train = module.train_dataloader()
        module.set_epoch(epoch)
        return np.concatenate([images.numpy().ravel() for images, _ in train])

    np.testing.assert_array_equal(epoch_images(2), epoch_images(2))
    assert not np.array_equal(epoch_images(2), epoch_images(3))
