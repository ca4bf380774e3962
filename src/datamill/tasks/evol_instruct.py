"""EvolInstruct and EvolComplexity: rewrite an instruction into harder ones, step by step.

Evol-Instruct (Xu et al., WizardLM, 2304.12244) evolves each instruction ``num_evolutions``
times; each time one mutation is chosen at random:

- in depth: ``CONSTRAINTS`` (add a requirement), ``DEEPENING`` (ask more deeply or broadly),
  ``CONCRETIZING`` (specific instead of general), ``INCREASED_REASONING_STEPS`` (ask for
  multi-step reasoning);
- in breadth: ``BREADTH`` (a new, rarer instruction from the same domain).

EvolComplexity is Deita's EVOL COMPLEXITY (Liu et al., 2312.15685): the four in-depth mutations
only (no breadth), used to make the variants a complexity scorer ranks.

The mutation is chosen with a seed derived from the row key (and ``seed``), so a re-run picks
the same mutations and hits the call cache — unlike distilabel, whose ``seed`` is never applied.

Parsing takes the text after the last ``...Prompt#:`` marker (the whole text when there is none)
and strips leftover marker lines and labels. The paper's *elimination evolving* rules drop
failed evolutions, each under its own counted reason:

- ``copies prompt words``: the result still talks about "#Rewritten Prompt#", "given prompt", …
- ``no information gain``: the result adds fewer than ``min_new_words`` words that the previous
  version lacked (the paper asks ChatGPT; this cheap check catches copies, truncations and
  reorderings, not paraphrases that add nothing)
- ``answer is a short apology``: with ``generate_answers``, an answer containing "sorry" that is
  shorter than 80 words
- ``answer has no content words``: an answer of punctuation and stop words only

Sampling follows datamill's one rule (task defaults < model settings < step options): the
step's ``temperature``/``top_p``/``max_tokens`` apply to every call (evolutions and answers), and
``answer_temperature``/``answer_max_tokens`` beat them on the answer calls.

Deliberately not here: the paper's fifth in-depth operation "complicate input" (it needs
in-context examples), generating instructions from nothing (use ``magpie``).
"""

from __future__ import annotations

import asyncio
import random
import re
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from ..errors import Dropped, ParseError
from ..models.base import Request
from ..rows import Path, Row, is_missing
from ..steps.base import Context
from ..steps.filters import rouge_tokens, word_count
from .base import Task, template

IN_DEPTH = ("CONSTRAINTS", "DEEPENING", "CONCRETIZING", "INCREASED_REASONING_STEPS")
MUTATIONS = (*IN_DEPTH, "BREADTH")

_SPLIT = re.compile(r"prompt\s*#\s*:", re.IGNORECASE)
_MARKER_LINE = re.compile(
    r"^(?:#[^#\n]{1,40}#:?|(?:the\s+)?(?:rewritten|new|created|original|given)\s+prompt\s*:?)$",
    re.IGNORECASE,
)
_LABEL = re.compile(
    r"^(?:the\s+)?(?:rewritten|new|created)\s+prompt\s*(?:is)?\s*:\s*", re.IGNORECASE
)
_COPIED = re.compile(
    r"#[^#\n]{0,30}prompt[^#\n]{0,10}#|\b(?:given|rewritten|original|created)\s+prompt\b",
    re.IGNORECASE,
)
_QUOTES = "\"'`“”‘’"

#: English function words; an answer made only of these (and punctuation) says nothing.
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just
    me more most my myself no nor not now of off on once only or other our ours ourselves out over
    own same she should so some such than that the their theirs them themselves then there these
    they this those through to too under until up very was we were what when where which while who
    whom why will with would you your yours yourself yourselves yes ok okay oh ah um uh well
    s t d ll m re ve""".split()
)


def parse_evolution(text: str) -> str:
    """The evolved instruction in a model output; ``ParseError`` when nothing is left."""
    body = _SPLIT.split(text)[-1]
    lines = [ln for ln in body.strip().splitlines() if not _MARKER_LINE.match(ln.strip())]
    result = _LABEL.sub("", "\n".join(lines).strip()).strip()
    if len(result) >= 2 and result[0] in _QUOTES and result[-1] in _QUOTES:
        result = result[1:-1].strip()
    if not result:
        raise ParseError("empty evolution", text)
    return result


def check_evolution(previous: str, evolved: str, min_new_words: int = 2) -> None:
    """Raise ``Dropped`` when an evolution failed (elimination rules on the instruction)."""
    copied = _COPIED.search(evolved)
    if copied:
        raise Dropped("copies prompt words", f"contains {copied.group(0)!r}: {evolved[:160]!r}")
    before = set(rouge_tokens(previous))
    after = rouge_tokens(evolved)
    new = [t for t in dict.fromkeys(after) if t not in before]
    if rouge_tokens(previous) == after or len(new) < min_new_words:
        raise Dropped("no information gain", f"adds {len(new)} new word(s): {evolved[:120]!r}")


def check_answer(answer: str, sorry_max_words: int = 80) -> None:
    """Raise ``Dropped`` when an answer shows the evolution failed (elimination rules)."""
    if re.search(r"\bsorry\b", answer, re.IGNORECASE) and word_count(answer) < sorry_max_words:
        raise Dropped("answer is a short apology", answer[:120])
    if all(t in STOP_WORDS for t in rouge_tokens(answer)):
        raise Dropped("answer has no content words", answer[:120])


class EvolInstruct(Task):
    """``instruction`` → ``evolved_instruction`` (+ ``answer``) after ``num_evolutions`` rounds.

    - ``mutations``: the names to choose from (default all five; EvolComplexity: the four
      in-depth ones).
    - ``store_evolutions``: write every round to ``evolved_instructions`` (and ``answers``)
      instead of only the last; ``include_original_instruction`` puts the input first.
    - ``generate_answers``: answer the evolved instruction(s) too.
    - ``on_failure``: ``drop`` (default) loses the row when a round fails; ``stop`` keeps the
      rounds that succeeded and writes why it stopped to ``evolution_stopped`` (a row with no
      successful round is still dropped).
    - Every row also gets ``mutations``: the mutation of each round.
    """

    kind: ClassVar[str] = "evol_instruct"
    ALL_MUTATIONS: ClassVar[tuple[str, ...]] = MUTATIONS
    column: str = "instruction"
    num_evolutions: int = Field(default=1, ge=1, le=20)
    mutations: list[str] | None = None
    store_evolutions: bool = False
    include_original_instruction: bool = False
    generate_answers: bool = False
    on_failure: Literal["drop", "stop"] = "drop"
    min_new_words: int = Field(default=2, ge=0)
    answer_temperature: float | None = Field(default=None, ge=0.0)
    answer_max_tokens: int | None = Field(default=None, ge=1)
    #: evolution and answer calls; the step's ``temperature``/``top_p``/``max_tokens`` apply to
    #: both and ``answer_temperature``/``answer_max_tokens`` beat them on the answers
    defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "evolution": {"temperature": 0.7, "top_p": 1.0, "max_tokens": 256},
        "answer": {"temperature": 0.7, "max_tokens": 512},
    }

    @field_validator("mutations")
    @classmethod
    def _known(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError(f"give at least one mutation of {', '.join(cls.ALL_MUTATIONS)}")
        names = [m.strip().upper() for m in v]
        unknown = [m for m in names if m not in cls.ALL_MUTATIONS]
        if unknown:
            raise ValueError(
                f"unknown mutation {unknown[0]!r}; {cls.kind} knows {', '.join(cls.ALL_MUTATIONS)}"
            )
        return list(dict.fromkeys(names))

    def mutation_names(self) -> tuple[str, ...]:
        return tuple(self.mutations) if self.mutations else self.ALL_MUTATIONS

    def required_columns(self) -> list[str]:
        return [self.column]

    def text_paths(self) -> list[Path]:
        return [(self.column,)]

    def produces(self) -> list[str]:
        cols = [
            "evolved_instructions" if self.store_evolutions else "evolved_instruction",
            "mutations",
        ]
        if self.generate_answers:
            cols.append("answers" if self.store_evolutions else "answer")
        if self.on_failure == "stop":
            cols.append("evolution_stopped")
        return cols

    def prompt(self, mutation: str, instruction: str) -> str:
        name = (
            "evol-instruct-breadth.jinja2"
            if mutation == "BREADTH"
            else "evol-instruct-deepen.jinja2"
        )
        return template(name).render(mutation=mutation, instruction=instruction.strip())

    def choose(self, ctx: Context) -> list[str]:
        """The mutation of each round for this row: seeded by the row key, so re-runs agree."""
        rng = random.Random(self.row_seed(ctx, "/mutations"))
        names = self.mutation_names()
        return [rng.choice(names) for _ in range(self.num_evolutions)]

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        original = row.get(self.column)
        if not isinstance(original, str):
            raise Dropped(
                "not text", f"column {self.column!r} holds {type(original).__name__}, not text"
            )
        if is_missing(original):
            raise Dropped("empty input", f"column {self.column!r} has no text to evolve")
        current = original.strip()
        evolutions: list[str] = []
        applied: list[str] = []
        stopped: str | None = None
        for i, mutation in enumerate(self.choose(ctx)):
            request = Request.chat(
                self.prompt(mutation, current), **self.request_defaults("evolution")
            )
            try:
                text = (await self.call(ctx, request, salt=f"/evolve#{i}"))[0].text
                evolved = parse_evolution(text)
                check_evolution(current, evolved, self.min_new_words)
            except ParseError as exc:
                if self.on_failure == "drop" or not evolutions:
                    raise ParseError(f"evolution: {exc.reason}", exc.raw) from None
                stopped = f"round {i + 1} ({mutation}): {exc.reason}"
                break
            except Dropped as exc:
                if self.on_failure == "drop" or not evolutions:
                    raise
                stopped = f"round {i + 1} ({mutation}): {exc.reason}"
                break
            evolutions.append(evolved)
            applied.append(mutation)
            current = evolved
        targets = ([original] if self.include_original_instruction else []) + evolutions
        out: Row = dict(row)
        if self.store_evolutions:
            out["evolved_instructions"] = targets
        else:
            out["evolved_instruction"] = evolutions[-1]
        out["mutations"] = applied
        if self.on_failure == "stop":
            out["evolution_stopped"] = stopped
        if self.generate_answers:
            answers = await asyncio.gather(
                *(
                    self.answer(ctx, t, j)
                    for j, t in enumerate(targets if self.store_evolutions else evolutions[-1:])
                )
            )
            if self.store_evolutions:
                out["answers"] = list(answers)
            else:
                out["answer"] = answers[0]
        return [out]

    async def answer(self, ctx: Context, instruction: str, index: int) -> str:
        request = Request.chat(instruction, **self.request_defaults("answer"))
        options = {"temperature": self.answer_temperature, "max_tokens": self.answer_max_tokens}
        try:
            completions = await self.call(ctx, request, salt=f"/answer#{index}", options=options)
            text = completions[0].text.strip()
        except ParseError as exc:
            raise ParseError(f"answer: {exc.reason}", exc.raw) from None
        check_answer(text)
        return text


class EvolComplexity(EvolInstruct):
    """Deita's EVOL COMPLEXITY (2312.15685): EvolInstruct with the four in-depth mutations only."""

    kind: ClassVar[str] = "evol_complexity"
    ALL_MUTATIONS: ClassVar[tuple[str, ...]] = IN_DEPTH
