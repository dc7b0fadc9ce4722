"""The reference a user would otherwise pick: the same nets trained by a plain PyTorch CPU loop.

PyTorch is an optional dependency of the benchmarks only (``pip install torch``); without it
this prints a message and exits. Run from the repository root::

    python benchmarks/torch_reference.py [--epochs 4]

The loop is what one writes for data held in memory: a fresh permutation each epoch, slices
of tensors as batches, ``zero_grad``, forward, loss, ``backward``, ``step``. Images are stored
channels-first (PyTorch's own layout), converted once before timing. PyTorch's default thread
count is used, as a user would.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from common import CNN_BATCH, DENSE_BATCH, cnn_data, dense_data, median

__all__ = ["torch_available", "train_torch"]


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _cnn() -> tuple[Any, Any, Any]:
    import torch
    from torch import nn

    net = nn.Sequential(
        nn.Conv2d(3, 32, 5),
        nn.ELU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5),
        nn.ELU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 43),
    )
    # The softmax is inside the cross-entropy loss, as PyTorch users write it.
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, eps=0.1)
    return net, optimizer, nn.CrossEntropyLoss()


def _dense() -> tuple[Any, Any, Any]:
    import torch
    from torch import nn

    net = nn.Sequential(
        nn.Linear(1, 64), nn.Sigmoid(), nn.Linear(64, 32), nn.Sigmoid(), nn.Linear(32, 1)
    )
    return net, torch.optim.Adam(net.parameters(), lr=0.01), nn.MSELoss()


def train_torch(
    net: str, count: int, epochs: int, threads: int = 0, seed: int = 0
) -> dict[str, Any]:
    """Train ``net`` ('cnn' or 'dense') on ``count`` samples with ``threads`` threads (0: the
    default); steady-state figures."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    if net == "cnn":
        images, labels = cnn_data(count, seed)
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        y = torch.from_numpy(labels.astype(np.int64))
        model, optimizer, loss_fn = _cnn()
        batch = CNN_BATCH
    else:
        inputs, targets = dense_data(count, seed)
        x, y = torch.from_numpy(inputs), torch.from_numpy(targets)
        model, optimizer, loss_fn = _dense()
        batch = DENSE_BATCH
    parameters = sum(p.numel() for p in model.parameters())

    def epoch() -> float:
        started = time.perf_counter()
        order = torch.randperm(count)
        for start in range(0, count, batch):
            index = order[start : start + batch]
            optimizer.zero_grad()
            loss = loss_fn(model(x[index]), y[index])
            loss.backward()
            optimizer.step()
        return time.perf_counter() - started

    model.train()
    seconds = [epoch() for _ in range(epochs)]
    steady = median(seconds[1:])
    steps = -(-count // batch)
    return {
        "framework": "pytorch",
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        "net": net,
        "params": parameters,
        "first_epoch_s": seconds[0],
        "images_per_s": count / steady,
        "steps_per_s": steps / steady,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args(argv)
    if not torch_available():
        print("PyTorch is not installed; skipping the reference (pip install torch).")
        return
    for net, count in (("cnn", 7680), ("dense", 1000)):
        result = train_torch(net, count, args.epochs)
        print(
            f"{net}: {result['images_per_s']:,.0f} images/s, {result['steps_per_s']:,.0f} "
            f"steps/s ({result['params']:,} parameters, {result['threads']} threads)"
        )


if __name__ == "__main__":
    main()
