"""What the speed benchmarks share: the two nets, synthetic data, FLOP counts, the machine's
matmul peak, timing callbacks, one subprocess per backend, and table printing.

Keras fixes its backend at import, so a benchmark script runs each backend (and each setting
that lives in an environment variable) in a fresh ``python benchmarks/<script>.py --worker``
process that prints one JSON line; the parent collects those lines into a table.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

__all__ = [
    "CNN_BATCH",
    "DENSE_BATCH",
    "EpochClock",
    "REPO_ROOT",
    "bench_recipe",
    "build_cnn",
    "build_dense",
    "cnn_data",
    "dense_data",
    "keras_clock",
    "kiln_batches",
    "kiln_clock",
    "load_note",
    "matmul_peak_gflops",
    "pipeline",
    "print_table",
    "run_worker",
    "shuffled_kiln_batches",
    "training_flops",
]

CNN_BATCH = 128
DENSE_BATCH = 32
_RESULT_TAG = "BENCH-RESULT "


# ------------------------------------------------------------------------------------ the data
def cnn_data(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """GTSRB-shaped images (uint8 pixels scaled to [0, 1], 28x28x3, NHWC) and 43 labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, 28, 28, 3), dtype=np.uint8)
    return (images.astype(np.float32) / 255.0), rng.integers(0, 43, count).astype(np.int32)


def dense_data(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The regression recipe's target, ``sin(3x) + 0.3x`` plus noise, on ``x`` in [-2, 2]."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2.0, 2.0, size=(count, 1)).astype(np.float32)
    y = np.sin(3.0 * x) + 0.3 * x + rng.normal(0.0, 0.1, size=(count, 1))
    return x, y.astype(np.float32)


def pipeline(
    x: np.ndarray, y: np.ndarray, batch: int, shuffle: bool, seed: int = 0, kind: str = "slices"
) -> Any:
    """A tf.data input path over arrays held in memory, shuffled each epoch, prefetching.

    ``slices`` is the usual pipeline (one element per example: shuffle, then batch); ``gather``
    shuffles and batches indices and gathers each batch with one op.
    """
    import tensorflow as tf

    if kind == "gather":
        images, labels = tf.constant(x), tf.constant(y)
        dataset = tf.data.Dataset.range(len(x))
        if shuffle:
            dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(batch).map(
            lambda index: (tf.gather(images, index), tf.gather(labels, index))
        )
        return dataset.prefetch(tf.data.AUTOTUNE)
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch).prefetch(tf.data.AUTOTUNE)


# ------------------------------------------------------------------------------------ the nets
def build_cnn() -> Any:
    """The GTSRB CNN of ``recipes.gtsrb.models`` (97,771 parameters), with its optimizer."""
    import keras

    from recipes.gtsrb.models import build_cnn as build

    return build(), keras.optimizers.Adam(1e-3, epsilon=0.1), "sparse_categorical_crossentropy"


def build_dense() -> Any:
    """The regression recipe's net: Dense 64 sigmoid, Dense 32 sigmoid, Dense 1; Adam 0.01."""
    import keras

    model = keras.Sequential(
        [
            keras.Input(shape=(1,)),
            keras.layers.Dense(64, activation="sigmoid"),
            keras.layers.Dense(32, activation="sigmoid"),
            keras.layers.Dense(1),
        ]
    )
    return model, keras.optimizers.Adam(0.01), "mse"


def kiln_batches(
    x: np.ndarray, y: np.ndarray, batch: int, shuffler: Any = None, input: str = "auto"
) -> Any:
    """Kiln's input path for in-memory data (``framework.data.arrays.array_batches``): with
    ``input=auto``, ``tf.data`` under TensorFlow and a NumPy ``PyDataset`` under JAX, shuffled
    each epoch by ``shuffler`` (an ``EpochShuffle``) when one is given."""
    from framework.data.arrays import array_batches

    return array_batches((x, y), batch, shuffler, input=input)


def shuffled_kiln_batches(x: np.ndarray, y: np.ndarray, batch: int) -> tuple[Any, Any]:
    """Shuffled ``kiln_batches`` for a plain ``Model.fit``, and the Keras callback that moves
    their order to each new epoch (what ``Trainer.fit`` does through ``DataModule.set_epoch``)."""
    import keras

    from framework.data.shuffle import EpochShuffle

    shuffler = EpochShuffle(0)
    reshuffle = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, _: shuffler.set_epoch(epoch)
    )
    return kiln_batches(x, y, batch, shuffler), reshuffle


def bench_recipe(net: str, x: np.ndarray, y: np.ndarray, val: tuple | None = None) -> Any:
    """A Kiln recipe training ``net`` ('cnn' or 'dense') on these arrays (``kiln_batches``)."""
    from omegaconf import OmegaConf

    from framework.data.datamodule import DataModule
    from framework.data.shuffle import EpochShuffle
    from framework.recipe import Recipe

    batch = CNN_BATCH if net == "cnn" else DENSE_BATCH

    class Data(DataModule):
        def __init__(self) -> None:
            self.shuffler = EpochShuffle(0)

        def set_epoch(self, epoch: int) -> None:
            self.shuffler.set_epoch(epoch)

        def train_dataloader(self) -> Any:
            return kiln_batches(x, y, batch, self.shuffler)

        def val_dataloader(self) -> Any:
            return None if val is None else kiln_batches(*val, batch)

    class Bench(Recipe):
        def __init__(self) -> None:
            super().__init__(OmegaConf.create({"recipe": f"bench_{net}"}))
            self._parts: Any = None

        def configure_model(self) -> Any:
            self._parts = build_cnn() if net == "cnn" else build_dense()
            return self._parts[0]

        def configure_optimizers(self) -> Any:
            return self._parts[1]

        def configure_loss(self) -> Any:
            return self._parts[2]

        def configure_datamodule(self) -> DataModule:
            return Data()

    return Bench()


def training_flops(model: Any) -> int:
    """Multiply-add FLOPs (2 per MAC) of one training image through ``model``'s convolutions
    and dense layers: the forward pass, the weight gradients, and the input gradients of every
    layer but the first. Activations, pooling, the loss and the optimizer are left out."""
    import keras

    macs = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            out = layer.output.shape
            macs.append(out[1] * out[2] * out[3] * kh * kw * layer.input.shape[-1])
        elif isinstance(layer, keras.layers.Dense):
            macs.append(int(np.prod(layer.kernel.shape)))
    return 2 * (3 * sum(macs) - macs[0])


# -------------------------------------------------------------------------------- the machine
def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """The best float32 GFLOP/s of a ``size``x``size`` matmul with NumPy (and TensorFlow)."""
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
    flops = 2.0 * size**3
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    peaks = {"numpy": flops / best / 1e9}
    try:
        import tensorflow as tf
    except ImportError:
        return peaks
    ta, tb = tf.constant(a), tf.constant(b)
    tf.linalg.matmul(ta, tb).numpy()
    best = min(_timed(lambda: tf.linalg.matmul(ta, tb).numpy()) for _ in range(repeats))
    peaks["tensorflow"] = flops / best / 1e9
    return peaks


def _timed(work: Callable[[], Any]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def load_note() -> str:
    """The 1-minute load average against the cores: benchmarks on a busy machine mislead."""
    load = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    note = f"load average {load:.1f} on {cores} cores"
    if load > 0.5 * cores:
        note += " (busy: other processes share the cores, figures are noisy)"
    return note


# -------------------------------------------------------------------------------------- timing
class EpochClock:
    """Wall and CPU time at each epoch's start and at the end of training.

    CPU time (of this process, all threads) measures the work done; unlike wall time it hardly
    moves when other processes share the cores, which makes it the steadier figure for an
    overhead on a busy machine.
    """

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def mark(self, *args: Any, **kwargs: Any) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def durations(self, skip: int = 1, cpu: bool = False) -> list[float]:
        """Durations of each epoch after the first ``skip`` (which hold compilation)."""
        return np.diff(self.cpu if cpu else self.wall).tolist()[skip:]


def keras_clock() -> tuple[Any, EpochClock]:
    """A Keras callback that marks each epoch start and the end of ``fit``."""
    import keras

    clock = EpochClock()
    callback = keras.callbacks.LambdaCallback(on_epoch_begin=clock.mark, on_train_end=clock.mark)
    return callback, clock


def kiln_clock() -> tuple[Any, EpochClock]:
    """The same clock as a Kiln callback (for ``Trainer.fit``)."""
    from framework.callbacks.base import Callback

    clock = EpochClock()

    class Marks(Callback):
        def on_train_epoch_start(self, trainer: Any) -> None:
            clock.mark()

        def on_fit_end(self, trainer: Any) -> None:
            clock.mark()

    return Marks(), clock


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


# ------------------------------------------------------------------------------- subprocesses
def emit(result: dict[str, Any]) -> None:
    """Print one worker result for the parent process to collect."""
    print(_RESULT_TAG + json.dumps(result), flush=True)


def run_worker(
    script: str, args: Sequence[str], env: dict[str, str] | None = None, timeout: int = 1800
) -> list[dict[str, Any]]:
    """Run ``benchmarks/<script> --worker ARGS`` in a fresh process; its results, in order."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    environment.pop("KERAS_BACKEND", None)
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / script), "--worker", *args]
    completed = subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=timeout, check=False
    )
    results = [
        json.loads(line[len(_RESULT_TAG) :])
        for line in completed.stdout.splitlines()
        if line.startswith(_RESULT_TAG)
    ]
    if completed.returncode != 0 and not results:
        tail = completed.stderr.strip().splitlines()[-15:]
        raise RuntimeError(f"{' '.join(command)} failed:\n" + "\n".join(tail))
    return results


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain fixed-width table (copies cleanly into Markdown or a log)."""
    cells = [[str(c) for c in columns]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    print(f"\n{title}")
    for index, row in enumerate(cells):
        print("  ".join(text.rjust(width) for text, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)
