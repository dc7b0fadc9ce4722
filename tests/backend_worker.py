"""Runs for ``tests/test_backends.py``: the same code in the test process (TensorFlow) and in a
fresh JAX process, since Keras's backend is fixed once per process.

    python -m tests.backend_worker fit BACKEND ROOT MAX_EPOCHS CKPT|- OUT.npz
    python -m tests.backend_worker export BACKEND OTHER.keras|- OUT_DIR

``fit`` trains the regression recipe (resuming from CKPT when given) and saves the state at
the start of fit (just after a resume) and at its end. ``export`` predicts with a model another
backend exported, then builds, trains and exports its own, with its predictions.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

_NETS = ("regression", "cnn")


def _state(trainer: Any, prefix: str) -> dict[str, np.ndarray]:
    model = trainer.model
    state = {f"{prefix}/global_step": np.array(trainer.global_step)}
    state[f"{prefix}/epochs_completed"] = np.array(trainer.epochs_completed)
    for variable in model.weights:
        state[f"{prefix}/weight/{variable.path}"] = np.array(variable.numpy())
    for variable in model.optimizer.variables:
        # A process that made several optimizers names them adam, adam_1, ...: drop the name.
        name = variable.path.partition("/")[2]
        state[f"{prefix}/optimizer/{name}"] = np.array(variable.numpy())
    return state


def fit_regression(root: str, max_epochs: int, ckpt: str | None) -> dict[str, np.ndarray]:
    """Train ``regression_sequential`` as ``kiln run`` would; the state at start and end."""
    from framework.callbacks.base import Callback
    from framework.config import load_config
    from framework.trainer import Trainer
    from recipes.regression import RegressionSequential

    class StartState(Callback):
        state: dict[str, np.ndarray] = {}

        def on_fit_start(self, trainer: Any) -> None:
            self.state = _state(trainer, "start")

    overrides = [
        f"trainer.default_root_dir={root}",
        f"trainer.max_epochs={max_epochs}",
        "trainer.enable_progress_bar=false",
    ]
    if ckpt:
        overrides.append(f"trainer.ckpt_path={ckpt}")
    cfg = load_config("regression_sequential", overrides=overrides)
    start = StartState()
    trainer = Trainer.from_config(cfg, callbacks=[start])
    trainer.fit(RegressionSequential(cfg))
    return {**start.state, **_state(trainer, "end")}


def probe_inputs(net: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    if net == "cnn":
        return rng.uniform(0.0, 1.0, size=(16, 28, 28, 3)).astype(np.float32)
    return rng.uniform(-2.0, 2.0, size=(64, 1)).astype(np.float32)


def build_and_train(net: str) -> Any:
    """A compiled model of ``net``, trained for a few steps so that no weight is at its init."""
    import keras

    keras.utils.set_random_seed(3)
    if net == "cnn":
        from recipes.gtsrb.models import build_cnn

        model = build_cnn()
        labels = np.arange(32) % 43
        model.compile(keras.optimizers.Adam(1e-3, epsilon=0.1), "sparse_categorical_crossentropy")
    else:
        from framework.config import load_config
        from recipes.regression import RegressionShortcut

        model = RegressionShortcut(load_config("regression_shortcut")).configure_model()
        labels = np.linspace(-1.0, 1.0, 32, dtype=np.float32)[:, None]
        model.compile(keras.optimizers.Adam(0.01), "mse")
    inputs = np.concatenate([probe_inputs(net)] * 4)[:32]
    model.fit(inputs, labels, batch_size=8, epochs=1, verbose=0)
    return model


def export_round_trip(other: str | None, out: str) -> None:
    """Predict with the other backend's exports, then export this backend's own."""
    from framework.export import export_model, load_model

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    results = {}
    for net in _NETS:
        if other:
            loaded = load_model(Path(other) / f"{net}.keras")
            results[f"loaded/{net}"] = np.asarray(loaded.predict(probe_inputs(net), verbose=0))
        model = build_and_train(net)
        export_model(model, folder / f"{net}.keras")
        results[f"own/{net}"] = np.asarray(model.predict(probe_inputs(net), verbose=0))
    np.savez(folder / "predictions.npz", **results)


def main(argv: list[str]) -> None:
    from framework.backend import select_backend

    command, backend = argv[0], argv[1]
    select_backend(backend)
    if command == "fit":
        root, max_epochs, ckpt, out = argv[2], int(argv[3]), argv[4], argv[5]
        np.savez(out, **fit_regression(root, max_epochs, None if ckpt == "-" else ckpt))
    elif command == "export":
        export_round_trip(None if argv[2] == "-" else argv[2], argv[3])
    else:
        raise SystemExit(f"unknown command {command!r}; known: fit, export")


if __name__ == "__main__":
    main(sys.argv[1:])
