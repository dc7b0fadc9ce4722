import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image
from tensorboard.backend.event_processing import (
    directory_watcher,
    event_file_loader,
    io_wrapper,
    plugin_asset_util,
)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat import tensorflow_stub
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata

from framework.loggers import TensorBoardLogger

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _reader_without_tensorflow(monkeypatch):
    """Read through TensorBoard's bundled TensorFlow-free file layer, as ``kiln board`` does.

    Only the file access changes; the accumulator's own logic (purging included) is what runs.
    It spares these tests the seconds of importing TensorFlow.
    """
    for module in (directory_watcher, event_file_loader, io_wrapper, plugin_asset_util):
        monkeypatch.setattr(module, "tf", tensorflow_stub)


def _read(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(
        str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0}
    )
    accumulator.Reload()
    return accumulator


def _scalars(accumulator: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def test_tensorboard_logger_run_folders_are_numbered(tmp_path):
    first = TensorBoardLogger(tmp_path, "demo")
    second = TensorBoardLogger(tmp_path, "demo")
    resumed = TensorBoardLogger(tmp_path, "demo", version=0)

    assert (first.version, second.version, resumed.version) == (0, 1, 0)
    assert first.log_dir == tmp_path / "demo" / "version_0"
    assert resumed.log_dir == first.log_dir
    for logger in (first, second, resumed):
        logger.finalize("success")


def test_tensorboard_logger_writes_scalars(tmp_path):
    logger = TensorBoardLogger(tmp_path, "demo")
    for step in range(3):
        logger.log_metrics({"train/loss": 1.0 / (step + 1), "train/lr": np.float32(0.5)}, step)
    logger.log_metrics({"val/accuracy": 0.75}, 2)
    logger.finalize("success")

    accumulator = _read(logger.log_dir)

    assert set(accumulator.Tags()["scalars"]) == {"train/loss", "train/lr", "val/accuracy"}
    assert _scalars(accumulator, "train/loss") == [
        (0, 1.0),
        (1, 0.5),
        (2, pytest.approx(1 / 3)),
    ]
    assert _scalars(accumulator, "train/lr") == [(0, 0.5), (1, 0.5), (2, 0.5)]
    assert _scalars(accumulator, "val/accuracy") == [(2, 0.75)]


def test_tensorboard_logger_hparams_are_readable_by_the_plugin(tmp_path):
    logger = TensorBoardLogger(tmp_path, "demo")
    params = {"optimizer": {"name": "adam", "lr": 0.01}, "layers": [8, 16], "bn": True}
    logger.log_hyperparams(params)
    logger.log_metrics({"val/accuracy": 0.5}, 4)
    logger.log_hyperparams(params, {"test/accuracy": 0.875})
    logger.finalize("success")

    accumulator = _read(logger.log_dir)
    content = accumulator.PluginTagToContent("hparams")
    start = hparams_metadata.parse_session_start_info_plugin_data(
        content[hparams_metadata.SESSION_START_INFO_TAG]
    )
    end = hparams_metadata.parse_session_end_info_plugin_data(
        content[hparams_metadata.SESSION_END_INFO_TAG]
    )

    assert start.hparams["optimizer.name"].string_value == "adam"
    assert start.hparams["optimizer.lr"].number_value == 0.01
    assert start.hparams["layers"].string_value == "[8, 16]"
    assert start.hparams["bn"].bool_value is True
    assert end.status == api_pb2.STATUS_SUCCESS
    assert _scalars(accumulator, "hparams/test/accuracy") == [(4, 0.875)]


def test_tensorboard_logger_interrupted_run_records_no_session_end(tmp_path):
    logger = TensorBoardLogger(tmp_path, "demo")
    logger.log_hyperparams({"lr": 0.1})
    logger.finalize("interrupted")

    content = _read(logger.log_dir).PluginTagToContent("hparams")

    assert set(content) == {hparams_metadata.SESSION_START_INFO_TAG}


def test_tensorboard_logger_writes_images(tmp_path):
    logger = TensorBoardLogger(tmp_path, "demo")
    single = np.zeros((1, 5, 7, 3), dtype=np.uint8)
    single[0, 1, 2] = (255, 0, 10)
    logger.log_images("one", single, step=1)
    logger.log_images("gray", np.full((2, 4, 6, 1), 0.5, dtype=np.float32), step=2)
    logger.finalize("success")

    accumulator = _read(logger.log_dir)
    (one,) = accumulator.Images("one")
    decoded = np.asarray(Image.open(io.BytesIO(one.encoded_image_string)))

    assert (one.step, one.width, one.height) == (1, 7, 5)
    np.testing.assert_array_equal(decoded, single[0])
    assert {"gray/0", "gray/1"} <= set(accumulator.Tags()["images"])
    gray = accumulator.Images("gray/1")[0]
    assert (gray.width, gray.height) == (6, 4)
    assert np.asarray(Image.open(io.BytesIO(gray.encoded_image_string)))[0, 0] == 128


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((4, 4, 3), dtype=np.uint8), "shape=\\(4, 4, 3\\)"),
        (np.full((1, 4, 4, 3), 2.0), "values in \\[2, 2\\]"),
        (np.zeros((1, 4, 4, 3), dtype=np.int32), "dtype=int32"),
    ],
)
def test_tensorboard_logger_rejects_bad_images(tmp_path, images, message):
    logger = TensorBoardLogger(tmp_path, "demo")

    with pytest.raises(ValueError, match=message):
        logger.log_images("bad", images, step=0)
    logger.finalize("failed")


def test_tensorboard_logger_writes_figures(tmp_path):
    figure = Figure(figsize=(2, 1), dpi=50)
    figure.add_subplot().plot([0, 1, 4])
    logger = TensorBoardLogger(tmp_path, "demo")
    logger.log_figure("curves", figure, step=3)
    logger.finalize("success")

    (image,) = _read(logger.log_dir).Images("curves")

    assert (image.step, image.width, image.height) == (3, 100, 50)


def test_tensorboard_logger_writes_text_for_the_text_plugin(tmp_path):
    logger = TensorBoardLogger(tmp_path, "demo")
    logger.log_text("notes", "# Model\n| a | b |\n|---|---|\n| 1 | 2 |", step=7)
    logger.finalize("success")

    accumulator = _read(logger.log_dir)
    (event,) = accumulator.Tensors("notes")

    assert "notes" in accumulator.PluginTagToContent("text")
    assert event.step == 7
    assert event.tensor_proto.string_val == [b"# Model\n| a | b |\n|---|---|\n| 1 | 2 |"]


def test_tensorboard_logger_resume_purges_steps_after_the_checkpoint(tmp_path):
    first = TensorBoardLogger(tmp_path, "demo")
    for step in range(10):
        first.log_metrics({"train/loss": float(step)}, step)
    first.finalize("interrupted")

    resumed = TensorBoardLogger(tmp_path, "demo", version=0, purge_step=5)
    for step in range(5, 8):
        resumed.log_metrics({"train/loss": 100.0 + step}, step)
    resumed.finalize("success")

    accumulator = _read(resumed.log_dir)

    assert _scalars(accumulator, "train/loss") == [
        (0, 0.0),
        (1, 1.0),
        (2, 2.0),
        (3, 3.0),
        (4, 4.0),
        (5, 105.0),
        (6, 106.0),
        (7, 107.0),
    ]


def test_tensorboard_logger_reopening_after_finalize_keeps_earlier_steps(tmp_path):
    logger = TensorBoardLogger(tmp_path, "demo")
    logger.log_metrics({"val/loss": 1.0}, 3)
    logger.finalize("success")
    logger.log_metrics({"test/loss": 2.0}, 0)
    logger.finalize("success")

    accumulator = _read(logger.log_dir)

    assert _scalars(accumulator, "val/loss") == [(3, 1.0)]
    assert _scalars(accumulator, "test/loss") == [(0, 2.0)]
    assert len(list(logger.log_dir.glob("events.out.tfevents.*"))) == 2


def test_tensorboard_logger_rejects_bad_arguments(tmp_path):
    logger = TensorBoardLogger(tmp_path, "demo")

    with pytest.raises(ValueError, match="step=-1"):
        logger.log_metrics({"loss": 1.0}, -1)
    with pytest.raises(ValueError, match="Metric 'loss'"):
        logger.log_metrics({"loss": "high"}, 0)
    with pytest.raises(ValueError, match="allowed statuses"):
        logger.finalize("done")
    logger.finalize("failed")


def test_tensorboard_logger_never_imports_tensorflow(tmp_path):
    script = (
        "import sys\n"
        "import numpy as np\n"
        "from matplotlib.figure import Figure\n"
        "from framework.loggers import TensorBoardLogger\n"
        "logger = TensorBoardLogger(sys.argv[1], 'demo', purge_step=0)\n"
        "logger.log_metrics({'loss': 1.0}, 0)\n"
        "logger.log_hyperparams({'lr': 0.1}, {'loss': 1.0})\n"
        "logger.log_images('x', np.zeros((1, 2, 2, 3)), 0)\n"
        "logger.log_figure('f', Figure(figsize=(1, 1)), 0)\n"
        "logger.log_text('t', 'hello', 0)\n"
        "logger.finalize('success')\n"
        "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
