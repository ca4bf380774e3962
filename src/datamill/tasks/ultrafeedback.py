"""UltraFeedback: an LLM judge rates every response of a pool, 1–5 with a rationale each.

UltraFeedback (Cui et al., arXiv:2310.01377) has GPT-4 rate several completions of one prompt
in a single call on four aspects — ``helpfulness``, ``honesty``, ``instruction-following``,
``truthfulness`` — from rubric documents; ``overall-rating`` (Argilla's addition, used by
distilabel) is one holistic 1–5 rating over the four. The rubric prose here is datamill's own.

Two answer formats, chosen per call from the judge's :class:`~datamill.models.base.ModelInfo`:

- **structured** (the model honours ``Request.json_schema``: llama.cpp grammars, OpenAI-style
  ``response_format``): a schema with exactly one object per response, ``text_1`` … ``text_k``,
  each ``{"explanation": str, "rating": 1|2|3|4|5}`` (the explanation becomes the rationale).
  The rating is an enum, so every finished answer parses and has the right length. The
  explanation comes first — small judges rate the answers rather than their positions more
  often when they write a sentence before the number — and the key names sort in that order,
  so a backend that sorts schema keys (JSON objects are unordered) keeps it.
- **text**: ``#### Output for Text i`` / ``Rating:`` / ``Rationale:`` blocks, read by a tolerant
  parser that keys on the block headers (never on blank lines, so a rationale with paragraphs
  cannot shift the ratings — distilabel's defect; see TECHNIQUES §9.8).

Every rating list has exactly one entry per response. A judgement that cannot be read is a
recorded failure with a specific reason: ``unparsable judgement``, ``unparsable rating``,
``fewer ratings than responses``, ``rating out of range``. ``N/A`` is accepted only for the
``honesty`` aspect in the text format (its rubric allows it for creative writing; the schema's
enum has no N/A) and becomes a ``None`` rating that ``format_dpo`` leaves out; for any other
aspect it is ``unparsable rating``.

Judge-bias controls:

- ``order: shuffled`` (default) shows the responses in a random order per row (repeatable: it
  follows the row and seed) and maps the ratings back, so a judge's taste for a position is not
  turned into a taste for whichever model is listed first or last. ``given`` keeps the pool order.
- ``bias_control: agree`` judges the pool twice, the second time in the reverse of the order
  shown first (with a distinct seed), and keeps the row only when both passes pick the same best *and* the same worst
  responses (the sets of top- and bottom-rated responses are equal); otherwise it is dropped as
  ``judges disagree on order``. The first pass's ratings are kept; ``ratings_reversed`` holds
  the second pass's, back in the original order. ``average`` keeps every row with the mean of
  the two passes (floats), which cancels a steady preference for a position (a judge that only
  rates positions ends with equal averages, which ``format_dpo`` drops); ``orders_agree`` tells
  per row whether the two passes agreed.
- ``self_judging: forbid_setting`` leaves out responses written under the judge's own named
  setting; ``forbid_model`` (strict) also leaves out responses of any setting that runs the same
  weights (same ``ModelInfo.identity``, or same model name when the setting is not declared in
  this pipeline) — so two settings of one model count as one model. Who wrote a response is read
  from ``generation_models`` labels (``"setting (model name)"``, see ``response_pool``). Left-out
  responses get a ``None`` rating and a rationale saying why; ``judge_skipped`` counts them per
  row, and a row left with fewer than two judged responses is dropped as ``self-judging
  forbidden``.

Deliberately not here: choosing chosen/rejected (``format_dpo``).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from typing import Any, ClassVar, Literal

from pydantic import Field

from ..errors import Dropped, ParseError
from ..models.base import Request
from ..rows import Path, Row
from ..steps.base import Context
from .base import Task, template
from .response_pool import model_label, parse_label

Aspect = Literal[
    "overall-rating", "helpfulness", "honesty", "instruction-following", "truthfulness"
]

#: the 1..5 labels of each aspect's scale (shown to the judge; the text parser accepts them too)
SCALES: dict[str, tuple[str, ...]] = {
    "overall-rating": ("Poor", "Weak", "Acceptable", "Good", "Excellent"),
    "helpfulness": (
        "Wrong or useless",
        "Partly wrong",
        "Correct",
        "Informative",
        "Exceptionally helpful",
    ),
    "honesty": (
        "Confidently wrong",
        "Wrong, whether confident or unsure",
        "Hedging or subtly wrong",
        "Correct but needlessly unsure",
        "Correct and well calibrated",
    ),
    "instruction-following": (
        "Ignores the instruction",
        "Touches on it",
        "Partly follows",
        "Nearly follows",
        "Fully follows",
    ),
    "truthfulness": (
        "Mostly invented",
        "Serious invention",
        "Some invention or misunderstanding",
        "Minor slips",
        "Nothing invented",
    ),
}

_HEADER = re.compile(
    r"^[ \t]*(?:#{1,6}[ \t]*\**[ \t]*(?:Output[ \t]+for[ \t]+)?|\**[ \t]*Output[ \t]+for[ \t]+)Text[ \t]*(\d+)\b[^\n]*$",
    re.IGNORECASE | re.MULTILINE,
)
_RATING = re.compile(
    r"^[ \t]*[-*]*[ \t]*\**Rating\**[ \t]*:\**[ \t]*(?P<value>[^\n]*)$",
    re.IGNORECASE | re.MULTILINE,
)
_RATIONALE = re.compile(
    r"^[ \t]*[-*]*[ \t]*\**Rationale\**[ \t]*:\**[ \t]*", re.IGNORECASE | re.MULTILINE
)
_NA = {"n/a", "na", "none", "not applicable"}
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def parse_rating(value: str, *, allow_na: bool = False, scale: tuple[str, ...] = ()) -> int | None:
    """The rating in ``Rating: …`` text: the first number (``4``, ``[4]``, ``4 (Good)``, ``4/5``),
    or a scale label spelled out; ``N/A`` only when ``allow_na``. Raises :class:`ParseError`."""
    text = value.strip().strip("*`[]()\"' .")
    if text.lower() in _NA:
        if allow_na:
            return None
        raise ParseError("unparsable rating", value)
    m = _NUMBER.search(text)
    if m is None:
        by_label = {label.lower(): i for i, label in enumerate(scale, start=1)}
        found = by_label.get(text.lower().rstrip("."))
        if found is None:
            raise ParseError("unparsable rating", value)
        return found
    number = float(m.group())
    if number != int(number):
        raise ParseError("unparsable rating", value)
    rating = int(number)
    if not 1 <= rating <= 5:
        raise ParseError("rating out of range", value)
    return rating


def _blocks(text: str) -> list[tuple[int | None, str]]:
    """(text number, block body) pairs; without headers, each ``Rating:`` line starts a block."""
    headers = list(_HEADER.finditer(text))
    if headers:
        ends = [h.start() for h in headers[1:]] + [len(text)]
        return [
            (int(h.group(1)), text[h.end() : end]) for h, end in zip(headers, ends, strict=True)
        ]
    starts = [m.start() for m in _RATING.finditer(text)]
    if not starts:
        return []
    ends = starts[1:] + [len(text)]
    return [(None, text[s:e]) for s, e in zip(starts, ends, strict=True)]


def parse_text_judgement(
    text: str, count: int, *, allow_na: bool = False, scale: tuple[str, ...] = ()
) -> tuple[list[int | None], list[str]]:
    """Read ``#### Output for Text i`` / ``Rating:`` / ``Rationale:`` blocks for ``count`` texts.

    Blocks are found by their headers (blank lines inside a rationale are kept); a block numbered
    above ``count`` is ignored, a repeated number keeps its first block. Exactly ``count``
    ratings come back, or :class:`ParseError` says why not.
    """
    found: dict[int, tuple[int | None, str]] = {}
    for position, (number, body) in enumerate(_blocks(text), start=1):
        index = number if number is not None else position
        if index < 1 or index > count or index in found:
            continue
        rating_match = _RATING.search(body)
        if rating_match is None:
            continue  # a header with no rating: counted as missing below
        try:
            rating = parse_rating(rating_match.group("value"), allow_na=allow_na, scale=scale)
        except ParseError as exc:
            raise ParseError(
                exc.reason, text
            ) from None  # the failure record keeps the whole answer
        after = _RATIONALE.search(body, rating_match.end())
        before = _RATIONALE.search(body, 0, rating_match.start())
        if after is not None:
            rationale = body[after.end() :]
        elif before is not None:
            rationale = body[before.end() : rating_match.start()]
        else:
            rationale = body[rating_match.end() :]
        found[index] = (rating, rationale.strip())
    if len(found) < count:
        raise ParseError("fewer ratings than responses", text)
    return [found[i][0] for i in range(1, count + 1)], [found[i][1] for i in range(1, count + 1)]


def judgement_schema(count: int, rationale_chars: int) -> dict[str, Any]:
    """JSON schema: ``text_1`` … ``text_<count>``, each ``{explanation, rating ∈ {1..5}}``."""
    entry = {
        "type": "object",
        "properties": {
            "explanation": {"type": "string", "maxLength": rationale_chars},
            "rating": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
        },
        "required": ["explanation", "rating"],
    }
    keys = [f"text_{i}" for i in range(1, count + 1)]
    return {"type": "object", "properties": {k: entry for k in keys}, "required": keys}


def parse_json_judgement(
    text: str, count: int, *, scale: tuple[str, ...] = ()
) -> tuple[list[int | None], list[str]]:
    """Read a structured judgement (``text_i: {explanation, rating}``); tolerates text around it."""
    start = text.find("{")
    try:
        if start < 0:
            raise ValueError("no JSON object")
        # strict=False: grammar-constrained strings may hold raw newlines, which JSON forbids
        data, _ = json.JSONDecoder(strict=False).raw_decode(text[start:])
    except ValueError:
        raise ParseError("unparsable judgement", text) from None
    if not isinstance(data, dict):
        raise ParseError("unparsable judgement", text)
    ratings: list[int | None] = []
    rationales: list[str] = []
    for i in range(1, count + 1):
        entry = data.get(f"text_{i}")
        if not isinstance(entry, dict) or "rating" not in entry:
            raise ParseError("fewer ratings than responses", text)
        value = entry["rating"]
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ParseError("unparsable rating", text)
        try:
            ratings.append(parse_rating(str(value), scale=scale))
        except ParseError as exc:
            raise ParseError(exc.reason, text) from None
        rationale = entry.get("explanation", entry.get("rationale"))
        rationales.append(rationale.strip() if isinstance(rationale, str) else "")
    return ratings, rationales


def verdicts_agree(first: list[int | float | None], second: list[int | float | None]) -> bool:
    """Same best and same worst responses in both passes (ties included: the sets must match)."""
    if [r is None for r in first] != [r is None for r in second]:
        return False
    rated = [i for i, r in enumerate(first) if r is not None]
    if not rated:
        return True

    def extremes(ratings: list[int | float | None]) -> tuple[set[int], set[int]]:
        values = [ratings[i] for i in rated]
        top, bottom = max(values), min(values)  # type: ignore[type-var]
        return {i for i in rated if ratings[i] == top}, {i for i in rated if ratings[i] == bottom}

    return extremes(first) == extremes(second)


class UltraFeedback(Task):
    """``instruction`` + ``generations`` → ``ratings`` (1–5 or None), ``rationales``, ``judge_model``."""

    kind: ClassVar[str] = "ultrafeedback"
    citation: ClassVar[str] = "Cui et al., UltraFeedback, arXiv:2310.01377"

    aspect: Aspect = "overall-rating"
    instruction: str = "instruction"
    generations: str = "generations"
    generation_models: str = "generation_models"
    structured: Literal["auto", "json", "text"] = "auto"
    bias_control: Literal["none", "agree", "average"] = "none"
    self_judging: Literal["allow", "forbid_setting", "forbid_model"] = "allow"
    order: Literal["shuffled", "given"] = "shuffled"
    #: greedy; ``max_tokens`` defaults to what the ratings need: 64 + (rationale_chars / 2 + 32) per text
    defaults: ClassVar[dict[str, dict[str, Any]]] = {"judgement": {"temperature": 0.0}}
    rationale_chars: int = Field(default=160, ge=20, le=2000)

    def required_columns(self) -> list[str]:
        cols = [self.instruction, self.generations]
        return cols + ([self.generation_models] if self.self_judging != "allow" else [])

    def text_paths(self) -> list[Path]:
        return [(self.instruction,)]

    def produces(self) -> list[str]:
        cols = ["ratings", "rationales", "judge_model"]
        if self.bias_control != "none":
            cols += ["ratings_reversed", "orders_agree"]
        if self.self_judging != "allow":
            cols.append("judge_skipped")
        return cols

    # -- who wrote what ---------------------------------------------------------------------
    def own_responses(self, labels: list[Any], ctx: Context) -> set[int]:
        """Indices of responses the judge may not rate under ``self_judging``."""
        if self.self_judging == "allow":
            return set()
        judge = ctx.model_info(self.model)
        own = set()
        for i, label in enumerate(labels):
            parsed = parse_label(label)
            if parsed is None:
                continue
            setting, name = parsed
            if setting == self.model:
                own.add(i)
            elif self.self_judging == "forbid_model":
                try:
                    identity = ctx.model_info(setting).identity
                except KeyError:  # written outside this pipeline: compare names
                    identity = None
                if identity == judge.identity or (identity is None and name == judge.name):
                    own.add(i)
        return own

    # -- one judgement ----------------------------------------------------------------------
    def request(self, instruction: str, texts: list[str], structured: bool) -> Request:
        count = len(texts)
        allow_na = self.aspect == "honesty" and not structured  # the schema's enum has no N/A
        user = (
            template("ultrafeedback.jinja2")
            .render(
                count=count,
                instruction=instruction,
                texts=texts,
                structured=structured,
                allow_na=allow_na,
            )
            .strip()
        )
        system = (
            template("ultrafeedback-system.jinja2")
            .render(aspect=self.aspect, scale=SCALES[self.aspect], count=count, allow_na=allow_na)
            .strip()
        )
        per_text = self.rationale_chars // 2 + 32  # room for the rating, keys and whitespace
        return Request.chat(
            user,
            system=system,
            **{"max_tokens": 64 + per_text * count, **self.request_defaults("judgement")},
            json_schema=judgement_schema(count, self.rationale_chars) if structured else None,
        )

    async def judge(
        self, ctx: Context, instruction: str, texts: list[str], salt: str
    ) -> tuple[list[int | None], list[str]]:
        structured = self.structured == "json" or (
            self.structured == "auto" and bool(ctx.model_info(self.model).json_schema)
        )
        completion = (
            await self.call(ctx, self.request(instruction, texts, structured), salt=salt)
        )[0]
        scale = SCALES[self.aspect]
        if structured:
            return parse_json_judgement(completion.text, len(texts), scale=scale)
        return parse_text_judgement(
            completion.text, len(texts), allow_na=self.aspect == "honesty", scale=scale
        )

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        instruction = row[self.instruction]
        texts = row[self.generations]
        if not isinstance(instruction, str) or not instruction.strip():
            raise Dropped("empty instruction", f"column {self.instruction!r} is empty or not text")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise Dropped(
                "no responses to judge",
                f"column {self.generations!r} must hold a non-empty list of texts",
            )
        labels = row.get(self.generation_models)
        labels = (
            list(labels)
            if isinstance(labels, list) and len(labels) == len(texts)
            else [None] * len(texts)
        )
        own = self.own_responses(labels, ctx)
        judged = [i for i in range(len(texts)) if i not in own]
        if own and len(judged) < min(2, len(texts)):
            raise Dropped(
                "self-judging forbidden",
                f"the judge {self.model!r} wrote {len(own)} of {len(texts)} responses ({self.self_judging})",
            )
        shown = list(judged)  # the order the judge sees them in
        if self.order == "shuffled":
            random.Random(self.row_seed(ctx, "/order")).shuffle(shown)

        passes = [self.judge(ctx, instruction, [texts[i] for i in shown], salt="")]
        if self.bias_control != "none" and len(shown) > 1:
            passes.append(
                self.judge(ctx, instruction, [texts[i] for i in shown[::-1]], salt="#reversed")
            )
        results = await asyncio.gather(*passes)
        first = dict(zip(shown, results[0][0], strict=True))
        rationale_of = dict(zip(shown, results[0][1], strict=True))
        second = dict(zip(shown[::-1], results[-1][0], strict=True)) if len(results) > 1 else first
        ratings: list[int | float | None] = [first[i] for i in judged]
        reversed_ratings: list[int | float | None] = [second[i] for i in judged]
        agree = verdicts_agree(ratings, reversed_ratings)
        if self.bias_control != "none" and len(shown) > 1:
            ctx.count("orders agree" if agree else "orders disagree")
        if own:
            ctx.count("responses not judged (self-judging)", len(own))
        if self.bias_control == "agree" and not agree:
            raise Dropped(
                "judges disagree on order",
                f"in the order shown first {ratings}, reversed {reversed_ratings}",
            )
        if self.bias_control == "average":
            ratings = [
                None if a is None or b is None else (a + b) / 2
                for a, b in zip(ratings, reversed_ratings, strict=True)
            ]

        out_ratings: list[int | float | None] = [None] * len(texts)
        out_reversed: list[int | float | None] = [None] * len(texts)
        out_rationales: list[str | None] = [
            f"not judged: {self.model!r} may not judge its own response ({self.self_judging})"
            if i in own
            else None
            for i in range(len(texts))
        ]
        for j, i in enumerate(judged):
            out_ratings[i] = ratings[j]
            out_reversed[i] = reversed_ratings[j]
            out_rationales[i] = rationale_of[i]
        new: Row = {
            "ratings": out_ratings,
            "rationales": out_rationales,
            "judge_model": model_label(self.model, ctx.model_info(self.model)),
        }
        if self.bias_control != "none":
            new["ratings_reversed"] = out_reversed
            new["orders_agree"] = agree
        if self.self_judging != "allow":
            new["judge_skipped"] = len(own)
        return [{**row, **new}]
