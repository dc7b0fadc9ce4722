"""Sweeps: the variants a sweep names, each trained over several seeds, then compared.

``configs/sweeps/<name>.yaml`` lists the variants (a label, a recipe and overrides), the seeds
and the epoch budget. Every run is a normal run folder; the sweep keeps a manifest, the
comparison table and the loss curves in ``<default_root_dir>/sweeps/<name>/``. Starting a sweep
again skips the runs its manifest records as finished and resumes an interrupted one from its
``last.ckpt``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from framework import registry
from framework.callbacks.monitor import MonitorError, infer_mode
from framework.config import ConfigError, config_dir, flatten, load_config, parse_overrides

logger = logging.getLogger(__name__)

__all__ = [
    "SweepResult",
    "SweepSpec",
    "Variant",
    "VariantSummary",
    "load_sweep",
    "run_sweep",
    "sweep_names",
]

_SWEEP_KEYS = (
    "name",
    "description",
    "seeds",
    "metric",
    "mode",
    "max_epochs",
    "variants",
    "overrides",
)
_COMMAND_LINE_KEYS = ("seeds", "metric", "mode", "max_epochs")
_VARIANT_KEYS = ("label", "recipe", "overrides")
# Keys the sweep sets for every run itself, and why a user may not.
_RESERVED = {
    "recipe": "each variant names its recipe",
    "trainer.seed": "set sweep.seeds instead",
    "trainer.ckpt_path": "the sweep resumes interrupted runs itself",
}
# Trainer keys every variant must share: the training budget, and where runs are written.
_SHARED_TRAINER_KEYS = ("max_epochs", "limit_train_batches", "default_root_dir")
# Keys that do not change what a run computes, so changing them keeps finished runs valid.
_NOT_IN_FINGERPRINT = (
    "trainer.ckpt_path",
    "trainer.default_root_dir",
    "trainer.enable_progress_bar",
)


@dataclass(frozen=True)
class Variant:
    """One row of the comparison: a recipe with overrides of its own."""

    label: str
    recipe: str
    overrides: tuple[str, ...] = ()


@dataclass
class SweepSpec:
    """A sweep definition with the command line applied."""

    name: str
    description: str
    seeds: list[int]
    metric: str
    mode: str
    max_epochs: int | None
    variants: list[Variant]
    overrides: list[str]  # for every run: the sweep file's, then the command line's


@dataclass
class VariantSummary:
    """The finished runs of one variant: (mean, sample std) per metric; std None below 2."""

    label: str
    recipe: str
    runs: int
    failed: int
    stats: dict[str, tuple[float, float | None]]
    epochs: list[int] = field(default_factory=list)


@dataclass
class SweepResult:
    """What a sweep wrote, and its rows ranked best first."""

    name: str
    out_dir: Path
    rows: list[VariantSummary]
    runs_started: int
    runs_skipped: int
    markdown: Path
    table_csv: Path
    plot: Path


@dataclass
class _Run:
    variant: Variant
    seed: int
    cfg: DictConfig
    fingerprint: str

    @property
    def key(self) -> str:
        return f"{self.variant.label}/seed_{self.seed}"


# ------------------------------------------------------------------------------ definitions
def sweep_names() -> list[str]:
    """The sweeps defined in ``configs/sweeps``."""
    return sorted(path.stem for path in (config_dir() / "sweeps").glob("*.yaml"))


def load_sweep(name: str, overrides: Iterable[str] = ()) -> SweepSpec:
    """The sweep ``configs/sweeps/<name>.yaml`` with ``sweep.<key>=value`` overrides applied.

    Other ``key=value`` overrides are kept for every run (checked when the runs are planned).
    """
    path = config_dir() / "sweeps" / f"{name}.yaml"
    if not path.is_file():
        known = sweep_names()
        message = f"unknown sweep {name!r}; known sweeps: {', '.join(known) or 'none'}"
        suggestion = registry.closest(name, known)
        raise KeyError(message + (f"; did you mean {suggestion!r}?" if suggestion else ""))
    try:
        loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as error:  # omegaconf/yaml raise many types for a malformed file
        raise ConfigError(f"sweep file {path} is not valid YAML: {error}") from error
    if not isinstance(loaded, dict) or set(loaded) != {"sweep"}:
        raise ConfigError(f"{path} must hold one mapping, 'sweep:'; received {loaded!r:.200}")
    body = dict(loaded["sweep"] or {})
    _check_keys(body, _SWEEP_KEYS, "sweep", str(path))
    if body.get("name", name) != name:
        raise ConfigError(f"{path} must set sweep.name: {name}; received {body['name']!r}")

    run_overrides = _strings(body.get("overrides") or [], "sweep.overrides")
    overrides = list(overrides)
    parsed = parse_overrides(overrides)
    if {"sweep.max_epochs", "trainer.max_epochs"} <= {key for key, _, _ in parsed}:
        raise ConfigError(
            "give the epoch budget once, as sweep.max_epochs or trainer.max_epochs; received both"
        )
    for item, (key, value, adds) in zip(overrides, parsed, strict=True):
        if key.startswith("sweep."):
            sub = key.removeprefix("sweep.")
            if adds or sub not in _COMMAND_LINE_KEYS:
                _check_keys({sub: value}, _COMMAND_LINE_KEYS, "sweep", "the command line")
            body[sub] = value
        elif key == "trainer.max_epochs":
            body["max_epochs"] = value  # the budget is the sweep's: one for every variant
        else:
            run_overrides.append(item)
    _check_reserved(run_overrides, "the sweep's overrides or the command line")

    metric = str(body.get("metric") or "test_loss")
    try:
        mode = infer_mode(metric, body.get("mode"))
    except MonitorError as error:
        raise ConfigError(f"sweep.mode: {error}") from None
    return SweepSpec(
        name=name,
        description=str(body.get("description") or ""),
        seeds=_seeds(body.get("seeds", 3)),
        metric=metric,
        mode=mode,
        max_epochs=_budget(body.get("max_epochs")),
        variants=_variants(body.get("variants"), str(path)),
        overrides=run_overrides,
    )


def _check_keys(mapping: dict, allowed: Sequence[str], where: str, source: str) -> None:
    for key in mapping:
        if key not in allowed:
            suggestion = registry.closest(str(key), list(allowed))
            hint = f"; did you mean {where}.{suggestion}?" if suggestion else ""
            raise ConfigError(
                f"unknown key {where}.{key} (from {source}); valid keys: "
                f"{', '.join(allowed)}{hint}"
            )


def _strings(items: Any, where: str) -> list[str]:
    if not isinstance(items, list) or not all(isinstance(i, str) and "=" in i for i in items):
        raise ConfigError(f"{where} must be a list of key=value strings; received {items!r}")
    parse_overrides(items)
    return list(items)


def _check_reserved(overrides: Iterable[str], source: str) -> None:
    for key, value, _ in parse_overrides(overrides):
        if key in _RESERVED:
            raise ConfigError(
                f"a sweep sets {key} itself ({_RESERVED[key]}); received it in {source}"
            )
        if key == "trainer.fast_dev_run" and value is True:
            raise ConfigError(
                "a sweep cannot use trainer.fast_dev_run=true: it writes no run folder to "
                "compare; use trainer.limit_train_batches and sweep.max_epochs for a quick sweep"
            )


def _seeds(value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return list(range(value))
    if (
        isinstance(value, list)
        and value
        and all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in value)
        and len(set(value)) == len(value)
    ):
        return list(value)
    raise ConfigError(
        f"sweep.seeds must be a count >= 1 (seeds 0..N-1) or a list of distinct seeds in "
        f"[0, 2**32); received {value!r}"
    )


def _budget(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"sweep.max_epochs must be an integer >= 1; received {value!r}")
    return value


def _variants(value: Any, source: str) -> list[Variant]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"sweep.variants in {source} must be a non-empty list of variants")
    variants = []
    for item in value:
        if not isinstance(item, dict) or "recipe" not in item:
            raise ConfigError(f"each variant needs at least a recipe; received {item!r}")
        _check_keys(item, _VARIANT_KEYS, "variant", source)
        registry.get_recipe(str(item["recipe"]))
        where = f"the overrides of variant {item.get('label', item['recipe'])!r}"
        overrides = _strings(item.get("overrides") or [], where)
        _check_reserved(overrides, where)
        label = str(item.get("label") or item["recipe"])
        variants.append(Variant(label, str(item["recipe"]), tuple(overrides)))
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        raise ConfigError(f"variant labels must be unique in {source}; repeated: {repeated}")
    return variants


def _plan(spec: SweepSpec) -> list[_Run]:
    """Every (variant, seed) run with its validated config; all checked before any run."""
    runs = []
    for variant in spec.variants:
        for seed in spec.seeds:
            overrides = [*variant.overrides, *spec.overrides]
            if spec.max_epochs is not None:
                overrides.append(f"trainer.max_epochs={spec.max_epochs}")
            cfg = load_config(variant.recipe, None, [*overrides, f"trainer.seed={seed}"])
            runs.append(_Run(variant, seed, cfg, _fingerprint(cfg)))

    # One budget for all, and one backend: the runs share a process, and Keras's backend is
    # fixed at its first import.
    for key in ("backend", *(f"trainer.{k}" for k in _SHARED_TRAINER_KEYS)):
        values = {run.variant.label: OmegaConf.select(run.cfg, key) for run in runs}
        if len(set(values.values())) > 1:
            raise ConfigError(
                f"every variant of a sweep needs the same {key}; received "
                + ", ".join(f"{label}: {value}" for label, value in values.items())
                + ". Set it for all of them in the sweep's overrides or on the command line."
            )
    return runs


def _fingerprint(cfg: DictConfig | dict) -> str:
    """A hash of everything in a run config that changes what the run computes."""
    flat = flatten(cfg)
    for key in _NOT_IN_FINGERPRINT:
        flat.pop(key, None)
    text = json.dumps(flat, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------- manifest
class _Manifest:
    """``manifest.json``: per run, its folder (relative to the runs root), status and metrics.

    Written atomically after every change, so an interrupted sweep leaves a readable one.
    """

    def __init__(self, path: Path, root: Path) -> None:
        self.path = path
        self.root = root
        self.runs: dict[str, dict[str, Any]] = {}
        if path.is_file():
            try:
                self.runs = json.loads(path.read_text())["runs"]
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(
                    f"the sweep manifest {path} is unreadable ({error}); move it away to start "
                    "the sweep over"
                ) from None

    def update(self, key: str, **values: Any) -> None:
        self.runs.setdefault(key, {}).update(values)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"runs": self.runs}, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.path)

    def run_dir(self, key: str) -> Path | None:
        entry = self.runs.get(key) or {}
        return self.root / entry["run_dir"] if entry.get("run_dir") else None

    def is_complete(self, run: _Run) -> bool:
        entry = self.runs.get(run.key)
        if not entry or entry.get("status") != "complete":
            return False
        if entry.get("fingerprint") != run.fingerprint:
            logger.info("%s: its config changed since it ran; running it again", run.key)
            return False
        folder = self.run_dir(run.key)
        if folder is None or not folder.is_dir():
            logger.warning("%s: its run folder %s is gone; running it again", run.key, folder)
            return False
        return True


# ------------------------------------------------------------------------------------ running
def run_sweep(name: str, overrides: Iterable[str] = (), *, echo: bool = True) -> SweepResult:
    """Run every (variant, seed) of sweep ``name`` not finished yet, then write the report.

    Returns the ranked rows and the paths written; with ``echo`` the table is printed too.
    """
    spec = load_sweep(name, overrides)
    runs = _plan(spec)
    root = Path(str(runs[0].cfg.trainer.default_root_dir))
    out_dir = root / "sweeps" / name
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = _Manifest(out_dir / "manifest.json", root)
    logger.info(
        "sweep %s: %d variant(s) x %d seed(s), %s epoch(s) per run; writing to %s",
        name,
        len(spec.variants),
        len(spec.seeds),
        runs[0].cfg.trainer.max_epochs,
        out_dir,
    )

    # Limitation: runs go one after another in this process, on its devices; two processes
    # running the same sweep at once would overwrite each other's manifest entries. Running
    # variants in parallel would need a lock on the manifest and one device set per process.
    started = skipped = 0
    for index, run in enumerate(runs, start=1):
        if manifest.is_complete(run):
            skipped += 1
            logger.info("sweep %s: %s already finished; skipping", name, run.key)
            metrics = manifest.runs[run.key].get("metrics") or {}
        else:
            logger.info(
                "sweep %s: run %d/%d, %s (%s)", name, index, len(runs), run.key, run.variant.recipe
            )
            started += 1
            metrics = _execute(spec, run, manifest, root)
        _check_metric(spec, run, metrics)

    from framework.sweep_report import write_report

    result = write_report(spec, runs, manifest.runs, root, out_dir)
    result.runs_started, result.runs_skipped = started, skipped
    if echo:
        _print_table(spec, result)
    return result


def _check_metric(spec: SweepSpec, run: _Run, metrics: dict[str, float] | None) -> None:
    # Limitation: metric names come from the compiled model, so a sweep.metric that no run
    # reports is only found once the first run has finished (that run stays finished).
    if metrics is None or spec.metric in metrics:
        return
    suggestion = registry.closest(spec.metric, sorted(metrics))
    hint = f"; did you mean {suggestion!r}?" if suggestion else ""
    raise ConfigError(
        f"sweep.metric {spec.metric!r} is not a metric of {run.key}; its metrics: "
        f"{', '.join(sorted(metrics))}{hint}"
    )


def _execute(
    spec: SweepSpec, run: _Run, manifest: _Manifest, root: Path
) -> dict[str, float] | None:
    """Run one (variant, seed), recording it in the manifest; None if training failed."""
    from framework.run import run_recipe

    previous = manifest.runs.get(run.key) or {}
    resume = _resume_point(run, previous, root)
    cfg = run.cfg
    if resume is not None:
        cfg = copy.deepcopy(cfg)
        cfg.trainer.ckpt_path = str(resume)
        logger.info("%s was interrupted; resuming from %s", run.key, resume)
        first_version = previous["first_version"]
    else:
        first_version = _next_version(root / run.variant.recipe)
    manifest.update(
        run.key,
        variant=run.variant.label,
        recipe=run.variant.recipe,
        seed=run.seed,
        fingerprint=run.fingerprint,
        first_version=first_version,
        status="running",
        run_dir=None,
        metrics={},
        reason=None,
        started=time.time(),
    )

    _clear_keras_session()
    try:
        result = run_recipe(cfg)
    except BaseException as error:
        status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        manifest.update(run.key, status=status, reason=f"{type(error).__name__}: {error}")
        if status == "interrupted":
            logger.warning(
                "sweep %s stopped during %s; run `kiln sweep %s` again with the same overrides "
                "to go on: finished runs are skipped and this one resumes from its last "
                "checkpoint",
                spec.name,
                run.key,
                spec.name,
            )
        # Limitation: a failed run (a NaN loss, say) starts over on the next sweep with the same
        # seed, so a failure that the seed makes certain repeats; the table counts it as failed.
        if type(error).__name__ != "TrainingFailed":
            raise
        logger.warning("%s failed (%s); going on with the next run", run.key, error)
        return None

    if result.log_dir is None:
        raise ConfigError(
            f"recipe {run.variant.recipe!r} wrote no run folder, so a sweep cannot compare it; "
            "a sweep needs recipes that train and test"
        )
    run_dir = Path(result.log_dir)
    manifest.update(
        run.key,
        status="complete",
        run_dir=os.path.relpath(run_dir, root),
        metrics=dict(result.metrics),
        epochs_completed=_epochs_completed(run_dir),
        finished=time.time(),
    )
    return dict(result.metrics)


def _clear_keras_session() -> None:
    # Runs share one process: without this, layer names count on from the previous run's
    # model and Keras keeps that model's graph state alive.
    keras = sys.modules.get("keras")
    if keras is not None:
        keras.backend.clear_session()


def _next_version(folder: Path) -> int:
    from framework.loggers.versioning import existing_versions

    versions = existing_versions(folder)
    return versions[-1] + 1 if versions else 0


def _resume_point(run: _Run, previous: dict[str, Any], root: Path) -> Path | None:
    """The ``last.ckpt`` of this run's interrupted folder, if it left a loadable one.

    The folder is the newest one of the recipe, made since the run started, whose saved config
    matches the run's and that did not finish.
    """
    # Limitation: a run killed after its folder finished but before the manifest recorded it
    # is trained again from the start; adopting it would need its final metrics read back
    # from metrics.csv.
    if previous.get("status") not in ("running", "interrupted"):
        return None  # a failed run starts over: its last checkpoint may lead to the failure
    if previous.get("fingerprint") != run.fingerprint or "first_version" not in previous:
        return None
    from framework.checkpoint import CheckpointError, read_state
    from framework.loggers.versioning import existing_versions

    folder = root / run.variant.recipe
    for version in reversed(existing_versions(folder)):
        if version < previous["first_version"]:
            break
        run_dir = folder / f"version_{version}"
        last = run_dir / "checkpoints" / "last.ckpt"
        config = run_dir / "config.yaml"
        if not (last.is_file() and config.is_file()):
            continue
        if _fingerprint(OmegaConf.load(config)) != run.fingerprint:
            continue
        if _read_status(run_dir).get("status") == "success":
            continue
        try:
            read_state(last)
        except CheckpointError as error:
            logger.warning("%s: cannot resume (%s); starting over", run.key, error)
            return None
        return last
    return None


def _read_status(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _epochs_completed(run_dir: Path) -> int | None:
    value = _read_status(run_dir).get("epochs_completed")
    return int(value) if isinstance(value, int) else None


def _print_table(spec: SweepSpec, result: SweepResult) -> None:
    from rich.console import Console
    from rich.table import Table

    from framework.sweep_report import columns, format_stat

    table = Table(title=f"sweep {spec.name}: ranked by {spec.metric} ({spec.mode})")
    for title in ("rank", "variant", "runs"):
        table.add_column(title, justify="left" if title == "variant" else "right")
    keys = columns(spec)
    for _, title in keys:
        table.add_column(title, justify="right")
    for rank, row in enumerate(result.rows, start=1):
        runs = f"{row.runs}" + (f" ({row.failed} failed)" if row.failed else "")
        cells = [format_stat(row.stats.get(key)) for key, _ in keys]
        table.add_row(str(rank), row.label, runs, *cells)
    console = Console()
    console.print(table)
    console.print(f"table: {result.markdown} and {result.table_csv}")
    console.print(f"loss curves: {result.plot}")
