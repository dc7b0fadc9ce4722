"""TensorFlow and JAX interchange: checkpoints resume and exported models load across backends.

The test process runs Keras on TensorFlow; the JAX side runs ``tests/backend_worker.py`` in a
fresh process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from framework import backend
from framework.config import ConfigError, load_config
from tests.backend_worker import export_round_trip, fit_regression

REPO = Path(__file__).resolve().parent.parent


def _jax(*args: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "XLA_FLAGS")}
    env.update(CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    completed = subprocess.run(
        [sys.executable, "-m", "tests.backend_worker", args[0], "jax", *args[1:]],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def _section(state: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k.partition("/")[2]: v for k, v in state.items() if k.startswith(prefix + "/")}


def _last(root: Path) -> Path:
    return root / "regression_sequential" / "version_0" / "checkpoints" / "last.ckpt"


def _assert_same_state(resumed: dict, saved: dict) -> None:
    """Weights, optimizer slots and step counters equal, bit for bit."""
    assert sorted(resumed) == sorted(saved)
    assert any(k.startswith("optimizer/") and "momentum" in k for k in saved)
    for key, value in saved.items():
        np.testing.assert_array_equal(resumed[key], value, err_msg=key)


@pytest.mark.slow
@pytest.mark.jax
def test_checkpoint_from_tensorflow_resumes_under_jax(tmp_path: Path) -> None:
    first = fit_regression(str(tmp_path / "tf"), 1, None)
    ckpt = _last(tmp_path / "tf")

    _jax("fit", str(tmp_path / "jax"), "2", str(ckpt), str(tmp_path / "jax.npz"))
    on_jax = _load(tmp_path / "jax.npz")
    on_tf = fit_regression(str(tmp_path / "tf2"), 2, str(ckpt))

    _assert_same_state(_section(on_jax, "start"), _section(first, "end"))
    jax_end, tf_end = _section(on_jax, "end"), _section(on_tf, "end")
    assert int(jax_end["global_step"]) == int(tf_end["global_step"]) == 64
    assert int(jax_end["epochs_completed"]) == 2
    assert int(jax_end["optimizer/iteration"]) == 64
    # The same second epoch on the same data from the same state: only rounding differs.
    for key, value in tf_end.items():
        if key.startswith("weight/"):
            np.testing.assert_allclose(jax_end[key], value, rtol=1e-4, atol=1e-5, err_msg=key)


@pytest.mark.slow
@pytest.mark.jax
def test_checkpoint_from_jax_resumes_under_tensorflow(tmp_path: Path) -> None:
    _jax("fit", str(tmp_path / "jax"), "1", "-", str(tmp_path / "jax.npz"))
    on_jax = _load(tmp_path / "jax.npz")

    on_tf = fit_regression(str(tmp_path / "tf"), 2, str(_last(tmp_path / "jax")))

    _assert_same_state(_section(on_tf, "start"), _section(on_jax, "end"))
    tf_end = _section(on_tf, "end")
    assert int(tf_end["global_step"]) == 64
    assert int(tf_end["optimizer/iteration"]) == 64
    kernel = "weight/regression_sequential/hidden1/kernel"
    assert not np.array_equal(tf_end[kernel], on_jax[f"end/{kernel}"])  # it trained on


@pytest.mark.slow
@pytest.mark.jax
def test_exported_model_predicts_the_same_under_both_backends(tmp_path: Path) -> None:
    export_round_trip(None, str(tmp_path / "tf"))
    _jax("export", str(tmp_path / "tf"), str(tmp_path / "jax"))
    export_round_trip(str(tmp_path / "jax"), str(tmp_path / "tf_again"))

    from_tf = _load(tmp_path / "tf" / "predictions.npz")
    from_jax = _load(tmp_path / "jax" / "predictions.npz")
    again = _load(tmp_path / "tf_again" / "predictions.npz")
    for net in ("regression", "cnn"):
        # TensorFlow's model under JAX, and JAX's model under TensorFlow.
        np.testing.assert_allclose(from_jax[f"loaded/{net}"], from_tf[f"own/{net}"], atol=1e-5)
        np.testing.assert_allclose(again[f"loaded/{net}"], from_jax[f"own/{net}"], atol=1e-5)
        assert np.ptp(from_tf[f"own/{net}"]) > 0  # not a constant output


def test_export_round_trip_under_tensorflow(tmp_path: Path) -> None:
    from framework.export import export_model, load_model
    from tests.backend_worker import build_and_train, probe_inputs

    model = build_and_train("regression")
    path = export_model(model, tmp_path / "run" / "model.keras")
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.keras"]  # no temp file
    loaded = load_model(path)
    inputs = probe_inputs("regression")
    np.testing.assert_array_equal(
        loaded.predict(inputs, verbose=0), model.predict(inputs, verbose=0)
    )
    assert int(np.asarray(loaded.optimizer.iterations)) == 4


def test_export_refuses_other_suffix(tmp_path: Path) -> None:
    from framework.export import export_model

    with pytest.raises(ValueError, match=r"must end in \.keras; received .*model\.h5"):
        export_model(object(), tmp_path / "model.h5")


def test_resolve_jit_compile_on_tensorflow_cpu() -> None:
    assert backend.resolve_jit_compile("auto") is False  # the test machine has no GPU
    assert backend.resolve_jit_compile(True) is True
    assert backend.resolve_jit_compile(False) is False


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("trainer.jax_preallocate", "sometimes", "trainer.jax_preallocate must be true or false"),
        ("trainer.steps_per_execution", 0, "steps_per_execution must be auto or an integer >= 1"),
        ("trainer.strategy", "ddp", "trainer.strategy must be one of single, data_parallel"),
        ("trainer.devices", 0, "trainer.devices must be auto or an integer >= 1; received 0"),
    ],
)
def test_speed_and_device_keys_are_validated(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("regression_sequential", overrides=[f"{key}={value}"])


def test_steps_per_execution_accepts_auto() -> None:
    cfg = load_config("regression_sequential", overrides=["trainer.steps_per_execution=auto"])
    assert cfg.trainer.steps_per_execution == "auto"
    assert backend.resolve_steps_per_execution(cfg.trainer.steps_per_execution) >= 1


@pytest.mark.parametrize(
    ("batches", "intervals", "every_batch", "expected"),
    [
        (32, (16,), False, 16),  # divides the epoch and the checkpoint interval
        (32, (10,), False, 2),  # gcd(32, 10)
        (30, (50, None), False, 10),  # an unset interval does not count
        (128, (64,), False, 32),  # at most AUTO_STEPS_PER_EXECUTION
        (31, (50,), False, 1),  # a prime epoch length leaves no room
        (None, (50,), False, 1),  # unknown epoch length
        (32, (16,), True, 1),  # a callback wants every batch
    ],
)
def test_resolve_steps_per_execution_auto(batches, intervals, every_batch, expected) -> None:  # noqa: ANN001
    value = backend.resolve_steps_per_execution("auto", batches, intervals, every_batch)
    assert value == expected


def test_resolve_steps_per_execution_keeps_a_number() -> None:
    assert backend.resolve_steps_per_execution(7, batches=32, intervals=(16,)) == 7


def _csv_steps(path: Path, column: str) -> list[int]:
    import csv

    with open(path) as handle:
        return [int(r["step"]) for r in csv.DictReader(handle) if r.get(column)]


def test_trainer_auto_steps_per_execution_runs_whole_epochs_and_still_logs(root: Path) -> None:
    from framework.callbacks import ModelCheckpoint
    from framework.trainer import Trainer
    from tests.conftest import TinyRecipe

    trainer = Trainer(
        max_epochs=2, default_root_dir=str(root), log_every_n_steps=4, name="tiny",
        callbacks=[ModelCheckpoint()], enable_progress_bar=False,
    )  # fmt: skip
    trainer.fit(TinyRecipe())
    assert trainer.model.steps_per_execution == 8  # 8 batches an epoch: one call per epoch
    assert trainer.global_step == 16
    assert int(np.asarray(trainer.model.optimizer.iterations)) == 16
    metrics = trainer.log_dir / "metrics.csv"
    # A row at the end of each call that passed a multiple of 4 (once per call).
    assert _csv_steps(metrics, "train/loss_step") == [8, 16]
    assert _csv_steps(metrics, "time/first_step_s") == [8]


def test_trainer_logs_after_the_call_that_passes_each_multiple(root: Path) -> None:
    from framework.trainer import Trainer
    from tests.conftest import TinyRecipe

    trainer = Trainer(
        max_epochs=2, default_root_dir=str(root), log_every_n_steps=4, name="tiny",
        steps_per_execution=3, enable_progress_bar=False, enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(TinyRecipe())
    # Calls end at steps 3, 6, 8 and 11, 14, 16 (Keras runs an epoch's remainder in a short
    # call); 4 is passed in the call ending at 6, 8 at 8, 12 at 14 and 16 at 16.
    metrics = trainer.log_dir / "metrics.csv"
    assert _csv_steps(metrics, "train/loss_step") == [6, 8, 14, 16]

    exact = Trainer(
        max_epochs=2, default_root_dir=str(root), log_every_n_steps=4, name="exact",
        steps_per_execution=1, enable_progress_bar=False, enable_checkpointing=False,
    )  # fmt: skip
    exact.fit(TinyRecipe())
    assert _csv_steps(exact.log_dir / "metrics.csv", "train/loss_step") == [4, 8, 12, 16]


def test_trainer_auto_steps_per_execution_is_one_for_per_batch_callbacks(root: Path) -> None:
    from framework.callbacks.base import Callback
    from framework.trainer import Trainer
    from tests.conftest import TinyRecipe

    class Batches(Callback):
        def __init__(self) -> None:
            self.seen: list[int] = []

        def on_train_batch_end(self, trainer, outputs, batch_idx) -> None:  # noqa: ANN001
            self.seen.append(trainer.global_step)

    batches = Batches()
    trainer = Trainer(
        max_epochs=1, log_every_n_steps=4, callbacks=[batches], logger=False,
        enable_progress_bar=False,
    )  # fmt: skip
    trainer.fit(TinyRecipe())
    assert trainer.model.steps_per_execution == 1
    assert batches.seen == list(range(1, 9))


def test_trainer_finalize_exports_the_model(root: Path) -> None:
    from framework.export import load_model
    from framework.trainer import Trainer
    from tests.conftest import TinyRecipe

    trainer = Trainer(max_epochs=1, default_root_dir=str(root), enable_progress_bar=False)
    trainer.fit(TinyRecipe())
    trainer.finalize()
    loaded = load_model(trainer.log_dir / "model.keras")
    inputs = np.linspace(-1.0, 1.0, 5, dtype=np.float32)[:, None]
    np.testing.assert_array_equal(
        loaded.predict(inputs, verbose=0), trainer.model.predict(inputs, verbose=0)
    )


@pytest.mark.parametrize(("every", "expected"), [(4, 4), (3, 1)])
def test_auto_steps_per_execution_lands_on_step_checkpoints(
    root: Path, every: int, expected: int
) -> None:
    from framework.callbacks import ModelCheckpoint
    from framework.trainer import Trainer
    from tests.conftest import TinyRecipe

    trainer = Trainer(
        max_epochs=1, default_root_dir=str(root), name="tiny", enable_progress_bar=False,
        callbacks=[ModelCheckpoint(every_n_train_steps=every)],
    )  # fmt: skip
    trainer.fit(TinyRecipe())
    # A call may not run past a step checkpoint: 8 batches, a checkpoint every `every` steps.
    assert trainer.model.steps_per_execution == expected
