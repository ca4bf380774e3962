"""``datamill recipes`` and ``datamill run``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ..cachefile import resume_hint
from ..errors import ConfigError, DatamillError
from ..evalfiles import EVAL_FILE
from ..pipeline.mix import short_line
from ..pipeline.stats import Stats
from ..words import plural
from .options import (
    AddressOption,
    BatchOption,
    CacheOption,
    DeadlineOption,
    ExecutorOption,
    InputOption,
    MaxCostOption,
    MaxTotalTokensOption,
    ModelOption,
    OldMaxTokensOption,
    PricesOption,
    SetOption,
    WorkersOption,
    load_with_models,
)

console = Console(stderr=True, soft_wrap=True)  # one-line messages stay one line
out = Console()


def recipes() -> None:
    """List the built-in recipes."""
    from ..recipes.loader import builtin_recipes
    from ..recipes.yamlkeys import load_yaml

    table = Table("recipe", "description")
    for name, path in builtin_recipes().items():
        data = load_yaml(path.read_text(encoding="utf-8")) or {}
        table.add_row(name, " ".join(str(data.get("description", "")).split()))
    out.print(table)


def run(
    recipe: Annotated[
        str, typer.Argument(help="A built-in recipe name (see `datamill recipes`) or a YAML file.")
    ],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output folder (default: out/RECIPE).")
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            help="Use at most N source rows (with target_rows or mix too: the top-up tries at "
            "most N, and says so when that stops it short of the target)."
        ),
    ] = None,
    model_: ModelOption = None,
    set_: SetOption = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Neither read nor write the call cache.")
    ] = False,
    cache: CacheOption = None,
    input_: InputOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    executor: ExecutorOption = "local",
    address: AddressOption = None,
    workers: WorkersOption = None,
    max_cost: MaxCostOption = None,
    max_total_tokens: MaxTotalTokensOption = None,
    old_max_tokens: OldMaxTokensOption = None,
    deadline: DeadlineOption = None,
    prices: PricesOption = None,
    input_licence: Annotated[
        str | None,
        typer.Option(
            "--input-licence",
            "--input-license",
            metavar="LICENCE",
            help="Licence of the source rows (e.g. cc-by-4.0), for the card's provenance; "
            "default: the license: of the source's dataset card, else unknown.",
        ),
    ] = None,
    batch: BatchOption = False,
) -> None:
    """Run a recipe and write a dataset folder (parquet, card, run.json, failures.jsonl)."""
    from ..executors import get_executor
    from ..io.sources import source_from_path
    from ..pipeline.run import arun_pipeline

    pipeline, model = load_with_models(recipe, set_, model_)
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    folder = output or Path("out") / pipeline.name
    source = source_from_path(input_) if input_ is not None else None
    cache_arg: bool | Path = False if no_cache else (cache or True)
    runner_executor = get_executor(executor, address, **({"workers": workers} if workers else {}))
    max_total_tokens = total_tokens_option(max_total_tokens, old_max_tokens)
    budget = _budget(pipeline, model, max_cost, max_total_tokens, deadline, prices)
    from ..pipeline.plan import fingerprint, load_forecast

    forecast = load_forecast(
        folder, fingerprint(pipeline, limit, model, source.name if source is not None else None)
    )

    had_eval = (folder / EVAL_FILE).is_file()

    async def go() -> object:
        holder: dict[str, Stats] = {}
        task = asyncio.create_task(
            arun_pipeline(
                pipeline,
                folder,
                model=model,
                limit=limit,
                cache=cache_arg,
                source=source,
                executor=runner_executor,
                on_start=lambda s: holder.update(s=s),
                budget=budget,
                forecast=forecast,
                input_licence=input_licence,
                batch=batch,
            )
        )
        if quiet:
            return await task
        return await _with_progress(task, holder)

    result = asyncio.run(go())
    stats: Stats = result.stats  # type: ignore[attr-defined]
    _print_summary(result, stats, folder, cached=cache_arg is not False)
    if had_eval and not (folder / EVAL_FILE).is_file():
        out.print(
            f"[yellow]removed the eval of the old data in {folder} (the data changed): "
            "run datamill eval again[/]",
            highlight=False,
        )
    from ..pipeline.plan import comparison_lines

    for line in comparison_lines(getattr(result, "summary", {})):
        out.print(line, highlight=False)
    if getattr(result, "stopped", None):
        raise typer.Exit(3)
    if stats.rows_done == 0:
        raise typer.Exit(1)


def total_tokens_option(new: int | None, old: int | None) -> int | None:
    """``--max-total-tokens``, or its deprecated spelling ``--max-tokens`` (one line says so)."""
    if old is None:
        return new
    if new is not None:
        raise ConfigError("give --max-total-tokens only; --max-tokens is its old, deprecated name")
    console.print(
        "--max-tokens is deprecated: it caps the whole run's tokens, so it is now --max-total-tokens "
        "(a step's per-answer limit is max_tokens in the recipe)",
        highlight=False,
        soft_wrap=True,
    )
    return old


def _budget(
    pipeline: Any,
    model: str | None,
    max_cost: float | None,
    max_total_tokens: int | None,
    deadline: str | None,
    prices: Path | None,
) -> Any:
    """A :class:`~datamill.pipeline.budget.Budget` for the caps given (``None`` without caps)."""
    if max_cost is None and max_total_tokens is None and deadline is None:
        return None
    from ..pipeline.budget import Budget
    from ..pricing import PriceTable

    table = PriceTable.load(prices)
    if max_cost is not None:
        for name, settings in pipeline.models.items():
            spec = model if model is not None and isinstance(settings.spec, str) else settings.spec
            if isinstance(spec, str) and table.for_spec(spec) is None:
                raise ConfigError(
                    f"--max-cost: no price is known for model {name!r} ({spec}); add it to ~/.config/datamill/prices.yaml or pass --prices FILE"
                )
    return Budget(
        max_cost=max_cost, max_total_tokens=max_total_tokens, deadline=deadline, prices=table
    )


async def _with_progress(task: asyncio.Task[object], holder: dict[str, Stats]) -> object:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]rows"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        bar = progress.add_task("run", total=None, info="loading…")
        while not task.done():
            await asyncio.wait({task}, timeout=0.25)
            s = holder.get("s")
            if s is not None:
                progress.update(
                    bar,
                    total=s.rows_total,
                    completed=s.source_rows_done,
                    info=f"calls {s.model_calls}  cached {s.cache_hits}  {s.tokens_per_second:.0f} tok/s  lost {s.failed_rows}",
                )
        if not task.cancelled() and isinstance(task.exception(), DatamillError):
            # a refused run (bad input, a server that refuses every call) says so in one line:
            # the bar it never filled is taken off the screen first
            progress.remove_task(bar)
            progress.live.transient = True
            progress.live.stop()
            progress.disable = True  # rich's stop would still end the bar's line with a newline
        return task.result()


def _print_summary(result: object, stats: Stats, folder: Path, *, cached: bool = True) -> None:
    stopped = getattr(result, "stopped", None)
    previous = getattr(result, "previous_rows", None)
    if stats.rows_done:
        out.print(
            f"[bold green]wrote {plural(stats.rows_done, 'row')}[/] to {folder}  "
            f"(model calls {stats.model_calls}, cache hits {stats.cache_hits}, "
            f"tokens {stats.prompt_tokens}+{stats.completion_tokens}, {stats.seconds:.1f}s)"
        )
    for line in stats.losses():
        out.print(f"[yellow]{line}[/]", highlight=False)
    for line in stats.yield_lines():  # one per verifier: verified of checked, top reasons
        out.print(f"yield {line}", highlight=False)
    for name, facts in (getattr(result, "summary", None) or {}).get("models", {}).items():
        by_reason = facts.get("retries_by_reason") or {}
        if by_reason:  # e.g. "model default: 12 attempts retried (10 timeout, 2 server error 500)"
            detail = ", ".join(f"{n} {r}" for r, n in by_reason.items())
            out.print(
                f"[yellow]model {name}: {plural(sum(by_reason.values()), 'attempt')} retried ({detail})[/]",
                highlight=False,
            )
    topup = topup_line(getattr(result, "summary", None) or {})
    if topup:
        out.print(topup, highlight=False)
    short = short_line(getattr(result, "summary", None) or {})
    if short:
        console.print(f"[yellow]{short}[/]", highlight=False)
    if stopped:
        out.print(f"[yellow]stopped early: {stopped}; {resume_hint(cached)}[/]", highlight=False)
    if stats.rows_done == 0:
        console.print(f"[red]{no_rows_line(result, stats, folder)}[/]", highlight=False)
    elif previous is not None and stats.rows_done < previous:
        console.print(
            f"[yellow]warning: {folder} held {plural(previous, 'row')} from an earlier run; "
            f"this run replaced them with {stats.rows_done}[/]",
            highlight=False,
        )


def topup_line(summary: dict[str, Any]) -> str | None:
    """``target of 20 rows reached after 31 source rows tried; yield 0.65 rows per source row``
    (``report.topup``), or None for a run without ``target_rows``."""
    from ..report.topup import topup_text

    return topup_text(summary, mixed="mix" in summary)


def no_rows_line(result: object, stats: Stats, folder: Path) -> str:
    """One line for a run that wrote no rows: why, and what happened to the folder."""
    why = "; ".join(stats.losses()) or (
        "the source gave no rows" if stats.rows_total == 0 else "every row was dropped"
    )
    side = getattr(result, "failed_attempt", None)
    previous = getattr(result, "previous_rows", None)
    kept = (
        f"the earlier dataset in {folder} ({plural(previous, 'row')}) is kept"
        if previous is not None
        else f"no data file written to {folder} (datasets cannot load a dataset of 0 rows)"
    )
    where = side or folder
    where = f"; this attempt's run.json and failures.jsonl are in {where}"
    return f"no rows written: {why}; {kept}{where}"


def register(app: typer.Typer) -> None:
    app.command("recipes")(recipes)
    app.command("run")(run)
