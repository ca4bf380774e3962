"""The verifier step: a check of each row's content, with a verdict written into the row.

A :class:`Verifier` reads columns, decides (:meth:`Verifier.check` → :class:`Verdict`) and writes

- ``verified`` (bool): this row passed this verifier *and* every verifier before it;
- ``verification`` (str): ``ok``, or the failing reasons joined by ``; `` — e.g.
  ``wrong answer: expected 12, got 15``, ``test failed: …``, ``timeout after 5 s``,
  ``constraint 'lowercase' not met``.

``on_fail: drop`` (the default) drops a failed row as a failure record (``failures.jsonl``; its
reason is the verdict's stable part such as ``wrong answer``, the detail the full reason);
``on_fail: keep`` keeps it with ``verified: false`` (to make pass/fail preference pairs).

Verdicts are cached like calls (``Context.cached``, ``pipeline.results``): keyed by the
verifier's kind, :attr:`Verifier.version`, its parameters (:meth:`Verifier.key_params`) and the
values it reads (:meth:`Verifier.key_inputs`), so a re-run verifies nothing again and a run killed
halfway re-verifies only the rows that had not finished. ``cache: false`` turns that off for one
verifier (a check that depends on something outside the row). A check that raises is not a
verdict: the row is recorded as an error and nothing is cached. Each verdict is counted
(``run.json`` ``verification``: passed, failed, cached, reasons).

Deliberately not here: the checks themselves (one module each beside this one).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ...errors import Dropped
from ...rows import Row, why_missing
from ..base import Context, Step
from ..paths import recipe_dir

#: the columns every verifier writes
VERIFIED, VERIFICATION = "verified", "verification"

_AFTER_TIME = re.compile(r"\s+after\s+[\d.]+\s*s$")


def result_key(kind: str, version: int, params: dict[str, Any], inputs: dict[str, Any]) -> str:
    """The content address of one result: ``kind`` (e.g. ``verify_math``), the ``version`` of its
    logic, the ``params`` that decide it and the ``inputs`` it reads (sorted JSON; values JSON
    cannot hold are written as their ``repr``)."""
    text = json.dumps(
        {"kind": kind, "version": version, "params": params, "inputs": inputs},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=repr,
    )
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{kind}:{digest}"


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check. ``reason``: ``ok`` or a short text naming what failed;
    ``kind``: its stable part, what ``run.json`` counts (default: the reason up to its first
    ``:``, without a trailing ``after N s``: ``wrong answer``, ``timeout``)."""

    passed: bool
    reason: str = "ok"
    kind: str | None = None

    @classmethod
    def ok(cls) -> Verdict:
        return cls(True, "ok")

    @classmethod
    def fail(cls, reason: str, kind: str | None = None) -> Verdict:
        return cls(False, reason, kind)

    @property
    def category(self) -> str:
        if self.passed:
            return "ok"
        if self.kind:
            return self.kind
        return _AFTER_TIME.sub("", self.reason.split(":", 1)[0].strip()) or "failed"

    def as_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "reason": self.reason, "kind": self.category}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Verdict:
        return cls(bool(data["passed"]), str(data["reason"]), data.get("kind"))


def clip(text: Any, limit: int = 80) -> str:
    """``text`` on one line, at most ``limit`` characters (``…`` marks a cut): for reasons."""
    one = " ".join(str(text).split())
    return one if len(one) <= limit else one[: limit - 1] + "…"


def search_recipe_dir() -> None:
    """Let :func:`import_target` find modules beside the recipe being validated (a recipe's
    ``module:function`` is found like its other paths: ``steps.paths``)."""
    folder = recipe_dir()
    if folder is not None and str(folder.resolve()) not in sys.path:
        sys.path.append(str(folder.resolve()))


def import_target(spec: str, what: str = "function") -> Any:
    """The object ``module:name`` names (``name`` may be dotted). The working folder is searched
    too (as ``python -m`` would), after the folders of recipes that named a module
    (:func:`search_recipe_dir`). Raises ``ValueError`` with one line saying what to fix."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected 'module:{what}', got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ValueError(
            f"cannot import {module_name!r} ({exc}); put the module in the working folder or on PYTHONPATH"
        ) from None
    except Exception as exc:
        raise ValueError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ValueError(f"module {module_name!r} has no {attr!r}")
        target = getattr(target, part)
    return target


class Verifier(Step):
    """A per-row check. Subclasses set ``kind``, implement :meth:`check` and
    :meth:`required_columns`; they may narrow :meth:`key_params`/:meth:`key_inputs`."""

    #: bump when a subclass's logic changes, so verdicts cached by the old logic are not served
    version: ClassVar[int] = 1
    #: parameters that name columns or steer the run, not the verdict (left out of the cache key)
    not_in_key: ClassVar[frozenset[str]] = frozenset()

    #: ``drop``: a failed row becomes a failure record; ``keep``: it goes on with verified=False
    on_fail: Literal["drop", "keep"] = "drop"
    #: keep verdicts in the call cache (off: verify on every run)
    cache: bool = True

    async def check(self, row: Row) -> Verdict:
        """The verdict on ``row``. Raise :class:`~datamill.errors.Dropped` for a row that cannot
        be checked at all (no verdict, nothing cached); any other exception is an error record."""
        raise NotImplementedError

    def produces(self) -> list[str]:
        return [VERIFIED, VERIFICATION]

    def updates(self) -> list[str]:
        # a later verifier rewrites the earlier one's verdict columns (AND of verdicts)
        return [*self.required_columns(), VERIFIED, VERIFICATION]

    def key_params(self) -> dict[str, Any]:
        """The parameters that decide a verdict (all but ``name``, ``on_fail``, ``cache`` and
        :attr:`not_in_key`)."""
        skip = {"name", "on_fail", "cache", *self.not_in_key}
        return self.model_dump(exclude=skip, mode="json")

    def key_inputs(self, row: Row) -> dict[str, Any]:
        """The values a verdict depends on (default: the required columns' values)."""
        return {c: row.get(c) for c in self.required_columns()}

    def need(self, row: Row, column: str) -> Any:
        """``row[column]``, or :class:`Dropped` (``empty input``) when it is absent, null,
        NaN or blank: such a row cannot be checked."""
        what = why_missing(row, (column,))
        if what is not None:
            raise Dropped("empty input", f"column {column!r} is {what}; {self.label} needs a value")
        return row[column]

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        fresh = False

        async def compute() -> dict[str, Any]:
            nonlocal fresh
            fresh = True
            return (await self.check(row)).as_json()

        if self.cache:
            key = result_key(self.kind, self.version, self.key_params(), self.key_inputs(row))
            verdict = Verdict.from_json(await ctx.cached(key, compute))
        else:
            verdict = Verdict.from_json(await compute())
        ctx.verdict(verdict.passed, verdict.category, cached=not fresh)
        earlier_ok = row.get(VERIFIED, True) is not False
        reasons = [] if earlier_ok else [str(row.get(VERIFICATION) or "failed")]
        if not verdict.passed:
            if self.on_fail == "drop":
                raise Dropped(verdict.category, verdict.reason)
            reasons.append(verdict.reason)
        return [
            {
                **row,
                VERIFIED: earlier_ok and verdict.passed,
                VERIFICATION: "; ".join(reasons) if reasons else "ok",
            }
        ]


__all__ = ["VERIFICATION", "VERIFIED", "Verdict", "Verifier", "clip", "import_target"]
