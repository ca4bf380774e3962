"""How a message names a recipe file: a built-in recipe by its name (``built-in recipe
'mixture'``), never by the path it is installed at (``…/site-packages/datamill/recipes/builtin``),
which the user did not write and cannot edit; any other recipe by its path as given.

Deliberately not here: finding recipes (``recipes.loader``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def builtin_folder() -> Path:
    """The folder the built-in recipes are installed in."""
    return Path(str(resources.files("datamill") / "recipes" / "builtin"))


def _builtin_name(path: Path) -> str | None:
    try:
        inside = path.resolve().parent == builtin_folder().resolve()
    except OSError:
        return None
    return path.stem if inside and path.suffix in (".yaml", ".yml") else None


def recipe_label(path: Path | None) -> str:
    """``built-in recipe 'NAME'`` for a built-in, the path for another file, ``recipe`` for
    none (a recipe given as data)."""
    if path is None:
        return "recipe"
    name = _builtin_name(path)
    return f"built-in recipe {name!r}" if name else str(path)


def recipe_place(path: Path | None, line: int | None = None) -> str:
    """Where in a recipe, for the start of an error line: ``PATH:LINE`` (editors jump there) or
    ``built-in recipe 'NAME', line LINE``; without a line, :func:`recipe_label`."""
    label = recipe_label(path)
    if line is None:
        return label
    return (
        f"{label}, line {line}" if path is not None and _builtin_name(path) else f"{label}:{line}"
    )


def folder_label(folder: Path) -> str:
    """A recipe's folder in a message: ``the built-in recipes' folder`` for the installed one."""
    try:
        builtin = folder.resolve() == builtin_folder().resolve()
    except OSError:
        builtin = False
    return "the built-in recipes' folder" if builtin else str(folder)
