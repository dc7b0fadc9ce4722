"""The one place that knows TensorFlow from JAX.

``select_backend`` must run before Keras is first imported: Keras reads ``KERAS_BACKEND`` once,
at import. Everything else here (devices, seeding, precision) imports Keras lazily.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Iterable
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "BackendError",
    "describe",
    "resolve_jit_compile",
    "resolve_steps_per_execution",
    "select_backend",
    "seed_everything",
    "set_precision",
]

BACKENDS = ("tensorflow", "jax")
#: The most steps ``steps_per_execution: auto`` puts in one compiled call.
AUTO_STEPS_PER_EXECUTION = 32
_POLICIES = {"32": "float32", "bf16-mixed": "mixed_bfloat16", "16-mixed": "mixed_float16"}


class BackendError(RuntimeError):
    """Keras was already imported with a different backend than the config asks for."""


def select_backend(name: str) -> None:
    """Make ``name`` the Keras backend, or fail if Keras already runs on another one."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; received {name!r}")
    if "keras" in sys.modules:
        active = sys.modules["keras"].backend.backend()
        if active != name:
            raise BackendError(
                f"Keras was already imported in this process with backend {active!r}, so the "
                f"config's backend {name!r} cannot take effect. Start a new process (for "
                f"example `kiln run ... backend={name}`) or set KERAS_BACKEND={name} before "
                f"anything imports Keras."
            )
        return
    os.environ["KERAS_BACKEND"] = name
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if name == "jax":
        # TensorFlow only feeds data under JAX; keep it off the accelerators JAX uses.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "true")
        _hide_gpus_from_tensorflow()


def _hide_gpus_from_tensorflow() -> None:
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover - tensorflow is a dependency
        return
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        logger.debug("TensorFlow devices were already initialised; GPUs stay visible to it")


def describe() -> dict[str, Any]:
    """Backend name, its version and the devices it sees (imports Keras)."""
    import keras

    name = keras.backend.backend()
    if name == "jax":
        import jax

        version = jax.__version__
        devices = [f"{d.platform}:{d.id}" for d in jax.devices()]
        extra = {"preallocate": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "true")}
    else:
        import tensorflow as tf

        version = tf.__version__
        devices = [d.name for d in tf.config.list_logical_devices()]
        extra = {}
    return {
        "backend": name,
        "version": version,
        "keras": keras.__version__,
        "devices": devices,
        **extra,
    }


def _has_gpu() -> bool:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.default_backend() != "cpu"
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def resolve_jit_compile(value: bool | str) -> bool | str:
    """What ``trainer.jit_compile`` means on this backend and machine.

    ``auto`` is XLA under JAX (its only fast path) and, under TensorFlow, XLA on a GPU only: on
    a CPU, TensorFlow's own oneDNN kernels trained the GTSRB CNN about twice as fast as XLA
    (``benchmarks/throughput.py``). Keras 3.15's own ``auto`` decides the same way; Kiln spells
    it out so that the choice does not move with the Keras version.
    """
    import keras

    if value == "auto":
        if keras.backend.backend() == "tensorflow" and not _has_gpu():
            logger.debug("jit_compile auto: off (TensorFlow on a CPU)")
            return False
        return "auto"  # Keras turns it into XLA unless a layer cannot be compiled
    if value is False and keras.backend.backend() == "jax":
        logger.warning(
            "trainer.jit_compile=false under JAX runs every op eagerly, many times slower; "
            "use it only to debug"
        )
    return value


def resolve_steps_per_execution(
    value: int | str,
    batches: int | None = None,
    intervals: Iterable[int | None] = (),
    every_batch: bool = False,
) -> int:
    """How many training steps one compiled call runs, for ``trainer.steps_per_execution``.

    Per-batch hooks and step checkpoints see the trainer only between calls, so ``auto`` runs
    several steps per call (up to ``AUTO_STEPS_PER_EXECUTION``) only where nobody would
    notice: the count divides the epoch's ``batches`` and every step interval given
    (checkpoints, a resume point), and stays 1 when a callback asks to see every batch
    (``every_batch``) or the epoch length is unknown. Logging does not hold it back: a log row
    is written at the end of the call that passes each multiple of ``log_every_n_steps``
    (``Trainer.passed_step_multiple``). The same rule holds on both backends; on small nets
    the per-call cost of Keras's loop dominates the step, and a whole epoch per call ran the
    regression net several times faster (``benchmarks/throughput.py``).
    """
    if value != "auto":
        return int(value)
    if batches is None or every_batch:
        return 1
    limit = batches
    for interval in intervals:
        if interval:
            limit = math.gcd(limit, int(interval))
    steps = max(n for n in range(1, min(limit, AUTO_STEPS_PER_EXECUTION) + 1) if limit % n == 0)
    logger.info("steps_per_execution auto: %d (%d batches an epoch)", steps, batches)
    return steps


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and the backend; optionally make TensorFlow ops deterministic."""
    import keras

    keras.utils.set_random_seed(seed)
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def set_precision(precision: str) -> None:
    """Set Keras's global dtype policy for ``32``, ``bf16-mixed`` or ``16-mixed``."""
    import keras

    if precision not in _POLICIES:
        raise ValueError(
            f"precision must be one of {', '.join(_POLICIES)}; received {precision!r}"
        )
    keras.mixed_precision.set_global_policy(_POLICIES[precision])
