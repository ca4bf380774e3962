"""Files a recipe names, found next to the recipe: one rule for every path a recipe declares.

A relative path in a recipe file (``source.path``, a ``decontaminate`` benchmark, a
``verify_json`` schema file, a ``filter_length`` tokenizer, a model or embedder spec's path, a
``module:function`` module of ``verify_python``/``verify_json``) is looked up in the recipe's
folder first, then in the working folder (where ``--set`` values and older recipes point); the
first place that has it wins, and a path found in neither is left as written, for the step to
refuse in one line. Steps built from Python (no recipe) read paths from the working folder.

The recipe loader builds a recipe's steps inside ``with reading_recipe(folder):`` (a context
variable: steps' own ``__init__`` would drop pydantic's validation context); a field typed
:data:`RecipePath` (or a validator calling :func:`from_recipe`) resolves its value with it.

Deliberately not here: reading the files (each step does, when it is built).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator

from ..recipe_label import folder_label

_RECIPE_DIR: ContextVar[Path | None] = ContextVar("datamill_recipe_dir", default=None)


@contextmanager
def reading_recipe(folder: Path | None) -> Iterator[None]:
    """Steps built inside find relative paths in ``folder`` first (``None``: no recipe file)."""
    token = _RECIPE_DIR.set(folder)
    try:
        yield
    finally:
        _RECIPE_DIR.reset(token)


def recipe_dir() -> Path | None:
    """The folder of the recipe whose steps are being built, if it came from a file."""
    return _RECIPE_DIR.get()


def resolve(value: str, folder: Path | None) -> str:
    """``value`` as a path: in ``folder`` when it is relative and there, else as written (the
    working folder's, or absolute)."""
    if folder is None or not value:
        return value
    p = Path(value).expanduser()
    if p.is_absolute():
        return value
    candidate = folder / p
    return str(candidate) if candidate.exists() else value


def from_recipe(value: Any) -> Any:
    """A pydantic before-validator: a relative path string resolved by :func:`resolve`."""
    return resolve(value, recipe_dir()) if isinstance(value, str) else value


def resolve_spec(spec: str, folder: Path | None) -> str:
    """A ``KIND:PATH`` spec with its path resolved by :func:`resolve` (``llamacpp:model.gguf``
    beside the recipe → ``llamacpp:/abs/model.gguf``); the caller knows the argument is a path."""
    kind, sep, arg = spec.partition(":")
    return f"{kind}:{resolve(arg, folder)}" if sep and arg else spec


def where_looked(value: str, folder: Path | None = None) -> str:
    """For an error: where a relative path was looked for (empty for an absolute one)."""
    if Path(value).is_absolute():
        return ""
    places = [folder_label(folder)] if folder is not None else []
    return f" (looked in {' and '.join([*places, str(Path.cwd())])})"


#: a field holding a file path that a recipe may give relative to itself
RecipePath = Annotated[str, BeforeValidator(from_recipe)]

__all__ = [
    "RecipePath",
    "from_recipe",
    "reading_recipe",
    "recipe_dir",
    "resolve",
    "resolve_spec",
    "where_looked",
]
