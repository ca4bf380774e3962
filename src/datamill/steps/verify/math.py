"""``verify_math``: a model's final answer against a reference answer, with Hugging Face's
``math-verify`` (``pip install 'datamill[verify]'``), not a parser of our own.

The final answer is taken from the answer column by ``answer_format``:

- ``boxed``: the last ``\\boxed{…}`` (or ``\\fbox{…}``), braces balanced (MATH, DeepSeek-R1 style);
- ``hash``: the text after the last ``####`` (GSM8K);
- ``last_number``: the last number in the text (``1,234``, ``-3.5``, ``3/4``);
- ``auto`` (default): boxed if there is one, else ``####``, else the last number.

The reference column may hold a bare answer (``72``, ``\\frac{1}{2}``) or a whole worked solution
ending in ``#### 72`` or a ``\\boxed{}``. Both sides go to ``math_verify.parse`` (LaTeX first,
unless the text has plain words, like ``72 dollars``) and are compared with
``math_verify.verify``, so ``0.5`` equals ``\\frac{1}{2}`` and ``1,000`` equals ``1000``.

Reasons: ``ok``; ``no answer found: no \\boxed{} in the answer``; ``unparsable answer: …``;
``wrong answer: expected 12, got 15``. A reference that cannot be read at all is no verdict: the
row is dropped as ``unparsable reference``.

Measured on this machine (2 CPUs): ``import math_verify`` ≈ 0.7 s (sympy; paid at the first row,
not at import of datamill); parse + verify of a pair ≈ 2 ms (the first call ≈ 40 ms).
``math-verify`` bounds each parse with ``signal.alarm`` (``timeout_seconds``), which works only
on the main thread: where a run's loop is on another thread (Jupyter, the web app) the bound is off.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import re
import threading
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from ...errors import Dropped, MissingDependency
from ...rows import Row
from .base import Verdict, Verifier, clip

AnswerFormat = Literal["boxed", "hash", "last_number", "auto"]

_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_PLAIN_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")


def extract_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{…}``/``\\fbox{…}`` in ``text`` (nested braces kept), or
    None (none there, or its braces never close)."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    content = text[start:i].strip()
                    if content:
                        return content
                    break
    return None


def extract_hash(text: str) -> str | None:
    """The text after the last ``####`` up to the end of its line (GSM8K), or None."""
    at = text.rfind("####")
    if at < 0:
        return None
    rest = text[at + 4 :].strip().splitlines()
    answer = rest[0].strip().rstrip(".") if rest else ""
    return answer or None


def extract_last_number(text: str) -> str | None:
    """The last number in ``text`` (``1,234``, ``-3.5``, ``3/4``, ``.5``), or None."""
    found = _NUMBER.findall(text)
    return found[-1] if found else None


def extract_answer(text: str, answer_format: AnswerFormat) -> str | None:
    """The final answer of ``text`` by ``answer_format`` (see the module docstring), or None."""
    if answer_format == "boxed":
        return extract_boxed(text)
    if answer_format == "hash":
        return extract_hash(text)
    if answer_format == "last_number":
        return extract_last_number(text)
    return extract_boxed(text) or extract_hash(text) or extract_last_number(text)


def reference_answer(text: str) -> str:
    """The answer of a reference: after its ``####`` or inside its ``\\boxed{}`` if it has one,
    else the whole text."""
    return extract_hash(text) or extract_boxed(text) or text.strip()


def parse_answer(text: str, timeout: int | None) -> list[Any]:
    """``math_verify.parse`` of one answer: as LaTeX (``$…$``) first unless it has plain words,
    then as plain text; ``[]`` when neither reads."""
    from math_verify import parse

    latex, plain = f"${text}$", text
    tries = (plain, latex) if _PLAIN_WORD.search(text) else (latex, plain)
    for attempt in tries:
        parsed = parse(attempt, parsing_timeout=timeout)
        if parsed:
            return list(parsed)
    return []


class VerifyMath(Verifier):
    """``verify_math``: the answer column's final answer equals the reference column's."""

    kind: ClassVar[str] = "verify_math"
    not_in_key: ClassVar[frozenset[str]] = frozenset({"answer", "reference", "timeout_seconds"})

    #: the column with the model's solution
    answer: str = "solution"
    #: the column with the reference answer (bare, or a solution ending in ``####``/``\\boxed{}``)
    reference: str = "reference_answer"
    #: where the final answer is in the solution: boxed | hash | last_number | auto
    answer_format: AnswerFormat = "auto"
    #: math-verify's bound on one parse or comparison, in seconds (main thread only)
    timeout_seconds: int = Field(default=5, ge=1)

    @model_validator(mode="after")
    def _math_verify_installed(self) -> VerifyMath:
        if importlib.util.find_spec("math_verify") is None:
            raise MissingDependency("verify_math (math-verify)", "verify")
        return self

    def required_columns(self) -> list[str]:
        return [self.answer, self.reference]

    def key_params(self) -> dict[str, Any]:
        # another math-verify may judge differently: its verdicts are not served to this one
        return {**super().key_params(), "math_verify": _math_verify_version()}

    def key_inputs(self, row: Row) -> dict[str, Any]:
        return {"answer": row.get(self.answer), "reference": row.get(self.reference)}

    async def check(self, row: Row) -> Verdict:
        from math_verify import verify

        solution = str(self.need(row, self.answer))
        reference = reference_answer(str(self.need(row, self.reference)))
        timeout = self.timeout_seconds if _on_main_thread() else None
        gold = parse_answer(reference, timeout)
        if not gold:
            raise Dropped("unparsable reference", f"math-verify cannot read {clip(reference)!r}")
        got = extract_answer(solution, self.answer_format)
        if got is None:
            where = {
                "boxed": "no \\boxed{} in the answer",
                "hash": "no #### in the answer",
            }.get(self.answer_format, "no number in the answer")
            return Verdict.fail(f"no answer found: {where}")
        pred = parse_answer(got, timeout)
        if not pred:
            return Verdict.fail(f"unparsable answer: {clip(got, 40)}")
        if verify(gold, pred, timeout_seconds=timeout):
            return Verdict.ok()
        return Verdict.fail(f"wrong answer: expected {clip(reference, 40)}, got {clip(got, 40)}")


@functools.cache
def _math_verify_version() -> str:
    try:
        return importlib.metadata.version("math-verify")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


__all__ = [
    "VerifyMath",
    "extract_answer",
    "extract_boxed",
    "extract_hash",
    "extract_last_number",
    "reference_answer",
]
