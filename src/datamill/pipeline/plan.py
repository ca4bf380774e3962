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

Deliberately not here: enforcing caps (``pipeline.budget``), prices (``datamill.pricing``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._sync import run_sync
from ..errors import ConfigError, InputError
from ..io.sources import Source, all_columns, check_rows, source_reads
from ..models.base import Completion, Model
from ..pricing import PriceTable, format_cost
from ..steps.base import Context
from .budget import Budget, format_duration, prompt_tokens
from .cache import CallCache
from .graph import ModelSettings, Pipeline
from .stats import CallCounts, Stats

FORECAST_FILE = "forecast.json"


@dataclass
class StepForecast:
    """One model-calling step: expected over the whole run, and what the preview measured."""

    step: str
    models: list[str]
    rows: float
    calls: float
    prompt_tokens: float
    completion_tokens: float
    seconds: float
    cost: float | None
    counted: bool = False  #: calls and prompt tokens counted over all rows (not scaled)
    preview: dict[str, float] = field(
        default_factory=dict
    )  #: calls, prompt/completion tokens, seconds


@dataclass
class Forecast:
    """A run's expected calls, tokens, time and cost, per step and in total."""

    pipeline: str
    rows: int
    preview_rows: int
    steps: list[StepForecast]
    models: dict[str, dict[str, Any]]
    startup_seconds: float
    parallelism: float
    preview_seconds: float
    preview_cached: bool
    fingerprint: str = ""
    notes: list[str] = field(default_factory=list)

    # -- totals ----------------------------------------------------------------------------
    def total(self, name: str) -> float:
        return float(sum(getattr(s, name) for s in self.steps))

    @property
    def calls(self) -> int:
        return round(self.total("calls"))

    @property
    def prompt_tokens(self) -> int:
        return round(self.total("prompt_tokens"))

    @property
    def completion_tokens(self) -> int:
        return round(self.total("completion_tokens"))

    @property
    def seconds(self) -> float:
        return self.startup_seconds + self.total("seconds")

    @property
    def cost(self) -> float | None:
        costs = [s.cost for s in self.steps]
        return (
            None if any(c is None for c in costs) else float(sum(c for c in costs if c is not None))
        )

    @property
    def tokens_per_second(self) -> float:
        """Completion tokens per second of the preview's calls (its measured throughput)."""
        measured = sum(s.preview.get("completion_tokens", 0) for s in self.steps)
        return measured / self.preview_seconds if self.preview_seconds > 0 else 0.0

    def to_send(self) -> dict[str, float]:
        """What the run still sends: everything, less the preview's calls when they are cached."""
        keys = ("calls", "prompt_tokens", "completion_tokens", "seconds")
        out = {k: self.total(k) for k in keys}
        if self.preview_cached:
            for s in self.steps:
                done = {**s.preview, "seconds": s.preview.get("seconds", 0.0) / self.parallelism}
                for k in keys:
                    out[k] -= min(getattr(s, k), done.get(k, 0.0))
        out["seconds"] += self.startup_seconds
        return {k: max(0.0, v) for k, v in out.items()}

    # -- (de)serialising -------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["totals"] = {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "seconds": round(self.seconds, 1),
            "cost_usd": None if self.cost is None else round(self.cost, 6),
        }
        data["to_send"] = {k: round(v, 1) for k, v in self.to_send().items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Forecast:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["steps"] = [StepForecast(**s) for s in data.get("steps", [])]
        return cls(**fields)

    def save(self, folder: str | Path) -> Path:
        from ..io.sinks import write_atomic

        path = Path(folder) / FORECAST_FILE
        write_atomic(
            path, (json.dumps(self.as_dict(), indent=2, ensure_ascii=False) + "\n").encode()
        )
        return path

    # -- showing ---------------------------------------------------------------------------
    def table(self) -> Any:
        """A rich table: per step and in total."""
        from rich.table import Table

        t = Table(title=f"forecast: {self.pipeline}, {self.rows} source rows", title_justify="left")
        t.add_column("step", no_wrap=True)
        for name in ("rows", "calls", "prompt tokens", "completion tokens", "time", "cost"):
            t.add_column(name, justify="right")
        for s in self.steps:
            t.add_row(
                s.step,
                f"{s.rows:,.0f}",
                f"{s.calls:,.0f}" + ("" if s.counted else "~"),
                f"{s.prompt_tokens:,.0f}" + ("" if s.counted else "~"),
                f"{s.completion_tokens:,.0f}~",
                format_duration(s.seconds),
                format_cost(s.cost),
            )
        t.add_row(
            "start-up", "", "", "", "", format_duration(self.startup_seconds), "", style="dim"
        )
        t.add_row(
            "total",
            "",
            f"{self.calls:,}",
            f"{self.prompt_tokens:,}",
            f"{self.completion_tokens:,}",
            format_duration(self.seconds),
            format_cost(self.cost),
            style="bold",
        )
        return t

    def lines(self) -> list[str]:
        """The explanation printed under the table."""
        out = [
            f"~ scaled from a preview of {self.preview_rows} row{'s' if self.preview_rows != 1 else ''} on the model "
            f"({format_duration(self.preview_seconds)} in calls, {self.tokens_per_second:.1f} completion tok/s, "
            f"parallelism {self.parallelism:.1f}); calls and prompt tokens without ~ are counted over every row "
            "with the model's tokenizer",
        ]
        for name, m in self.models.items():
            price = m.get("price")
            where = (
                "unknown price: add it to ~/.config/datamill/prices.yaml or pass --prices"
                if price is None
                else f"${price['input']}/M in, ${price['output']}/M out"
            )
            out.append(f"model {name}: {m['model']} ({m['backend']}), {where}")
        if self.preview_cached and self.rows > self.preview_rows:
            send = self.to_send()
            out.append(
                f"the preview's calls are cached: the run sends about {send['calls']:,.0f} calls "
                f"and takes about {format_duration(send['seconds'])}"
            )
        out.extend(self.notes)
        return out

    def __str__(self) -> str:
        import io

        from rich.console import Console

        buffer = io.StringIO()
        Console(file=buffer, width=120, color_system=None).print(self.table())
        return buffer.getvalue() + "\n".join(self.lines())


class _WriteOnlyCache(CallCache):
    """Reads nothing (the preview measures the model), writes everything (the run reuses it)."""

    def get(self, key: str, n: int) -> list[Completion] | None:
        return None

    def get_partial(self, key: str, n: int) -> dict[int, Completion]:
        return {}


def fingerprint(
    pipeline: Pipeline, limit: int | None, model: str | None, source_name: str | None = None
) -> str:
    """Identifies what a forecast is for: recipe (or steps), limit, model override, input."""
    what: Any = pipeline.recipe
    if what is None:
        what = [[type(s).__name__, s.model_dump(exclude={"fn"})] for s in pipeline.steps]
        what.append({n: [m.display, m.options, m.sampling] for n, m in pipeline.models.items()})
    payload = json.dumps([what, limit, model, source_name], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _count_first_step(
    pipeline: Pipeline, rows: list[dict[str, Any]], models: dict[str, Model]
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


async def aplan_pipeline(
    pipeline: Pipeline,
    *,
    limit: int | None = None,
    model: str | None = None,
    preview_rows: int = 3,
    prices: PriceTable | None = None,
    cache: bool | str | Path = True,
    source: Source | None = None,
) -> Forecast:
    """Forecast a run of ``pipeline`` (see the module docstring); calls the model on a preview."""
    from .run import arun_pipeline, build_models

    if preview_rows < 1:
        raise ConfigError(f"--preview must be at least 1 row, got {preview_rows}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    src = source or pipeline.source
    if src is None:
        raise InputError("the pipeline has no source: give rows, a file or a recipe 'source'")
    src = copy.copy(src)
    if limit is not None:
        src.limit = limit if src.limit is None else min(src.limit, limit)
    rows = src.load()
    check_rows(src, rows, source_reads(pipeline.steps, all_columns(rows)))
    pipeline.check(Source.columns(rows))
    prices = prices if prices is not None else PriceTable.load()
    began = time.monotonic()

    built = build_models(pipeline, model)
    started: list[Model] = []
    call_cache: CallCache | None = None
    recorder = Budget(prices=prices)
    holder: dict[str, Stats] = {}
    try:
        for m, _ in built.values():
            if m not in started:
                await m.start()
                started.append(m)
        loading = time.monotonic() - began
        counted = _count_first_step(pipeline, rows, {n: m for n, (m, _) in built.items()})
        preview = Pipeline(
            pipeline.steps,
            source=src,
            models={
                n: ModelSettings(spec=m, options=s.options, sampling=s.sampling)
                for n, (m, s) in built.items()
            },
            name=pipeline.name,
            seed=pipeline.seed,
        )
        if cache:
            call_cache = _WriteOnlyCache(None if cache is True else cache)
        preview_began = time.monotonic()
        await arun_pipeline(
            preview,
            None,
            limit=preview_rows,
            cache=call_cache if call_cache is not None else False,
            budget=recorder,
            on_start=lambda s: holder.update(s=s),
            progress=False,
        )
    finally:
        if call_cache is not None:
            call_cache.close()
        for m in started:
            await m.close()
    stats = holder["s"]
    k = stats.rows_total or len(rows)
    notes: list[str] = []
    tried = len(rows)
    target = getattr(pipeline, "target_rows", None)
    if (
        target
    ):  # topping up: as many source rows as the preview's survival rate says (pipeline.topup)
        from .topup import DEFAULT_ATTEMPTS_FACTOR

        cap = getattr(pipeline, "max_attempts", None) or max(
            len(rows), DEFAULT_ATTEMPTS_FACTOR * target
        )
        survival = stats.rows_done / k
        tried = (
            cap
            if survival == 0
            else min(cap, max(min(len(rows), cap), math.ceil(target / survival)))
        )
        notes.append(
            f"top-up to {target} rows: about {tried} source rows tried, at the preview's survival rate ({survival:.0%})"
        )
    scale = tried / k
    first_call = recorder.first_call_at if recorder.first_call_at is not None else preview_began
    startup = loading + max(0.0, first_call - preview_began)
    wall = (recorder.last_call_end or first_call) - first_call
    in_calls = sum(c.seconds for per in stats.usage.values() for c in per.values())
    parallelism = in_calls / wall if wall > 0 and in_calls > 0 else 1.0

    price_of = {n: prices.for_model(m) for n, (m, _) in built.items()}
    steps: list[StepForecast] = []
    for i, s in enumerate(pipeline.steps):
        names = s.models()
        if not names:
            continue
        usage = stats.usage.get(s.label, {})
        measured = CallCounts()
        for c in usage.values():
            for f in ("calls", "cache_hits", "prompt_tokens", "completion_tokens", "seconds"):
                setattr(measured, f, getattr(measured, f) + getattr(c, f))
        reached = stats.steps[s.label].rows_in if s.label in stats.steps else 0
        calls = measured.calls * scale
        prompt = measured.prompt_tokens * scale
        exact = i == 0 and counted is not None and tried == len(rows)
        if exact and counted is not None:
            calls, prompt = float(counted[0]), float(counted[1])
        completion = measured.completion_tokens * scale
        cost: float | None = 0.0
        for name, share in usage.items():
            price = price_of.get(name)
            if price is None or cost is None:
                cost = None
                continue
            share_prompt = prompt if exact else share.prompt_tokens * scale
            cost += price.cost(share_prompt, share.completion_tokens * scale)
        steps.append(
            StepForecast(
                step=s.label,
                models=names,
                rows=reached * scale if not exact else float(tried),
                calls=calls,
                prompt_tokens=prompt,
                completion_tokens=completion,
                seconds=measured.seconds * scale / parallelism,
                cost=cost,
                counted=exact,
                preview={
                    "calls": float(measured.calls),
                    "prompt_tokens": float(measured.prompt_tokens),
                    "completion_tokens": float(measured.completion_tokens),
                    "seconds": round(measured.seconds, 3),
                },
            )
        )
    for step, reasons in stats.failures_by_step.items():
        total = sum(reasons.values())
        detail = ", ".join(f"{n} {r}" for r, n in reasons.most_common())
        notes.append(
            f"the preview lost {total} row{'s' if total != 1 else ''} at {step} ({detail}); the forecast expects the run to lose the same share"
        )
    models_info = {}
    for n, (m, _) in built.items():
        price = price_of[n]
        models_info[n] = {
            "model": m.info.name,
            "backend": m.backend,
            "price": None if price is None else asdict(price),
        }
    return Forecast(
        pipeline=pipeline.name,
        rows=tried,
        preview_rows=k,
        steps=steps,
        models=models_info,
        startup_seconds=round(startup, 3),
        parallelism=round(parallelism, 3),
        preview_seconds=round(wall, 3),
        preview_cached=call_cache is not None,
        fingerprint=fingerprint(
            pipeline, limit, model, source.name if source is not None else None
        ),
        notes=notes,
    )


def plan_pipeline(pipeline: Pipeline, **kwargs: Any) -> Forecast:
    """Synchronous :func:`aplan_pipeline`; safe where an event loop already runs (Jupyter)."""
    return run_sync(aplan_pipeline(pipeline, **kwargs), name="datamill-plan")


def load_forecast(folder: str | Path, expected: str | None = None) -> Forecast | None:
    """The forecast saved in ``folder``, when there is one and (if given) its fingerprint matches."""
    path = Path(folder) / FORECAST_FILE
    if not path.exists():
        return None
    try:
        forecast = Forecast.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError):
        return None
    if expected is not None and forecast.fingerprint != expected:
        return None
    return forecast


def attach_forecast(summary: dict[str, Any], forecast: Forecast | dict[str, Any]) -> dict[str, Any]:
    """Put the forecast into a run summary (``run.json``) next to the actuals, and compare."""
    fc = forecast if isinstance(forecast, Forecast) else Forecast.from_dict(forecast)
    summary["forecast"] = fc.as_dict()
    sent = fc.to_send()
    usage = summary.get("usage", {})
    actual_cost: float | None = 0.0
    for step_usage in usage.values():
        for name, c in step_usage.items():
            price = fc.models.get(name, {}).get("price")
            if price is None:
                actual_cost = None
            elif actual_cost is not None:
                actual_cost += (
                    c["prompt_tokens"] * price["input"] + c["completion_tokens"] * price["output"]
                ) / 1e6
    tokens = summary.get("tokens", {})
    summary["forecast_vs_actual"] = {
        "calls": {
            "forecast": fc.calls,
            "actual": summary.get("model_calls", 0) + summary.get("cache_hits", 0),
        },
        "calls_sent": {"forecast": round(sent["calls"]), "actual": summary.get("model_calls", 0)},
        "prompt_tokens_sent": {
            "forecast": round(sent["prompt_tokens"]),
            "actual": tokens.get("prompt", 0),
        },
        "completion_tokens_sent": {
            "forecast": round(sent["completion_tokens"]),
            "actual": tokens.get("completion", 0),
        },
        "seconds": {"forecast": round(sent["seconds"], 1), "actual": summary.get("seconds", 0)},
        "cost_usd": {
            "forecast": None if fc.cost is None else round(fc.cost, 6),
            "actual": None if actual_cost is None else round(actual_cost, 6),
        },
    }
    return summary


def comparison_lines(summary: dict[str, Any]) -> list[str]:
    """``forecast vs actual`` lines for the CLI, from a summary with a forecast attached."""
    cmp = summary.get("forecast_vs_actual")
    if not cmp:
        return []
    out = ["forecast vs actual:"]
    for key, label in (
        ("calls", "calls (sent + cached)"),
        ("calls_sent", "calls sent"),
        ("prompt_tokens_sent", "prompt tokens sent"),
        ("completion_tokens_sent", "completion tokens sent"),
        ("seconds", "seconds"),
        ("cost_usd", "cost"),
    ):
        f, a = cmp[key]["forecast"], cmp[key]["actual"]
        if key == "cost_usd":
            out.append(f"  {label:24} {format_cost(f):>12} {format_cost(a):>12}")
        else:
            out.append(f"  {label:24} {f:>12,} {a:>12,}")
    return out


__all__ = [
    "Forecast",
    "StepForecast",
    "aplan_pipeline",
    "attach_forecast",
    "load_forecast",
    "plan_pipeline",
]
