"""Training throughput of the GTSRB CNN and the regression net, per backend and setting.

Run from the repository root::

    python benchmarks/throughput.py [--quick] [--nets cnn,dense] [--rounds 2] [--skip-torch]

Every row is measured in this one run on the same synthetic data (GTSRB-shaped uint8 images
scaled to [0, 1]; the regression recipe's 1,000 points), each backend and setting in its own
process. A run's figure is the median over its epochs after the first (which holds tracing and
compilation); the rounds interleave all settings and a row shows its best round, so that a
busy spell on a shared machine weighs on every row alike. The CNN rows also give the FLOPs per
training image and the share of this machine's float32 matmul peak (the best of a 2048x2048
NumPy and TensorFlow matmul) they reach. The PyTorch rows train the same nets with a plain
PyTorch loop (``torch_reference.py``), the reference a user would otherwise pick, with its
default thread count and with one thread; ``x torch`` compares with the default one.
"""

from __future__ import annotations

import argparse
import os
import platform
from typing import Any

from common import (
    CNN_BATCH,
    DENSE_BATCH,
    bench_recipe,
    build_cnn,
    build_dense,
    cnn_data,
    dense_data,
    emit,
    keras_clock,
    kiln_clock,
    load_note,
    matmul_peak_gflops,
    median,
    pipeline,
    print_table,
    run_worker,
    shuffled_kiln_batches,
    training_flops,
)

# key: (label, backend, worker arguments, extra environment). Without --input a row feeds
# Kiln's input path for in-memory data (tf.data under TensorFlow, NumPy batches under JAX).
SETTINGS: dict[str, tuple[str, str, list[str], dict[str, str]]] = {
    "tf-kiln": ("tf: Kiln defaults (Trainer.fit)", "tensorflow", ["--trainer"], {}),
    "tf-plain": ("tf: Model.fit, Kiln's settings", "tensorflow", [], {}),
    "tf-keras": (
        "tf: Model.fit, Keras's defaults, tf.data",
        "tensorflow",
        ["--jit", "auto", "--spe", "1", "--keras-auto", "--input", "slices"],
        {},
    ),
    "tf-xla": ("tf: XLA (jit_compile true)", "tensorflow", ["--jit", "true"], {}),
    "tf-numpy": ("tf: NumPy arrays, not tf.data", "tensorflow", ["--input", "numpy"], {}),
    "tf-noonednn": ("tf: oneDNN off", "tensorflow", [], {"TF_ENABLE_ONEDNN_OPTS": "0"}),
    "tf-inter1": ("tf: 1 inter-op thread", "tensorflow", ["--inter", "1"], {}),
    "tf-bf16": ("tf: bf16-mixed", "tensorflow", ["--precision", "bf16-mixed"], {}),
    "jax-kiln": ("jax: Kiln defaults (Trainer.fit)", "jax", ["--trainer"], {}),
    "jax-plain": ("jax: Model.fit, Kiln's settings", "jax", [], {}),
    "jax-tfdata": ("jax: Model.fit, tf.data input", "jax", ["--input", "slices"], {}),
    "jax-keras": (
        "jax: Model.fit, Keras's defaults, NumPy",
        "jax",
        ["--spe", "1", "--keras-auto", "--input", "numpy"],
        {},
    ),
    "jax-onednn": ("jax: XLA with oneDNN", "jax", [], {"XLA_FLAGS": "--xla_cpu_use_onednn=true"}),
    "jax-bf16": ("jax: bf16-mixed", "jax", ["--precision", "bf16-mixed"], {}),
}
# What each net's table shows by default (--settings picks others).
DEFAULT_SETTINGS = {
    "cnn": (
        "tf-kiln", "tf-plain", "tf-keras", "tf-xla", "tf-numpy", "tf-noonednn", "tf-bf16",
        "jax-kiln", "jax-plain", "jax-keras",
    ),
    "dense": (
        "tf-kiln", "tf-plain", "tf-keras", "jax-kiln", "jax-plain", "jax-tfdata", "jax-keras",
    ),
}  # fmt: skip
QUICK = ("tf-kiln", "tf-keras", "jax-kiln")
SIZES = {"cnn": (3840, 4), "dense": (1000, 12)}  # samples, epochs (the first one untimed)


# ---------------------------------------------------------------------------------- a worker
def _worker(args: argparse.Namespace) -> None:
    from framework import backend

    backend.select_backend(args.backend)
    import keras

    if args.intra or args.inter:
        import tensorflow as tf

        if args.intra:
            tf.config.threading.set_intra_op_parallelism_threads(args.intra)
        if args.inter:
            tf.config.threading.set_inter_op_parallelism_threads(args.inter)

    count, epochs = SIZES[args.net]
    count = args.count or count
    epochs = args.epochs or epochs
    x, y = cnn_data(count) if args.net == "cnn" else dense_data(count)
    batch = CNN_BATCH if args.net == "cnn" else DENSE_BATCH
    jit = _flag(args.jit)
    spe = args.spe if args.spe == "auto" else int(args.spe)

    if args.trainer:
        from framework.trainer import Trainer

        marks, clock = kiln_clock()
        trainer = Trainer(
            logger=False,
            callbacks=[marks],
            max_epochs=epochs,
            jit_compile=jit,
            steps_per_execution=spe,
            precision=args.precision,
            enable_progress_bar=False,
            enable_checkpointing=False,
        )
        trainer.fit(bench_recipe(args.net, x, y))
        model = trainer.model
    else:
        keras.utils.set_random_seed(0)
        backend.set_precision(args.precision)
        model, optimizer, loss = build_cnn() if args.net == "cnn" else build_dense()
        # What Trainer.fit would pick for this data, unless Keras's own defaults are asked for.
        steps = backend.resolve_steps_per_execution(spe, -(-count // batch))
        model.compile(
            optimizer,
            loss,
            jit_compile=jit if args.keras_auto else backend.resolve_jit_compile(jit),
            steps_per_execution=steps,
        )
        callback, clock = keras_clock()
        if args.input == "numpy":
            model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, callbacks=[callback])
        elif args.input == "kiln":
            data, reshuffle = shuffled_kiln_batches(x, y, batch)
            model.fit(data, epochs=epochs, verbose=0, callbacks=[reshuffle, callback])
        else:
            data = pipeline(x, y, batch, shuffle=True, kind=args.input)
            model.fit(data, epochs=epochs, verbose=0, callbacks=[callback])
    seconds = clock.durations(skip=0)
    first = seconds[0]
    steady = median(seconds[1:])
    steps = -(-count // batch)
    emit(
        {
            "backend": args.backend,
            "net": args.net,
            "jit_compile": model.jit_compile,
            "steps_per_execution": model.steps_per_execution,
            "params": model.count_params(),
            "flops": training_flops(model),
            "first_epoch_s": first,
            "images_per_s": count / steady,
            "steps_per_s": steps / steady,
        }
    )


def _flag(text: str) -> bool | str:
    return {"true": True, "false": False}.get(text, text)


def _torch_worker(args: argparse.Namespace) -> None:
    from torch_reference import train_torch

    count, epochs = SIZES[args.net]
    emit(train_torch(args.net, args.count or count, args.epochs or epochs, args.torch_threads))


# ---------------------------------------------------------------------------------- the table
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="tensorflow")
    parser.add_argument("--net", default="cnn")
    parser.add_argument("--jit", default="auto")
    parser.add_argument("--spe", default="auto")
    parser.add_argument("--input", default="kiln", choices=("kiln", "slices", "gather", "numpy"))
    parser.add_argument("--precision", default="32")
    parser.add_argument("--intra", type=int, default=0)
    parser.add_argument("--inter", type=int, default=0)
    parser.add_argument("--trainer", action="store_true")
    parser.add_argument("--keras-auto", action="store_true")
    parser.add_argument("--torch", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=0)
    parser.add_argument("--nets", default="cnn,dense")
    parser.add_argument("--settings", default="", help=f"comma-separated: {', '.join(SETTINGS)}")
    parser.add_argument("--quick", action="store_true", help="only the main settings")
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--torch-threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        (_torch_worker if args.torch else _worker)(args)
        return

    from torch_reference import torch_available

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    print(f"{platform.processor() or platform.machine()}; {load_note()}")
    peaks = matmul_peak_gflops()
    peak = max(peaks.values())
    print("float32 matmul peak: " + ", ".join(f"{k} {v:,.1f} GFLOP/s" for k, v in peaks.items()))
    chosen = [n for n in args.settings.split(",") if n]
    for net in args.nets.split(","):
        names = chosen or list(QUICK if args.quick else DEFAULT_SETTINGS[net])
        runs: dict[str, list[dict]] = {}
        with_torch = not args.skip_torch and torch_available()
        if not args.skip_torch and not with_torch:
            print("PyTorch is not installed: no reference rows (pip install torch).")
        # Rounds interleave the settings, so that a busy spell weighs on all of them.
        for _ in range(args.rounds):
            if with_torch:
                for threads in ("0", "1"):
                    command = ["--torch", "--net", net, "--torch-threads", threads]
                    runs.setdefault(f"torch-{threads}", []).extend(
                        run_worker("throughput.py", command)
                    )
            for name in names:
                _, backend, extra, env = SETTINGS[name]
                command = ["--backend", backend, "--net", net, *extra]
                try:
                    runs.setdefault(name, []).extend(run_worker("throughput.py", command, env))
                except RuntimeError as error:
                    print(f"{name}: failed ({str(error).splitlines()[-1]})")
        best = {name: max(found, key=lambda r: r["images_per_s"]) for name, found in runs.items()}
        reference = best.get("torch-0")
        flops = next((r["flops"] for r in best.values() if "flops" in r), 0)
        rows = []
        for name, result in best.items():
            if name.startswith("torch-"):
                threads = "default" if name == "torch-0" else "1"
                name = f"pytorch {result['version']} loop, {threads} threads"
                result = {**result, "flops": flops}
            else:
                name = SETTINGS[name][0]
            rows.append(_row(name, result, peak, reference))
        columns = ["setting", "jit", "spe", "first epoch s", "images/s", "steps/s", "x torch"]
        if net == "cnn":
            columns += ["GFLOP/s", "% of peak"]
        table = [row[:-1] if net == "cnn" else row[:-3] for row in rows]
        batch = CNN_BATCH if net == "cnn" else DENSE_BATCH
        title = f"{net} (batch {batch}; best of {args.rounds} interleaved rounds)"
        print_table(title, columns, table)
        if net == "cnn":
            print(f"training FLOPs per image: {flops / 1e6:.1f} M (multiply-adds x2)")
    print(f"\nafter the run: {load_note()}")


def _row(name: str, result: dict, peak: float, reference: dict | None) -> list[Any]:
    gflops = result["images_per_s"] * result.get("flops", 0) / 1e9
    ratio = result["steps_per_s"] / reference["steps_per_s"] if reference else float("nan")
    return [
        name,
        result.get("jit_compile", "-"),
        result.get("steps_per_execution", "-"),
        result["first_epoch_s"],
        result["images_per_s"],
        result["steps_per_s"],
        ratio,
        gflops,
        100.0 * gflops / peak,
        result.get("flops", 0),
    ]


if __name__ == "__main__":
    main()
