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
from typing import Any, ClassVar

from pydantic import Field, field_validator

from ..errors import ConfigError
from ..models.base import Request
from ..rows import Row
from ..steps.base import Context
from .base import template
from .rewrite import RewriteTask, clean_rewrite, rewrite_source

#: the five EvolQuality mutations (their prompts are in templates/evol-quality.jinja2)
MUTATIONS: tuple[str, ...] = ("helpfulness", "relevance", "deepening", "creativity", "details")


class EvolQuality(RewriteTask):
    """``instruction`` + ``response`` → ``evolved_response`` after ``num_evolutions`` rewrites."""

    kind: ClassVar[str] = "evol_quality"
    citation: ClassVar[str] = (
        "Liu et al., What Makes Good Data for Alignment? (Deita, EvolQuality), arXiv:2312.15685"
    )

    num_evolutions: int = Field(default=1, ge=1, le=10)
    mutations: list[str] = list(MUTATIONS)
    store_evolutions: bool = False
    output: str = "evolved_response"
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

    def produces(self) -> list[str]:
        cols = [self.output, "evolution_mutations"]
        if self.store_evolutions:
            cols.append("evolved_responses")
        return cols + self.pool_columns()

    def pick_mutations(self, ctx: Context) -> list[str]:
        rng = random.Random(self.row_seed(ctx, "/mutations"))
        return [rng.choice(self.mutations) for _ in range(self.num_evolutions)]

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        instruction, current = self.source(row)
        chosen = self.pick_mutations(ctx)
        evolved: list[str] = []
        for round_no, mutation in enumerate(chosen):
            user = (
                template("evol-quality.jinja2")
                .render(instruction=instruction, response=current, mutation=mutation)
                .strip()
            )
            request = Request.chat(user, **self.request_defaults("rewrite"))
            current = await self.rewrite(ctx, request, salt=f"#{round_no}")
            evolved.append(current)
        new: Row = {self.output: evolved[-1], "evolution_mutations": chosen}
        if self.store_evolutions:
            new["evolved_responses"] = evolved
        if self.pool:
            added = evolved if self.store_evolutions else evolved[-1:]
            new.update(self.join_pool(row, added, self.rewrite_label(row, ctx, "evol_quality")))
        return [{**row, **new}]


__all__ = ["MUTATIONS", "EvolQuality", "clean_rewrite", "rewrite_source"]
