"""Deita's scorers as prompted judges (Liu et al., "What Makes Good Data for Alignment?",
arXiv:2312.15685).

- :class:`ComplexityScorer` — how difficult/complex an instruction is. Given several variants of
  one instruction (a list column, e.g. from ``evol_complexity``) the judge ranks them *jointly*
  on a 1..N+1 scale (N+1: too complex to answer), which is the paper's EVOL COMPLEXITY idea:
  joint ranking makes small differences visible. A single instruction gets an absolute 1..6 score
  (the range of the paper's released scorers).
- :class:`QualityScorer` — the same for responses to one instruction (EVOL QUALITY); N+1 is for
  a response that cannot be improved.

The judge answers ``[i] Score: s`` lines (the paper's format). The parser is tolerant (case,
spacing, ``**bold**``, ``[i]:``/``i.`` forms, decimals) and maps scores by the index the judge
wrote, not by line position. A judge that honours a JSON schema (llama.cpp grammars, OpenAI-style
``response_format``; ``structured: auto``) is asked for ``{"score_1": s, …}`` instead, with each
score an enum of the scale, so even a small model's answer always parses. A missing index or a
score outside the scale is a ``ParseError`` with the raw text — never a silent ``None``. A string
column gives a number; a list column gives a list.

The paper fine-tunes LLaMA scorers on such rankings; datamill (like distilabel) uses the prompted
judge directly. ``deita_score`` = complexity × quality and the diversity selection live in
``steps.deita``.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar, Literal

from ..errors import Dropped, ParseError
from ..models.base import Request
from ..rows import Path, Row, is_missing
from ..steps.base import Context
from ..steps.deita import CITATION
from .base import Task, template

#: the absolute scale of a single item (the range of the paper's released scorers)
SINGLE_SCALE = 6

_SCORE_LINE = re.compile(
    r"""^[\s>*_#-]*                 # bullets, emphasis, headings
        [\[(]?\s*(\d{1,3})\s*[\])]? # [1]  (1)  1
        [\s*_:.)-]*                 # ]: .  **
        score\s*[*_]*\s*[:=-]?\s*[*_]*\s*
        (-?\d+(?:\.\d+)?)           # the score
    """,
    re.IGNORECASE | re.VERBOSE,
)


def parse_scores(text: str, count: int, max_score: float) -> list[float]:
    """Scores of items 1..``count`` from ``[i] Score: s`` lines, by index.

    The first line naming an index wins; indices above ``count`` are ignored. Raises
    :class:`ParseError` when an index has no score or a score lies outside 1..``max_score``.
    """
    found: dict[int, float] = {}
    for line in text.splitlines():
        m = _SCORE_LINE.match(line)
        if not m:
            continue
        index, score = int(m.group(1)), float(m.group(2))
        if 1 <= index <= count and index not in found:
            found[index] = score
    missing = [i for i in range(1, count + 1) if i not in found]
    if missing:
        which = ", ".join(f"[{i}]" for i in missing[:5])
        raise ParseError(f"missing score for {which}" if count > 1 else "no score found", text)
    scores = [found[i] for i in range(1, count + 1)]
    bad = [s for s in scores if not 1 <= s <= max_score]
    if bad:
        raise ParseError(f"score {bad[0]:g} outside 1..{max_score:g}", text)
    return scores


def scores_schema(count: int, max_score: int) -> dict[str, Any]:
    """JSON schema: ``score_1`` … ``score_<count>``, each a whole number 1..``max_score``."""
    keys = [f"score_{i}" for i in range(1, count + 1)]
    entry = {"type": "integer", "enum": list(range(1, max_score + 1))}
    return {"type": "object", "properties": {k: entry for k in keys}, "required": keys}


def parse_json_scores(text: str, count: int, max_score: float) -> list[float]:
    """Scores from a structured answer ``{"score_1": s, …}`` (text around the object is ignored)."""
    start = text.find("{")
    try:
        if start < 0:
            raise ValueError("no JSON object")
        data, _ = json.JSONDecoder().raw_decode(text[start:])
    except ValueError:
        raise ParseError("unparsable scores", text) from None
    if not isinstance(data, dict):
        raise ParseError("unparsable scores", text)
    scores: list[float] = []
    for i in range(1, count + 1):
        value = data.get(f"score_{i}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParseError(f"missing score for [{i}]" if count > 1 else "no score found", text)
        if not 1 <= value <= max_score:
            raise ParseError(f"score {value:g} outside 1..{max_score:g}", text)
        scores.append(float(value))
    return scores


class _Scorer(Task):
    citation: ClassVar[str] = CITATION
    truncated: Literal["drop", "keep"] = "keep"  # the scores come first; a cut tail does not matter
    #: ``auto``: a JSON schema when the judge honours one (llama.cpp grammars), else ``[i] Score: s``
    structured: Literal["auto", "json", "text"] = "auto"
    #: greedy; ``max_tokens`` defaults to what the scores need: 12 per item + 16
    defaults: ClassVar[dict[str, dict[str, Any]]] = {"score": {"temperature": 0.0}}

    def items(self, row: Row) -> tuple[list[str], bool]:
        raise NotImplementedError

    def render(self, row: Row, items: list[str], structured: bool) -> str:
        raise NotImplementedError

    @staticmethod
    def scale(count: int) -> int:
        return count + 1 if count > 1 else SINGLE_SCALE

    def _items_from(self, row: Row, column: str) -> tuple[list[str], bool]:
        value = row.get(column)
        if isinstance(value, str):
            items, listed = [value], False
        elif isinstance(value, (list, tuple)):
            items, listed = [v for v in value], True
        else:
            raise Dropped(
                "nothing to score",
                f"column {column!r} holds {type(value).__name__}, not text or a list of texts",
            )
        if not items or any(is_missing(v) or not isinstance(v, str) for v in items):
            raise Dropped("nothing to score", f"column {column!r} is empty or holds an empty text")
        return items, listed

    def request(self, row: Row, items: list[str], structured: bool) -> Request:
        count, top = len(items), self.scale(len(items))
        return Request.chat(
            self.render(row, items, structured),
            **{"max_tokens": 12 * count + 16, **self.request_defaults("score")},
            json_schema=scores_schema(count, top) if structured else None,
        )

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        items, listed = self.items(row)
        structured = self.structured == "json" or (
            self.structured == "auto" and bool(ctx.model_info(self.model).json_schema)
        )
        text = (await self.call(ctx, self.request(row, items, structured)))[0].text
        parse = parse_json_scores if structured else parse_scores
        scores = parse(text, len(items), self.scale(len(items)))
        return [{**row, self.output: scores if listed else scores[0]}]  # type: ignore[attr-defined]

    def produces(self) -> list[str]:
        return [self.output]  # type: ignore[attr-defined]


class ComplexityScorer(_Scorer):
    """Score the complexity of ``instructions`` (one text, or variants of one instruction)."""

    kind: ClassVar[str] = "complexity_scorer"
    instructions: str = "instruction"
    output: str = "complexity_score"

    def required_columns(self) -> list[str]:
        return [self.instructions]

    def items(self, row: Row) -> tuple[list[str], bool]:
        return self._items_from(row, self.instructions)

    def render(self, row: Row, items: list[str], structured: bool) -> str:
        return (
            template("deita-complexity.jinja2")
            .render(items=items, max_score=self.scale(len(items)), structured=structured)
            .strip()
        )


class QualityScorer(_Scorer):
    """Score the quality of ``responses`` (one text, or several) to ``instruction``."""

    kind: ClassVar[str] = "quality_scorer"
    instruction: str = "instruction"
    responses: str = "response"
    output: str = "quality_score"

    def required_columns(self) -> list[str]:
        return [self.instruction, self.responses]

    def text_paths(self) -> list[Path]:
        return [(self.instruction,)]

    def items(self, row: Row) -> tuple[list[str], bool]:
        return self._items_from(row, self.responses)

    def render(self, row: Row, items: list[str], structured: bool) -> str:
        instruction: Any = row.get(self.instruction)
        if is_missing(instruction) or not isinstance(instruction, str):
            raise Dropped("nothing to score", f"column {self.instruction!r} is empty or not text")
        return (
            template("deita-quality.jinja2")
            .render(
                instruction=instruction,
                items=items,
                max_score=self.scale(len(items)),
                structured=structured,
            )
            .strip()
        )


__all__ = ["ComplexityScorer", "QualityScorer", "parse_scores"]
