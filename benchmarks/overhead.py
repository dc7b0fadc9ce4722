"""What ``Trainer.fit`` costs over a plain ``keras.Model.fit`` with the same model and data.

Run from the repository root::

    python benchmarks/overhead.py [--nets cnn,dense] [--backends tensorflow,jax] [--rounds 5]

Per backend (each in its own process) and net, the same model, data (GTSRB-shaped images, or
the regression recipe's 1,000 points, with a validation split), jit and steps-per-execution
settings (Kiln's defaults, resolved once and given to both) are trained by

* ``Model.fit`` with ``verbose=0``;
* ``Trainer.fit`` with nothing written (no loggers, no checkpoints, no progress bar): the cost
  of the trainer itself, the figure the target (at most 3% over Model.fit) is about;
* ``Trainer.fit`` as ``kiln run`` configures it by default (TensorBoard and CSV loggers, a
  checkpoint per epoch, the learning-rate monitor), for what a default run pays for its files.

The three alternate over several rounds, in a changing order, so that a busy machine weighs
on all of them alike. Epoch times leave out each fit's first epoch (tracing, compilation). The
ratios compare the fastest epoch of each kind (on a machine shared with other work, the
fastest is the one least disturbed) and, beside it, the medians. ``Kiln hooks`` is the time
spent inside the bridge from Keras's callbacks to Kiln's (every hook, logger and callback of
the trainer, timed in process), per epoch and as a share of the epoch: the trainer's own
cost, measured directly rather than as the difference of two noisy figures.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

from common import (
    CNN_BATCH,
    DENSE_BATCH,
    REPO_ROOT,
    EpochClock,
    bench_recipe,
    build_cnn,
    build_dense,
    cnn_data,
    dense_data,
    emit,
    keras_clock,
    kiln_batches,
    kiln_clock,
    load_note,
    median,
    print_table,
    run_worker,
    shuffled_kiln_batches,
)

SIZES = {"cnn": (3840, 384, 4), "dense": (1000, 200, 12)}  # train, validation, epochs
BRIDGE_HOOKS = (
    "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_train_batch_begin",
    "on_train_batch_end", "on_test_begin", "on_test_end",
)  # fmt: skip


def _time_bridge() -> list[float]:
    """Wrap every hook of Kiln's Keras bridge in a timer; the running total, in seconds."""
    from framework.trainer import _KerasBridge

    spent = [0.0]
    for name in BRIDGE_HOOKS:
        original = getattr(_KerasBridge, name)

        def timed(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return _original(self, *args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - started

        setattr(_KerasBridge, name, timed)
    return spent


KINDS = ("plain", "trainer", "trainer+files")


def _plain(net: str, data: tuple, epochs: int, settings: tuple) -> EpochClock:
    import keras

    keras.utils.set_random_seed(0)
    model, optimizer, loss = build_cnn() if net == "cnn" else build_dense()
    model.compile(optimizer, loss, jit_compile=settings[0], steps_per_execution=settings[1])
    callback, clock = keras_clock()
    x, y, vx, vy, batch = data
    train, reshuffle = shuffled_kiln_batches(x, y, batch)
    model.fit(
        train,
        validation_data=kiln_batches(vx, vy, batch),
        epochs=epochs,
        verbose=0,
        callbacks=[reshuffle, callback],
    )
    return clock


def _trainer(net: str, data: tuple, epochs: int, files: bool, root: str) -> EpochClock:
    from omegaconf import OmegaConf

    from framework.callbacks import default_callbacks
    from framework.trainer import Trainer

    marks, clock = kiln_clock()
    cfg = OmegaConf.load(REPO_ROOT / "configs" / "defaults.yaml")
    cfg.trainer.update(max_epochs=epochs, enable_progress_bar=False, default_root_dir=root)
    cfg.trainer.enable_checkpointing = files
    callbacks = [marks, *default_callbacks(cfg)] if files else [marks]
    flags = OmegaConf.to_container(cfg.trainer)
    trainer = Trainer(logger=files, callbacks=callbacks, name=f"bench_{net}", **flags)
    x, y, vx, vy, _ = data
    trainer.fit(bench_recipe(net, x, y, val=(vx, vy)))
    return clock


def _worker(args: argparse.Namespace) -> None:
    from framework import backend

    backend.select_backend(args.backend)
    from framework.trainer import TrainerConfig

    defaults = TrainerConfig()
    count, val_count, epochs = SIZES[args.net]
    batch = CNN_BATCH if args.net == "cnn" else DENSE_BATCH
    steps = -(-count // batch)
    # What Trainer.fit resolves for this data, given to Model.fit too.
    settings = (
        backend.resolve_jit_compile(defaults.jit_compile),
        backend.resolve_steps_per_execution(defaults.steps_per_execution, steps),
    )
    make = cnn_data if args.net == "cnn" else dense_data
    x, y = make(count, seed=0)
    vx, vy = make(val_count, seed=1)
    data = (x, y, vx, vy, batch)

    wall: dict[str, list[float]] = {kind: [] for kind in KINDS}
    cpu: dict[str, list[float]] = {kind: [] for kind in KINDS}
    hooks = _time_bridge()
    hook_total, hook_epochs = 0.0, 0
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as root:
        for round_index in range(args.rounds):
            shift = round_index % len(KINDS)
            for kind in KINDS[shift:] + KINDS[:shift]:
                if kind == "plain":
                    clock = _plain(args.net, data, epochs, settings)
                elif kind == "trainer":
                    before = hooks[0]
                    clock = _trainer(args.net, data, epochs, False, root)
                    hook_total += hooks[0] - before
                    hook_epochs += epochs
                else:
                    clock = _trainer(args.net, data, epochs, True, root)
                wall[kind] += clock.durations()
                cpu[kind] += clock.durations(cpu=True)
    emit(
        {
            "backend": args.backend,
            "net": args.net,
            "jit_compile": settings[0],
            "steps_per_execution": settings[1],
            "images": count,
            "steps": steps,
            **{f"{kind}_s": median(values) for kind, values in wall.items()},
            **{f"{kind}_best_s": min(values) for kind, values in wall.items()},
            **{f"{kind}_cpu_s": median(values) for kind, values in cpu.items()},
            "hooks_s": hook_total / max(1, hook_epochs),
        }
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="tensorflow")
    parser.add_argument("--net", default="cnn")
    parser.add_argument("--nets", default="cnn,dense")
    parser.add_argument("--backends", default="tensorflow,jax")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args)
        return

    print(load_note())
    rows = []
    for net in args.nets.split(","):
        for name in args.backends.split(","):
            command = ["--backend", name, "--net", net, "--rounds", str(args.rounds)]
            result = run_worker("overhead.py", command)[0]
            best, plain = result["plain_best_s"], result["plain_s"]
            rows.append(
                [
                    net,
                    name,
                    result["jit_compile"],
                    result["steps_per_execution"],
                    result["images"] / best,
                    result["images"] / result["trainer_best_s"],
                    result["trainer_best_s"] / best,
                    result["trainer_s"] / plain,
                    1e3 * result["hooks_s"],
                    100.0 * result["hooks_s"] / result["trainer_best_s"],
                    result["trainer+files_best_s"] / best,
                    result["trainer+files_s"] / plain,
                ]
            )
    columns = [
        "net", "backend", "jit", "spe", "Model.fit img/s", "Trainer img/s", "ratio",
        "median ratio", "Kiln hooks ms/epoch", "hooks % of epoch", "with files ratio",
        "median ratio",
    ]  # fmt: skip
    title = (
        f"Trainer.fit / Model.fit, epoch time (train + validation), fastest of "
        f"{args.rounds} rounds; img/s from the fastest epochs"
    )
    print_table(title, columns, rows)
    print(f"\nafter the run: {load_note()}")


if __name__ == "__main__":
    main()
