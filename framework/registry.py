"""Recipe and dataset registration by name, resolved lazily.

Registration stores an import path ("package.module:Attribute") and a one-line description, so
that listing recipes or validating a config never imports Keras, TensorFlow or JAX. The target
is imported only when a run asks for it, after the backend has been chosen.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "Entry",
    "closest",
    "dataset_names",
    "get_dataset",
    "get_recipe",
    "recipe_entries",
    "register_dataset",
    "register_recipe",
    "resolve",
]


@dataclass(frozen=True)
class Entry:
    name: str
    target: str
    description: str


_RECIPES: dict[str, Entry] = {}
_DATASETS: dict[str, Entry] = {}
_LOADED = False


def register_recipe(name: str, target: str, description: str) -> None:
    """Register a recipe class under ``name``; ``target`` is ``"module:ClassName"``."""
    _register(_RECIPES, "recipe", name, target, description)


def register_dataset(name: str, target: str, description: str) -> None:
    """Register a dataset's ``prepare`` function under ``name`` (for ``kiln data prepare``)."""
    _register(_DATASETS, "dataset", name, target, description)


def _register(table: dict[str, Entry], kind: str, name: str, target: str, desc: str) -> None:
    if ":" not in target:
        raise ValueError(f"{kind} target must look like 'module:Attribute'. Received: {target!r}")
    existing = table.get(name)
    if existing is not None and existing.target != target:
        raise ValueError(
            f"{kind} {name!r} is already registered to {existing.target!r}; "
            f"cannot register it again to {target!r}"
        )
    table[name] = Entry(name, target, desc)


def _load_builtin() -> None:
    # The recipes package registers its entries on import; it imports no Keras at module level.
    global _LOADED
    if not _LOADED:
        importlib.import_module("recipes")
        _LOADED = True


def closest(name: str, choices: list[str] | tuple[str, ...]) -> str | None:
    """The closest valid name to a misspelt one, or None when nothing is close."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _lookup(table: dict[str, Entry], kind: str, name: str) -> Entry:
    _load_builtin()
    if name in table:
        return table[name]
    known = sorted(table)
    message = f"unknown {kind} {name!r}; known {kind}s: {', '.join(known)}"
    suggestion = closest(name, known)
    if suggestion:
        message += f"; did you mean {suggestion!r}?"
    raise KeyError(message)


def recipe_entries() -> list[Entry]:
    _load_builtin()
    return [_RECIPES[name] for name in sorted(_RECIPES)]


def dataset_names() -> list[str]:
    _load_builtin()
    return sorted(_DATASETS)


def get_recipe(name: str) -> Entry:
    """The registry entry for a recipe name; a KeyError with suggestions when unknown."""
    return _lookup(_RECIPES, "recipe", name)


def get_dataset(name: str) -> Entry:
    return _lookup(_DATASETS, "dataset", name)


def resolve(entry: Entry) -> Any:
    """Import and return the object an entry points to (this may import Keras)."""
    module_name, _, attribute = entry.target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute)
