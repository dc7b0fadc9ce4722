"""The kiln command: light commands import no TensorFlow/JAX; run writes a readable run folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from framework.cli import main

_PROBE = """
import sys
from framework.cli import main
try:
    main({args!r})
except SystemExit:
    pass
heavy = sorted(m for m in ("tensorflow", "jax", "keras") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""


def _probe(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _PROBE.format(args=args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("args", [["--help"], ["list"], ["run", "--help"]])
def test_cli_light_commands_import_no_backend(args: list[str]) -> None:
    result = _probe(args)
    assert "HEAVY=\n" in result.stdout, result.stdout + result.stderr


def test_cli_list_shows_every_recipe_with_description(capsys) -> None:  # noqa: ANN001
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    assert {
        "regression_sequential",
        "regression_functional",
        "regression_shortcut",
        "gtsrb_cnn",
        "gtsrb_bn",
        "modes",
    } <= set(names)
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)


def test_cli_print_config_shows_overrides(capsys) -> None:  # noqa: ANN001
    code = main(
        ["run", "regression_shortcut", "trainer.max_epochs=4", "backend=jax", "--print-config"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "max_epochs: 4" in out
    assert "backend: jax" in out


def test_cli_typo_suggests_key_before_training(capsys, tmp_path: Path) -> None:  # noqa: ANN001
    code = main(
        [
            "run",
            "regression_shortcut",
            "trainer.max_epoch=3",
            f"trainer.default_root_dir={tmp_path}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "did you mean 'trainer.max_epochs'" in err
    assert list(tmp_path.iterdir()) == []


def test_cli_summary_counts_regression_parameters(capsys) -> None:  # noqa: ANN001
    assert main(["summary", "regression_shortcut"]) == 0
    out = capsys.readouterr().out
    assert "2,242" in out  # 128 + 2,080 + 34
    assert "shortcut" in out


def test_cli_run_twice_writes_versions_with_events(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = [
        "run",
        "regression_shortcut",
        "trainer.max_epochs=3",
        f"trainer.default_root_dir={tmp_path}",
        "trainer.enable_progress_bar=false",
    ]
    assert main(args) == 0
    assert main(args) == 0
    out = capsys.readouterr().out
    run0 = tmp_path / "regression_shortcut" / "version_0"
    run1 = tmp_path / "regression_shortcut" / "version_1"
    assert f"run written to {run0}" in out
    assert f"run written to {run1}" in out
    assert (run0 / "config.yaml").is_file()
    assert (run0 / "checkpoints" / "last.ckpt").is_file()

    events = EventAccumulator(str(run0))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "val/loss", "test/loss", "lr-Adam"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [32, 64, 96]
