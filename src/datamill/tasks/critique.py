"""Critique and rewrite: a model critiques a response against principles, then revises it.

The critique → revision loop of Constitutional AI (Bai et al., arXiv:2212.08073): the model
reads the response and a short list of principles, writes what falls short, then rewrites the
response to fix it. The taxonomy's third way to get preference pairs: the revision is
``chosen`` and the original ``rejected`` (``format_dpo`` with ``pair: revision_vs_original``;
scores are then ``None``, since nobody rated them). With ``pool: true`` the revision is instead
appended to a response pool, labelled ``"<setting> (<model>) · revision of #i"``, so a judge
(``ultrafeedback``) rates it beside the originals and the scores are real.

Principles: ``principles`` (a list of sentences; defaults below, datamill's own). With
``principles_per_row: k`` each row gets ``k`` of them drawn at random (deterministic per row),
as Constitutional AI samples one principle per critique; by default all apply.

A revision identical to the original is dropped (``revision identical to the original``): it
could only make a pair with no preference in it.

Deliberately not here: judging (``ultrafeedback``), pairing (``format_dpo``).
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

from pydantic import Field, model_validator

from ..errors import ConfigError, Dropped
from ..models.base import Request
from ..rows import Row
from ..steps.base import Context
from .base import no_markup, template
from .rewrite import RewriteTask

DEFAULT_PRINCIPLES: tuple[str, ...] = (
    "Answer the question that was asked, directly and early.",
    "State only what is true; say so when something is uncertain instead of guessing.",
    "Be specific: prefer a concrete example, number or step over a vague statement.",
    "Be concise: no repetition, filler or off-topic material.",
    "Avoid content that could mislead or harm the reader.",
)


class CritiqueRewrite(RewriteTask):
    """``instruction`` + ``response`` → ``critique`` and ``revision`` (two dependent calls)."""

    kind: ClassVar[str] = "critique"
    citation: ClassVar[str] = (
        "Bai et al., Constitutional AI (critique and revision), arXiv:2212.08073"
    )

    principles: list[str] = list(DEFAULT_PRINCIPLES)
    principles_per_row: int | None = Field(default=None, ge=1)
    critique_output: str = "critique"
    revision_output: str = "revision"
    defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "critique": {"max_tokens": 256, "temperature": 0.3},
        "revision": {"max_tokens": 512, "temperature": 0.3},
    }

    @model_validator(mode="after")
    def _check(self) -> CritiqueRewrite:
        self.principles = [p.strip() for p in self.principles if p and p.strip()]
        no_markup("critique principles", self.principles)
        if not self.principles:
            raise ConfigError(
                "critique needs at least one principle (a sentence the answer should meet)"
            )
        if self.principles_per_row is not None and self.principles_per_row > len(self.principles):
            raise ConfigError(
                f"critique principles_per_row is {self.principles_per_row} but only {len(self.principles)} principles are given"
            )
        if self.critique_output == self.revision_output:
            raise ConfigError(
                "critique critique_output and revision_output must be different columns"
            )
        return self

    def produces(self) -> list[str]:
        cols = [self.critique_output, self.revision_output, "revision_model", "critique_principles"]
        return cols + self.pool_columns()

    def pick_principles(self, ctx: Context) -> list[str]:
        if self.principles_per_row is None:
            return list(self.principles)
        rng = random.Random(self.row_seed(ctx, "/principles"))
        return rng.sample(self.principles, self.principles_per_row)

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        instruction, original = self.source(row)
        principles = self.pick_principles(ctx)
        ask = (
            template("critique.jinja2")
            .render(instruction=instruction, response=original, principles=principles)
            .strip()
        )
        critique = (
            await self.call(
                ctx, Request.chat(ask, **self.request_defaults("critique")), salt="#critique"
            )
        )[0].text.strip()
        revise = (
            template("critique-revise.jinja2")
            .render(instruction=instruction, response=original, critique=critique)
            .strip()
        )
        request = Request.chat(revise, **self.request_defaults("revision"))
        revision = await self.rewrite(ctx, request, salt="#revision")
        if " ".join(revision.split()) == " ".join(original.split()):
            raise Dropped("revision identical to the original", revision)
        label = self.rewrite_label(row, ctx, "revision")
        new: Row = {
            self.critique_output: critique,
            self.revision_output: revision,
            "revision_model": label,
            "critique_principles": principles,
        }
        if self.pool:
            new.update(self.join_pool(row, [revision], label))
        return [{**row, **new}]
