"""Judge-free preference pairs: the chosen answer from a stronger model, the rejected one from a
weaker model, on the same prompt (Delta Learning: Geng et al., 2025, arXiv:2507.06187 — the
quality *delta* between two models is the signal; it matched a GPT-4o-judged DPO set, and
SmolTalk2's preference split is built so). No judge is asked: the pair costs two calls.

``delta_pair: {strong: strong, weak: weak}`` renders ``template`` (Jinja over the row), asks the
model named ``strong`` and the one named ``weak`` (recipe models; one loaded model at two
settings is fine, e.g. ``strong: {spec: llamacpp, temperature: 0.7, max_tokens: 1024}`` and
``weak: {spec: llamacpp, temperature: 1.5, max_tokens: 48}``), and writes the pair in the DPO
layout of ``format_dpo`` (``prompt``, ``prompt_id``, ``chosen``/``rejected`` message lists,
``score_*`` null: nobody rated them, ``chosen_model``/``rejected_model`` labels such as
``"strong (SmolLM2-135M-Instruct.Q4_1)"``). ``weak_system_prompt`` gives the weak model another
system prompt for its answer only (e.g. "Answer carelessly."); the pair's conversations carry the
shared ``system_prompt``, since the pair must share its prompt.

Rules (each drop is a failure record with its reason):

- always: an empty answer fails the row (``empty completion``, as every task); two answers that
  are the same text up to whitespace are dropped (``identical responses``).
- ``sanity: true`` (default) also drops a pair whose chosen answer was cut at ``max_tokens``
  (``chosen truncated``: the strong answer is the one taught, and a cut one teaches stopping
  mid-sentence, even when the weak answer is cut at the same budget; give the strong model room
  instead) and a pair whose rejected answer
  has more than ``max_length_ratio`` (default 2) times the chosen one's words (``rejected much
  longer``: the pair would teach "be short", not "be better"). The weak answer may be cut.

Deliberately not here: rating (``ultrafeedback``), pools of more than two answers
(``response_pool``).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from ..errors import Dropped
from ..models.base import Request
from ..rows import Row
from ..steps.base import Context
from ..steps.dpo import OUTPUTS, conversation, same_text
from ..steps.format import prompt_id
from .base import TemplateTask, check_template, render_row
from .response_pool import model_label

CITATION = "Delta Learning: Geng et al., 2025, arXiv:2507.06187"


class DeltaPair(TemplateTask):
    """``template`` → an answer from ``strong`` (chosen) and from ``weak`` (rejected) → a DPO pair."""

    kind: ClassVar[str] = "delta_pair"
    citation: ClassVar[str] = CITATION
    strong: str = "strong"
    weak: str = "weak"
    template: str = "{{ instruction }}"
    system_prompt: str | None = None
    weak_system_prompt: str | None = None
    sanity: bool = True
    max_length_ratio: float = Field(default=2.0, gt=1)
    #: ``keep``: a cut answer reaches the rules (a cut weak answer is fine); ``drop`` fails both
    truncated: Literal["drop", "keep"] = "keep"
    keep_columns: bool = True
    defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "generation": {"max_tokens": 512, "temperature": 0.7}
    }

    @model_validator(mode="after")
    def _check(self) -> DeltaPair:
        if self.strong == self.weak:
            raise ValueError(
                f"strong and weak are both {self.strong!r}: name two models (two settings of one model are fine)"
            )
        for source, where in self._templates():
            check_template(source, f"delta_pair {where}")
        return self

    def _templates(self) -> list[tuple[str, str]]:
        out = [(self.template, "template")]
        if self.system_prompt is not None:
            out.append((self.system_prompt, "system_prompt"))
        if self.weak_system_prompt is not None:
            out.append((self.weak_system_prompt, "weak_system_prompt"))
        return out

    def models(self) -> list[str]:
        return [self.strong, self.weak]

    def output_columns(self, columns: list[str]) -> list[str]:
        base = columns if self.keep_columns else []
        return base + [c for c in OUTPUTS if c not in base]

    def produces(self) -> list[str]:
        return list(OUTPUTS)

    def _system(self, source: str | None, row: Row) -> str | None:
        if source is None:
            value = row.get("system_prompt")
            return value if isinstance(value, str) and value.strip() else None
        return render_row(source, row, self.label).strip() or None

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        user = render_row(self.template, row, self.label).strip()
        if not user:
            raise Dropped("empty prompt", f"template {self.template!r} rendered to nothing")
        system = self._system(self.system_prompt, row)
        weak_system = (
            self._system(self.weak_system_prompt, row)
            if self.weak_system_prompt is not None
            else system
        )
        sampling = self.request_defaults("generation")
        strong, weak = await asyncio.gather(
            self.call(ctx, Request.chat(user, system=system, **sampling), "strong", self.strong),
            self.call(ctx, Request.chat(user, system=weak_system, **sampling), "weak", self.weak),
        )
        chosen, rejected = strong[0], weak[0]
        self.check_pair(chosen.text, rejected.text, chosen.finish_reason)
        new = {
            "prompt": user,
            "prompt_id": prompt_id(user),
            "chosen": conversation(user, chosen.text.strip(), system),
            "rejected": conversation(user, rejected.text.strip(), system),
            "score_chosen": None,
            "score_rejected": None,
            "chosen_model": model_label(self.strong, ctx.model_info(self.strong)),
            "rejected_model": model_label(self.weak, ctx.model_info(self.weak)),
        }
        return [{**row, **new} if self.keep_columns else new]

    def check_pair(self, chosen: str, rejected: str, chosen_finish: str | None) -> None:
        """:class:`Dropped` when the pair breaks a rule of the module docstring."""
        if same_text(chosen, rejected):
            raise Dropped("identical responses", "the strong and the weak answer are the same text")
        if not self.sanity:
            return
        if chosen_finish == "length":
            raise Dropped(
                "chosen truncated",
                f"the {self.strong} answer was cut at max_tokens; raise models.{self.strong}.max_tokens",
            )
        long, short = len(rejected.split()), len(chosen.split())
        if long > self.max_length_ratio * short:
            raise Dropped(
                "rejected much longer",
                f"rejected {long} words, chosen {short}: more than {self.max_length_ratio:g}×",
            )


__all__ = ["DeltaPair"]
