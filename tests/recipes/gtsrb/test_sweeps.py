"""The GTSRB sweeps end to end on the real data, with a budget of two batches per run."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from PIL import Image

from framework.cli import main

LABELS = {"base", "elu1", "elus", "pool1", "pools", "flatten", "pools_flatten"}


@pytest.mark.slow
def test_dropout_placement_sweep_writes_table_and_plot(gtsrb_root: Path, tmp_path: Path):
    runs = tmp_path / "runs"
    status = main(
        [
            "sweep",
            "dropout_placement",
            "sweep.seeds=1",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            "trainer.enable_progress_bar=false",
            f"data.root={gtsrb_root}",
            f"trainer.default_root_dir={runs}",
        ]
    )

    assert status == 0
    out = runs / "sweeps" / "dropout_placement"
    with open(out / "results.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert {row["variant"] for row in rows} == LABELS
    assert all(row["runs"] == "1" and row["max_epochs"] == "1" for row in rows)
    accuracies = [float(row["test_accuracy_mean"]) for row in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    assert all(0.0 <= value <= 1.0 for value in accuracies)
    text = (out / "results.md").read_text()
    assert "1 epoch per run" in text
    assert "2 training batches per epoch" in text
    with Image.open(out / "loss_curves.png") as image:
        assert image.format == "PNG"
