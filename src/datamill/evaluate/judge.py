"""The optional judged win-rate: a tuned model's answers against the base's, by any datamill model.

Each held-out prompt is judged twice, the two answers in both orders (A = base, B = tuned, then
swapped), greedy, asking for one letter. An item scores 1 when the judge prefers the tuned answer
in both orders, 0 when it prefers the base's in both, and 0.5 otherwise (a split verdict, which
is what a judge with a position bias gives, or a reply with no A/B). The win rate is the mean,
with a 95% bootstrap interval; ``ties`` counts the 0.5 items, ``unparsed`` the replies that
named neither letter.

Deliberately not here: the verifiable scores (``evaluate.scoring``).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from .scoring import RESAMPLES, bootstrap_mean

PROMPT = (
    "You compare two answers to the same request. Which answer follows the request better "
    "(instructions, correctness, helpfulness)?\n\n"
    "Request:\n{prompt}\n\nAnswer A:\n{a}\n\nAnswer B:\n{b}\n\n"
    "Reply with one letter: A or B."
)
_LETTER = re.compile(r"\b([AB])\b")


def verdict(text: str) -> str | None:
    """``"A"``, ``"B"`` or ``None``: the first standalone A/B in the judge's reply."""
    m = _LETTER.search(text or "")
    return m.group(1) if m else None


async def _judge_all(
    spec: Any, prompts: list[str], base: list[str], tuned: list[str], seed: int
) -> tuple[list[float], int]:
    from ..models.base import Request
    from ..models.registry import load_model

    model = load_model(spec) if isinstance(spec, str) else spec
    await model.start()
    try:

        async def ask(p: str, a: str, b: str) -> str | None:
            request = Request(
                messages=({"role": "user", "content": PROMPT.format(prompt=p, a=a, b=b)},),
                max_tokens=8,
                temperature=0.0,
                seed=seed,
            )
            return verdict((await model.generate(request))[0].text)

        first = asyncio.gather(
            *(ask(p, b0, t) for p, b0, t in zip(prompts, base, tuned, strict=True))
        )
        second = asyncio.gather(
            *(ask(p, t, b0) for p, b0, t in zip(prompts, base, tuned, strict=True))
        )
        v1, v2 = await asyncio.gather(first, second)
    finally:
        await model.close()
    scores = []
    unparsed = 0
    for x, y in zip(v1, v2, strict=True):  # x: tuned is B; y: tuned is A
        unparsed += (x is None) + (y is None)
        tuned_wins = (x == "B") + (y == "A")
        base_wins = (x == "A") + (y == "B")
        scores.append(1.0 if tuned_wins == 2 else 0.0 if base_wins == 2 else 0.5)
    return scores, unparsed


def win_rate(
    spec: Any,
    prompts: list[str],
    base: list[str],
    tuned: list[str],
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> dict[str, Any]:
    """``{"judge", "rate", "low", "high", "n", "ties", "unparsed"}`` of ``tuned`` vs ``base``;
    ``spec``: a model spec (``llamacpp``, ``openai:MODEL@URL``) or a :class:`~datamill.Model`."""
    scores, unparsed = asyncio.run(_judge_all(spec, prompts, base, tuned, seed))
    rate, low, high = bootstrap_mean(scores, resamples, seed)
    return {
        "judge": spec if isinstance(spec, str) else spec.info.name,
        "rate": rate,
        "low": low,
        "high": high,
        "n": len(scores),
        "ties": sum(1 for s in scores if s == 0.5),
        "unparsed": unparsed,
    }


__all__ = ["PROMPT", "verdict", "win_rate"]
