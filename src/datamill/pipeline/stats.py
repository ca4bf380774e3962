"""Counters a run keeps while it works: what the progress bar shows and ``run.json`` stores."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from ..words import plural


def yield_lines(verification: dict[str, dict[str, Any]] | None) -> list[str]:
    """Human lines, one per verifier, from ``run.json``'s ``verification`` section (verifier →
    ``passed``, ``failed``, ``reasons``): ``verify_math: 12 of 20 verified (60%); 8 wrong answer``
    (the three commonest reasons). The CLI prints these; the web app shows them."""
    lines = []
    for step, v in (verification or {}).items():
        passed, failed = v.get("passed") or 0, v.get("failed") or 0
        total = passed + failed
        share = f" ({100 * passed / total:.0f}%)" if total else ""
        reasons = Counter(v.get("reasons") or {}).most_common(3)
        why = ", ".join(f"{n} {r}" for r, n in reasons)
        lines.append(f"{step}: {passed} of {total} verified{share}" + (f"; {why}" if why else ""))
    return lines


@dataclass
class StepCounts:
    rows_in: int = 0
    rows_out: int = 0
    failed: int = 0


@dataclass
class VerifyCounts:
    """Verdicts of one verifier step: rows passed and failed, failures by reason (the reason's
    stable part, e.g. ``wrong answer``), and how many verdicts came from the cache."""

    passed: int = 0
    failed: int = 0
    cached: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def yield_(self) -> float | None:
        """Passed / checked (None before any verdict)."""
        total = self.passed + self.failed
        return round(self.passed / total, 4) if total else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "failed": self.failed,
            "yield": self.yield_,
            "cached": self.cached,
            "reasons": dict(self.reasons.most_common()),
        }


@dataclass
class CallCounts:
    """Model use of one step on one named model: calls sent, cache hits, tokens, seconds in calls."""

    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


@dataclass
class Stats:
    rows_started: int = 0
    source_rows_done: int = 0  #: source rows whose walk through the current segment ended
    rows_total: int | None = None
    rows_done: int = 0
    model_calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failed_rows: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    failures_by_step: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    events: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    steps: dict[str, StepCounts] = field(default_factory=dict)
    usage: dict[str, dict[str, CallCounts]] = field(default_factory=dict)  #: step → model → counts
    verification: dict[str, VerifyCounts] = field(default_factory=dict)  #: verifier step → verdicts
    started: float = field(default_factory=time.monotonic)

    def step(self, label: str) -> StepCounts:
        if label not in self.steps:
            self.steps[label] = StepCounts()
        return self.steps[label]

    def calls(self, step: str, model: str) -> CallCounts:
        """The counts of ``step``'s calls to ``model`` (made on first use)."""
        return self.usage.setdefault(step, {}).setdefault(model, CallCounts())

    def verdict(self, step: str, passed: bool, reason: str, cached: bool = False) -> None:
        """Count one verdict of the verifier ``step`` (``reason``: the failure's stable part)."""
        counts = self.verification.setdefault(step, VerifyCounts())
        if passed:
            counts.passed += 1
        else:
            counts.failed += 1
            counts.reasons[reason] += 1
        counts.cached += int(cached)

    def yield_lines(self) -> list[str]:
        """Human lines, one per verifier: ``verify_math: 12 of 20 verified (60%); 8 wrong answer``."""
        return yield_lines({k: v.as_dict() for k, v in self.verification.items()})

    def record_failure(self, step: str, reason: str) -> None:
        self.failed_rows += 1
        self.failures[reason] += 1
        self.failures_by_step[step][reason] += 1
        self.step(step).failed += 1

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    @property
    def tokens_per_second(self) -> float:
        s = self.seconds
        return self.completion_tokens / s if s > 0 else 0.0

    def losses(self) -> list[str]:
        """Human lines: ``37 rows lost at ultrafeedback: 30 unparsable rating, 7 timeout``."""
        lines = []
        for step, reasons in self.failures_by_step.items():
            total = sum(reasons.values())
            detail = ", ".join(f"{n} {r}" for r, n in reasons.most_common())
            lines.append(f"{plural(total, 'row')} lost at {step}: {detail}")
        return lines

    _COUNTERS = (
        "rows_started",
        "source_rows_done",
        "model_calls",
        "cache_hits",
        "prompt_tokens",
        "completion_tokens",
        "failed_rows",
    )

    def counters(self) -> dict[str, Any]:
        """Plain counters, to send from a worker process to the driver."""
        data: dict[str, Any] = {k: getattr(self, k) for k in self._COUNTERS}
        data["failures_by_step"] = {k: dict(v) for k, v in self.failures_by_step.items()}
        data["steps"] = {k: [v.rows_in, v.rows_out, v.failed] for k, v in self.steps.items()}
        data["events"] = {k: dict(v) for k, v in self.events.items()}
        data["verification"] = {k: v.as_dict() for k, v in self.verification.items()}
        data["usage"] = {
            step: {m: vars(c) for m, c in models.items()} for step, models in self.usage.items()
        }
        return data

    def add(self, counters: dict[str, Any]) -> None:
        """Add a worker's counters (from :meth:`counters`) to these."""
        for k in self._COUNTERS:
            setattr(self, k, getattr(self, k) + counters.get(k, 0))
        for step, reasons in counters.get("failures_by_step", {}).items():
            for reason, n in reasons.items():
                self.failures[reason] += n
                self.failures_by_step[step][reason] += n
        for step, events in counters.get("events", {}).items():
            self.events[step].update(events)
        for step, (rows_in, rows_out, failed) in counters.get("steps", {}).items():
            c = self.step(step)
            c.rows_in += rows_in
            c.rows_out += rows_out
            c.failed += failed
        for step, models in counters.get("usage", {}).items():
            for model, counts in models.items():
                mine = self.calls(step, model)
                for k, v in counts.items():
                    setattr(mine, k, getattr(mine, k) + v)
        for step, verdicts in counters.get("verification", {}).items():
            have = self.verification.setdefault(step, VerifyCounts())
            have.passed += verdicts["passed"]
            have.failed += verdicts["failed"]
            have.cached += verdicts["cached"]
            have.reasons.update(verdicts["reasons"])

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows_done,
            "model_calls": self.model_calls,
            "cache_hits": self.cache_hits,
            "failed_rows": self.failed_rows,
            "failures": dict(self.failures.most_common()),
            "failures_by_step": {k: dict(v) for k, v in self.failures_by_step.items()},
            "events": {k: dict(v) for k, v in self.events.items() if v},
            "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens},
            "steps": {
                k: {"rows_in": v.rows_in, "rows_out": v.rows_out, "failed": v.failed}
                for k, v in self.steps.items()
            },
            "usage": {
                step: {m: {**vars(c), "seconds": round(c.seconds, 3)} for m, c in models.items()}
                for step, models in self.usage.items()
            },
            **(
                {"verification": {k: v.as_dict() for k, v in self.verification.items()}}
                if self.verification
                else {}
            ),
            "seconds": round(self.seconds, 3),
        }
