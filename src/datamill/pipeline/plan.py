"""Forecasts: what a run will cost before paying for it (``datamill plan``, ``Pipeline.plan``).

A forecast runs the pipeline on a few source rows (the *preview*, on the real model), then
scales what each step did to the whole source:

- **calls** and **prompt tokens**: for the first step, when it is a task that says its requests
  up front, counted over every source row with the model's tokenizer (exact); for later steps,
  the preview's per-row figures (themselves counted by the model) times the rows expected there;
- **completion tokens**: the preview's, scaled: an estimate, and said to be one;
- **time**: each step's measured seconds in calls, scaled, divided by the parallelism the
  preview reached (seconds in calls ÷ wall seconds of calls), plus the measured start-up; this
  is the preview's throughput on this model, so a bigger preview of a parallel backend (an API)
  forecasts better;
- **cost**: those tokens at each model's price (``datamill.pricing``); local models cost 0.

Rows the preview loses (unparsable, truncated) lower the rows expected at later steps, as they
would in the run; the forecast's notes say where. The preview's calls go to the call cache (it
does not read from it, so it measures the model), and the run reuses them: ``to_send`` is what
the run still has to send. ``datamill plan`` writes ``forecast.json`` into the output folder;
``datamill run`` with the same recipe, limit and model puts it into ``run.json`` next to the
actuals (``forecast_vs_actual``).

The preview is assembled like a run (``pipeline.assembly``): each model is built and started once.

Deliberately not here: the :class:`Forecast` itself, saving it and comparing it with a run
(``pipeline.forecast``, re-exported here); enforcing caps (``pipeline.budget``); prices
(``datamill.pricing``).
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

from .._sync import run_sync
from ..errors import ConfigError, ModelUnavailable
from ..io.sources import Source
from ..models.base import Completion, Model
from ..models.embeddings import embedding_cache
from ..pricing import Price, PriceTable
from ..rows import Row
from ..steps.base import Context, Step
from ..words import plural
from .assembly import BuiltModels, RunAssembly, batched
from .budget import Budget, prompt_tokens
from .cache import CallCache
from .forecast import (
    FORECAST_FILE,
    Forecast,
    StepForecast,
    attach_forecast,
    comparison_lines,
    fingerprint,
    load_forecast,
)
from .graph import Pipeline
from .run import load_checked
from .stats import CallCounts, Stats
from .topup import attempts_cap


class _WriteOnlyCache(CallCache):
    """Reads nothing (the preview measures the model), writes everything (the run reuses it)."""

    def get(self, key: str, n: int) -> list[Completion] | None:
        return None

    def get_partial(self, key: str, n: int) -> dict[int, Completion]:
        return {}


def _count_first_step(
    pipeline: Pipeline, rows: list[Row], models: dict[str, Model]
) -> tuple[int, int] | None:
    """Exact calls and prompt tokens of the first step, when it says its requests up front."""
    first = pipeline.steps[0]
    requests = getattr(first, "requests", None)
    if requests is None or len(first.models()) != 1:
        return None
    model = models[first.models()[0]]

    async def no_calls(name: str, request: Any, options: Any) -> Any:
        raise RuntimeError("counting only")

    calls = tokens = 0
    try:
        for i, row in enumerate(rows):
            ctx = Context((i,), no_calls, lambda m: models[m].info, seed=pipeline.seed)
            for request in requests(dict(row), ctx):
                calls += 1
                tokens += prompt_tokens(model, request) * request.n
    except Exception:  # a task that decides its requests while running (Magpie, evolution)
        return None
    return calls, tokens


class _Preview:
    """What the preview measured: its counters, the budget's call times, the models it used."""

    def __init__(self, stats: Stats, recorder: Budget, began: float, loading: float) -> None:
        self.stats = stats
        self.recorder = recorder
        self.began = began  # when the preview's first row was sent (monotonic seconds)
        self.loading = loading  # seconds to open the cache and build and start the models
        self.models: BuiltModels = {}
        self.counted: tuple[int, int] | None = None
        self.cached = False

    def timing(self) -> tuple[float, float, float]:
        """``(startup, wall, parallelism)``: seconds before the first call (loading included),
        wall seconds from the first call to the last, seconds in calls ÷ that wall time."""
        first = self.recorder.first_call_at
        first = first if first is not None else self.began
        startup = self.loading + max(0.0, first - self.began)
        wall = (self.recorder.last_call_end or first) - first
        usage = self.stats.usage.values()
        in_calls = sum(c.seconds for per in usage for c in per.values())
        return startup, wall, (in_calls / wall if wall > 0 and in_calls > 0 else 1.0)


async def _run_preview(
    pipeline: Pipeline,
    rows: list[Row],
    source: Source,
    *,
    model: str | None,
    preview_rows: int,
    prices: PriceTable,
    cache: bool | str | Path,
) -> _Preview:
    """Run the first ``preview_rows`` rows on the models (each started once), measuring."""
    preview_source = copy.copy(source)
    preview_source.limit = min(preview_rows, source.limit or preview_rows)
    sample = preview_source.load()
    stats = Stats(rows_total=len(sample))
    recorder = Budget(prices=prices)
    write_only = _WriteOnlyCache(None if cache is True else cache) if cache else None
    try:
        async with RunAssembly(
            pipeline.models,
            seed=pipeline.seed,
            override=model,
            cache=write_only if write_only is not None else False,
            budget=recorder,
            stats=stats,
            defer_unavailable=False,  # the preview measures the model: it must be there
            online=True,  # measured online; a batched model is priced at its batch price
        ) as run:
            counted = _count_first_step(pipeline, rows, {n: m for n, (m, _) in run.models.items()})
            preview = _Preview(stats, recorder, time.monotonic(), run.load_seconds)
            with embedding_cache(run.cache.path if run.cache is not None else None):
                await run.runner.run(pipeline.steps, (((i,), r) for i, r in enumerate(sample)))
            preview.models, preview.counted = run.models, counted
            preview.cached = write_only is not None
    finally:
        if write_only is not None:
            write_only.close()
    return preview


def _rows_tried(
    pipeline: Pipeline, rows: list[Row], stats: Stats, notes: list[str], limit: int | None = None
) -> int:
    """Source rows the run will try: all of them, or with a target as many as the preview's
    survival rate says, within the top-up cap (``pipeline.topup``)."""
    target = pipeline.target_rows
    if not target:
        return len(rows)
    cap = attempts_cap(len(rows), target, pipeline.max_attempts, limit)
    survival = stats.rows_done / (stats.rows_total or len(rows))
    # the first round tries about the target (``rounds.first_round``), later rounds what the
    # survival rate asks for: about target / rate in all
    tried = cap if survival == 0 else min(cap, math.ceil(target / survival))
    notes.append(
        f"top-up to {plural(target, 'row')}: about {plural(tried, 'source row')} tried, at the preview's survival rate ({survival:.0%})"
        + (
            f"; --limit {limit} caps the source rows tried"
            if limit is not None and limit == cap
            else ""
        )
    )
    return tried


def _step_forecast(
    step: Step,
    stats: Stats,
    tried: int,
    scale: float,
    parallelism: float,
    counted: tuple[int, int] | None,
    price_of: dict[str, Price | None],
) -> StepForecast:
    """One model-calling step: the preview's figures times ``scale``; its calls and prompt tokens
    ``counted`` over all ``tried`` rows instead, when given (the first step, no top-up)."""
    usage = stats.usage.get(step.label, {})
    measured = CallCounts()
    for c in usage.values():
        for f in ("calls", "cache_hits", "prompt_tokens", "completion_tokens", "seconds"):
            setattr(measured, f, getattr(measured, f) + getattr(c, f))
    reached = stats.steps[step.label].rows_in if step.label in stats.steps else 0
    calls, prompt = measured.calls * scale, measured.prompt_tokens * scale
    if counted is not None:
        calls, prompt = float(counted[0]), float(counted[1])
    cost: float | None = 0.0
    for name, share in usage.items():
        price = price_of.get(name)
        if price is None or cost is None:
            cost = None
            continue
        share_prompt = prompt if counted is not None else share.prompt_tokens * scale
        cost += price.cost(share_prompt, share.completion_tokens * scale)
    return StepForecast(
        step=step.label,
        models=step.models(),
        rows=reached * scale if counted is None else float(tried),
        calls=calls,
        prompt_tokens=prompt,
        completion_tokens=measured.completion_tokens * scale,
        seconds=measured.seconds * scale / parallelism,
        cost=cost,
        counted=counted is not None,
        preview={
            "calls": float(measured.calls),
            "prompt_tokens": float(measured.prompt_tokens),
            "completion_tokens": float(measured.completion_tokens),
            "seconds": round(measured.seconds, 3),
        },
    )


def _price_dict(price: Price | None) -> dict[str, float] | None:
    return None if price is None else price.as_dict()


def _loss_notes(stats: Stats) -> list[str]:
    notes = []
    for step, reasons in stats.failures_by_step.items():
        total = sum(reasons.values())
        detail = ", ".join(f"{n} {r}" for r, n in reasons.most_common())
        notes.append(
            f"the preview lost {plural(total, 'row')} at {step} ({detail}); the forecast expects the run to lose the same share"
        )
    return notes


async def aplan_pipeline(
    pipeline: Pipeline,
    *,
    limit: int | None = None,
    model: str | None = None,
    preview_rows: int = 3,
    prices: PriceTable | None = None,
    cache: bool | str | Path = True,
    source: Source | None = None,
    batch: bool = False,
) -> Forecast:
    """Forecast a run of ``pipeline`` (see the module docstring); calls the model on a preview.
    ``batch``: the run will use ``--batch``; batched models (that, or their ``batch`` option)
    are priced at their batch price, their preview still runs online."""
    if preview_rows < 1:
        raise ConfigError(
            f"--preview must be at least 1 row, got {preview_rows}: the forecast's completion "
            "tokens, time and cost are measured on the model's answers to a preview (there is "
            "no forecast without one); --preview 1 is the cheapest"
        )
    src, rows = load_checked(pipeline, source, limit)
    prices = prices if prices is not None else PriceTable.load()
    try:
        preview = await _run_preview(
            pipeline, rows, src, model=model, preview_rows=preview_rows, prices=prices, cache=cache
        )
    except ModelUnavailable as exc:
        if isinstance(exc, ConfigError):  # a missing key: its line already says the fix
            raise
        raise ModelUnavailable(
            f"{exc}. `datamill plan` measures a preview of {plural(preview_rows, 'row')} on the "
            "model, so it needs the model to answer (a hosted model: the network and its API key)"
        ) from None
    stats = preview.stats
    notes: list[str] = []
    tried = _rows_tried(pipeline, rows, stats, notes, limit)
    scale = tried / (stats.rows_total or len(rows))
    startup, wall, parallelism = preview.timing()
    via_batch = {n: batched(pipeline.models[n], batch, model) for n in preview.models}
    price_of = {n: prices.for_model(m, batch=via_batch[n]) for n, (m, _) in preview.models.items()}
    if any(via_batch.values()):
        names = ", ".join(sorted(n for n, b in via_batch.items() if b))
        notes.append(
            f"batch API ({names}): priced at the batch price; the time is the online preview's, "
            "a provider takes up to 24 h per batch"
        )
    steps = [
        _step_forecast(
            s,
            stats,
            tried,
            scale,
            parallelism,
            preview.counted if i == 0 and tried == len(rows) else None,
            price_of,
        )
        for i, s in enumerate(pipeline.steps)
        if s.models()
    ]
    models_info = {
        n: {
            "model": m.info.name,
            "backend": m.backend,
            "price": _price_dict(price_of[n]),
            **({"batch": True} if via_batch[n] else {}),
        }
        for n, (m, _) in preview.models.items()
    }
    return Forecast(
        pipeline=pipeline.name,
        rows=tried,
        preview_rows=stats.rows_total or len(rows),
        steps=steps,
        models=models_info,
        startup_seconds=round(startup, 3),
        parallelism=round(parallelism, 3),
        preview_seconds=round(wall, 3),
        preview_cached=preview.cached,
        fingerprint=fingerprint(
            pipeline, limit, model, source.name if source is not None else None
        ),
        notes=notes + _loss_notes(stats),
    )


def plan_pipeline(pipeline: Pipeline, **kwargs: Any) -> Forecast:
    """Synchronous :func:`aplan_pipeline`; safe where an event loop already runs (Jupyter)."""
    return run_sync(aplan_pipeline(pipeline, **kwargs), name="datamill-plan")


__all__ = [
    "FORECAST_FILE",
    "Forecast",
    "StepForecast",
    "aplan_pipeline",
    "attach_forecast",
    "comparison_lines",
    "fingerprint",
    "load_forecast",
    "plan_pipeline",
]
