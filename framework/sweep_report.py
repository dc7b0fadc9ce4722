"""The comparison a sweep writes: a ranked table (markdown and CSV) and the loss curves.

Numbers come from the sweep's manifest (each run's final metrics as ``kiln run`` reports them)
and the curves from each run folder's ``metrics.csv``. The figure and the table also go to
TensorBoard, under ``<default_root_dir>/sweeps/<name>``.
"""

from __future__ import annotations

import csv
import logging
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framework.sweep import SweepResult, SweepSpec, VariantSummary

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from framework.sweep import _Run

logger = logging.getLogger(__name__)

__all__ = ["columns", "format_stat", "summarise", "write_report"]

# The losses every table reports beside the ranking metric: (run metric, column title).
LOSSES = (("loss", "train loss"), ("val_loss", "val loss"), ("test_loss", "test loss"))
# metrics.csv columns drawn per variant: (column, line style, legend entry).
_CURVES = (("train/loss", "-", "train"), ("val/loss", "--", "val"))


def columns(spec: SweepSpec) -> list[tuple[str, str]]:
    """(metric key, column title) of the table: the ranking metric first, then the losses."""
    return [(spec.metric, spec.metric), *((k, t) for k, t in LOSSES if k != spec.metric)]


def format_stat(stat: tuple[float, float | None] | None) -> str:
    """``mean ± std``, the mean alone for a single run, ``n/a`` without any."""
    if stat is None or math.isnan(stat[0]):
        return "n/a"
    mean, std = stat
    return f"{mean:.4g}" if std is None else f"{mean:.4g} ± {std:.2g}"


def summarise(
    spec: SweepSpec, runs: Sequence[_Run], entries: Mapping[str, Mapping[str, Any]]
) -> list[VariantSummary]:
    """One summary per variant, ranked best first by ``spec.metric`` (variants with no
    finished run last)."""
    rows = []
    for variant in spec.variants:
        mine = [entries.get(r.key) or {} for r in runs if r.variant == variant]
        done = [e for e in mine if e.get("status") == "complete"]
        stats = {}
        for key, _ in columns(spec):
            values = [float(e["metrics"][key]) for e in done if key in e.get("metrics", {})]
            stats[key] = _mean_std(values)
        rows.append(
            VariantSummary(
                label=variant.label,
                recipe=variant.recipe,
                runs=len(done),
                failed=sum(e.get("status") == "failed" for e in mine),
                stats=stats,
                epochs=[e["epochs_completed"] for e in done if e.get("epochs_completed")],
            )
        )
    sign = -1.0 if spec.mode == "max" else 1.0

    def order(row: VariantSummary) -> tuple[bool, float]:
        mean = row.stats[spec.metric][0]
        return (math.isnan(mean), sign * mean if not math.isnan(mean) else 0.0)

    return sorted(rows, key=order)


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    if not values:
        return (math.nan, None)
    std = statistics.stdev(values) if len(values) > 1 else None
    return (statistics.fmean(values), std)


def write_report(
    spec: SweepSpec,
    runs: Sequence[_Run],
    entries: Mapping[str, Mapping[str, Any]],
    root: Path,
    out_dir: Path,
) -> SweepResult:
    """Write results.md, results.csv, runs.csv and loss_curves.png, and log them to TensorBoard."""
    rows = summarise(spec, runs, entries)
    markdown = _markdown(spec, runs, rows)
    result = SweepResult(
        name=spec.name,
        out_dir=out_dir,
        rows=rows,
        runs_started=0,
        runs_skipped=0,
        markdown=out_dir / "results.md",
        table_csv=out_dir / "results.csv",
        plot=out_dir / "loss_curves.png",
    )
    result.markdown.write_text(markdown)
    _write_table_csv(result.table_csv, spec, rows)
    _write_runs_csv(out_dir / "runs.csv", spec, runs, entries)

    curves = {
        variant.label: [
            _epoch_curves(root / entries[r.key]["run_dir"])
            for r in runs
            if r.variant == variant and (entries.get(r.key) or {}).get("status") == "complete"
        ]
        for variant in spec.variants
    }
    figure = _loss_figure(spec, runs, curves)
    figure.savefig(result.plot)

    from framework.loggers import TensorBoardLogger

    # Version 0 with a purge at step 0: a report written again replaces the previous one.
    board = TensorBoardLogger(out_dir.parent, spec.name, version=0, purge_step=0)
    board.log_figure("sweep/loss_curves", figure, step=0)
    board.log_text("sweep/results", markdown, step=0)
    board.finalize("success")
    logger.info("sweep %s: report written to %s", spec.name, out_dir)
    return result


def _budget_lines(spec: SweepSpec, runs: Sequence[_Run], rows: list[VariantSummary]) -> list[str]:
    trainer = runs[0].cfg.trainer
    limit = trainer.limit_train_batches
    if limit is None:
        per_epoch = "all training batches"
    elif isinstance(limit, float):
        per_epoch = f"{limit:.0%} of the training batches"
    else:
        per_epoch = "1 training batch" if limit == 1 else f"{limit} training batches"
    lines = [
        f"- Epoch budget: {_plural(trainer.max_epochs, 'epoch')} per run (`trainer.max_epochs`), "
        f"{per_epoch} per epoch, the same for every variant.",
    ]
    epochs = [e for row in rows for e in row.epochs]
    if epochs and min(epochs) != max(epochs):
        lines.append(f"- Epochs trained: {min(epochs)} to {max(epochs)} (early stopping).")
    seeds = ", ".join(str(s) for s in spec.seeds)
    runs_each = _plural(len(spec.seeds), "run")
    lines.append(f"- Seeds (`trainer.seed`): {seeds}; {runs_each} per variant.")
    if spec.overrides:
        shown = ", ".join(f"`{item}`" for item in spec.overrides)
        lines.append(f"- Overrides for every run: {shown}.")
    better = "higher" if spec.mode == "max" else "lower"
    lines.append(
        f"- Ranked by `{spec.metric}` ({better} is better). Each cell is the mean ± the sample "
        "standard deviation over the finished runs. Train and val loss are those of the last "
        "epoch; test metrics are those each run reported (`kiln run` tests the best "
        "checkpoint when one is kept)."
    )
    return lines


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _markdown(spec: SweepSpec, runs: Sequence[_Run], rows: list[VariantSummary]) -> str:
    keys = columns(spec)
    lines = [f"# Sweep `{spec.name}`", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    lines += [*_budget_lines(spec, runs, rows), ""]
    titles = [f"`{key}`" if key == spec.metric else title for key, title in keys]
    header = ["rank", "variant", "recipe", "runs", *titles]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---:", "---", "---", "---:"] + ["---:"] * len(keys)) + "|")
    for rank, row in enumerate(rows, start=1):
        runs_cell = f"{row.runs}" + (f" ({row.failed} failed)" if row.failed else "")
        cells = [str(rank), row.label, f"`{row.recipe}`", runs_cell]
        cells += [format_stat(row.stats.get(key)) for key, _ in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _number(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else repr(value)


def _write_table_csv(path: Path, spec: SweepSpec, rows: list[VariantSummary]) -> None:
    keys = [key for key, _ in columns(spec)]
    header = ["rank", "variant", "recipe", "runs", "failed", "max_epochs"]
    header += [f"{key}_{part}" for key in keys for part in ("mean", "std")]
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(header)
        for rank, row in enumerate(rows, start=1):
            cells: list[Any] = [rank, row.label, row.recipe, row.runs, row.failed]
            cells.append(max(row.epochs) if row.epochs else "")
            for key in keys:
                mean, std = row.stats[key]
                cells += [_number(mean), _number(std)]
            writer.writerow(cells)


def _write_runs_csv(
    path: Path, spec: SweepSpec, runs: Sequence[_Run], entries: Mapping[str, Mapping[str, Any]]
) -> None:
    keys = [key for key, _ in columns(spec)]
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["variant", "recipe", "seed", "status", "run_dir", "epochs", *keys])
        for run in runs:
            entry = entries.get(run.key) or {}
            metrics = entry.get("metrics") or {}
            writer.writerow(
                [
                    run.variant.label,
                    run.variant.recipe,
                    run.seed,
                    entry.get("status", "not run"),
                    entry.get("run_dir") or "",
                    entry.get("epochs_completed") or "",
                    *(_number(metrics.get(key)) for key in keys),
                ]
            )


def _epoch_curves(run_dir: Path) -> dict[str, dict[int, float]]:
    """Per curve in ``_CURVES``, the value at each epoch from the run's ``metrics.csv``."""
    curves: dict[str, dict[int, float]] = {name: {} for name, _, _ in _CURVES}
    path = run_dir / "metrics.csv"
    if not path.is_file():
        logger.warning("%s has no metrics.csv; its curves are left out", run_dir)
        return curves
    with open(path, newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            if not row.get("epoch"):
                continue
            epoch = int(float(row["epoch"]))
            for name, _, _ in _CURVES:
                if row.get(name):
                    curves[name][epoch] = float(row[name])
    return curves


def _loss_figure(
    spec: SweepSpec, runs: Sequence[_Run], curves: Mapping[str, list[dict[str, dict[int, float]]]]
) -> Figure:
    """Train (solid) and val (dashed) loss per epoch, the mean over seeds, a colour a variant."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(9, 5.5), dpi=120, layout="constrained")
    axes = figure.add_subplot()
    colours = matplotlib.colormaps["tab10" if len(spec.variants) <= 10 else "tab20"]
    handles = []
    values_seen: list[float] = []
    for index, variant in enumerate(spec.variants):
        colour = colours(index % colours.N)
        for name, style, _ in _CURVES:
            per_epoch: dict[int, list[float]] = {}
            for run_curves in curves.get(variant.label, []):
                for epoch, value in run_curves[name].items():
                    per_epoch.setdefault(epoch, []).append(value)
            if not per_epoch:
                continue
            epochs = sorted(per_epoch)
            means = [statistics.fmean(per_epoch[e]) for e in epochs]
            values_seen += means
            axes.plot([e + 1 for e in epochs], means, style, color=colour, marker=".")
        handles.append(Line2D([], [], color=colour, label=variant.label))
    handles += [Line2D([], [], color="black", linestyle=s, label=t) for _, s, t in _CURVES]
    finite = [v for v in values_seen if math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 20:
        axes.set_yscale("log")
    budget = int(runs[0].cfg.trainer.max_epochs)
    axes.set_xlim(0.5, budget + 0.5)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    axes.set_title(
        f"{spec.name}: loss per epoch, mean over {len(spec.seeds)} seed(s), budget {budget} epochs"
    )
    axes.legend(handles=handles, loc="best", fontsize="small")
    return figure
