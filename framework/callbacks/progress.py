"""Progress display: a live rich bar in a terminal, one line per epoch in a log."""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from framework.callbacks.base import Callback

if TYPE_CHECKING:
    from framework.trainer import Trainer

logger = logging.getLogger(__name__)

__all__ = ["ProgressBar", "format_metrics"]


def format_metrics(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "epoch")


class ProgressBar(Callback):
    """Shows training progress. ``live=None`` picks a live bar only when stdout is a terminal."""

    def __init__(self, live: bool | None = None, refresh_every: int = 10) -> None:
        self.live = live
        self.refresh_every = refresh_every
        self._progress: Progress | None = None
        self._task: Any = None
        self._epoch_start = 0.0
        self.console = Console(file=sys.stdout)

    def on_train_start(self, trainer: Trainer) -> None:
        live = self.console.is_terminal if self.live is None else self.live
        if live:
            self._progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[metrics]}"),
                console=self.console,
                transient=False,
            )
            self._progress.start()

    def on_train_epoch_start(self, trainer: Trainer) -> None:
        self._epoch_start = time.perf_counter()
        if self._progress is not None:
            self._task = self._progress.add_task(
                "train",
                total=trainer.num_training_batches,
                epoch=f"{trainer.current_epoch + 1}/{trainer.flags.max_epochs}",
                metrics="",
            )

    def on_train_batch_end(self, trainer: Trainer, outputs: dict, batch_idx: int) -> None:
        if self._progress is None:
            return
        fields = {}
        if (batch_idx + 1) % self.refresh_every == 0:
            fields["metrics"] = format_metrics(outputs)
        self._progress.update(self._task, completed=batch_idx + 1, **fields)

    def on_train_epoch_end(self, trainer: Trainer) -> None:
        seconds = time.perf_counter() - self._epoch_start
        text = format_metrics(trainer.callback_metrics)
        if self._progress is not None:
            self._progress.update(self._task, metrics=text)
            return
        self.console.print(
            f"epoch {trainer.current_epoch + 1}/{trainer.flags.max_epochs}  "
            f"step {trainer.global_step}  {text}  ({seconds:.1f} s)",
            highlight=False,
            soft_wrap=True,
        )
        self.console.file.flush()  # a log file sees each epoch as it ends

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def on_train_end(self, trainer: Trainer) -> None:
        self._stop()

    def on_exception(self, trainer: Trainer, exception: BaseException) -> None:
        self._stop()
