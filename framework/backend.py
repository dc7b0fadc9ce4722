"""The one place that knows TensorFlow from JAX.

``select_backend`` must run before Keras is first imported: Keras reads ``KERAS_BACKEND`` once,
at import. Everything else here (devices, seeding, precision) imports Keras lazily.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "BackendError",
    "describe",
    "select_backend",
    "seed_everything",
    "set_precision",
]

BACKENDS = ("tensorflow", "jax")
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
