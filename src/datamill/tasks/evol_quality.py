"""EvolQuality: rewrite a response to make it better, one random mutation per evolution.

EvolQuality (Liu et al., Deita, arXiv:2312.15685) is Evol-Instruct turned on the answer: the
instruction stays, the response is rewritten to improve one of five qualities — helpfulness,
relevance, deepening, creativity, details. Each of ``num_evolutions`` rounds picks a mutation at
random (deterministic per row and seed) and rewrites the *latest* response. The rewrite is taken
as the model wrote it, minus a leading label such as "Improved answer:"; an empty rewrite is a
recorded failure.

Outputs keep the original untouched: ``evolved_response`` (the last rewrite),
``evolution_mutations`` (the mutation of each round) and, with ``store_evolutions``,
``evolved_responses`` (every round). With ``pool: true`` the step reads the response from a
response pool (``generations[pool_index]``) and appends the rewrite(s) to the pool with a label
``"<setting> (<model>) · evol_quality of #i"``, so a judge can rate originals and rewrites side
by side — the course's "assume the rewrite is better" prior is not taken on trust.

Deliberately not here: judging whether the rewrite is better (``ultrafeedback``).
"""

from __future__ import annotations

import random
import re
from typing import Any, ClassVar

from pydantic import Field, field_validator

from ..errors import ConfigError, Dropped, ParseError
from ..models.base import Request
from ..rows import Path, Row
from ..steps.base import Context
from .base import Task, template
from .response_pool import extend_pool, model_label, pool_of

#: the five EvolQuality mutations (their prompts are in templates/evol-quality.jinja2)
MUTATIONS: tuple[str, ...] = ("helpfulness", "relevance", "deepening", "creativity", "details")

_LEADING_LABEL = re.compile(
    r"^\s*(?:#+\s*)?\**\s*(?:improved|rewritten|revised|new|better)\s+(?:answer|response|version)\s*#?\s*\**\s*:\s*\**\s*",
    re.IGNORECASE,
)


def clean_rewrite(text: str) -> str:
    """The rewrite without a leading "Improved answer:"-style label, stripped."""
    return _LEADING_LABEL.sub("", text.strip(), count=1).strip()


def rewrite_source(
    row: Row,
    *,
    instruction: str,
    response: str,
    pool: bool,
    pool_index: int,
    generations: str,
    generation_models: str,
) -> tuple[str, str]:
    """``(instruction, response to rewrite)`` of a row, for the steps that rewrite a response
    (``evol_quality``, ``critique``): the response is column ``response``, or with ``pool`` entry
    ``pool_index`` of the pool. ``Dropped`` when either text is empty or the pool is too small."""
    asked = row[instruction]
    if not isinstance(asked, str) or not asked.strip():
        raise Dropped("empty instruction", f"column {instruction!r} is empty or not text")
    if pool:
        texts, _ = pool_of(row, generations, generation_models)
        if not -len(texts) <= pool_index < len(texts):
            raise Dropped(
                "pool too small",
                f"pool_index {pool_index} but the pool holds {len(texts)} responses",
            )
        return asked, texts[pool_index]
    value = row[response]
    if not isinstance(value, str) or not value.strip():
        raise Dropped("empty response", f"column {response!r} is empty or not text")
    return asked, value


class EvolQuality(Task):
    """``instruction`` + ``response`` → ``evolved_response`` after ``num_evolutions`` rewrites."""

    kind: ClassVar[str] = "evol_quality"
    citation: ClassVar[str] = (
        "Liu et al., What Makes Good Data for Alignment? (Deita, EvolQuality), arXiv:2312.15685"
    )

    instruction: str = "instruction"
    response: str = "response"
    num_evolutions: int = Field(default=1, ge=1, le=10)
    mutations: list[str] = list(MUTATIONS)
    store_evolutions: bool = False
    output: str = "evolved_response"
    pool: bool = False
    pool_index: int = 0
    generations: str = "generations"
    generation_models: str = "generation_models"
    defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "rewrite": {"max_tokens": 512, "temperature": 0.7}
    }

    @field_validator("mutations")
    @classmethod
    def _known_mutations(cls, value: list[str]) -> list[str]:
        names = [v.lower() for v in value]
        unknown = [v for v in names if v not in MUTATIONS]
        if unknown:
            raise ConfigError(
                f"evol_quality: unknown mutation {unknown[0]!r}; choose from {', '.join(MUTATIONS)}"
            )
        if not names:
            raise ConfigError(f"evol_quality needs at least one mutation: {', '.join(MUTATIONS)}")
        return names

    def required_columns(self) -> list[str]:
        return [self.instruction, self.generations if self.pool else self.response]

    def text_paths(self) -> list[Path]:
        paths: list[Path] = [(self.instruction,)]
        return paths if self.pool else [*paths, (self.response,)]

    def produces(self) -> list[str]:
        cols = [self.output, "evolution_mutations"]
        if self.store_evolutions:
            cols.append("evolved_responses")
        if self.pool:
            cols += [self.generations, self.generation_models]
        return cols

    def updates(self) -> list[str]:
        # with ``pool`` the rewrite joins the pool: both pool columns grow in place
        pool = [self.generations, self.generation_models] if self.pool else []
        return self.required_columns() + pool

    def pick_mutations(self, ctx: Context) -> list[str]:
        rng = random.Random(self.row_seed(ctx, "/mutations"))
        return [rng.choice(self.mutations) for _ in range(self.num_evolutions)]

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        instruction, current = rewrite_source(
            row,
            instruction=self.instruction,
            response=self.response,
            pool=self.pool,
            pool_index=self.pool_index,
            generations=self.generations,
            generation_models=self.generation_models,
        )
        chosen = self.pick_mutations(ctx)
        evolved: list[str] = []
        for round_no, mutation in enumerate(chosen):
            user = (
                template("evol-quality.jinja2")
                .render(instruction=instruction, response=current, mutation=mutation)
                .strip()
            )
            request = Request.chat(user, **self.request_defaults("rewrite"))
            completion = (await self.call(ctx, request, salt=f"#{round_no}"))[0]
            rewrite = clean_rewrite(completion.text)
            if not rewrite:
                raise ParseError("empty rewrite", completion.text)
            evolved.append(rewrite)
            current = rewrite
        new: Row = {self.output: evolved[-1], "evolution_mutations": chosen}
        if self.store_evolutions:
            new["evolved_responses"] = evolved
        if self.pool:
            added = evolved if self.store_evolutions else evolved[-1:]
            index = self.pool_index % len(row[self.generations]) + 1
            label = model_label(self.model, ctx.model_info(self.model), f"evol_quality of #{index}")
            new.update(
                extend_pool(
                    row, self.generations, self.generation_models, added, [label] * len(added)
                )
            )
        return [{**row, **new}]
