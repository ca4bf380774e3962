"""``datamill plan``: forecast a run's calls, tokens, time and cost before paying for it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..words import plural
from .options import BatchOption, CacheOption, InputOption, ModelOption, SetOption, load_with_models

out = Console()
console = Console(stderr=True, soft_wrap=True)  # one-line messages stay one line


def plan(
    recipe: Annotated[
        str, typer.Argument(help="A built-in recipe name (see `datamill recipes`) or a YAML file.")
    ],
    limit: Annotated[
        int | None,
        typer.Option(help="Forecast a run on at most N source rows (as `datamill run --limit N`)."),
    ] = None,
    model_: ModelOption = None,
    preview: Annotated[
        int,
        typer.Option(
            help="Source rows the preview runs on the model to measure completions and speed."
        ),
    ] = 3,
    prices: Annotated[
        Path | None,
        typer.Option(
            help="Price table (YAML, USD per million tokens; default ~/.config/datamill/prices.yaml)."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Run output folder the forecast is saved in, for `datamill run` to compare (default: out/RECIPE).",
        ),
    ] = None,
    set_: SetOption = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Do not keep the preview's calls in the call cache.")
    ] = False,
    cache: CacheOption = None,
    input_: InputOption = None,
    batch: BatchOption = False,
) -> None:
    """Forecast a run's model calls, tokens, time and cost before paying for it.

    Per step and in total: model calls and prompt tokens (counted with the model's tokenizer),
    completion tokens and time (estimated from a short preview run on the model), and cost
    (from the price table; local models cost 0). The preview's calls are kept in the call cache,
    so the run does not pay for them twice.
    """
    from ..io.sources import source_from_path
    from ..pipeline.plan import aplan_pipeline
    from ..pricing import PriceTable

    pipeline, model = load_with_models(recipe, set_, model_)
    table = PriceTable.load(prices)
    source = source_from_path(input_) if input_ is not None else None
    cache_arg: bool | Path = False if no_cache else (cache or True)
    with console.status(f"previewing {plural(preview, 'row')} on the model…"):
        forecast = asyncio.run(
            aplan_pipeline(
                pipeline,
                limit=limit,
                model=model,
                preview_rows=preview,
                prices=table,
                cache=cache_arg,
                source=source,
                batch=batch,
            )
        )
    out.print(forecast.table())
    for line in forecast.lines():
        out.print(line, highlight=False)
    folder = output or Path("out") / pipeline.name
    try:
        saved = forecast.save(folder)
    except OSError as exc:
        console.print(f"[yellow]could not save the forecast in {folder}: {exc.strerror}[/]")
        return
    out.print(
        f"saved {saved}: `datamill run` with the same recipe, --limit and --model puts it into run.json",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
