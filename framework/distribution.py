"""Devices and data parallelism: how each backend spreads one global batch over devices.

``configure_devices`` runs before Keras, TensorFlow or JAX is imported (``kiln run`` calls it
first). It sets what only counts at start-up: JAX's GPU memory preallocation, the number of
virtual CPU devices (so that data parallelism can be tried on one CPU), and the process group
of a multi-host run. ``scope`` is the context in which the trainer builds and compiles the
model.

``trainer.strategy=data_parallel`` uses ``keras.distribution.DataParallel`` under JAX (on one
host or several) and ``tf.distribute.MirroredStrategy`` under TensorFlow (one host). The batch
size in the config is the global batch: with N replicas each one computes the gradient of 1/N
of it, and the mean gradient updates weights that every replica holds an identical copy of.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "STRATEGIES",
    "configure_devices",
    "replica_count",
    "replica_values",
    "scope",
]

STRATEGIES = ("single", "data_parallel")
_HOST_DEVICES_FLAG = "--xla_force_host_platform_device_count"
_JAX_PROCESS_VARS = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
)

# What this module set up, kept per process: Keras and TensorFlow hold these globally anyway.
_state: dict[str, Any] = {"tf_strategy": None, "tf_devices": None, "jax_distribution": None}


def configure_devices(cfg: Any) -> None:
    """Set the device flags ``cfg`` needs; call before anything imports Keras, TF or JAX."""
    trainer = cfg.get("trainer") or {}
    name = str(cfg.get("backend", "tensorflow"))
    strategy = str(trainer.get("strategy", "single"))
    devices = trainer.get("devices", "auto")
    if name == "jax":
        _configure_jax_memory(trainer.get("jax_preallocate", True))
    if strategy != "data_parallel":
        return
    count = devices if isinstance(devices, int) else None
    if name == "jax":
        if count is not None and count > 1:
            _request_host_devices(count)
        _initialize_jax_processes()
    else:
        _configure_tensorflow(count)


def _configure_jax_memory(preallocate: bool) -> None:
    value = "true" if preallocate else "false"
    previous = os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE")
    if previous is not None and previous.lower() != value:
        logger.warning(
            "XLA_PYTHON_CLIENT_PREALLOCATE=%s in the environment is replaced by "
            "trainer.jax_preallocate=%s",
            previous,
            preallocate,
        )
    os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = value
    logger.info("JAX GPU memory preallocation: %s", "on" if preallocate else "off")


def _request_host_devices(count: int) -> None:
    """Ask XLA for ``count`` CPU devices; GPUs and TPUs are unaffected by this flag."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    kept = [flag for flag in flags if not flag.startswith(_HOST_DEVICES_FLAG)]
    os.environ["XLA_FLAGS"] = " ".join([*kept, f"{_HOST_DEVICES_FLAG}={count}"])
    logger.debug("XLA_FLAGS=%s", os.environ["XLA_FLAGS"])


def _initialize_jax_processes() -> None:
    """Join the process group of a multi-host JAX run named by Keras's environment variables."""
    processes = int(os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "1") or 1)
    if processes <= 1:
        return
    missing = [name for name in _JAX_PROCESS_VARS if not os.environ.get(name)]
    if missing:
        raise ValueError(
            f"a multi-host JAX run needs {', '.join(_JAX_PROCESS_VARS)}; missing: "
            f"{', '.join(missing)} (received KERAS_DISTRIBUTION_NUM_PROCESSES={processes})"
        )
    import jax

    # Limitation: every process of a multi-host run writes a run folder of its own (the same
    # metrics and weights), because saving weights gathers them with a collective that every
    # process must join. Give each host its own trainer.default_root_dir (or local disk). Only
    # process 0 writing needs the others to still join each save and discard the file.
    coordinator = os.environ["KERAS_DISTRIBUTION_JOB_ADDRESSES"].split(",")[0]
    process_id = int(os.environ["KERAS_DISTRIBUTION_PROCESS_ID"])
    jax.distributed.initialize(coordinator, num_processes=processes, process_id=process_id)
    logger.info("JAX process %d of %d (coordinator %s)", process_id, processes, coordinator)


def _tf_workers() -> int:
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    except ValueError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from error
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def _configure_tensorflow(count: int | None) -> None:
    workers = _tf_workers()
    if workers > 1:
        # Limitation: Keras 3.15's Model.fit fails under MultiWorkerMirroredStrategy (its first
        # build reduces the per-replica batch outside a replica context, which that strategy
        # rejects with "Attempt to convert a value (PerReplica...)"), so several TensorFlow
        # workers cannot train. Several hosts work under JAX; a Keras fix would lift this.
        raise ValueError(
            "trainer.strategy=data_parallel over several TensorFlow workers is not supported: "
            "Keras 3's Model.fit fails under tf.distribute.MultiWorkerMirroredStrategy. Train "
            "on several hosts with backend=jax, or on the GPUs of one host without TF_CONFIG. "
            f"Received: TF_CONFIG with {workers} workers"
        )
    if count is None or count <= 1:
        return
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError:
        # Limitation: TensorFlow splits a CPU into logical devices only before its runtime
        # starts; a process that already ran TensorFlow keeps its single CPU device. Start a
        # new process (kiln run does) to get the virtual devices.
        logger.warning(
            "TensorFlow has already started; the CPU stays one device instead of %d", count
        )


# --------------------------------------------------------------------------------- the scope
@contextlib.contextmanager
def scope(strategy: str, devices: int | str = "auto") -> Iterator[None]:
    """The context in which the model and optimizer are built.

    Under JAX the data-parallel distribution stays set after the block, because Keras reads it
    again in ``fit``, ``evaluate`` and ``predict`` to shard each batch; a later
    ``scope("single")`` removes it. Under TensorFlow the model remembers the strategy it was
    built in.
    """
    if strategy not in STRATEGIES:
        raise ValueError(
            f"trainer.strategy must be one of {', '.join(STRATEGIES)}; received {strategy!r}"
        )
    import keras

    if keras.backend.backend() == "jax":
        _set_jax_distribution(strategy, devices)
        yield
        return
    if strategy == "single":
        yield
        return
    with _tensorflow_strategy(devices).scope():
        yield


def _pick(available: list[str], devices: int | str, what: str, hint: str) -> list[str]:
    if devices == "auto":
        return available
    if devices > len(available):
        raise ValueError(
            f"trainer.devices={devices} but {what} sees {len(available)} device(s): "
            f"{', '.join(available)}. {hint}"
        )
    return available[:devices]


def _set_jax_distribution(strategy: str, devices: int | str) -> None:
    import keras

    if strategy == "single":
        if _state["jax_distribution"] is not None:
            if keras.distribution.distribution() is _state["jax_distribution"]:
                keras.distribution.set_distribution(None)
            _state["jax_distribution"] = None
        return
    hint = (
        f"On a CPU, kiln run makes virtual devices with XLA_FLAGS={_HOST_DEVICES_FLAG}=N; set "
        "it before JAX starts, or call framework.distribution.configure_devices(cfg) first."
    )
    # Limitation: JAX shards every batch evenly over the devices, so a last partial batch that
    # does not divide by the device count fails inside JAX. DataModules must make batches that
    # divide evenly (or drop the remainder); padding the last batch here would fix it.
    names = _pick(keras.distribution.list_devices(), devices, "JAX", hint)
    distribution = keras.distribution.DataParallel(devices=names)
    keras.distribution.set_distribution(distribution)
    _state["jax_distribution"] = distribution
    logger.info("data parallel (JAX) over %d device(s): %s", len(names), ", ".join(names))


def _tensorflow_strategy(devices: int | str) -> Any:
    import tensorflow as tf

    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    available = gpus or [d.name for d in tf.config.list_logical_devices("CPU")]
    hint = (
        "On a CPU, kiln run splits it into logical devices before TensorFlow starts; in your "
        "own script call framework.distribution.configure_devices(cfg) before anything "
        "imports TensorFlow."
    )
    names = _pick(available, devices, "TensorFlow", hint)
    if _state["tf_devices"] != names:
        if len(names) > 1 and not gpus:
            # NCCL is GPU-only; on CPU devices the copies are reduced on the host.
            ops = tf.distribute.ReductionToOneDevice(reduce_to_device=names[0])
        else:
            ops = None
        _state["tf_strategy"] = tf.distribute.MirroredStrategy(names, cross_device_ops=ops)
        _state["tf_devices"] = names
        logger.info("data parallel (TensorFlow) over %d device(s): %s", len(names), names)
    return _state["tf_strategy"]


# ---------------------------------------------------------------------------- introspection
def replica_count(model: Any) -> int:
    """How many copies of ``model``'s weights training keeps in step (1 without a strategy)."""
    import keras

    if keras.backend.backend() == "jax":
        variable = model.trainable_variables[0]
        return len(variable.value.addressable_shards)
    return int(model.distribute_strategy.num_replicas_in_sync)


def replica_values(variable: Any) -> list[Any]:
    """The value of ``variable`` on each device that holds a copy, as NumPy arrays."""
    import keras
    import numpy as np

    if keras.backend.backend() == "jax":
        return [np.asarray(shard.data) for shard in variable.value.addressable_shards]
    inner = getattr(variable, "value", variable)
    copies = getattr(inner, "values", None)
    if copies is None:
        return [np.asarray(inner)]
    return [np.asarray(copy) for copy in copies]
