"""Response pool: several answers to one prompt, grouped per row with who wrote each one.

Preference data needs more than one completion per instruction (smol-course ch. 6, "model
pooling"; UltraFeedback, Cui et al., arXiv:2310.01377, samples 4 completions per prompt from a
pool of 17 models). ``response_pool`` asks each named model of the pipeline (``models: [a, b]``)
``n`` times for the same prompt and writes the answers as one list column (``generations``) with,
beside it, a label per answer (``generation_models``). The names may be different backends or
named settings of one loaded model (``a: {spec: llamacpp, temperature: 0.3}``), so two sampling
settings of the embedded model already make a pool. ``n > 1`` goes to the backend as
``Request.n`` (one request, n samples, each cached under its own index).

A label reads ``"<setting> (<model name>)"``, e.g. ``"a (SmolLM2-135M-Instruct.Q4_1)"``; steps
that add to a pool (``evol_quality``, ``critique``) append ``" · <what they did>"``. The judge's
self-judging rule (``ultrafeedback``) reads the setting and model name back with
:func:`parse_label`.

Deliberately not here: judging (``ultrafeedback``) and pairing (``format_dpo``).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, ClassVar

from pydantic import Field, model_validator

from ..errors import ConfigError, Dropped, ParseError
from ..models.base import Completion, ModelInfo, Request
from ..rows import Row
from ..steps.base import Context
from .base import (
    Task,
    TemplateTask,
    check_template,
    refuse_unencodable,
    render_row,
)

_LABEL = re.compile(r"^(?P<setting>[^\s()]+) \((?P<model>[^()]*)\)")


def model_label(setting: str, info: ModelInfo, note: str = "") -> str:
    """``"a (SmolLM2-135M-Instruct.Q4_1)"``, with ``" · note"`` when a step says what it did."""
    label = f"{setting} ({info.name})"
    return f"{label} · {note}" if note else label


def parse_label(label: object) -> tuple[str, str] | None:
    """``(setting, model name)`` of a label written by :func:`model_label`, else ``None``."""
    if not isinstance(label, str):
        return None
    m = _LABEL.match(label)
    return (m["setting"], m["model"]) if m else None


def pool_of(row: Row, generations: str, models: str) -> tuple[list[str], list[str | None]]:
    """The pool of a row as (texts, labels); labels are ``None`` where the row has none."""
    texts = row.get(generations)
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise Dropped(
            "no response pool",
            f"column {generations!r} must hold a list of texts, got {type(texts).__name__}",
        )
    labels = row.get(models)
    if not isinstance(labels, list) or len(labels) != len(texts):
        labels = [None] * len(texts)
    return list(texts), list(labels)


def extend_pool(
    row: Row, generations: str, models: str, texts: list[str], labels: list[str]
) -> Row:
    """The pool columns with ``texts`` appended (the row's other columns untouched)."""
    pool, pool_labels = pool_of(row, generations, models)
    return {generations: pool + texts, models: pool_labels + labels}


class ResponsePool(TemplateTask):
    """Ask every model in ``models`` (``n`` samples each) the same prompt → ``generations``.

    ``template`` (Jinja over the row) renders the user message, ``system_prompt`` (a template
    too; else a row column ``system_prompt`` as it is) the system message. A response that is empty or cut at ``max_tokens``
    (unless ``truncated: keep``) is left out of the pool; the row is dropped when fewer than
    ``min_responses`` remain (default: all of them, so nothing is lost silently).
    """

    kind: ClassVar[str] = "response_pool"
    citation: ClassVar[str] = "Cui et al., UltraFeedback (model pooling), arXiv:2310.01377"

    models_: list[str] | None = Field(default=None, alias="models")
    n: int = Field(default=1, ge=1, le=64)
    template: str = "{{ instruction }}"
    system_prompt: str | None = None
    output: str = "generations"
    models_output: str = "generation_models"
    min_responses: int | None = Field(default=None, ge=1)
    defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "generation": {"max_tokens": 512, "temperature": 0.7}
    }

    model_config = {**Task.model_config, "populate_by_name": True}

    @model_validator(mode="after")
    def _check(self) -> ResponsePool:
        names = self.pool_models()
        if not names:
            raise ConfigError("response_pool needs at least one model: models: [a, b]")
        dup = sorted({m for m in names if names.count(m) > 1})
        if dup:
            raise ConfigError(
                f"response_pool lists model {dup[0]!r} twice; list each model once and use n: for more samples"
            )
        if self.min_responses is not None and self.min_responses > self.expected():
            raise ConfigError(
                f"response_pool min_responses is {self.min_responses} but the pool asks for only {self.expected()} responses"
            )
        for source, where in self._templates():
            check_template(source, f"response_pool {where}")
        if self.output == self.models_output:
            raise ConfigError("response_pool output and models_output must be different columns")
        return self

    def pool_models(self) -> list[str]:
        return list(self.models_) if self.models_ is not None else [self.model]

    def expected(self) -> int:
        return len(self.pool_models()) * self.n

    def models(self) -> list[str]:
        return self.pool_models()

    def _templates(self) -> list[tuple[str, str]]:
        out = [(self.template, "template")]
        if self.system_prompt is not None:
            out.append((self.system_prompt, "system_prompt"))
        return out

    def produces(self) -> list[str]:
        return [self.output, self.models_output]

    def request(self, row: Row) -> Request:
        user = render_row(self.template, row, self.label).strip()
        if not user:
            raise Dropped("empty prompt", f"template {self.template!r} rendered to nothing")
        system: str | None
        if self.system_prompt is not None:
            system = render_row(self.system_prompt, row, self.label).strip()
        else:
            system = row.get("system_prompt")
        request = Request.chat(
            user, system=system or None, n=self.n, **self.request_defaults("generation")
        )
        refuse_unencodable(request)
        return request

    async def _sample(self, ctx: Context, request: Request, model: str) -> list[Completion]:
        # like Task.call, but every sample is checked on its own: one bad sample of n=4 costs one
        if request.seed is None:
            request = request.with_options(seed=self.row_seed(ctx, f"@{model}"))
        return await ctx.generate(model, request, self.sampling())

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        request = self.request(row)
        names = self.pool_models()
        answers = await asyncio.gather(*(self._sample(ctx, request, m) for m in names))
        texts: list[str] = []
        labels: list[str] = []
        problems: list[str] = []
        for name, completions in zip(names, answers, strict=True):
            label = model_label(name, ctx.model_info(name))
            for i, c in enumerate(completions):
                try:
                    c = self.check_completion(c, request, self.tags_for(ctx, name))
                except ParseError as exc:
                    problems.append(f"{label} sample {i + 1}: {exc.reason}")
                    continue
                texts.append(c.text.strip())
                labels.append(label)
        need = self.min_responses if self.min_responses is not None else self.expected()
        if len(texts) < need:
            raise Dropped(
                "too few usable responses",
                f"{len(texts)} of {self.expected()} usable, need {need}: " + "; ".join(problems),
            )
        return [{**row, self.output: texts, self.models_output: labels}]
