"""Scripted models for the tool-calling tests: a user who writes queries of each kind, a caller
that answers them with fitting (or deliberately broken) calls, and a judge."""

from __future__ import annotations

import json
from typing import Any

from datamill.models.base import Completion, Request

QUERIES = {
    "exactly one call": "How many kilometres is 26.2 miles?",
    "independent calls": "What are the capitals of Japan and Kenya?",
    "one after the other": "Which weekday is 45 days after 2024-03-01?",
    "none of these tools": "Write a two-line poem about rain.",
}
#: query → the calls of each round (a round: list of (name, arguments)); absent: no call
PLANS: dict[str, list[list[tuple[str, dict[str, Any]]]]] = {
    "How many kilometres is 26.2 miles?": [
        [("convert_units", {"value": 26.2, "from_unit": "mi", "to_unit": "km"})]
    ],
    "What are the capitals of Japan and Kenya?": [
        [("country_facts", {"country": "Japan"}), ("country_facts", {"country": "Kenya"})]
    ],
    "Which weekday is 45 days after 2024-03-01?": [
        [("add_days", {"date": "2024-03-01", "days": 45})],
        [("weekday", {"date": "2024-04-15"})],
    ],
    # broken on purpose: a unit outside the enum (format), a country the lookup lacks (execution)
    "How many furlongs is 3 km?": [
        [("convert_units", {"value": 3, "from_unit": "km", "to_unit": "furlong"})]
    ],
    "What is the capital of Atlantis?": [[("country_facts", {"country": "Atlantis"})]],
    "How many grams is 2 lb?": [
        [("convert_units", {"value": 2, "from_unit": "lb", "to_unit": "g"})]
    ],
}
#: queries the judge turns down
REJECTED = {"How many grams is 2 lb?"}


def _text(m: dict[str, Any]) -> str:
    return str(m.get("content") or "")


def _query(request: Request) -> str:
    return next(_text(m) for m in request.messages or () if m["role"] == "user")


def _round(request: Request) -> int:
    """How many rounds of calls the conversation already holds."""
    msgs = request.messages or ()
    native = sum(1 for m in msgs if m["role"] == "assistant")
    return native


def script(request: Request, i: int, native: bool) -> str | Completion:
    last = _text((request.messages or ())[-1])
    if "You write realistic requests" in last:
        return next(q for cue, q in QUERIES.items() if cue in last)
    if "Do these calls and results answer" in last:
        bad = any(q in last for q in REJECTED)
        return json.dumps({"passed": not bad, "reason": "wrong unit" if bad else "fits"})
    query = _query(request)
    plan = PLANS.get(query, [])
    n = _round(request)
    asks_calls = bool(request.tools) if native else request.json_schema is not None
    if native and request.tool_choice == "none":
        asks_calls = False
    if not asks_calls or n >= len(plan):
        results = [_text(m) for m in request.messages or () if m["role"] in ("tool", "user")][1:]
        return f"From the tools: {'; '.join(results)}." if results else "Rain taps the glass."
    calls = plan[n]
    if native:
        return Completion(
            text="",
            finish_reason="tool_calls",
            tool_calls=tuple(
                {"id": f"srv_{k}", "name": name, "arguments": json.dumps(args)}
                for k, (name, args) in enumerate(calls)
            ),
        )
    return json.dumps({"tool_calls": [{"name": n_, "arguments": a} for n_, a in calls]})
