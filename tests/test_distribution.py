"""Device flags set before start-up, the strategy scope, and data parallelism on two virtual
CPU devices (each backend in a fresh process, as the devices must exist before it starts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from framework import distribution

REPO = Path(__file__).resolve().parent.parent


def _cfg(backend: str, strategy: str = "data_parallel", devices: int | str = 2, **extra):  # noqa: ANN003, ANN202
    trainer = {"strategy": strategy, "devices": devices, **extra}
    return OmegaConf.create({"backend": backend, "trainer": trainer})


def test_configure_devices_requests_host_devices_for_jax(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_foo=1 --xla_force_host_platform_device_count=8")
    monkeypatch.delenv("KERAS_DISTRIBUTION_NUM_PROCESSES", raising=False)
    distribution.configure_devices(_cfg("jax", devices=2))
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_foo=1 --xla_force_host_platform_device_count=2"


def test_configure_devices_single_leaves_xla_flags_alone(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_foo=1")
    distribution.configure_devices(_cfg("jax", strategy="single", devices=2))
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_foo=1"


@pytest.mark.parametrize(("preallocate", "expected"), [(True, "true"), (False, "false")])
def test_configure_devices_sets_jax_preallocation(monkeypatch, preallocate, expected) -> None:  # noqa: ANN001
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "something-else")
    distribution.configure_devices(_cfg("jax", "single", jax_preallocate=preallocate))
    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == expected


def test_configure_devices_multi_host_jax_names_missing_variables(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    monkeypatch.delenv("KERAS_DISTRIBUTION_JOB_ADDRESSES", raising=False)
    monkeypatch.delenv("KERAS_DISTRIBUTION_PROCESS_ID", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "")
    with pytest.raises(ValueError, match="KERAS_DISTRIBUTION_JOB_ADDRESSES"):
        distribution.configure_devices(_cfg("jax", devices="auto"))


def test_configure_devices_rejects_malformed_tf_config(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        distribution.configure_devices(_cfg("tensorflow"))


def test_configure_devices_refuses_several_tensorflow_workers(monkeypatch) -> None:  # noqa: ANN001
    cluster = {"worker": ["host0:1234", "host1:1234"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"index": 0}}))
    with pytest.raises(ValueError, match="several TensorFlow workers is not supported.*2 workers"):
        distribution.configure_devices(_cfg("tensorflow"))


def test_scope_rejects_unknown_strategy() -> None:
    with (
        pytest.raises(ValueError, match="must be one of single, data_parallel.*'ddp'"),
        distribution.scope("ddp", "auto"),
    ):
        pass


def test_scope_refuses_more_devices_than_present() -> None:
    # The test process runs TensorFlow on one CPU device.
    with (
        pytest.raises(ValueError, match=r"trainer.devices=3 but TensorFlow sees 1 device"),
        distribution.scope("data_parallel", 3),
    ):
        pass


def _run_worker(backend: str, out: Path) -> dict[str, np.ndarray]:
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "XLA_FLAGS")}
    env.update(CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    completed = subprocess.run(
        [sys.executable, "-m", "tests.distributed_worker", backend, "2", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    with np.load(out) as data:
        return {key: data[key] for key in data.files}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", pytest.param("jax", marks=pytest.mark.jax)])
def test_data_parallel_matches_single_device(backend: str, tmp_path: Path) -> None:
    result = _run_worker(backend, tmp_path / "result.npz")

    assert int(result["single/replicas"]) == 1
    assert int(result["parallel/replicas"]) == 2
    # Every weight lives on both devices, and the copies never drift apart.
    assert int(result["parallel/copies"]) == 2
    assert float(result["parallel/spread"]) == 0.0
    assert int(result["parallel/steps"]) == int(result["single/steps"]) == 64

    # Two half-batch gradients averaged are the full-batch gradient, up to rounding.
    weights = sorted(k.partition("/")[2] for k in result if k.startswith("single/weight"))
    assert len(weights) == 6
    for name in weights:
        np.testing.assert_allclose(
            result[f"parallel/{name}"], result[f"single/{name}"], rtol=1e-4, atol=1e-5
        )
    np.testing.assert_allclose(result["parallel/loss"], result["single/loss"], rtol=1e-4)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def _test_loss(run_root: Path) -> float:
    import csv

    metrics = run_root / "regression_sequential" / "version_0" / "metrics.csv"
    with open(metrics) as handle:
        return next(float(r["test/loss"]) for r in csv.DictReader(handle) if r.get("test/loss"))


@pytest.mark.slow
@pytest.mark.jax
def test_jax_data_parallel_over_two_processes(tmp_path: Path) -> None:
    # Two processes on this machine stand in for two hosts, one CPU device each.
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "XLA_FLAGS")}
    env.update(
        CUDA_VISIBLE_DEVICES="",
        TF_CPP_MIN_LOG_LEVEL="3",
        KERAS_DISTRIBUTION_JOB_ADDRESSES=f"localhost:{_free_port()}",
        KERAS_DISTRIBUTION_NUM_PROCESSES="2",
    )
    # Every split a multiple of the global batch: each process reads the same number of batches.
    overrides = [
        "backend=jax", "trainer.strategy=data_parallel", "trainer.max_epochs=2",
        "data.n_train=1024", "data.n_val=256", "data.n_test=2048",
        "trainer.enable_progress_bar=false",
    ]  # fmt: skip
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "framework",
                "run",
                "regression_sequential",
                *overrides,
                f"trainer.default_root_dir={tmp_path / f'process{rank}'}",
            ],
            cwd=REPO,
            env={**env, "KERAS_DISTRIBUTION_PROCESS_ID": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err[-4000:]
        assert "data parallel (JAX) over 2 device(s)" in err
    # One model trained on both processes' data: the same figures on each.
    assert _test_loss(tmp_path / "process0") == _test_loss(tmp_path / "process1")
