"""Scoring answers to held-out items with datamill's own verifiers, and paired bootstrap intervals.

Each item's answer goes through the verifier step of its kind — ``verify_constraints``,
``verify_math`` (``answer_format: last_number``) or ``verify_code`` (the sandbox) — called
directly (``Verifier.check``), so an eval verdict is exactly what a run's verifier would say. A
row the verifier cannot judge (``Dropped``: e.g. an unreadable reference) counts as a fail with
its reason.

Intervals: a percentile bootstrap over items (``resamples`` draws of the item indices with
replacement, ``numpy.random.default_rng(seed)``). For a difference between two models the draws
are *paired* (the same items for both), so item difficulty cancels.

Deliberately not here: generating the answers (``evaluate.hf``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import Dropped

RESAMPLES = 2000


def _verifier(kind: str) -> Any:
    if kind == "constraints":
        from ..steps.verify.constraints import VerifyConstraints

        return VerifyConstraints(response="answer", constraints="constraints", prompt="base")
    if kind == "math":
        from ..steps.verify.math import VerifyMath

        return VerifyMath(
            answer="answer", reference="reference_answer", answer_format="last_number"
        )
    from ..steps.verify.code import VerifyCode

    return VerifyCode(code="answer", tests="tests")


async def _score(items: list[dict[str, Any]], answers: list[str]) -> list[dict[str, Any]]:
    verifiers: dict[str, Any] = {}

    async def one(item: dict[str, Any], answer: str) -> dict[str, Any]:
        v = verifiers.setdefault(item["kind"], _verifier(item["kind"]))
        try:
            verdict = await v.check({**item, "answer": answer})
            return {"passed": verdict.passed, "reason": verdict.reason}
        except Dropped as exc:
            return {"passed": False, "reason": f"{exc.reason}: {exc.detail}"}

    return list(await asyncio.gather(*(one(i, a) for i, a in zip(items, answers, strict=True))))


def score(items: list[dict[str, Any]], answers: list[str]) -> list[dict[str, Any]]:
    """One ``{"passed": bool, "reason": str}`` per (item, answer), in order."""
    return asyncio.run(_score(items, answers))


def bootstrap_mean(
    passed: Sequence[float], resamples: int = RESAMPLES, seed: int = 0
) -> tuple[float, float, float]:
    """``(rate, low, high)``: the mean of ``passed`` (bools or scores) and its 95%
    percentile-bootstrap interval."""
    x = np.asarray(passed, dtype=float)
    if not len(x):
        return (float("nan"), float("nan"), float("nan"))
    idx = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    means = x[idx].mean(axis=1)
    return float(x.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def bootstrap_diff(
    a: Sequence[float], b: Sequence[float], resamples: int = RESAMPLES, seed: int = 0
) -> tuple[float, float, float]:
    """``(diff, low, high)``: ``mean(b) - mean(a)`` over paired items and its 95% paired
    percentile-bootstrap interval. Raises ValueError when the lists differ in length."""
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(xa) != len(xb):
        raise ValueError(f"paired bootstrap needs equal lengths, got {len(xa)} and {len(xb)}")
    if not len(xa):
        return (float("nan"), float("nan"), float("nan"))
    d = xb - xa
    idx = np.random.default_rng(seed).integers(0, len(d), size=(resamples, len(d)))
    means = d[idx].mean(axis=1)
    return float(d.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


__all__ = ["RESAMPLES", "bootstrap_diff", "bootstrap_mean", "score"]
