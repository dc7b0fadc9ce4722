"""``Trainer``: runs a recipe on Keras's own compiled train and test steps.

``fit`` calls ``keras.Model.fit`` once, with a bridge callback that turns Keras's events into
Kiln's hooks (with epoch, global step and metrics), logs, checkpoints and resumes. Import this
module only after ``framework.backend.select_backend``: it imports Keras.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import keras
import numpy as np
from omegaconf import DictConfig, OmegaConf

from framework import backend, checkpoint, distribution
from framework.callbacks.base import Callback
from framework.config import VALIDATORS, ConfigError, flatten
from framework.recipe import Recipe
from framework.resume import resolve_ckpt_path

logger = logging.getLogger(__name__)

__all__ = ["Trainer", "TrainerConfig", "TrainingFailed", "TrainingInterrupted"]


class TrainingFailed(RuntimeError):
    """The run stopped because training itself went wrong (for example a NaN loss)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run after the current step; a checkpoint was written first."""


@dataclass
class TrainerConfig:
    """The ``trainer.`` config keys; see ``configs/defaults.yaml`` for what each one means."""

    max_epochs: int = 10
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    limit_test_batches: int | float | None = None
    fast_dev_run: bool = False
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 50
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    precision: str = "32"
    seed: int = 42
    deterministic: bool = False
    default_root_dir: str = "runs"
    enable_progress_bar: bool = True
    enable_checkpointing: bool = True
    ckpt_path: str | None = None
    save_every_n_steps: int | None = None
    jit_compile: bool | str = "auto"
    steps_per_execution: int | str = "auto"
    strategy: str = "single"
    devices: int | str = "auto"
    jax_preallocate: bool = True

    def __post_init__(self) -> None:
        for spec in fields(self):
            path = f"trainer.{spec.name}"
            if path in VALIDATORS:
                setattr(self, spec.name, VALIDATORS[path](path, getattr(self, spec.name)))


def _limit(dataset: Any, limit: int | float | None) -> tuple[Any, int | None]:
    """``dataset`` cut to ``limit`` batches (a count or a fraction) and its batch count."""
    size = _cardinality(dataset)
    if limit is None:
        return dataset, size
    if isinstance(limit, float):
        if size is None:
            raise ConfigError(
                f"a fractional batch limit ({limit}) needs a dataset of known length; this "
                "dataset's length is unknown. Give an integer number of batches instead."
            )
        count = max(1, math.ceil(size * limit))
    else:
        count = limit if size is None else min(limit, size)
    return dataset.take(count), count


def _cardinality(dataset: Any) -> int | None:
    if dataset is None or not hasattr(dataset, "cardinality"):
        return None
    size = int(dataset.cardinality())
    return size if size >= 0 else None


class _KerasBridge(keras.callbacks.Callback):
    """Turns ``Model.fit``'s events into Kiln hooks and trainer state."""

    def __init__(self, trainer: Trainer) -> None:
        super().__init__()
        self.trainer = trainer
        self._epoch_start_step = 0
        #: Batches of the first epoch already trained before a mid-epoch resume.
        self.batch_offset = 0
        self._fit_start = 0.0
        self._epoch_start = 0.0
        self._first_step_logged = False
        #: (time, global step) at the epoch's first batch end, and the time of its latest one.
        self._step_clock: tuple[float, int] | None = None
        self._last_batch_end = 0.0

    def on_train_begin(self, logs: Mapping | None = None) -> None:
        self._fit_start = time.perf_counter()
        self.trainer._call("on_train_start")

    def on_train_end(self, logs: Mapping | None = None) -> None:
        self.trainer._call("on_train_end")

    def on_epoch_begin(self, epoch: int, logs: Mapping | None = None) -> None:
        trainer = self.trainer
        trainer.current_epoch = epoch
        trainer.batch_idx = self.batch_offset
        self._epoch_start_step = trainer.global_step - self.batch_offset
        self._epoch_start = time.perf_counter()
        self._step_clock = None
        trainer.datamodule.set_epoch(epoch)
        if self.batch_offset and trainer._resume_metric_states is not None:
            trainer._restore_metric_states()
        trainer._call("on_train_epoch_start")

    def on_train_batch_begin(self, batch: int, logs: Mapping | None = None) -> None:
        self.trainer._call("on_train_batch_start", batch)

    def on_train_batch_end(self, batch: int, logs: Mapping | None = None) -> None:
        trainer = self.trainer
        if trainer.num_training_batches is not None:
            # Keras names a call's last step as if it ran all steps_per_execution steps, also
            # for the shorter call that ends an epoch the count does not divide.
            batch = min(batch, trainer.num_training_batches - self.batch_offset - 1)
        before = trainer.global_step
        trainer.global_step = self._epoch_start_step + self.batch_offset + batch + 1
        trainer._last_call_steps = (before, trainer.global_step)
        trainer.batch_idx = self.batch_offset + batch + 1
        outputs = {k: float(v) for k, v in (logs or {}).items()}
        loss = outputs.get("loss")
        if loss is not None and not math.isfinite(loss):
            raise TrainingFailed(
                f"the training loss became {loss} at epoch {trainer.current_epoch}, "
                f"step {trainer.global_step}; stopping. No checkpoint was written from the "
                "non-finite weights. Lower the learning rate or set trainer.gradient_clip_val."
            )
        self._last_batch_end = time.perf_counter()
        if self._step_clock is None:  # the steps up to here hold warm-up (and compilation)
            self._step_clock = (self._last_batch_end, trainer.global_step)
        if not self._first_step_logged:
            self._first_step_logged = True
            first = time.perf_counter() - self._fit_start
            trainer.log_metrics({"time/first_step_s": first})
            logger.info("first step (with compilation) took %.2f s", first)
        if trainer.passed_step_multiple(trainer.flags.log_every_n_steps):
            trainer.log_metrics({f"train/{k}_step": v for k, v in outputs.items()})
        trainer._call("on_train_batch_end", outputs, trainer.batch_idx - 1)
        if trainer._interrupt_requested:
            trainer._checkpoint_on_interrupt()
        if trainer.should_stop:
            self.model.stop_training = True

    def on_test_begin(self, logs: Mapping | None = None) -> None:
        if self.trainer.state == "fit":
            self.trainer._call("on_validation_start")

    def on_test_end(self, logs: Mapping | None = None) -> None:
        if self.trainer.state == "fit":
            self.trainer._call("on_validation_end")

    def on_epoch_end(self, epoch: int, logs: Mapping | None = None) -> None:
        trainer = self.trainer
        logs = {k: float(v) for k, v in (logs or {}).items()}
        trainer.callback_metrics = dict(logs)
        trainer.callback_metrics["epoch"] = float(epoch)
        seconds = time.perf_counter() - self._epoch_start
        metrics = {"epoch": float(epoch), "time/epoch_s": seconds}
        if self._step_clock is not None and trainer.global_step > self._step_clock[1]:
            start, step = self._step_clock
            metrics["time/step_s"] = (self._last_batch_end - start) / (trainer.global_step - step)
        for key, value in logs.items():
            if key.startswith("val_"):
                metrics[f"val/{key[4:]}"] = value
            else:
                metrics[f"train/{key}"] = value
        trainer.log_metrics(metrics)
        if any(key.startswith("val_") for key in logs):
            trainer._call("on_validation_epoch_end")
        trainer.epochs_completed = epoch + 1
        trainer.batch_idx = 0
        self.batch_offset = 0
        trainer._call("on_train_epoch_end")
        trainer._flush_loggers()
        if trainer._interrupt_requested:
            trainer._checkpoint_on_interrupt()
        if trainer.should_stop:
            self.model.stop_training = True


class Trainer:
    """Fit, validate, test and predict a ``Recipe`` with callbacks, loggers and resume.

    Pass trainer flags as keyword arguments (``Trainer(max_epochs=3)``) or a ``TrainerConfig``.
    ``logger=True`` writes TensorBoard events and ``metrics.csv`` to
    ``<default_root_dir>/<name>/version_<N>``; ``logger=False`` writes nothing.
    """

    def __init__(
        self,
        config: TrainerConfig | None = None,
        *,
        callbacks: Iterable[Callback] = (),
        logger: bool = True,
        name: str | None = None,
        run_config: DictConfig | None = None,
        **flags: Any,
    ) -> None:
        base = asdict(config) if config is not None else {}
        unknown = sorted(set(flags) - {f.name for f in fields(TrainerConfig)})
        if unknown:
            raise TypeError(
                f"unknown Trainer flag(s) {unknown}; valid flags: "
                f"{', '.join(f.name for f in fields(TrainerConfig))}"
            )
        self.flags = TrainerConfig(**{**base, **flags})
        self.callbacks: list[Callback] = list(callbacks)
        self.run_config = run_config
        self.name = name
        self._want_logger = logger and not self.flags.fast_dev_run
        if self.flags.fast_dev_run:
            self.callbacks = [c for c in self.callbacks if not _writes_files(c)]

        self.recipe: Recipe | None = None
        self.model: keras.Model | None = None
        self.datamodule: Any = None
        self.loggers: list[Any] = []
        self.log_dir: Path | None = None
        self.current_epoch = 0
        self.epochs_completed = 0
        self.global_step = 0
        self.batch_idx = 0
        self.callback_metrics: dict[str, float] = {}
        self.should_stop = False
        self.state = "idle"
        self.num_training_batches: int | None = None
        self.has_validation = False
        self.resumed_from: Path | None = None
        self._interrupt_requested = False
        self._resume_metric_states: list[Any] | None = None
        #: Global step before and after the latest compiled training call.
        self._last_call_steps = (0, 0)

    # ----------------------------------------------------------------- construction helpers
    @classmethod
    def from_config(cls, cfg: DictConfig, callbacks: Iterable[Callback] = ()) -> Trainer:
        """A trainer with the callbacks the config asks for (checkpoint, early stopping, ...)."""
        from framework.callbacks import default_callbacks

        flags = OmegaConf.to_container(cfg.trainer, resolve=True)
        return cls(
            callbacks=[*default_callbacks(cfg), *callbacks],
            name=str(cfg.recipe),
            run_config=cfg,
            **flags,
        )

    @property
    def logger(self) -> Any:
        """The first logger (TensorBoard), or None when nothing is logged."""
        return self.loggers[0] if self.loggers else None

    @property
    def checkpoint_callback(self) -> Any:
        from framework.callbacks.model_checkpoint import ModelCheckpoint

        return next((c for c in self.callbacks if isinstance(c, ModelCheckpoint)), None)

    # --------------------------------------------------------------------------- public API
    def fit(
        self, recipe: Recipe, datamodule: Any = None, ckpt_path: str | os.PathLike | None = None
    ) -> dict[str, float]:
        """Train ``recipe`` for ``max_epochs`` (resuming from ``ckpt_path`` when given)."""
        ckpt_path = ckpt_path if ckpt_path is not None else self.flags.ckpt_path
        self._attach(recipe, datamodule, "fit")
        flags = self.flags
        name = self.name or type(recipe).__name__
        resume = resolve_ckpt_path(ckpt_path, Path(flags.default_root_dir), name)
        start_state: dict[str, Any] | None = None
        if resume is not None:
            start_state = checkpoint.read_state(resume.path)
            self.resumed_from = resume.path

        self._build_model()
        if start_state is not None:
            checkpoint.load_weights(resume.path, self.model)
            self._restore_trainer_state(start_state)
        self._open_loggers(name, resume.version if resume else None)

        self.datamodule.prepare_data()
        self.datamodule.setup("fit")
        train, self.num_training_batches = _limit(
            self.datamodule.train_dataloader(), self._limit_of("train")
        )
        val, _ = _limit(self.datamodule.val_dataloader(), self._limit_of("val"))
        self.has_validation = val is not None
        self.model.steps_per_execution = backend.resolve_steps_per_execution(
            flags.steps_per_execution,
            batches=self.num_training_batches,
            intervals=(flags.save_every_n_steps, self.batch_idx, *_step_intervals(self.callbacks)),
            every_batch=_wants_every_batch(self.callbacks),
        )
        max_epochs = 1 if flags.fast_dev_run else flags.max_epochs
        if self.epochs_completed >= max_epochs:
            logger.warning(
                "the checkpoint already completed %d epoch(s) and max_epochs is %d: "
                "nothing left to train",
                self.epochs_completed,
                max_epochs,
            )

        self._log_run_header()
        try:
            self._call("setup", "fit")
            self._call("on_fit_start")
            with self._sigint_guard():
                self._run_fit(train, val, max_epochs)
            self._call("on_fit_end")
        except BaseException as error:
            self._fail(error)
            raise
        finally:
            self._call("teardown", "fit")
            self.state = "idle"
        self._write_status("fit-complete")
        return dict(self.callback_metrics)

    def _run_fit(self, train: Any, val: Any, max_epochs: int) -> None:
        bridge = _KerasBridge(self)
        options = {
            "validation_data": val,
            "validation_freq": self.flags.check_val_every_n_epoch,
            "callbacks": [bridge],
            "verbose": 0,
            "shuffle": False,  # the DataModule shuffles; Keras cannot shuffle a tf.data input
        }
        if self.batch_idx > 0 and self.epochs_completed < max_epochs:
            # A mid-epoch checkpoint: finish that epoch without the batches already trained.
            bridge.batch_offset = self.batch_idx
            self._build_metrics(train)
            self.model.fit(
                train.skip(self.batch_idx),
                epochs=self.epochs_completed + 1,
                initial_epoch=self.epochs_completed,
                **options,
            )
        if not self.should_stop and self.epochs_completed < max_epochs:
            self.model.fit(
                train, epochs=max_epochs, initial_epoch=self.epochs_completed, **options
            )

    @contextlib.contextmanager
    def _sigint_guard(self) -> Iterator[None]:
        """First Ctrl-C: finish the step, checkpoint, stop. Second: stop at once."""
        # Limitation: two presses that land while one step runs in native code reach Python as
        # one signal (a pending signal is delivered once), so they act as a single Ctrl-C.
        # SIGTERM is not caught: it ends the process like SIGKILL, without a final checkpoint.
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._interrupt_requested:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt
            self._interrupt_requested = True
            logger.warning(
                "interrupt received: finishing the current step and writing a checkpoint "
                "(press Ctrl-C again to stop at once)"
            )

        previous = signal.signal(signal.SIGINT, handler)
        self._interrupt_requested = False
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _checkpoint_on_interrupt(self) -> None:
        where = f"epoch {self.current_epoch}, step {self.global_step}"
        if self.log_dir is None or not self.flags.enable_checkpointing:
            raise TrainingInterrupted(f"interrupted at {where}; no checkpoint (none enabled)")
        callback = self.checkpoint_callback
        folder = (
            callback.dirpath if callback and callback.dirpath else self.log_dir / "checkpoints"
        )
        path = self.save_checkpoint(Path(folder) / "last.ckpt")
        raise TrainingInterrupted(
            f"interrupted at {where}; checkpoint written to {path}. Resume with: "
            f"kiln resume {self.log_dir}  (or kiln run {self.name} trainer.ckpt_path=last)"
        )

    def validate(
        self, recipe: Recipe | None = None, ckpt_path: str | os.PathLike | None = None
    ) -> dict[str, float]:
        """Evaluate on the validation data; metrics are returned as ``val_<name>``."""
        return self._evaluate(recipe, ckpt_path, "validate")

    def test(
        self, recipe: Recipe | None = None, ckpt_path: str | os.PathLike | None = None
    ) -> dict[str, float]:
        """Evaluate on the test data; metrics are returned as ``test_<name>``.

        After ``fit``, ``ckpt_path=None`` means the best checkpoint when one was kept (as in
        Lightning); pass ``"current"`` to use the weights in memory.
        """
        return self._evaluate(recipe, ckpt_path, "test")

    def predict(
        self, recipe: Recipe | None = None, ckpt_path: str | os.PathLike | None = None
    ) -> np.ndarray:
        """Model outputs on the recipe's predict data."""
        self._prepare_eval(recipe, ckpt_path, "predict")
        data = self.datamodule.predict_dataloader()
        self._call("on_predict_start")
        outputs = self.model.predict(data, verbose=0)
        self._call("on_predict_end")
        return outputs

    def save_checkpoint(self, path: str | os.PathLike) -> Path:
        """Write a checkpoint of everything a resume needs to ``path`` (atomically)."""
        if self.model is None:
            raise RuntimeError("save_checkpoint() needs a model: call fit() first")
        if keras.backend.backend() == "jax":
            self.model.jax_state_sync()
        if not _all_finite([*self.model.weights, *self.model.optimizer.variables]):
            raise TrainingFailed(
                f"the weights became non-finite at epoch {self.current_epoch}, step "
                f"{self.global_step}; stopping without writing {Path(path).name}, so the "
                "previous checkpoint stays. Lower the learning rate or set "
                "trainer.gradient_clip_val."
            )
        state: dict[str, Any] = {
            "epochs_completed": self.epochs_completed,
            "global_step": self.global_step,
            "batch_idx": self.batch_idx,
            "optimizer_iterations": int(np.asarray(self.model.optimizer.iterations)),
            # The epoch's running loss and metrics, so a mid-epoch resume continues their means.
            "metric_states": [np.asarray(v).tolist() for v in self.model.metrics_variables],
            "metrics": self.callback_metrics,
            "callbacks": {c.state_key: c.state_dict() for c in self.callbacks},
            "config": OmegaConf.to_yaml(self.run_config) if self.run_config is not None else None,
            "backend": keras.backend.backend(),
            "log_dir": str(self.log_dir) if self.log_dir else None,
        }
        self._call("on_save_checkpoint", state)
        return checkpoint.save_checkpoint(path, self.model, state)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Send scalars to every logger at ``step`` (default: the global step)."""
        step = self.global_step if step is None else step
        for sink in self.loggers:
            sink.log_metrics(metrics, step)

    def passed_step_multiple(self, interval: int) -> bool:
        """Whether the latest training call passed a multiple of ``interval`` global steps.

        With ``steps_per_execution`` > 1 one call runs several steps, so step-interval work
        (logging every ``log_every_n_steps``) happens at the end of the call that reaches the
        multiple, at most once per call; with one step per call, exactly at the multiple.
        """
        before, after = self._last_call_steps
        return after // interval > before // interval

    def learning_rate(self) -> float:
        """The optimizer's current learning rate (schedules evaluated at the current step)."""
        if keras.backend.backend() == "jax":
            self.model.jax_state_sync()  # mid-epoch, JAX keeps the live state outside variables
        return float(np.asarray(self.model.optimizer.learning_rate))

    # -------------------------------------------------------------------------- internals
    def _attach(self, recipe: Recipe, datamodule: Any, stage: str) -> None:
        if not isinstance(recipe, Recipe):
            raise TypeError(
                f"Trainer.{stage}() needs a framework.Recipe; received {type(recipe).__name__}"
            )
        self.recipe = recipe
        self.datamodule = datamodule if datamodule is not None else recipe.configure_datamodule()
        self.callbacks.extend(c for c in recipe.configure_callbacks() if c not in self.callbacks)
        # Checkpoints go last so they capture the state other callbacks set this epoch.
        self.callbacks.sort(key=_writes_files)
        self.state = stage
        self.should_stop = False

    def _limit_of(self, split: str) -> int | float | None:
        if self.flags.fast_dev_run:
            return 1
        return getattr(self.flags, f"limit_{split}_batches")

    def _build_model(self) -> None:
        flags = self.flags
        backend.seed_everything(flags.seed, flags.deterministic)
        backend.set_precision(flags.precision)
        with distribution.scope(flags.strategy, flags.devices):
            self._build_and_compile()

    def _build_and_compile(self) -> None:
        flags = self.flags
        model = self.recipe.configure_model()
        optimizer = self.recipe.configure_optimizers()
        extra: dict[str, Any] = {}
        if flags.gradient_clip_val is not None:
            if optimizer.clipnorm or optimizer.clipvalue or optimizer.global_clipnorm:
                raise ConfigError(
                    "trainer.gradient_clip_val clips the global gradient norm, but the "
                    "recipe's optimizer already clips (clipnorm/clipvalue/global_clipnorm); "
                    f"received gradient_clip_val={flags.gradient_clip_val}. Use one of them."
                )
            extra["global_clipnorm"] = flags.gradient_clip_val
        if flags.accumulate_grad_batches > 1:
            extra["gradient_accumulation_steps"] = flags.accumulate_grad_batches
        if extra:
            optimizer = type(optimizer).from_config({**optimizer.get_config(), **extra})
        model.compile(
            optimizer=optimizer,
            loss=self.recipe.configure_loss(),
            metrics=self.recipe.configure_metrics(),
            jit_compile=backend.resolve_jit_compile(flags.jit_compile),
            steps_per_execution=backend.resolve_steps_per_execution(flags.steps_per_execution),
        )
        # Build the optimizer now so a checkpoint's optimizer state has somewhere to go.
        model.optimizer.build(model.trainable_variables)
        self.model = model

    def _build_metrics(self, data: Any) -> None:
        """Create the compiled metrics' variables, which Keras leaves to the first step.

        Under a distribution strategy (and under JAX) Keras builds them when fit starts.
        """
        # A tf.data dataset describes its batches; a PyDataset shows its first one.
        if hasattr(data, "element_spec"):
            spec = data.element_spec
        else:
            spec = data[0] if len(data) else None
        if self.flags.strategy != "single" or not isinstance(spec, tuple):
            return
        x, y, _ = keras.utils.unpack_x_y_sample_weight(spec)
        x, y = (
            keras.tree.map_structure(
                lambda s: np.zeros(
                    [d or 1 for d in s.shape], getattr(s.dtype, "as_numpy_dtype", s.dtype)
                ),
                part,
            )
            for part in (x, y)
        )
        try:
            self.model.compute_metrics(x, y, self.model(x, training=False), sample_weight=None)
        except (TypeError, ValueError) as error:  # inputs that zeros cannot stand in for
            logger.debug("could not build the metrics before the first step: %s", error)

    def _restore_metric_states(self) -> None:
        """Put back the epoch's running loss and metrics after Keras reset them (mid-epoch)."""
        states, self._resume_metric_states = self._resume_metric_states, None
        variables = self.model.metrics_variables
        if len(variables) != len(states):
            logger.warning(
                "the checkpoint holds %d metric values and the model %d; the resumed epoch's "
                "training metrics average only the batches after the resume point",
                len(states),
                len(variables),
            )
            return
        for variable, value in zip(variables, states, strict=True):
            variable.assign(np.asarray(value, dtype=variable.dtype))

    def _restore_trainer_state(self, state: Mapping[str, Any]) -> None:
        self.epochs_completed = int(state["epochs_completed"])
        self.current_epoch = self.epochs_completed
        self.global_step = int(state["global_step"])
        self.batch_idx = int(state.get("batch_idx", 0))
        self.callback_metrics = dict(state.get("metrics") or {})
        self._resume_metric_states = state.get("metric_states")
        saved = state.get("callbacks") or {}
        for callback in self.callbacks:
            if callback.state_key in saved:
                callback.load_state_dict(saved[callback.state_key])
        self._call("on_load_checkpoint", dict(state))
        logger.info(
            "resumed from %s at epoch %d (+%d batches), global step %d (optimizer step %d)",
            self.resumed_from,
            self.epochs_completed,
            self.batch_idx,
            self.global_step,
            int(np.asarray(self.model.optimizer.iterations)),
        )

    def _open_loggers(self, name: str, version: int | None) -> None:
        if not self._want_logger or self.loggers:
            return
        from framework.loggers import CSVLogger, TensorBoardLogger

        root = self.flags.default_root_dir
        purge = self.global_step + 1 if version is not None else None
        tensorboard = TensorBoardLogger(root, name, version=version, purge_step=purge)
        csv = CSVLogger(root, name, version=tensorboard.version, purge_step=purge)
        self.loggers = [tensorboard, csv]
        self.log_dir = Path(tensorboard.log_dir)
        if self.run_config is not None:
            _write_atomic(self.log_dir / "config.yaml", OmegaConf.to_yaml(self.run_config))
            for sink in self.loggers:
                sink.log_hyperparams(flatten(self.run_config))
        lines: list[str] = []
        self.model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
        _write_atomic(self.log_dir / "model_summary.txt", "\n".join(lines) + "\n")
        self._write_status("running")

    def _log_run_header(self) -> None:
        info = backend.describe()
        logger.info(
            "backend %s %s (keras %s), devices: %s",
            info["backend"],
            info["version"],
            info["keras"],
            ", ".join(info["devices"]),
        )
        if self.log_dir is not None:
            logger.info("run folder: %s", self.log_dir)
            _write_atomic(self.log_dir / "backend.json", json.dumps(info, indent=1) + "\n")

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def _flush_loggers(self) -> None:
        for sink in self.loggers:
            sink.flush()

    def _fail(self, error: BaseException) -> None:
        status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        for callback in self.callbacks:
            try:
                callback.on_exception(self, error)
            except Exception:  # one failing handler must not hide the original error
                logger.exception("callback %s failed in on_exception", callback.state_key)
        self._write_status(status, reason=f"{type(error).__name__}: {error}")
        for sink in self.loggers:
            sink.finalize(status)

    def _write_status(self, status: str, reason: str | None = None) -> None:
        if self.log_dir is None:
            return
        payload = {
            "status": status,
            "epochs_completed": self.epochs_completed,
            "global_step": self.global_step,
            "reason": reason,
            "time": time.time(),
        }
        _write_atomic(self.log_dir / "status.json", json.dumps(payload, indent=1) + "\n")

    def _prepare_eval(self, recipe: Recipe | None, ckpt_path: Any, stage: str) -> None:
        if recipe is None and self.recipe is None:
            raise ValueError(f"Trainer.{stage}() needs a recipe (or call fit() first)")
        fresh = recipe is not None and recipe is not self.recipe
        if fresh:
            self._attach(recipe, None, stage)
            self._build_model()
        self.state = stage
        path = self._eval_checkpoint(ckpt_path, stage)
        if path is not None:
            checkpoint.load_weights(path, self.model)
            logger.info("%s uses the weights of %s", stage, path)
        self.datamodule.prepare_data()
        self.datamodule.setup(stage)

    def _eval_checkpoint(self, ckpt_path: Any, stage: str) -> Path | None:
        if ckpt_path == "current":
            return None
        if ckpt_path is None:
            best = getattr(self.checkpoint_callback, "best_model_path", None)
            if stage == "test" and best and Path(best).is_file():
                return Path(best)
            return None
        name = self.name or type(self.recipe).__name__
        resolved = resolve_ckpt_path(ckpt_path, Path(self.flags.default_root_dir), name)
        return resolved.path if resolved else None

    def _evaluate(self, recipe: Recipe | None, ckpt_path: Any, stage: str) -> dict[str, float]:
        self._prepare_eval(recipe, ckpt_path, stage)
        split = "val" if stage == "validate" else "test"
        loader = getattr(self.datamodule, f"{split}_dataloader")()
        if loader is None:
            raise ValueError(f"{type(self.datamodule).__name__} has no {split} data to {stage}")
        data, _ = _limit(loader, self._limit_of(split))
        self._call("on_validation_start" if stage == "validate" else "on_test_start")
        results = self.model.evaluate(data, verbose=0, return_dict=True)
        metrics = {f"{split}_{k}": float(v) for k, v in results.items()}
        self.callback_metrics.update(metrics)
        self.log_metrics({f"{split}/{k}": float(v) for k, v in results.items()})
        self._call("on_validation_end" if stage == "validate" else "on_test_end")
        self._flush_loggers()
        self.state = "idle"
        return metrics

    def finalize(self, final_metrics: Mapping[str, float] | None = None) -> None:
        """Log hyperparameters with the final metrics, mark the run done and close loggers."""
        metrics = dict(final_metrics or self.callback_metrics)
        if self.run_config is not None:
            for sink in self.loggers:
                sink.log_hyperparams(flatten(self.run_config), metrics)
        if self.log_dir is not None and self.model is not None:
            from framework.export import export_model

            export_model(self.model, self.log_dir / "model.keras")
        self._write_status("success")
        for sink in self.loggers:
            sink.finalize("success")


def _step_intervals(callbacks: Iterable[Callback]) -> list[int]:
    """Step intervals of callbacks that act every N training steps (step checkpoints)."""
    return [n for c in callbacks if (n := getattr(c, "every_n_train_steps", None))]


def _wants_every_batch(callbacks: Iterable[Callback]) -> bool:
    """Whether a callback, other than Kiln's own step-interval ones, has per-batch hooks."""
    from framework.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar

    for callback in callbacks:
        if type(callback) in (LearningRateMonitor, ModelCheckpoint, ProgressBar):
            continue
        for hook in ("on_train_batch_start", "on_train_batch_end"):
            if getattr(type(callback), hook) is not getattr(Callback, hook):
                return True
    return False


def _writes_files(callback: Callback) -> bool:
    from framework.callbacks.model_checkpoint import ModelCheckpoint

    return isinstance(callback, ModelCheckpoint)


def _all_finite(variables: Iterable[Any]) -> bool:
    for variable in variables:
        value = np.asarray(variable)
        if np.issubdtype(value.dtype, np.inexact) and not np.isfinite(value).all():
            return False
    return True


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
