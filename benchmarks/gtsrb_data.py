"""How fast GTSRB is prepared, and how many images per second its training pipeline delivers.

Run from the repository root::

    python benchmarks/gtsrb_data.py --source ../shared/data/gtsrb32 [--root DIR]

Without ``--root`` the cache goes to a temporary folder, so the first figure is a cold
prepare. The pipeline figure is the training ``tf.data`` pipeline with augmentation, timed
over whole epochs after one warm-up epoch. Import ``pipeline_images_per_second`` to put the
figure next to another (for example what a model consumes).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

logger = logging.getLogger(__name__)

__all__ = ["pipeline_images_per_second", "prepare_timed"]


def prepare_timed(source: str, root: str | Path, crop_roi: bool = False) -> dict[str, Any]:
    """Prepare the cache (or reuse it) and return the summary, with its ``seconds``."""
    from recipes.gtsrb.data import prepare

    return prepare(source, root, crop_roi=crop_roi, progress=False)


def pipeline_images_per_second(
    root: str | Path,
    batch_size: int = 128,
    epochs: int = 2,
    augment: bool = True,
    seed: int = 0,
) -> float:
    """Training images per second the GTSRB pipeline yields from the cache under ``root``.

    One epoch is run first and not timed (it fills tf.data's cache and builds the graph).
    """
    from omegaconf import OmegaConf

    from recipes.gtsrb.data import GTSRBDataModule

    config = OmegaConf.load(REPO_ROOT / "configs" / "data" / "gtsrb.yaml")
    config.data.root = str(root)
    config.data.batch_size = batch_size
    if not augment:
        config.data.augment = {
            "crop": False,
            "flip": False,
            "flip_pairs": False,
            "brightness": 0.0,
            "contrast": None,
        }
    config.trainer = {"seed": seed}
    module = GTSRBDataModule(config)
    module.prepare_data()
    module.setup("fit")
    dataset = module.train_dataloader()

    for _ in dataset:
        pass
    images = 0
    started = time.perf_counter()
    for _ in range(epochs):
        for batch, _labels in dataset:
            images += int(batch.shape[0])
    return images / (time.perf_counter() - started)


def cnn_images_per_second(root: str | Path, batch_size: int = 128, batches: int = 40) -> float:
    """Training images per second the GTSRB CNN consumes, fed by the same augmented pipeline."""
    import keras
    from omegaconf import OmegaConf

    from recipes.gtsrb.data import GTSRBDataModule
    from recipes.gtsrb.models import build_cnn

    config = OmegaConf.load(REPO_ROOT / "configs" / "data" / "gtsrb.yaml")
    config.data.root = str(root)
    config.data.batch_size = batch_size
    config.trainer = {"seed": 0}
    module = GTSRBDataModule(config)
    module.prepare_data()
    module.setup("fit")
    dataset = module.train_dataloader()
    model = build_cnn()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3, epsilon=0.1),
        loss="sparse_categorical_crossentropy",
        jit_compile=False,
    )
    model.fit(dataset.take(5), verbose=0)  # tracing and the first steps are not timed
    started = time.perf_counter()
    model.fit(dataset.take(batches), verbose=0)
    return batches * batch_size / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(REPO_ROOT.parent / "shared" / "data" / "gtsrb32"))
    parser.add_argument("--root", default=None, help="data root (default: a temporary folder)")
    parser.add_argument("--crop-roi", action="store_true")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="gtsrb-bench-"))
    try:
        cold = prepare_timed(args.source, root, args.crop_roi)
        warm = prepare_timed(args.source, root, args.crop_roi)
        print(
            f"prepare: {cold['train_images']} training + {cold['test_images']} test images in "
            f"{cold['seconds']:.1f} s ({'reused' if cold['reused'] else 'decoded'}); "
            f"second prepare {warm['seconds']:.3f} s (reused={warm['reused']})"
        )
        for augment in (True, False):
            rate = pipeline_images_per_second(root, args.batch_size, args.epochs, augment)
            label = "with augmentation" if augment else "without augmentation"
            print(f"training pipeline {label}: {rate:,.0f} images/s (batch {args.batch_size})")
            if augment:
                augmented_rate = rate
        consumed = cnn_images_per_second(root, args.batch_size)
        print(
            f"GTSRB CNN training (Keras fit on that pipeline): {consumed:,.0f} images/s; the "
            f"pipeline delivers {augmented_rate / consumed:.1f}x what the CNN consumes"
        )
    finally:
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
