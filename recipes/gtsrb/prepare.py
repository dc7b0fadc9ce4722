"""GTSRB: preparing the German Traffic Sign Recognition Benchmark into a cache.

``prepare`` reads the three official archives (from a folder, or downloaded from a base URL),
an already extracted official tree, or plain class folders (``train/<class>/*``,
``test/<class>/*``); it decodes every image, resizes it to 32x32 (optionally to its region of
interest first) and writes a cache of uint8 arrays under the data root; ``load_cache`` and
``split_by_track`` read it back for ``recipes.gtsrb.data.GTSRBDataModule``. Nothing here
imports TensorFlow, so ``kiln data prepare gtsrb`` stays light.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from framework.data.archives import (
    DataError,
    FileTree,
    open_tree,
    read_checksums,
    verify_archive,
    verify_sha256,
)
from framework.data.download import download
from framework.data.images import ImageJob, image_suffixes, load_images

logger = logging.getLogger(__name__)

__all__ = [
    "ARCHIVES",
    "DEFAULT_SOURCE",
    "NUM_CLASSES",
    "GTSRBArrays",
    "default_root",
    "find_cache",
    "load_cache",
    "prepare",
    "prepare_command",
    "split_by_track",
]

DEFAULT_SOURCE = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/"
TRAIN_ARCHIVE = "GTSRB_Final_Training_Images.zip"
TEST_ARCHIVE = "GTSRB_Final_Test_Images.zip"
TEST_LABELS_ARCHIVE = "GTSRB_Final_Test_GT.zip"
ARCHIVES = (TRAIN_ARCHIVE, TEST_ARCHIVE, TEST_LABELS_ARCHIVE)
NUM_CLASSES = 43
IMAGE_SIZE = 32
OFFICIAL_COUNTS = {"train": 39_209, "test": 12_630}
CACHE_FORMAT = 2
CHECKSUM_FILE = "SHA256SUMS"

_TRAIN_DIR = "Final_Training/Images/"
_TEST_DIR = "Final_Test/Images/"
_TEST_LABELS = "GT-final_test.csv"
_TRACK_NAME = re.compile(r"(\d+)_(\d+)")
_CSV_COLUMNS = ("Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId")
_ARRAYS = (
    "train_images",
    "train_labels",
    "train_tracks",
    "train_files",
    "test_images",
    "test_labels",
    "test_files",
)


@dataclass(frozen=True)
class _Item:
    """One image to decode: where it is, its label and track, and its CSV annotation."""

    member: str
    label: int
    track: str
    declared: tuple[int, int] | None = None  # (width, height) the CSV gives
    roi: tuple[int, int, int, int] | None = None  # (x1, y1, x2, y2) in declared pixels


@dataclass
class GTSRBArrays:
    """The prepared cache: uint8 images (N, 32, 32, 3), int32 labels, int32 track ids, and
    each image's file (its name inside the archive or folder it came from).

    Track ids are unique over the whole training set (one per physical sign and class); test
    images have no track.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    train_tracks: np.ndarray
    train_files: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    test_files: np.ndarray


# ----------------------------------------------------------------------------- where things are
def default_root() -> Path:
    """The per-user cache folder: ``$XDG_CACHE_HOME/kiln/gtsrb`` or ``~/.cache/kiln/gtsrb``."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    cache = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return cache / "kiln" / "gtsrb"


def _resolve_root(root: str | Path | None) -> Path:
    return default_root() if root in (None, "") else Path(root).expanduser().resolve()


def _is_url(source: str) -> bool:
    return "://" in source


def prepare_command(source: str, root: str | Path, crop_roi: bool = False) -> str:
    """The exact ``kiln data prepare gtsrb`` command that makes the cache a run needs."""
    command = f"kiln data prepare gtsrb --source {shlex.quote(str(source))}"
    command += f" --root {shlex.quote(str(root))}"
    return command + (" --crop-roi" if crop_roi else "")


def _source_kind(path: Path) -> str:
    """'archives', 'tree' (extracted official layout) or 'folders' (train/<c>, test/<c>)."""
    if not path.is_dir():
        raise FileNotFoundError(
            f"GTSRB source '{path}' does not exist; give a folder holding "
            f"{', '.join(ARCHIVES)}, or a base URL to download them from"
        )
    present = [name for name in ARCHIVES if (path / name).is_file()]
    if len(present) == len(ARCHIVES):
        return "archives"
    if _find_tree_dir(path, _TRAIN_DIR) is not None:
        return "tree"
    if (path / "train").is_dir() and (path / "test").is_dir():
        return "folders"
    missing = [name for name in ARCHIVES if name not in present]
    raise FileNotFoundError(
        f"archive '{missing[0]}' is missing from {path}; expected the three official archives "
        f"({', '.join(ARCHIVES)}; missing: {', '.join(missing)}), an extracted official tree "
        "(GTSRB/Final_Training/Images/...) or class folders train/<class>/ and test/<class>/"
    )


def _find_tree_dir(path: Path, suffix: str) -> Path | None:
    for base in (path, path / "GTSRB"):
        if (base / suffix).is_dir():
            return base / suffix
    return None


def _identity(source: str) -> dict[str, Any]:
    """What makes a source the same source again: its URL, or its files' paths, sizes, times."""
    if _is_url(source):
        return {"url": source.rstrip("/") + "/"}
    path = Path(source).expanduser().resolve()
    kind = _source_kind(path)
    if kind == "archives":
        files = [path / name for name in ARCHIVES]
    else:
        files = [Path(folder) / name for folder, _, names in os.walk(path) for name in names]
    digest = hashlib.sha256()
    for file in sorted(files):
        stat = file.stat()
        digest.update(f"{file}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return {"path": str(path), "kind": kind, "files": len(files), "stat": digest.hexdigest()}


def _cache_dir(root: Path, identity: dict[str, Any], crop_roi: bool) -> Path:
    options = {"format": CACHE_FORMAT, "size": IMAGE_SIZE, "crop_roi": crop_roi}
    text = json.dumps({"source": identity, "options": options}, sort_keys=True)
    return root / f"gtsrb-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


# ------------------------------------------------------------------------------------ prepare
def prepare(
    source: str | None,
    root: str | Path | None,
    crop_roi: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Make (or reuse) the 32x32 cache of GTSRB under ``root``; returns a summary.

    ``source`` is a base URL holding the three official archives (default: the benchmark's
    site), a folder with those archives, an extracted official tree, or class folders.
    ``crop_roi`` crops each image to the region of interest its CSV row gives before resizing.
    """
    started = time.perf_counter()
    source = str(source) if source else DEFAULT_SOURCE
    root = _resolve_root(root)
    identity = _identity(source)
    target = _cache_dir(root, identity, crop_roi)

    manifest = _read_manifest(target)
    if manifest is not None:
        logger.info("GTSRB cache %s is up to date; reusing it", target)
        return _summary(manifest, target, time.perf_counter() - started, reused=True)

    logger.info("preparing GTSRB from %s into %s (crop_roi=%s)", source, target, crop_roi)
    if _is_url(source):
        folder, kind = _download_archives(identity["url"], root, progress), "archives"
    else:
        folder, kind = Path(identity["path"]), identity["kind"]
    if kind == "folders" and crop_roi:
        raise ValueError(
            f"crop_roi needs the official CSV files with regions of interest; the class-folder "
            f"layout at {folder} has none. Received: crop_roi=True; use crop_roi=False"
        )
    if kind == "archives":
        _check_checksums(folder)

    arrays = _read_source(folder, kind, crop_roi, progress)
    _check_counts(arrays, source)
    manifest = {
        "format": CACHE_FORMAT,
        "dataset": "gtsrb",
        "source": source,
        "identity": identity,
        "crop_roi": crop_roi,
        "image_size": IMAGE_SIZE,
        "train_images": len(arrays.train_labels),
        "test_images": len(arrays.test_labels),
        "classes": len(np.unique(arrays.train_labels)),
        "tracks": len(np.unique(arrays.train_tracks)),
        "created": time.time(),
    }
    _write_cache(target, arrays, manifest)
    seconds = time.perf_counter() - started
    logger.info(
        "prepared GTSRB in %.1f s: %d training and %d test images in %s",
        seconds,
        manifest["train_images"],
        manifest["test_images"],
        target,
    )
    return _summary(manifest, target, seconds, reused=False)


def _summary(manifest: dict[str, Any], target: Path, seconds: float, reused: bool) -> dict:
    keys = ("source", "train_images", "test_images", "classes", "tracks", "crop_roi")
    summary = {key: manifest[key] for key in keys}
    summary.update(cache=str(target), seconds=round(seconds, 3), reused=reused)
    return summary


def _download_archives(base_url: str, root: Path, progress: bool) -> Path:
    """Download the three archives (kept under ``root/downloads``) and check each one."""
    folder = root / "downloads" / hashlib.sha256(base_url.encode()).hexdigest()[:12]
    try:
        download(base_url + CHECKSUM_FILE, folder / CHECKSUM_FILE, progress=False, retries=0)
    except (ConnectionError, DataError):
        logger.debug(
            "no %s at %s; the archives are checked by their CRCs", CHECKSUM_FILE, base_url
        )
    expected = read_checksums(folder / CHECKSUM_FILE)
    official = base_url == DEFAULT_SOURCE

    for name in ARCHIVES:

        def check(path: Path, name: str = name) -> None:
            if name in expected:
                verify_sha256(path, expected[name], base_url + CHECKSUM_FILE)
            _check_archive(path, name, official)

        download(base_url + name, folder / name, progress=progress, validate=check)
    return folder


def _check_archive(path: Path, name: str, official: bool) -> None:
    """CRC of every member, plus the image and CSV counts an official archive must have."""
    members = verify_archive(path)
    expected = {TRAIN_ARCHIVE: 39_252, TEST_ARCHIVE: 12_631, TEST_LABELS_ARCHIVE: 1}[name]
    # Limitation: only archives from the default URL are held to the official member counts
    # (images + CSVs); a mirror or a subset is checked by its CRCs and its CSV rows alone.
    if official and members < expected:
        raise DataError(
            f"archive '{name}' from {DEFAULT_SOURCE} holds {members} members; the official "
            f"archive holds at least {expected} (images and CSV files)"
        )


def _check_checksums(folder: Path) -> None:
    """Compare the archives with the folder's SHA256SUMS, when it has one."""
    listed = folder / CHECKSUM_FILE
    for name, digest in read_checksums(listed).items():
        if name in ARCHIVES:
            verify_sha256(folder / name, digest, listed)


def _check_counts(arrays: GTSRBArrays, source: str) -> None:
    counts = {"train": len(arrays.train_labels), "test": len(arrays.test_labels)}
    if counts == OFFICIAL_COUNTS:
        return
    message = (
        f"GTSRB source {source} gave {counts['train']} training and {counts['test']} test "
        f"images; the official set has {OFFICIAL_COUNTS['train']} and {OFFICIAL_COUNTS['test']}"
    )
    if source.rstrip("/") == DEFAULT_SOURCE.rstrip("/"):
        raise DataError(message)
    logger.info("%s (a subset or another copy)", message)


# ------------------------------------------------------------------------- reading the layouts
def _read_source(folder: Path, kind: str, crop_roi: bool, progress: bool) -> GTSRBArrays:
    if kind == "folders":
        train_at, test_at = folder / "train", folder / "test"
        with open_tree(train_at) as train, open_tree(test_at) as test:
            train_items, test_items = _class_folder_items(train), _class_folder_items(test)
    else:
        if kind == "archives":
            train_at, test_at = folder / TRAIN_ARCHIVE, folder / TEST_ARCHIVE
            labels_at = folder / TEST_LABELS_ARCHIVE
        else:
            train_at, test_at, labels_at = folder, folder, _find_labels_folder(folder)
        with (
            open_tree(train_at) as train,
            open_tree(test_at) as test,
            open_tree(labels_at) as labels,
        ):
            train_items = _official_train_items(train)
            test_items = _official_test_items(test, labels)

    return GTSRBArrays(
        train_images=_load(train_at, train_items, crop_roi, progress and "training images"),
        train_labels=np.array([item.label for item in train_items], dtype=np.int32),
        train_tracks=_track_ids(train_items),
        train_files=np.array([item.member for item in train_items], dtype=str),
        test_images=_load(test_at, test_items, crop_roi, progress and "test images"),
        test_labels=np.array([item.label for item in test_items], dtype=np.int32),
        test_files=np.array([item.member for item in test_items], dtype=str),
    )


def _load(location: Path, items: Sequence[_Item], crop_roi: bool, label: str | bool) -> np.ndarray:
    # The region of interest is scaled to the file's real size: the 32x32 copy keeps the CSV
    # rows of the full-size originals. Right and bottom are exclusive, as in a PIL box.
    jobs = [ImageJob(item.member, item.roi if crop_roi else None, item.declared) for item in items]
    size = (IMAGE_SIZE, IMAGE_SIZE)
    return load_images(location, jobs, size, progress=label or None)


def _find_labels_folder(folder: Path) -> Path:
    for candidate in (folder, folder / "GTSRB", folder / "GTSRB" / "Final_Test" / "Images"):
        if (candidate / _TEST_LABELS).is_file():
            return candidate
    raise FileNotFoundError(
        f"{_TEST_LABELS} (the test labels, from {TEST_LABELS_ARCHIVE}) is missing from the "
        f"extracted tree {folder}; expected it in {folder} or {folder / 'GTSRB'}"
    )


def _members_under(tree: FileTree, marker: str) -> dict[str, str]:
    """Files below ``.../<marker>``, keyed by their path relative to the marker."""
    found = {}
    for name in tree.names():
        index = name.find(marker)
        if index >= 0 and (index == 0 or name[index - 1] == "/"):
            found[name[index + len(marker) :]] = name
    return found


def _parse_csv(tree: FileTree, member: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each row of an annotation file with class ids."""
    lines = tree.read(member).decode("utf-8-sig").splitlines()
    header = tuple(lines[0].strip().split(";")) if lines else ()
    if header[: len(_CSV_COLUMNS)] != _CSV_COLUMNS:
        raise DataError(
            f"{tree.describe(member)} is not a GTSRB annotation file: its header must start "
            f"with {';'.join(_CSV_COLUMNS)}. Received: {';'.join(header)!r}"
        )
    for number, line in enumerate(lines[1:], start=2):
        fields = line.strip().split(";")
        if len(fields) < len(_CSV_COLUMNS) and line.strip():
            raise DataError(
                f"{tree.describe(member)} line {number} has {len(fields)} fields; expected "
                f"{len(_CSV_COLUMNS)} ({';'.join(_CSV_COLUMNS)}). Received: {line!r}"
            )
        if line.strip():
            yield number, fields


def _row_item(tree: FileTree, csv: str, number: int, fields: list[str], member: str) -> _Item:
    try:
        width, height, x1, y1, x2, y2, label = (int(value) for value in fields[1:8])
    except ValueError as exc:
        raise DataError(
            f"{tree.describe(csv)} line {number} must hold integers for sizes, region and "
            f"class; received {';'.join(fields)!r}"
        ) from exc
    if width <= 0 or height <= 0 or not 0 <= label < NUM_CLASSES:
        raise DataError(
            f"{tree.describe(csv)} line {number} needs a positive size and a class in "
            f"0..{NUM_CLASSES - 1}; received {';'.join(fields)!r}"
        )
    track = _TRACK_NAME.fullmatch(Path(fields[0]).stem)
    return _Item(member, label, track.group(1) if track else "", (width, height), (x1, y1, x2, y2))


def _official_train_items(tree: FileTree) -> list[_Item]:
    members = _members_under(tree, _TRAIN_DIR)
    if not members:
        raise DataError(f"{tree.location} holds no training images under .../{_TRAIN_DIR}")
    by_folder: dict[str, dict[str, str]] = {}
    for key, name in members.items():
        folder, _, file = key.partition("/")
        if file and "/" not in file:
            by_folder.setdefault(folder, {})[file] = name
    items = []
    for folder, files in sorted(by_folder.items()):
        csv = files.pop(f"GT-{folder}.csv", None)
        if csv is None:
            raise DataError(
                f"class folder {folder} in {tree.location} has no GT-{folder}.csv; every class "
                "folder of the official layout has one"
            )
        for number, fields in _parse_csv(tree, csv):
            item = _row_item(tree, csv, number, fields, files.pop(fields[0], ""))
            if not item.member:
                raise DataError(
                    f"{tree.describe(csv)} line {number} names '{fields[0]}', which is absent "
                    f"from class folder {folder} of {tree.location}"
                )
            items.append(item)
        _refuse_unlisted(tree, files, f"GT-{folder}.csv")
    return items


def _official_test_items(tree: FileTree, labels: FileTree) -> list[_Item]:
    members = _members_under(tree, _TEST_DIR)
    csv = next((name for name in labels.names() if name.endswith(_TEST_LABELS)), None)
    if csv is None:
        raise DataError(f"{labels.location} holds no {_TEST_LABELS} (the test labels)")
    items = []
    for number, fields in _parse_csv(labels, csv):
        item = _row_item(labels, csv, number, fields, members.pop(fields[0], ""))
        if not item.member:
            raise DataError(
                f"{labels.describe(csv)} line {number} names '{fields[0]}', which is absent "
                f"from the test images in {tree.location}"
            )
        items.append(_Item(item.member, item.label, "", item.declared, item.roi))  # no tracks
    _refuse_unlisted(tree, members, _TEST_LABELS)
    return items


def _refuse_unlisted(tree: FileTree, files: dict[str, str], csv: str) -> None:
    suffixes = image_suffixes()
    unlisted = sorted(name for key, name in files.items() if Path(key).suffix.lower() in suffixes)
    if unlisted:
        raise DataError(
            f"{tree.describe(unlisted[0])} has no row in {csv} ({len(unlisted)} image(s) "
            "without a row); every image of the official layout is listed in its CSV"
        )


def _class_folder_items(tree: FileTree) -> list[_Item]:
    suffixes = image_suffixes()
    items, skipped = [], 0
    for name in tree.names():
        folder, _, file = name.partition("/")
        if not file or "/" in file:
            continue
        if Path(file).suffix.lower() not in suffixes:
            skipped += 1
            continue
        try:
            label = int(folder)
        except ValueError:
            label = -1
        if not 0 <= label < NUM_CLASSES:
            raise DataError(
                f"class folder '{folder}' in {tree.location} is not a class number; class "
                f"folders are named by the class id, 0 to {NUM_CLASSES - 1} (for example 00012)"
            )
        track = _TRACK_NAME.fullmatch(Path(file).stem)
        items.append(_Item(name, label, track.group(1) if track else ""))
    if skipped:
        logger.warning("skipped %d file(s) in %s that are not images", skipped, tree.location)
    if not items:
        raise DataError(f"{tree.location} holds no images in class folders <class>/<image>")
    return items


def _track_ids(items: Sequence[_Item]) -> np.ndarray:
    """Unique ids per (class, track); an image whose name has no track is a track of its own."""
    keys = [
        (item.label, item.track) if item.track else (item.label, f"#{index}")
        for index, item in enumerate(items)
    ]
    untracked = sum(1 for item in items if not item.track)
    if untracked:
        logger.warning(
            "%d training image(s) have no track in their name (TTTTT_FFFFF); each is its own "
            "track, so near-identical frames may land on both sides of the validation split",
            untracked,
        )
    ids = {key: index for index, key in enumerate(sorted(set(keys)))}
    return np.array([ids[key] for key in keys], dtype=np.int32)


# --------------------------------------------------------------------------------- the cache
def _write_cache(target: Path, arrays: GTSRBArrays, manifest: dict[str, Any]) -> None:
    """Write the arrays to a hidden folder, the manifest last, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        sizes = {}
        for name in _ARRAYS:
            np.save(staging / f"{name}.npy", getattr(arrays, name), allow_pickle=False)
            sizes[name] = (staging / f"{name}.npy").stat().st_size
        manifest = dict(manifest, sizes=sizes)
        (staging / "manifest.json.tmp").write_text(json.dumps(manifest, indent=2))
        os.replace(staging / "manifest.json.tmp", staging / "manifest.json")
        if target.exists() and _read_manifest(target) is None:
            shutil.rmtree(target)  # a folder without a valid manifest is not a cache
        try:
            os.replace(staging, target)
        except OSError:
            if _read_manifest(target) is None:
                raise
            # Another prepare of the same inputs finished first; its cache is as good.
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _read_manifest(target: Path) -> dict[str, Any] | None:
    """The manifest of a complete cache, or None when ``target`` is absent or incomplete."""
    try:
        manifest = json.loads((target / "manifest.json").read_text())
        if manifest.get("format") != CACHE_FORMAT or set(manifest["sizes"]) != set(_ARRAYS):
            return None
        for name, size in manifest["sizes"].items():
            if (target / f"{name}.npy").stat().st_size != size:
                return None
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return None
    return manifest


def find_cache(root: str | Path | None, source: str | None, crop_roi: bool) -> Path | None:
    """The cache made from ``source``; failing that, the newest one under ``root`` made with
    the same options (a run need not repeat the source it was prepared from)."""
    root = _resolve_root(root)
    source = str(source) if source else DEFAULT_SOURCE
    try:
        exact = _cache_dir(root, _identity(source), crop_roi)
    except FileNotFoundError:
        exact = None
    if exact is not None and _read_manifest(exact) is not None:
        return exact
    candidates = []
    for folder in root.glob("gtsrb-*") if root.is_dir() else ():
        manifest = _read_manifest(folder)
        if manifest is not None and manifest.get("crop_roi") == crop_roi:
            candidates.append((manifest.get("created", 0), folder, manifest["source"]))
    if not candidates:
        return None
    _, folder, prepared_from = max(candidates)
    logger.info(
        "no GTSRB cache from %s; using %s, prepared from %s", source, folder, prepared_from
    )
    return folder


def load_cache(target: str | Path) -> GTSRBArrays:
    """Load a prepared cache folder; a DataError when it is incomplete."""
    target = Path(target)
    if _read_manifest(target) is None:
        raise DataError(
            f"'{target}' is not a complete GTSRB cache (its manifest is missing or does not "
            "match its arrays); prepare it again"
        )
    return GTSRBArrays(**{name: np.load(target / f"{name}.npy") for name in _ARRAYS})


# ---------------------------------------------------------------------------- validation split
def split_by_track(
    labels: np.ndarray, tracks: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation), holding out whole tracks: ``fraction`` of each class's
    tracks (at least one when the class has two or more) go to validation."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the validation fraction must be in [0, 1). Received: {fraction}")
    rng = np.random.default_rng(seed)
    held_out = []
    if fraction > 0:
        for label in np.unique(labels):
            class_tracks = np.unique(tracks[labels == label])
            count = max(1, round(fraction * len(class_tracks)))
            count = min(count, len(class_tracks) - 1)
            held_out.append(rng.permutation(class_tracks)[:count])
    is_val = np.isin(tracks, np.concatenate(held_out)) if held_out else np.zeros_like(tracks, bool)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


# --------------------------------------------------------------------------------- DataModule
