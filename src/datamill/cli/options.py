"""Command-line options that several commands share (typer ``Annotated`` types)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..pipeline.graph import Pipeline

ModelOption = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        metavar="SPEC|NAME=SPEC",
        help="Model spec for every model of the recipe (llamacpp, llamacpp:PATH.gguf, fake, "
        "openai:MODEL@URL, anthropic:MODEL …), or NAME=SPEC for one named model (repeatable: "
        "--model strong=SPEC --model weak=SPEC).",
    ),
]
_NAMED = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)=(.*)$")


def split_models(
    values: list[str] | None, option: str = "--model", what: str = "spec"
) -> tuple[str | None, dict[str, str]]:
    """``--model`` values → (the spec for every model, or None; name → spec). ``NAME=SPEC``
    names a model when NAME is a plain name (a spec's ``=`` comes after its ``backend:``).
    ``option``, ``what``: the option and its value's kind in the one-line ConfigErrors
    (``--served-model`` reads the same way, with names)."""
    plain: list[str] = []
    named: dict[str, str] = {}
    for value in values or []:
        m = _NAMED.match(value)
        if m is None:
            plain.append(value)
            continue
        name, spec = m.groups()
        if not spec.strip():
            example = f", e.g. {option} {name}=llamacpp" if what == "spec" else ""
            raise ConfigError(f"{option} {value}: give a {what} after '='{example}")
        if name in named:
            raise ConfigError(f"{option} names model {name!r} twice; give it once")
        named[name] = spec
    if len(plain) > 1:
        raise ConfigError(
            f"{option} {plain[0]} and {option} {plain[1]}: give one {what} for every model, "
            f"or {'NAME=SPEC' if what == 'spec' else 'MODEL=' + what.upper()} per model"
        )
    return (plain[0] if plain else None), named


def load_with_models(
    recipe: str, sets: list[str] | None, models: list[str] | None
) -> tuple[Pipeline, str | None]:
    """The recipe with ``--set`` and ``--model`` applied, and the spec that still replaces every
    model's at run time (None when ``--model`` named models: their specs are in the recipe).
    Every command that takes ``--model`` reads it here, so they all take ``SPEC`` and
    ``NAME=SPEC`` alike. Raises ConfigError (one line) for a bad ``--model`` or recipe."""
    from ..recipes.loader import load_recipe

    model, named = split_models(models)
    pipeline = load_recipe(recipe, sets or [], model=model, models=named)
    return pipeline, (None if named else model)


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

# -- where a run's rows go and what caps it (``datamill run``) -----------------------------------
ExecutorOption = Annotated[
    str, typer.Option(help="Where per-row steps run: local, or ray (shards over Ray workers).")
]
AddressOption = Annotated[
    str | None,
    typer.Option(help="Ray cluster address (with --executor ray); default: start a local one."),
]
WorkersOption = Annotated[
    int | None, typer.Option(help="Ray workers/shards at once (default: the cluster's CPUs).")
]
MaxCostOption = Annotated[
    float | None,
    typer.Option(
        "--max-cost",
        metavar="USD",
        help="Stop before model calls would cost more than USD (see --prices). A stopped run exits 3; the same command resumes it from the call cache (not with --no-cache).",
    ),
]
MaxTotalTokensOption = Annotated[
    int | None,
    typer.Option(
        "--max-total-tokens",
        metavar="N",
        help="Stop before the run's model calls would use more than N tokens in all (prompt + completion). "
        "Not the per-answer limit: that is max_tokens on a step or model (--set STEP.max_tokens=N).",
    ),
]
OldMaxTokensOption = Annotated[
    int | None,
    typer.Option("--max-tokens", metavar="N", hidden=True, help="Deprecated: --max-total-tokens."),
]
DeadlineOption = Annotated[
    str | None,
    typer.Option(
        metavar="DURATION",
        help="Start no model call after this much wall time: 90s, 10m, 1h30m.",
    ),
]
PricesOption = Annotated[
    Path | None,
    typer.Option(
        help="Price table for --max-cost (YAML, USD per million tokens; default ~/.config/datamill/prices.yaml)."
    ),
]
BatchOption = Annotated[
    bool,
    typer.Option(
        "--batch",
        help="Call every model whose provider has a batch API (OpenAI, Anthropic) through it, "
        "at its batch price (half); as `batch: true` on a model.",
    ),
]


def flags_show_no_type() -> None:
    """Make typer's rich help show a flag (``--quiet``, ``--help``) without a value type.

    typer (0.2x) writes a flag's type (``<bool>``) in the rich help's type column, as if the flag
    took a value; its plain help already leaves it out (``not is_flag and not count``). This
    makes the rich help do the same, for every command; idempotent."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "_datamill_flags", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None
        result: str | None = shown(self, ctx)
        return result

    display_type_rich._datamill_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]
