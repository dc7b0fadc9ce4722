"""GTSRB fixtures: the real archives (found or skipped), their cache, and tiny fake archives.

``gtsrb_source`` finds the three official archives through ``KILN_GTSRB_SOURCE`` or
``../shared/data/gtsrb32`` beside the repository; without them a test skips, except under
``CI=true``, where it fails. ``gtsrb_root`` prepares the real cache once per session.
``make_gtsrb`` writes small official-layout archives with images of any size.
"""

from __future__ import annotations

import io
import os
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recipes.gtsrb.data import ARCHIVES, prepare

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED_SOURCE = REPO_ROOT.parent / "shared" / "data" / "gtsrb32"

TRAIN_PREFIX = "GTSRB/Final_Training/Images"
TEST_PREFIX = "GTSRB/Final_Test/Images"
HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"


@pytest.fixture(scope="session")
def gtsrb_source() -> Path:
    """The folder holding the real archives; skip (or fail under CI=true) when absent."""
    configured = os.environ.get("KILN_GTSRB_SOURCE")
    folder = Path(configured) if configured else SHARED_SOURCE
    missing = [name for name in ARCHIVES if not (folder / name).is_file()]
    if missing:
        reason = (
            f"the GTSRB archives {', '.join(missing)} are not in {folder}; set "
            "KILN_GTSRB_SOURCE to the folder that holds them"
        )
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(f"CI=true needs the real data: {reason}")
        pytest.skip(reason)
    return folder.resolve()


@pytest.fixture(scope="session")
def gtsrb_root(gtsrb_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding the real 32x32 cache (prepared once per session); use it as
    ``data.root``."""
    root = tmp_path_factory.mktemp("gtsrb-root")
    prepare(str(gtsrb_source), root, progress=False)
    return root


@dataclass
class FakeGTSRB:
    """What ``make_gtsrb`` wrote: the folder, and each image's pixels as written."""

    folder: Path
    train: dict[str, tuple[np.ndarray, int]] = field(default_factory=dict)
    test: dict[str, tuple[np.ndarray, int]] = field(default_factory=dict)
    roi: tuple[int, int, int, int] = (0, 0, 0, 0)
    declared: tuple[int, int] = (0, 0)


def sign_image(width: int, height: int, roi: tuple[int, int, int, int], seed: int) -> np.ndarray:
    """A grey border around a coloured sign filling ``roi`` (right and bottom exclusive); the
    left half of the sign is brighter, so that a mirror flip shows."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 90, dtype=np.uint8)
    x1, y1, x2, y2 = roi
    image[y1:y2, x1:x2] = rng.integers(120, 200, size=3, dtype=np.uint8)
    image[y1:y2, x1 : (x1 + x2) // 2] += 40
    return image


def encode(image: np.ndarray, suffix: str = ".ppm") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format={".ppm": "PPM", ".png": "PNG"}[suffix])
    return buffer.getvalue()


def _scaled(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None:
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def _make_gtsrb(
    folder: Path,
    classes: tuple[int, ...] = (0, 11, 19, 20, 25),
    tracks: int = 3,
    frames: int = 2,
    tests_per_class: int = 2,
    size: tuple[int, int] = (48, 40),
    roi: tuple[int, int, int, int] = (6, 5, 42, 35),
    stored_size: tuple[int, int] | None = None,
) -> FakeGTSRB:
    """Official-layout archives: ``classes`` x ``tracks`` x ``frames`` training images and
    ``tests_per_class`` test images per class, each ``size`` pixels with a sign in ``roi``;
    ``stored_size`` resizes the stored files while the CSVs keep ``size`` (like the 32x32 copy).
    """
    folder.mkdir(parents=True, exist_ok=True)
    fake = FakeGTSRB(folder, roi=roi, declared=size)
    width, height = size
    row = f"{width};{height};{';'.join(str(v) for v in roi)}"
    with zipfile.ZipFile(folder / ARCHIVES[0], "w") as archive:
        for label in classes:
            lines = [HEADER]
            for track in range(tracks):
                for frame in range(frames):
                    name = f"{track:05d}_{frame:05d}.ppm"
                    image = _scaled(
                        sign_image(width, height, roi, label * 100 + track), stored_size
                    )
                    member = f"{TRAIN_PREFIX}/{label:05d}/{name}"
                    archive.writestr(member, encode(image))
                    fake.train[member] = (image, label)
                    lines.append(f"{name};{row};{label}")
            archive.writestr(f"{TRAIN_PREFIX}/{label:05d}/GT-{label:05d}.csv", "\n".join(lines))
    test_lines, label_lines = [HEADER.rpartition(";")[0]], [HEADER]
    with zipfile.ZipFile(folder / ARCHIVES[1], "w") as archive:
        for index in range(tests_per_class * len(classes)):
            label = classes[index % len(classes)]
            name = f"{index:05d}.ppm"
            image = _scaled(sign_image(width, height, roi, 10_000 + index), stored_size)
            archive.writestr(f"{TEST_PREFIX}/{name}", encode(image))
            fake.test[f"{TEST_PREFIX}/{name}"] = (image, label)
            test_lines.append(f"{name};{row}")
            label_lines.append(f"{name};{row};{label}")
        archive.writestr(f"{TEST_PREFIX}/GT-final_test.test.csv", "\r\n".join(test_lines))
    with zipfile.ZipFile(folder / ARCHIVES[2], "w") as archive:
        archive.writestr("GT-final_test.csv", "\r\n".join(label_lines))
    return fake


@pytest.fixture
def make_gtsrb(tmp_path: Path) -> Callable[..., FakeGTSRB]:
    """``make_gtsrb(name="source", **options)`` writes fake archives under tmp_path/name."""

    def make(name: str = "source", **options: object) -> FakeGTSRB:
        return _make_gtsrb(tmp_path / name, **options)

    return make


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def serve_folder() -> Iterator[Callable[[Path], str]]:
    """``serve_folder(path)`` serves a folder over HTTP on localhost; returns its base URL."""
    servers: list[ThreadingHTTPServer] = []

    def start(folder: Path) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=folder))
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
