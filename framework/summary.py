"""A model summary with trainable and non-trainable parameters per layer."""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["layer_rows", "print_summary"]


def _count(variables: list[Any]) -> int:
    total = 0
    for variable in variables:
        size = 1
        for dim in variable.shape:
            size *= int(dim)
        total += size
    return total


def _shape(layer: Any) -> str:
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError):
        return "?"
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def layer_rows(model: Any) -> list[dict[str, Any]]:
    """One row per layer: name, type, output shape, trainable and non-trainable counts."""
    rows = []
    for layer in model.layers:
        rows.append(
            {
                "name": layer.name,
                "type": type(layer).__name__,
                "output_shape": _shape(layer),
                "trainable": _count(layer.trainable_weights),
                "non_trainable": _count(layer.non_trainable_weights),
            }
        )
    return rows


def print_summary(model: Any) -> list[dict[str, Any]]:
    """Print the table (rich) and return its rows."""
    from rich.console import Console
    from rich.table import Table

    rows = layer_rows(model)
    table = Table(title=f"{model.name}")
    for column, justify in (
        ("layer", "left"),
        ("type", "left"),
        ("output shape", "left"),
        ("params", "right"),
        ("trainable", "right"),
        ("non-trainable", "right"),
    ):
        table.add_column(column, justify=justify)
    for row in rows:
        table.add_row(
            row["name"],
            row["type"],
            row["output_shape"],
            f"{row['trainable'] + row['non_trainable']:,}",
            f"{row['trainable']:,}",
            f"{row['non_trainable']:,}",
        )
    trainable = sum(r["trainable"] for r in rows)
    frozen = sum(r["non_trainable"] for r in rows)
    table.add_section()
    table.add_row("total", "", "", f"{trainable + frozen:,}", f"{trainable:,}", f"{frozen:,}")
    Console(width=120).print(table)
    return rows
