"""The ``kiln`` command: list, run, resume, summary, sweep, data prepare, board.

Parsing, config loading and validation import no Keras, TensorFlow or JAX: the backend named
in the config is selected first and only then is anything heavy imported.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from framework import registry
from framework.config import ConfigError, load_config

logger = logging.getLogger(__name__)

__all__ = ["main"]

# Errors a user can act on: printed as one message, without a traceback.
_USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    KeyError,
    FileNotFoundError,
    ValueError,
)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("absl", "jax._src", "tensorflow", "h5py", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiln",
        description="Train and compare Keras 3 recipes on TensorFlow or JAX.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("list", help="list the recipes with a one-line description each")

    run = sub.add_parser("run", help="train, validate and test a recipe")
    run.add_argument("recipe", help="recipe name (see `kiln list`)")
    run.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    run.add_argument("--config", metavar="FILE", help="a YAML file merged over the recipe")
    run.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )

    resume = sub.add_parser("resume", help="continue a run folder from its last checkpoint")
    resume.add_argument("run_dir", help="a run folder, e.g. runs/gtsrb_bn/version_0")
    resume.add_argument("overrides", nargs="*", metavar="key=value")

    summary = sub.add_parser("summary", help="layers, output shapes and parameter counts")
    summary.add_argument("recipe")
    summary.add_argument("overrides", nargs="*", metavar="key=value")
    summary.add_argument("--config", metavar="FILE")

    sweep = sub.add_parser("sweep", help="run a named sweep over variants and seeds")
    sweep.add_argument("name", help="sweep name (configs/sweeps/<name>.yaml)")
    sweep.add_argument("overrides", nargs="*", metavar="key=value")

    data = sub.add_parser("data", help="dataset commands")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    prepare = data_sub.add_parser("prepare", help="read, check and cache a dataset")
    prepare.add_argument("dataset", help="dataset name, e.g. gtsrb")
    prepare.add_argument("--source", help="a folder or base URL holding the archives")
    prepare.add_argument("--root", help="the data root the cache is written under")
    prepare.add_argument("--crop-roi", action="store_true", help="crop the region of interest")

    board = sub.add_parser("board", help="start TensorBoard on the runs folder")
    board.add_argument("logdir", nargs="?", default="runs")
    board.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    board.add_argument("--port", type=int, default=6006)
    return parser


def _cmd_list(args: argparse.Namespace) -> int:
    entries = registry.recipe_entries()
    width = max(len(e.name) for e in entries)
    for entry in entries:
        print(f"{entry.name:<{width}}  {entry.description}")
    return 0


def _print_metrics(title: str, metrics: dict[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in sorted(metrics):
        table.add_row(key, f"{metrics[key]:.6g}")
    Console().print(table)


def _train(cfg: Any) -> int:
    ckpt_path = cfg.trainer.ckpt_path
    if ckpt_path not in (None, "last", "best"):
        # A missing or corrupt checkpoint file is reported before Keras loads, not after.
        from framework.resume import resolve_ckpt_path

        resolve_ckpt_path(ckpt_path, Path(cfg.trainer.default_root_dir), str(cfg.recipe))
    from framework.run import run_recipe

    result = run_recipe(cfg)
    if result.custom:
        return 0  # the recipe printed its own report
    if result.log_dir is not None:
        print(f"run written to {result.log_dir}")
    else:
        print("fast_dev_run: nothing was written")
    _print_metrics(f"{cfg.recipe}: final metrics", result.metrics)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.recipe, args.config, args.overrides)
    if args.print_config:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(cfg), end="")
        return 0
    return _train(cfg)


def _cmd_resume(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from framework.config import validate
    from framework.resume import last_checkpoint

    run_dir = Path(args.run_dir)
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise FileNotFoundError(f"{run_dir} has no config.yaml; is it a Kiln run folder?")
    try:
        recipe = str(OmegaConf.load(saved).recipe)
    except Exception as error:  # yaml and omegaconf raise many types for a malformed file
        raise ConfigError(f"{saved} is not a readable run config: {error}") from error
    ckpt = last_checkpoint(run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir} holds no loadable checkpoint to resume from")
    cfg = load_config(recipe, saved, args.overrides)
    # The same folder wherever the command runs (the saved root may be a relative path).
    cfg.trainer.default_root_dir = str(run_dir.resolve().parent.parent)
    cfg.trainer.ckpt_path = str(ckpt)
    validate(cfg)
    return _train(cfg)


def _cmd_summary(args: argparse.Namespace) -> int:
    cfg = load_config(args.recipe, args.config, args.overrides)
    from framework.run import instantiate_recipe
    from framework.summary import print_summary

    recipe = instantiate_recipe(cfg)

    print_summary(recipe.configure_model())
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from framework.sweep import run_sweep

    run_sweep(args.name, args.overrides)
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    entry = registry.get_dataset(args.dataset)
    prepare = registry.resolve(entry)
    summary = prepare(source=args.source, root=args.root, crop_roi=args.crop_roi)
    for key, value in summary.items():
        print(f"{key}: {value}")
    return 0


def _cmd_board(args: argparse.Namespace) -> int:
    from framework.board import serve

    logdir = Path(args.logdir)
    if not logdir.exists():
        raise FileNotFoundError(f"no runs folder at {str(logdir)!r}; run a recipe first")
    url = serve(str(logdir), host=args.host, port=args.port)
    print(f"TensorBoard at {url} (Ctrl-C to stop)", flush=True)
    try:
        import time

        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


_COMMANDS = {
    "list": _cmd_list,
    "run": _cmd_run,
    "resume": _cmd_resume,
    "summary": _cmd_summary,
    "sweep": _cmd_sweep,
    "data": _cmd_data,
    "board": _cmd_board,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kiln`` console script; returns the exit status."""
    args = _build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt as error:
        # A second Ctrl-C carries no message: nothing new was written, earlier files stay.
        message = (
            str(error) or "interrupted; no new checkpoint was written (earlier ones are kept)"
        )
        print(f"error: {message}", file=sys.stderr)
        return 130
    except _USER_ERRORS as error:
        if args.verbose:
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2
    except Exception as error:
        from framework.backend import BackendError
        from framework.checkpoint import CheckpointError

        known = (BackendError, CheckpointError)
        if isinstance(error, known) or type(error).__name__ == "TrainingFailed":
            print(f"error: {error}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
