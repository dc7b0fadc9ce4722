import csv
from pathlib import Path

import numpy as np
import pytest

from framework.loggers import CSVLogger, TensorBoardLogger


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


def test_csv_logger_writes_one_row_per_call(tmp_path):
    logger = CSVLogger(tmp_path, "demo")
    logger.log_metrics({"train/loss": 0.5, "train/accuracy": np.float32(0.25)}, 0)
    logger.log_metrics({"train/loss": 0.125}, 10)
    logger.finalize("success")

    columns, rows = _rows(logger.log_dir / "metrics.csv")

    assert logger.path == tmp_path / "demo" / "version_0" / "metrics.csv"
    assert columns == ["step", "train/loss", "train/accuracy"]
    assert rows == [
        {"step": "0", "train/loss": "0.5", "train/accuracy": "0.25"},
        {"step": "10", "train/loss": "0.125", "train/accuracy": ""},
    ]


def test_csv_logger_new_metric_widens_the_header(tmp_path):
    logger = CSVLogger(tmp_path, "demo")
    logger.log_metrics({"train/loss": 1.0}, 0)
    logger.log_metrics({"val/loss": 2.0}, 1)
    logger.log_metrics({"train/loss": 3.0, "val/loss": 4.0}, 2)

    columns, rows = _rows(logger.path)

    assert columns == ["step", "train/loss", "val/loss"]
    assert [(row["step"], row["train/loss"], row["val/loss"]) for row in rows] == [
        ("0", "1.0", ""),
        ("1", "", "2.0"),
        ("2", "3.0", "4.0"),
    ]
    assert list(logger.log_dir.iterdir()) == [logger.path]  # no temporary file left behind


def test_csv_logger_resume_drops_rows_from_the_purge_step(tmp_path):
    first = CSVLogger(tmp_path, "demo")
    for step in range(10):
        first.log_metrics({"loss": float(step)}, step)
    first.finalize("interrupted")

    resumed = CSVLogger(tmp_path, "demo", version=0, purge_step=5)
    for step in range(5, 8):
        resumed.log_metrics({"loss": 100.0 + step, "lr": 0.1}, step)

    columns, rows = _rows(resumed.path)

    assert columns == ["step", "loss", "lr"]
    assert [(row["step"], row["loss"]) for row in rows] == [
        ("0", "0.0"),
        ("1", "1.0"),
        ("2", "2.0"),
        ("3", "3.0"),
        ("4", "4.0"),
        ("5", "105.0"),
        ("6", "106.0"),
        ("7", "107.0"),
    ]


def test_csv_logger_resume_drops_a_line_cut_by_a_crash(tmp_path):
    first = CSVLogger(tmp_path, "demo")
    first.log_metrics({"loss": 1.0, "accuracy": 0.5}, 0)
    with open(first.path, "a") as file:
        file.write("1,0.9")  # a crash in the middle of a row

    resumed = CSVLogger(tmp_path, "demo", version=0)
    resumed.log_metrics({"loss": 0.5, "accuracy": 0.75}, 1)

    _, rows = _rows(resumed.path)
    assert rows == [
        {"step": "0", "loss": "1.0", "accuracy": "0.5"},
        {"step": "1", "loss": "0.5", "accuracy": "0.75"},
    ]


def test_csv_logger_shares_the_tensorboard_run_folder(tmp_path):
    board = TensorBoardLogger(tmp_path, "demo")
    table = CSVLogger(tmp_path, "demo", version=board.version)
    table.log_metrics({"loss": 1.0}, 0)
    board.finalize("success")

    assert table.log_dir == board.log_dir
    assert (board.log_dir / "metrics.csv").is_file()


def test_csv_logger_rejects_a_metric_named_step(tmp_path):
    logger = CSVLogger(tmp_path, "demo")

    with pytest.raises(ValueError, match="'step' is the CSV logger's own column"):
        logger.log_metrics({"step": 3.0}, 3)
