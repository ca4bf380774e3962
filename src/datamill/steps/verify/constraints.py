"""``verify_constraints``: a response meets its verifiable instructions (IFEval-style), checked
by ``datamill.constraints``.

Columns: ``response`` (the answer) and ``constraints`` (a list of ``{id, kwargs}``, or that list
as JSON text), and optionally ``prompt`` (a column with the instruction, for checks that need it,
such as repeating the request). Reasons: ``ok``, ``constraint 'lowercase' not met: …`` for one
failure, ``constraints not met: 'lowercase', 'no_comma'`` for several (``run.json`` counts both
as ``constraint not met``). A row whose constraints cannot be read (an unknown id, a wrong
argument) is no verdict: it is dropped as ``bad constraints``.

Deliberately not here: the checkers and their catalogue (``datamill.constraints``), sampling
constraints into prompts (a task).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from ...errors import ConfigError, Dropped
from ...rows import Row
from .base import Verdict, Verifier, clip


class VerifyConstraints(Verifier):
    """``verify_constraints``: every constraint in the constraints column holds for the response."""

    kind: ClassVar[str] = "verify_constraints"
    not_in_key: ClassVar[frozenset[str]] = frozenset({"response", "constraints", "prompt"})

    #: the column with the answer to check
    response: str = "response"
    #: the column with the constraints: a list of ``{id, kwargs}`` (or its JSON text)
    constraints: str = "constraints"
    #: a column with the prompt, for checks that need it (none by default)
    prompt: str | None = None

    def required_columns(self) -> list[str]:
        return [self.response, self.constraints, *([self.prompt] if self.prompt else [])]

    def key_inputs(self, row: Row) -> dict[str, Any]:
        return {
            "response": row.get(self.response),
            "constraints": row.get(self.constraints),
            "prompt": row.get(self.prompt) if self.prompt else None,
        }

    def items(self, row: Row) -> list[Any]:
        """The constraints of ``row`` as a list (``Dropped`` when absent or no list; an empty
        list is met by any response)."""
        value = self.need(row, self.constraints)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise Dropped(
                    "bad constraints", f"{self.constraints!r} is not JSON: {exc}"
                ) from None
        if hasattr(value, "tolist"):  # a numpy array from a Parquet column
            value = value.tolist()
        if not isinstance(value, (list, tuple)):
            raise Dropped(
                "bad constraints",
                f"{self.constraints!r} holds a {type(value).__name__}, not a list of {{id, kwargs}}",
            )
        return list(value)

    async def check(self, row: Row) -> Verdict:
        from ...constraints import check, from_dicts

        response = row.get(self.response)
        response = "" if response is None else str(response)
        try:
            constraints = from_dicts(self.items(row))
        except ConfigError as exc:
            raise Dropped("bad constraints", str(exc)) from None
        prompt = str(row.get(self.prompt) or "") if self.prompt else None
        failed = [r for r in check(response, constraints, prompt=prompt) if not r.passed]
        if not failed:
            return Verdict.ok()
        if len(failed) == 1:
            why = f": {clip(failed[0].reason, 80)}" if failed[0].reason else ""
            return Verdict.fail(f"constraint {failed[0].id!r} not met{why}", "constraint not met")
        names = ", ".join(repr(r.id) for r in failed)
        return Verdict.fail(f"constraints not met: {names}", "constraint not met")


__all__ = ["VerifyConstraints"]
