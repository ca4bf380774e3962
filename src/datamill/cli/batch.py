"""``datamill batch export`` / ``datamill batch import``: a run's calls as one JSONL file for
vLLM's ``run_batch`` on a GPU box, and its output back into the call cache."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..errors import ConfigError
from ..words import plural
from .options import (
    CacheOption,
    InputOption,
    ModelOption,
    SetOption,
    load_with_models,
    split_models,
)

out = Console(soft_wrap=True)
app = typer.Typer(
    help="Write a run's missing calls as one JSONL file (vLLM run_batch, OpenAI batch format) and read the answers back.",
    no_args_is_help=True,
)


@app.command("export")
def export(
    recipe: Annotated[
        str, typer.Argument(help="A built-in recipe name (see `datamill recipes`) or a YAML file.")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The JSONL file to write (e.g. calls.jsonl).")
    ],
    limit: Annotated[int | None, typer.Option(help="Use at most N source rows.")] = None,
    model_: ModelOption = None,
    served_model: Annotated[
        list[str] | None,
        typer.Option(
            "--served-model",
            metavar="NAME|MODEL=NAME",
            help="The model name the request lines ask for: the one run_batch serves (its --model "
            "or --served-model-name), for every model, or MODEL=NAME for one model of the recipe "
            "(repeatable). Needed for a local model (llamacpp GGUF file, model folder).",
        ),
    ] = None,
    set_: SetOption = None,
    cache: CacheOption = None,
    input_: InputOption = None,
) -> None:
    """Write the calls a run of RECIPE would make that the cache lacks (for vLLM's run_batch).

    One request a line, for `python -m vllm.entrypoints.openai.run_batch -i FILE -o
    results.jsonl`. No model is called. Run it again after `datamill batch import` for the next
    model step."""
    from ..io.sources import source_from_path
    from ..pipeline.batchfile import export_calls

    pipeline, model = load_with_models(recipe, set_, model_)
    every, named = split_models(served_model, "--served-model", "name")
    if every is not None and named:
        raise ConfigError(
            "--served-model: give one NAME for every model or MODEL=NAME per model, not both"
        )
    source = source_from_path(input_) if input_ is not None else None
    done = asyncio.run(
        export_calls(
            pipeline,
            output,
            model=model,
            limit=limit,
            cache=cache or True,
            source=source,
            served=named or every,
        )
    )
    if not done.requests:
        command = run_command(recipe, limit, model_, set_, cache, input_)
        out.print(
            f"nothing to export: the cache answers every call ({done.cached}); "
            f"`{command}` finishes from it",
            highlight=False,
        )
        return
    served = done.models[0] if len(done.models) == 1 else "MODEL"
    out.print(
        f"wrote {plural(done.requests, 'request')} to {done.path} "
        f"({plural(done.cached, 'call')} already cached). "
        f"On the GPU box: python -m vllm.entrypoints.openai.run_batch -i {done.path.name} "
        f"-o results.jsonl --model {served}; then: datamill batch import results.jsonl",
        highlight=False,
    )


def run_command(
    recipe: str,
    limit: int | None,
    models: list[str] | None,
    sets: list[str] | None,
    cache: Path | None,
    input_: Path | None,
) -> str:
    """The ``datamill run`` command (shell-quoted) that makes the calls an export with these
    arguments looked for: the same recipe, rows, models, overrides, cache and input."""
    import shlex

    args = ["datamill", "run", recipe]
    if limit is not None:
        args += ["--limit", str(limit)]
    for spec in models or []:
        args += ["--model", spec]
    for value in sets or []:
        args += ["--set", value]
    if cache is not None:
        args += ["--cache", str(cache)]
    if input_ is not None:
        args += ["--input", str(input_)]
    return shlex.join(args)


@app.command("import")
def import_(
    results: Annotated[Path, typer.Argument(help="The output file of run_batch (its -o).")],
    cache: CacheOption = None,
) -> None:
    """Put the answers of a run_batch output file into the call cache.

    OpenAI batch output files work too. The next `datamill run` (or `datamill batch export`)
    goes on from them."""
    from ..pipeline.batchfile import import_results
    from ..pipeline.cache import CallCache

    store = CallCache(cache) if cache else CallCache()
    try:
        done = import_results(results, store)
    finally:
        store.close()
    line = f"imported {plural(done.answers, 'answer')} into {store.path}"
    if done.failed:
        line += f"; {plural(len(done.failed), 'request')} failed (first: {done.failed[0]})"
    if done.foreign:
        line += (
            f"; {plural(done.foreign, 'line')} skipped (custom ids not made by datamill batch "
            "export)"
        )
    out.print(line, highlight=False)
    if not done.answers:
        raise typer.Exit(1)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="batch")
