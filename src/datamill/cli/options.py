"""Command-line options that several commands share (typer ``Annotated`` types)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError

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


def split_models(values: list[str] | None) -> tuple[str | None, dict[str, str]]:
    """``--model`` values → (the spec for every model, or None; name → spec). ``NAME=SPEC``
    names a model when NAME is a plain name (a spec's ``=`` comes after its ``backend:``)."""
    plain: list[str] = []
    named: dict[str, str] = {}
    for value in values or []:
        m = _NAMED.match(value)
        if m is None:
            plain.append(value)
            continue
        name, spec = m.groups()
        if not spec.strip():
            raise ConfigError(
                f"--model {value}: give a spec after '=', e.g. --model {name}=llamacpp"
            )
        if name in named:
            raise ConfigError(f"--model names model {name!r} twice; give it once")
        named[name] = spec
    if len(plain) > 1:
        raise ConfigError(
            f"--model {plain[0]} and --model {plain[1]}: give one spec for every model, or NAME=SPEC per model"
        )
    return (plain[0] if plain else None), named


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
        help="Stop before model calls would cost more than USD (see --prices). A stopped run exits 3; the same command resumes it.",
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
