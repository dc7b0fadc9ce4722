"""Sweeps: the regression forms over two seeds, the report, restart, resume and early errors."""

from __future__ import annotations

import csv
import json
import shutil
import statistics
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image
from tensorboard.backend.event_processing import (
    directory_watcher,
    event_file_loader,
    io_wrapper,
    plugin_asset_util,
)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat import tensorflow_stub

from framework.cli import main
from framework.config import ConfigError, config_dir
from framework.sweep import SweepResult, run_sweep

RECIPES = {
    "sequential": "regression_sequential",
    "functional": "regression_functional",
    "shortcut": "regression_shortcut",
}
SMALL = ["data.n_train=128", "data.n_val=64", "data.n_test=128"]


def _sweep(root: Path, *extra: str) -> SweepResult:
    overrides = [
        "sweep.seeds=2",
        "sweep.max_epochs=2",
        f"trainer.default_root_dir={root}",
        "trainer.enable_progress_bar=false",
        *SMALL,
        *extra,
    ]
    return run_sweep("regression_forms", overrides, echo=False)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SweepResult]:
    """One regression sweep run to the end: (runs root, result). Tests copy it to change it."""
    root = tmp_path_factory.mktemp("sweep") / "runs"
    return root, _sweep(root)


def _copy(finished: tuple[Path, SweepResult], tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    shutil.copytree(finished[0], root)
    return root


def _versions(root: Path, recipe: str) -> list[str]:
    return sorted(p.name for p in (root / recipe).glob("version_*"))


def _manifest(root: Path) -> dict:
    return json.loads((root / "sweeps" / "regression_forms" / "manifest.json").read_text())


def _edit_manifest(root: Path, key: str, **values: object) -> None:
    path = root / "sweeps" / "regression_forms" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["runs"][key].update(values)
    path.write_text(json.dumps(manifest))


def _final_losses(run_dir: Path) -> dict[str, float]:
    """The last epoch's train and val loss and the test loss, read from metrics.csv."""
    with open(run_dir / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    last_epoch = [row for row in rows if row["epoch"]][-1]
    test = [row for row in rows if row["test/loss"]][-1]
    return {
        "loss": float(last_epoch["train/loss"]),
        "val_loss": float(last_epoch["val/loss"]),
        "test_loss": float(test["test/loss"]),
    }


def test_sweep_table_holds_mean_and_std_of_the_runs(finished):
    root, result = finished
    with open(result.table_csv, newline="") as file:
        table = {row["variant"]: row for row in csv.DictReader(file)}

    assert sorted(table) == sorted(RECIPES)
    assert (result.runs_started, result.runs_skipped) == (6, 0)
    for label, recipe in RECIPES.items():
        runs = [_final_losses(root / recipe / v) for v in _versions(root, recipe)]
        assert len(runs) == 2
        row = table[label]
        assert (row["recipe"], row["runs"], row["max_epochs"]) == (recipe, "2", "2")
        for key in ("loss", "val_loss", "test_loss"):
            values = [run[key] for run in runs]
            assert float(row[f"{key}_mean"]) == pytest.approx(statistics.fmean(values))
            assert float(row[f"{key}_std"]) == pytest.approx(statistics.stdev(values))

    ranked = [float(table[row.label]["test_loss_mean"]) for row in result.rows]
    assert [table[row.label]["rank"] for row in result.rows] == ["1", "2", "3"]
    assert ranked == sorted(ranked)  # test_loss: lower is better, best first


def test_sweep_markdown_states_budget_seeds_and_rows(finished):
    _, result = finished
    text = result.markdown.read_text()

    assert "2 epochs per run" in text
    assert "Seeds (`trainer.seed`): 0, 1; 2 runs per variant" in text
    first = result.rows[0]
    mean, std = first.stats["test_loss"]
    assert f"| 1 | {first.label} | `{first.recipe}` | 2 | {mean:.4g} ± {std:.2g} |" in text
    assert sum(line.startswith("| ") for line in text.splitlines()) == 1 + 3


def _board(result: SweepResult, monkeypatch: pytest.MonkeyPatch) -> EventAccumulator:
    """The sweep's TensorBoard log, read without importing TensorFlow."""
    for module in (directory_watcher, event_file_loader, io_wrapper, plugin_asset_util):
        monkeypatch.setattr(module, "tf", tensorflow_stub)
    board = EventAccumulator(str(result.out_dir / "version_0"), size_guidance={"images": 0})
    board.Reload()
    return board


def test_sweep_plot_is_a_png_and_logged_to_tensorboard(finished, monkeypatch):
    _, result = finished
    with Image.open(result.plot) as image:
        assert image.format == "PNG"
        assert image.size[0] > 400

    board = _board(result, monkeypatch)
    images = board.Images("sweep/loss_curves")
    assert len(images) == 1
    assert images[0].encoded_image_string == result.plot.read_bytes()
    assert "sweep/results" in board.Tags()["tensors"]


def test_sweep_restart_runs_only_the_unfinished_run(finished, tmp_path, monkeypatch):
    root = _copy(finished, tmp_path)
    before = _manifest(root)["runs"]["shortcut/seed_1"]
    _edit_manifest(root, "shortcut/seed_1", status="running")

    result = _sweep(root)

    assert (result.runs_started, result.runs_skipped) == (1, 5)
    assert _versions(root, "regression_shortcut") == ["version_0", "version_1", "version_2"]
    assert _versions(root, "regression_sequential") == ["version_0", "version_1"]
    after = _manifest(root)["runs"]["shortcut/seed_1"]
    assert (after["status"], after["run_dir"]) == ("complete", "regression_shortcut/version_2")
    # The rerun alone in a fresh sweep matches the run that followed five others in one
    # process: nothing leaks from one run into the next.
    for key in ("loss", "val_loss", "test_loss"):
        assert after["metrics"][key] == pytest.approx(before["metrics"][key], rel=1e-5)
    # The report written again replaces the first one in TensorBoard.
    assert len(_board(result, monkeypatch).Images("sweep/loss_curves")) == 1


def test_sweep_resumes_an_interrupted_run_from_its_last_checkpoint(finished, tmp_path):
    root = _copy(finished, tmp_path)
    run_dir = root / "regression_functional" / "version_0"
    status = json.loads((run_dir / "status.json").read_text())
    (run_dir / "status.json").write_text(json.dumps({**status, "status": "interrupted"}))
    _edit_manifest(root, "functional/seed_0", status="interrupted", run_dir=None)

    result = _sweep(root)

    assert (result.runs_started, result.runs_skipped) == (1, 5)
    assert _versions(root, "regression_functional") == ["version_0", "version_1"]
    entry = _manifest(root)["runs"]["functional/seed_0"]
    assert (entry["status"], entry["run_dir"]) == ("complete", "regression_functional/version_0")
    saved = OmegaConf.load(run_dir / "config.yaml")
    assert saved.trainer.ckpt_path == str(run_dir / "checkpoints" / "last.ckpt")


def test_sweep_reruns_a_finished_run_whose_config_changed(finished, tmp_path):
    root = _copy(finished, tmp_path)
    _edit_manifest(root, "sequential/seed_0", fingerprint="0" * 16)

    result = _sweep(root)

    assert (result.runs_started, result.runs_skipped) == (1, 5)
    assert len(_versions(root, "regression_sequential")) == 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.max_epoch=2"], "did you mean 'trainer.max_epochs'"),
        (["sweep.seed=2"], "did you mean sweep.seeds"),
        (["sweep.seeds=0"], "sweep.seeds must be a count >= 1"),
        (["sweep.metric=test_r2"], "cannot infer whether 'test_r2'"),
        (["trainer.seed=3"], "set sweep.seeds instead"),
        (["trainer.fast_dev_run=true"], "writes no run folder"),
        (["sweep.max_epochs=2", "trainer.max_epochs=3"], "give the epoch budget once"),
        (["model.hidden1=wide"], "model.hidden1 must be an integer"),
    ],
)
def test_sweep_bad_override_fails_before_any_run(tmp_path, overrides, message):
    root = tmp_path / "runs"
    with pytest.raises(ConfigError, match=message):
        run_sweep("regression_forms", [f"trainer.default_root_dir={root}", *overrides])
    assert not root.exists()


def test_sweep_unknown_name_suggests_the_closest(tmp_path, capsys):
    status = main(["sweep", "regression_form", f"trainer.default_root_dir={tmp_path}"])

    assert status == 2
    assert "did you mean 'regression_forms'?" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epochs=3", r"same trainer.max_epochs; received a: 2, b: 3"),
        ("backend=jax", r"same backend; received a: tensorflow, b: jax"),
    ],
)
def test_sweep_variants_must_share_budget_and_backend(tmp_path, monkeypatch, override, message):
    configs = tmp_path / "configs"
    shutil.copytree(config_dir(), configs)
    (configs / "sweeps" / "uneven.yaml").write_text(
        "sweep:\n"
        "  name: uneven\n"
        "  variants:\n"
        "    - {label: a, recipe: regression_shortcut, overrides: [trainer.max_epochs=2]}\n"
        f"    - {{label: b, recipe: regression_shortcut, overrides: [{override}]}}\n"
    )
    monkeypatch.setenv("KILN_CONFIG_DIR", str(configs))
    root = tmp_path / "runs"

    with pytest.raises(ConfigError, match=message):
        run_sweep("uneven", [f"trainer.default_root_dir={root}"])
    assert not root.exists()


def test_sweep_metric_no_run_reports_stops_after_the_first_run(tmp_path):
    root = tmp_path / "runs"
    with pytest.raises(ConfigError, match="'test_accuracy' is not a metric of sequential/seed_0"):
        _sweep(root, "sweep.metric=test_accuracy", "sweep.seeds=1", "sweep.max_epochs=1")

    assert _versions(root, "regression_sequential") == ["version_0"]
    assert _manifest(root)["runs"]["sequential/seed_0"]["status"] == "complete"
