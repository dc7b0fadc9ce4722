"""Image decoding and resizing: errors name the file, regions scale with the image."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from framework.data import images as images_module
from framework.data.archives import DataError
from framework.data.images import (
    ImageJob,
    decode_image,
    image_suffixes,
    load_images,
    resize_image,
    scale_box,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _encoded(array: np.ndarray, kind: str = "PPM") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=kind)
    return buffer.getvalue()


def _picture(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("kind", ["PPM", "PNG"])
def test_decode_image_reads_rgb(kind: str) -> None:
    array = _picture(7, 5)

    image = decode_image(_encoded(array, kind), "'x'")

    assert image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), array)


def test_decode_image_reads_a_file_named_like_another_format() -> None:
    array = _picture(6, 4)

    image = decode_image(_encoded(array, "PNG"), "'really-a-png.ppm'", ".ppm")

    np.testing.assert_array_equal(np.asarray(image), array)


def test_decode_image_converts_grey_to_rgb() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)

    image = decode_image(_encoded(grey, "PNG"), "'grey.png'")

    np.testing.assert_array_equal(np.asarray(image)[..., 1], grey)


def test_decode_image_names_a_truncated_file() -> None:
    data = _encoded(_picture(32, 32))[:-500]

    with pytest.raises(DataError, match=r"image 'sign\.ppm' cannot be decoded.*truncated"):
        decode_image(data, "'sign.ppm'", ".ppm")


def test_decode_image_names_a_file_that_is_no_image() -> None:
    with pytest.raises(DataError, match=r"image 'notes\.ppm' cannot be decoded"):
        decode_image(b"this is no image at all", "'notes.ppm'")


def test_scale_box_maps_original_coordinates_to_a_smaller_copy() -> None:
    assert scale_box((8, 6, 56, 42), declared=(64, 48), actual=(32, 32)) == (4, 4, 28, 28)


def test_resize_image_matches_pillow_bilinear_with_and_without_box() -> None:
    image = Image.fromarray(_picture(60, 45))
    box = (5.5, 4.0, 50.0, 41.0)

    whole = resize_image(image, (32, 32))
    region = resize_image(image, (32, 32), box)

    expected_whole = image.resize((32, 32), Image.Resampling.BILINEAR)
    expected_region = image.resize((32, 32), Image.Resampling.BILINEAR, box=box)
    np.testing.assert_array_equal(whole, np.asarray(expected_whole))
    np.testing.assert_array_equal(region, np.asarray(expected_region))
    assert whole.dtype == np.uint8
    assert whole.shape == (32, 32, 3)


def test_resize_image_clips_a_box_reaching_past_the_edge() -> None:
    image = Image.fromarray(_picture(40, 40))

    clipped = resize_image(image, (32, 32), (-3, -3, 45, 45))

    np.testing.assert_array_equal(clipped, resize_image(image, (32, 32), (0, 0, 40, 40)))


def test_resize_image_refuses_an_empty_region() -> None:
    image = Image.fromarray(_picture(40, 40))

    with pytest.raises(DataError, match=r"'a\.ppm' has an empty region of interest"):
        resize_image(image, (32, 32), (50, 5, 60, 20), name="'a.ppm'")


def test_image_suffixes_include_ppm_and_png() -> None:
    assert {".ppm", ".png", ".jpg"} <= image_suffixes()


def _image_folder(folder: Path, count: int) -> tuple[list[ImageJob], list[np.ndarray]]:
    folder.mkdir()
    jobs, arrays = [], []
    for index in range(count):
        array = _picture(40 + index, 36, seed=index)
        (folder / f"{index}.ppm").write_bytes(_encoded(array))
        box = (4, 4, 36, 32) if index % 2 else None
        jobs.append(ImageJob(f"{index}.ppm", box, (80 + 2 * index, 72) if box else None))
        arrays.append(array)
    return jobs, arrays


def _expected(job: ImageJob, array: np.ndarray) -> np.ndarray:
    image = Image.fromarray(array)
    box = scale_box(job.box, job.declared, image.size) if job.box else None
    return np.asarray(image.resize((32, 32), Image.Resampling.BILINEAR, box=box))


def test_load_images_resizes_each_job(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(images_module, "_CHUNK", 3)
    jobs, arrays = _image_folder(tmp_path / "images", 7)

    loaded = load_images(tmp_path / "images", jobs, (32, 32), workers=1)

    for job, array, result in zip(jobs, arrays, loaded, strict=True):
        np.testing.assert_array_equal(result, _expected(job, array))


_IN_WORKERS = """
import sys
from pathlib import Path
import numpy as np
from framework.data import images
from framework.data.images import ImageJob, load_images

images._CHUNK = 3
assert images._can_fork(), "a fresh process without TensorFlow may fork"
folder, out, broken = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
jobs = [
    ImageJob(f"{i}.ppm", (4, 4, 36, 32), (80 + 2 * i, 72)) if i % 2 else ImageJob(f"{i}.ppm")
    for i in range(7)
]
if broken:
    try:
        load_images(folder, jobs, (32, 32), workers=2)
    except images.DataError as error:
        print(error)
else:
    np.save(out, load_images(folder, jobs, (32, 32), workers=2))
"""


def _run_in_workers(folder: Path, out: Path, broken: bool) -> str:
    completed = subprocess.run(
        [sys.executable, "-c", _IN_WORKERS, str(folder), str(out), "1" if broken else "0"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return completed.stdout


def test_load_images_in_worker_processes_match_one_process(tmp_path: Path) -> None:
    jobs, arrays = _image_folder(tmp_path / "images", 7)

    _run_in_workers(tmp_path / "images", tmp_path / "out.npy", broken=False)
    loaded = np.load(tmp_path / "out.npy")

    for job, array, result in zip(jobs, arrays, loaded, strict=True):
        np.testing.assert_array_equal(result, _expected(job, array))


def test_load_images_in_worker_processes_name_the_broken_file(tmp_path: Path) -> None:
    _image_folder(tmp_path / "images", 7)
    (tmp_path / "images" / "5.ppm").write_bytes(b"P6\n40 36\n255\n" + b"\x00" * 10)

    output = _run_in_workers(tmp_path / "images", tmp_path / "out.npy", broken=True)

    assert "5.ppm' cannot be decoded" in output


def test_load_images_names_the_broken_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(images_module, "_CHUNK", 2)
    jobs, _ = _image_folder(tmp_path / "images", 5)
    (tmp_path / "images" / "3.ppm").write_bytes(b"P6\n40 36\n255\n" + b"\x00" * 10)

    with pytest.raises(DataError, match=r"3\.ppm' cannot be decoded"):
        load_images(tmp_path / "images", jobs, (32, 32), workers=1)
