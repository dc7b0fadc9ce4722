"""Train the regression recipe on one device and data-parallel, in a fresh process.

Used by ``tests/test_distribution.py``: the virtual devices of TensorFlow and JAX exist only if
they are requested before the backend starts, so each backend runs in its own process.

    python -m tests.distributed_worker BACKEND DEVICES OUT.npz

writes, for each of the runs ``single`` and ``parallel``: the final weights in order, the number
of replicas, the fewest copies any weight has, the largest difference between two copies of a
weight, the final loss and the global step.
"""

from __future__ import annotations

import sys

import numpy as np
from omegaconf import OmegaConf


def main(backend: str, devices: int, out: str) -> None:
    from framework import distribution
    from framework.backend import select_backend
    from framework.config import load_config

    overrides = [
        f"backend={backend}",
        "trainer.strategy=data_parallel",
        f"trainer.devices={devices}",
        "trainer.max_epochs=2",
    ]
    cfg = load_config("regression_sequential", overrides=overrides)
    distribution.configure_devices(cfg)
    select_backend(backend)

    from framework.trainer import Trainer
    from recipes.regression import RegressionSequential

    results: dict[str, np.ndarray] = {}
    for run, strategy in (("single", "single"), ("parallel", "data_parallel")):
        flags = OmegaConf.to_container(cfg.trainer, resolve=True)
        flags.update(strategy=strategy, enable_progress_bar=False, enable_checkpointing=False)
        trainer = Trainer(logger=False, **flags)
        metrics = trainer.fit(RegressionSequential(cfg))
        model = trainer.model
        if backend == "jax":
            model.jax_state_sync()
        spread, fewest = 0.0, None
        for variable in model.weights:
            copies = distribution.replica_values(variable)
            spread = max(spread, max(float(np.abs(c - copies[0]).max()) for c in copies))
            fewest = len(copies) if fewest is None else min(fewest, len(copies))
        for index, variable in enumerate(model.weights):
            results[f"{run}/weight{index}"] = distribution.replica_values(variable)[0]
        results[f"{run}/replicas"] = np.array(distribution.replica_count(model))
        results[f"{run}/spread"] = np.array(spread)
        results[f"{run}/copies"] = np.array(fewest)
        results[f"{run}/loss"] = np.array(metrics["loss"])
        results[f"{run}/steps"] = np.array(trainer.global_step)
    np.savez(out, **results)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
