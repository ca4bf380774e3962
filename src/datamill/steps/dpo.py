"""DPO formatting: a rated response pool (or a revision and its original) → one preference pair.

The output is TRL's preference layout with conversational completions, as in
HuggingFaceH4/ultrafeedback_binarized: ``prompt`` (text), ``prompt_id`` (SHA-256 of the prompt),
``chosen`` / ``rejected`` = ``[system?, user, assistant]`` message lists (the system message only
when a non-empty system prompt column is given), ``score_chosen`` / ``score_rejected`` (floats,
``None`` when unrated) and ``chosen_model`` / ``rejected_model``.

``pair: ratings`` (default): ``chosen`` is the best-rated response, ``rejected`` the worst-rated
one; unrated responses (``None``) are left out. Ties are handled explicitly, never by accident:

- ``ties: drop`` (default): a row whose rated responses all share one rating is dropped
  (``all ratings equal``). When only the top or the bottom is shared, the first such response is
  taken — the pair still has a real margin.
- ``ties: first``: all-equal rows are kept too: ``chosen`` is the first rated response and
  ``rejected`` the next one whose text differs.
- In every mode a pair whose two texts are identical is dropped (``identical responses``), so
  ``chosen == rejected`` never happens; ``min_margin`` drops pairs whose score gap is smaller
  (``margin below min_margin``); fewer than two rated responses → ``fewer than two rated
  responses``.

``pair: revision_vs_original`` (the critique-and-rewrite prior): ``chosen`` is the ``revision``
column and ``rejected`` the ``original`` column; scores are ``None`` because no judge rated
them (rate them with a pool and ``ultrafeedback`` when scores matter).

Deliberately not here: rating (``ultrafeedback``) and choosing what to keep (``keep``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from ..errors import ConfigError, Dropped
from ..rows import Row, is_missing
from .base import Context, Step
from .format import prompt_id

OUTPUTS = (
    "prompt",
    "prompt_id",
    "chosen",
    "rejected",
    "score_chosen",
    "score_rejected",
    "chosen_model",
    "rejected_model",
)


def same_text(a: str, b: str) -> bool:
    """Whether two answers are the same text up to whitespace."""
    return " ".join(a.split()) == " ".join(b.split())


def conversation(prompt: str, answer: str, system: Any = None) -> list[dict[str, str]]:
    """``[system?, user, assistant]`` messages (the system message only when non-empty text)."""
    out = []
    if isinstance(system, str) and system.strip():
        out.append({"role": "system", "content": system})
    return out + [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def pick_pair(
    texts: list[str], ratings: list[Any], ties: str = "drop", min_margin: float | None = None
) -> tuple[int, int]:
    """Indices ``(chosen, rejected)`` from ratings, or :class:`Dropped` saying why there is no pair."""
    rated = [i for i, r in enumerate(ratings) if r is not None]
    if len(rated) < 2:
        raise Dropped("fewer than two rated responses", f"ratings {ratings}")
    best = max(ratings[i] for i in rated)
    worst = min(ratings[i] for i in rated)
    chosen = next(i for i in rated if ratings[i] == best)
    if best == worst:
        if ties == "drop":
            raise Dropped("all ratings equal", f"every rated response got {best}")
        rejected = next(
            (i for i in rated if i != chosen and not same_text(texts[i], texts[chosen])), None
        )
        if rejected is None:
            raise Dropped("identical responses", "every rated response has the same text")
    else:
        worst_ones = [i for i in rated if ratings[i] == worst]
        rejected = next((i for i in worst_ones if not same_text(texts[i], texts[chosen])), None)
        if rejected is None:
            raise Dropped(
                "identical responses",
                f"the best and the worst rated responses (#{chosen + 1}, #{worst_ones[0] + 1}) have the same text",
            )
    if min_margin is not None and best - ratings[rejected] < min_margin:
        raise Dropped(
            "margin below min_margin",
            f"{ratings[chosen]} vs {ratings[rejected]}, min_margin {min_margin}",
        )
    return chosen, rejected


class FormatDPO(Step):
    """Rated pool (or revision + original) → ``prompt``, ``chosen``, ``rejected``, scores, models."""

    kind: ClassVar[str] = "format_dpo"

    pair: Literal["ratings", "revision_vs_original"] = "ratings"
    instruction: str = "instruction"
    generations: str = "generations"
    ratings: str = "ratings"
    generation_models: str = "generation_models"  #: read when the row has it
    revision: str = "revision"
    original: str = "response"
    revision_model: str = "revision_model"  #: read when the row has it
    system_prompt: str | None = None  #: column holding a system prompt, if any
    ties: Literal["drop", "first"] = "drop"
    min_margin: float | None = Field(default=None, ge=0)
    keep_columns: bool = True

    @model_validator(mode="after")
    def _check(self) -> FormatDPO:
        if self.pair == "revision_vs_original" and self.min_margin is not None:
            raise ConfigError(
                "format_dpo min_margin needs scores; pair: revision_vs_original has none"
            )
        return self

    def required_columns(self) -> list[str]:
        if self.pair == "ratings":
            cols = [self.instruction, self.generations, self.ratings]
        else:
            cols = [self.instruction, self.revision, self.original]
        return cols + ([self.system_prompt] if self.system_prompt else [])

    def output_columns(self, columns: list[str]) -> list[str]:
        base = columns if self.keep_columns else []
        return base + [c for c in OUTPUTS if c not in base]

    def messages(self, row: Row, prompt: str, answer: str) -> list[dict[str, str]]:
        system = row.get(self.system_prompt) if self.system_prompt else None
        return conversation(prompt, answer, system)

    def from_ratings(self, row: Row) -> tuple[str, str, float | None, float | None, Any, Any]:
        texts, ratings = row[self.generations], row[self.ratings]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise Dropped(
                "no response pool", f"column {self.generations!r} must hold a list of texts"
            )
        if not isinstance(ratings, list) or len(ratings) != len(texts):
            got = len(ratings) if isinstance(ratings, list) else type(ratings).__name__
            raise Dropped(
                "ratings do not match responses", f"{len(texts)} responses but ratings {got}"
            )
        if any(
            r is not None and (isinstance(r, bool) or not isinstance(r, (int, float)))
            for r in ratings
        ):
            raise Dropped("ratings are not numbers", f"ratings {ratings}")
        chosen, rejected = pick_pair(texts, ratings, self.ties, self.min_margin)
        models = row.get(self.generation_models)
        models = (
            models
            if isinstance(models, list) and len(models) == len(texts)
            else [None] * len(texts)
        )
        return (
            texts[chosen],
            texts[rejected],
            float(ratings[chosen]),
            float(ratings[rejected]),
            models[chosen],
            models[rejected],
        )

    def from_revision(self, row: Row) -> tuple[str, str, float | None, float | None, Any, Any]:
        revision, original = row[self.revision], row[self.original]
        for col, value in ((self.revision, revision), (self.original, original)):
            if is_missing(value) or not isinstance(value, str):
                raise Dropped("empty text", f"column {col!r} is empty or not text")
        if same_text(revision, original):
            raise Dropped("identical responses", "the revision equals the original")
        return revision, original, None, None, row.get(self.revision_model), None

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        prompt = row[self.instruction]
        if is_missing(prompt) or not isinstance(prompt, str):
            raise Dropped("empty text", f"column {self.instruction!r} is empty or not text")
        chosen, rejected, s_chosen, s_rejected, m_chosen, m_rejected = (
            self.from_ratings(row) if self.pair == "ratings" else self.from_revision(row)
        )
        new = {
            "prompt": prompt,
            "prompt_id": prompt_id(prompt),
            "chosen": self.messages(row, prompt, chosen),
            "rejected": self.messages(row, prompt, rejected),
            "score_chosen": s_chosen,
            "score_rejected": s_rejected,
            "chosen_model": m_chosen,
            "rejected_model": m_rejected,
        }
        return [{**row, **new} if self.keep_columns else new]
