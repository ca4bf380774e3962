"""Checkable prompts for the verified recipes: math problems with references, instructions with
verifiable constraints, and a model's code answer split from its own tests.

- ``math_problems``: rows in GSM8K layout (``question``, ``answer`` ending ``#### N``), MATH
  layout (``problem``, ``solution`` with ``\\boxed{}``) or plain (``problem``,
  ``reference_answer``) → ``problem`` + ``reference_answer`` (the given worked solution moves to
  ``reference_solution``, so the model's ``solution`` column is free); rows of a ``num_rows``
  source (column ``row``) get a generated arithmetic problem with its computed answer
  (``steps.arithmetic``), seeded by the row's key. The layout is read from the columns when the
  pipeline is checked; any other columns are refused then, before a model call.
- ``sample_constraints``: ``k`` mutually compatible constraints (``datamill.constraints.sample``,
  seeded by the row's key) → ``constraints`` (a list of ``{id, kwargs}``), their sentences
  appended to the instruction; the instruction without them goes to ``base_instruction``.
- ``split_tests``: a model's answer holding a function and ``assert`` lines (Self-OSS-Instruct
  style) → ``solution`` (the code without the asserts) and ``tests`` (the assert lines); a row
  that already has ``tests`` (given in the input) keeps them.

Deliberately not here: checking (``steps.verify``), the problem templates (``steps.arithmetic``).
"""

from __future__ import annotations

import random
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from ..errors import Dropped, PipelineError
from ..rows import Row, is_missing, row_seed
from .arithmetic import arithmetic_problem
from .base import Context, Step
from .verify.code import extract_code
from .verify.math import reference_answer

Layout = Literal["auto", "gsm8k", "math", "plain", "arithmetic"]

#: layout → (columns it reads, columns it removes)
_LAYOUTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "gsm8k": (("question", "answer"), ("question", "answer")),
    "math": (("problem", "solution"), ("solution",)),
    "plain": (("problem", "reference_answer"), ()),
    "arithmetic": ((), ()),
}


class MathProblems(Step):
    """``math_problems``: GSM8K / MATH / plain rows, or generated arithmetic → ``problem`` +
    ``reference_answer``."""

    kind: ClassVar[str] = "math_problems"

    layout: Layout = "auto"
    seed: int | None = None

    def layout_of(self, columns: list[str] | set[str]) -> str:
        """The layout of rows with ``columns`` (``layout`` when set), or ``PipelineError``."""
        if self.layout != "auto":
            return self.layout
        have = set(columns)
        for name in ("plain", "gsm8k", "math"):
            if set(_LAYOUTS[name][0]) <= have:
                return name
        if "row" in have and not have & {"problem", "question", "answer", "solution"}:
            return "arithmetic"  # a num_rows source: nothing to read, so make the problem
        raise PipelineError(
            f"math_problems: rows have columns {', '.join(sorted(have)) or '(none)'}; give GSM8K "
            "layout (question, answer ending '#### N'), MATH layout (problem, solution with "
            "\\boxed{}) or problem + reference_answer, or set layout:"
        )

    def output_columns(self, columns: list[str]) -> list[str]:
        layout = self.layout_of(columns)
        reads, removes = _LAYOUTS[layout]
        missing = [c for c in reads if c not in columns]
        if missing:
            raise PipelineError(f"math_problems (layout {layout}) needs column {missing[0]!r}")
        kept = [c for c in columns if c not in removes]
        new = ["problem", "reference_answer"]
        if layout in ("gsm8k", "math"):
            new.append("reference_solution")
        return kept + [c for c in new if c not in kept]

    def _text(self, row: Row, column: str) -> str:
        value = row.get(column)
        if is_missing(value):
            raise Dropped("empty input", f"column {column!r} is empty; math_problems needs it")
        return str(value)

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        layout = self.layout_of(list(row))
        rest = {k: v for k, v in row.items() if k not in _LAYOUTS[layout][1]}
        if layout == "arithmetic":
            seed = self.seed if self.seed is not None else ctx.seed
            problem, answer = arithmetic_problem(random.Random(row_seed(seed, ctx.key, self.kind)))
            return [{**rest, "problem": problem, "reference_answer": str(answer)}]
        if layout == "plain":
            return [
                {
                    **rest,
                    "problem": self._text(row, "problem"),
                    "reference_answer": self._text(row, "reference_answer"),
                }
            ]
        question, worked = ("question", "answer") if layout == "gsm8k" else ("problem", "solution")
        solution = self._text(row, worked)
        return [
            {
                **rest,
                "problem": self._text(row, question),
                "reference_answer": reference_answer(solution),
                "reference_solution": solution,
            }
        ]


class SampleConstraints(Step):
    """``sample_constraints``: ``k`` compatible constraints per row, written into the instruction."""

    kind: ClassVar[str] = "sample_constraints"

    instruction: str = "instruction"
    output: str = "constraints"
    #: the column that keeps the instruction without the constraint sentences
    original: str = "base_instruction"
    k: int = Field(default=1, ge=1, le=8)
    #: the constraint ids to draw from (default: the whole catalogue)
    ids: list[str] | None = None
    seed: int | None = None

    @model_validator(mode="after")
    def _drawable(self) -> SampleConstraints:
        from ..constraints import sample

        sample(random.Random(0), self.k, ids=self.ids)  # unknown ids, too few: ConfigError now
        return self

    def required_columns(self) -> list[str]:
        return [self.instruction]

    def produces(self) -> list[str]:
        return [self.instruction, self.output, self.original]

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        from ..constraints import sample

        base = row.get(self.instruction)
        if is_missing(base) or not isinstance(base, str):
            raise Dropped("empty input", f"column {self.instruction!r} holds no text")
        seed = self.seed if self.seed is not None else ctx.seed
        chosen = sample(random.Random(row_seed(seed, ctx.key, self.kind)), self.k, ids=self.ids)
        sentences = " ".join(c.describe() for c in chosen)
        return [
            {
                **row,
                self.original: base,
                self.instruction: f"{base.strip()}\n\n{sentences}",
                self.output: [{"id": c.id, "kwargs": dict(c.kwargs)} for c in chosen],
            }
        ]


def split_asserts(code: str) -> tuple[str, str]:
    """``(code, tests)``: top-level ``assert`` statements (with their continuation lines) moved
    out of ``code`` into ``tests``."""
    body: list[str] = []
    tests: list[str] = []
    in_assert = False
    for line in code.splitlines():
        starts = line.startswith("assert ") or line.startswith("assert(")
        continues = in_assert and line[:1] in (" ", "\t", ")", "]", "}")
        if starts or continues:
            tests.append(line)
            in_assert = True
        else:
            body.append(line)
            in_assert = False
    return "\n".join(body).strip() + "\n", "\n".join(tests)


class SplitTests(Step):
    """``split_tests``: a code answer with its own asserts → ``solution`` + ``tests``."""

    kind: ClassVar[str] = "split_tests"

    response: str = "response"
    solution: str = "solution"
    tests: str = "tests"

    def required_columns(self) -> list[str]:
        return [self.response]

    def produces(self) -> list[str]:
        return [self.solution, self.tests]

    def updates(self) -> list[str]:
        return [self.response, self.tests]  # tests given in the input are kept

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        answer = row.get(self.response)
        if is_missing(answer) or not isinstance(answer, str):
            raise Dropped("empty input", f"column {self.response!r} holds no text")
        code, found = split_asserts(extract_code(answer))
        given: Any = row.get(self.tests)
        tests = given if not is_missing(given) and given is not None else found
        if not code.strip():
            raise Dropped("no code", "the answer holds only tests")
        if is_missing(tests) or not tests:
            raise Dropped("no tests", "the answer has no assert lines and the row has no tests")
        return [{**row, self.solution: code, self.tests: tests}]


__all__ = ["MathProblems", "SampleConstraints", "SplitTests", "split_asserts"]
