"""Command-line options that several commands share (typer ``Annotated`` types)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe field: key.path=value (repeatable)."),
]
CacheOption = Annotated[
    Path | None,
    typer.Option(
        help="Call cache file, a SQLite file datamill made or will make (default: $DATAMILL_CACHE "
        "or ~/.cache/datamill/calls.sqlite). Runs sharing it pay for each call once."
    ),
]
InputOption = Annotated[
    Path | None,
    typer.Option(
        "--input",
        "-i",
        help="Read source rows from this file/folder instead of the recipe's source.",
    ),
]
