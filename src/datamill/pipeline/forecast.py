"""A forecast: a run's expected calls, tokens, time and cost, and how it compares to the run.

:class:`Forecast` is what ``datamill plan`` measures (``pipeline.plan``) and writes to
``forecast.json``; ``datamill run`` with the same recipe, limit and model (same
:func:`fingerprint`) puts it into ``run.json`` beside the actuals (:func:`attach_forecast`).

Deliberately not here: measuring (``pipeline.plan``), prices (``datamill.pricing``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..pricing import format_cost
from ..words import plural
from .budget import format_duration
from .graph import Pipeline

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
        from ..atomic import write_atomic

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
            f"~ scaled from a preview of {plural(self.preview_rows, 'row')} on the model "
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
    "FORECAST_FILE",
    "Forecast",
    "StepForecast",
    "attach_forecast",
    "comparison_lines",
    "fingerprint",
    "load_forecast",
]
