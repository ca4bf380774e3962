"""SelfInstruct: a seed context in, a list of user requests (instructions) out.

Self-Instruct (Wang et al., 2212.10560) bootstraps instructions from a seed pool and filters them
(ROUGE-L against the pool, length, keyword blacklist: see ``steps.filters``). This task is the
context-seeded form the smol-course uses (one context → N requests, one per line); a recipe then
``expand``\\ s the list into rows and applies ``filter_self_instruct``.

The parser is forgiving where models are sloppy: it strips numbering and bullets ("1.", "2)",
"-", "*", "•", "Request 3:"), quotes and bold markers, skips headings and lead-in lines ("Here
are five requests:"), skips lines that copy the prompt (a guideline line or the context, which
small models echo), drops duplicates, keeps at most ``num_instructions``, and discards the
last line of an output cut at ``max_tokens`` (it is unfinished). No request at all is a
``ParseError``.

Deliberately not here: the paper's classification/instance generation (datamill makes
instruction–response pairs with a second task), the filters (``steps.filters``).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from ..errors import Dropped, ParseError
from ..models.base import Completion, Request
from ..rows import Path, Row, is_missing
from ..steps.base import Context
from ..steps.filters import lcs_length, rouge_tokens
from .base import Task, no_markup, template

DEFAULT_CRITERIA = [
    "Vary the wording: mix questions and commands, and never repeat a request.",
    "Each request is one or two sentences long, makes sense without the text, and can be answered in writing.",
]

_MARKER = re.compile(
    r"""^(?:
        [-*•+–—>]+\s*                                   # bullets, quote marks
      | \(?\d{1,3}[.):\]](?=\s|[^\W\d_]|$)\s*                # 1.  2)  (3)  4:  5]  (not 3.5)
      | \#{1,6}\s*\d+[.):]?\s*                            # "## 1." numbered headings
      | (?:request|query|question|instruction|prompt|task|q)\s*\#?\s*(?:\d+\s*[:.)-]|:)\s*   # Request 1:  Q:
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_LEAD_IN = re.compile(
    r"^(?:here\s+(?:are|is)|sure|certainly|of course|okay|ok|below\s+are)\b.*[:.!]$", re.IGNORECASE
)
_HEADING = re.compile(r"^\s*#{1,6}\s*(?!\d)")  # "## Requests" (but "## 1. ..." is a numbered item)
_ANSWER = re.compile(r"^(?:a|answer|response)\s*\d*\s*:", re.IGNORECASE)
_QUOTES = "\"'`“”‘’"


def request_tokens(num_instructions: int) -> int:
    """Completion tokens a SelfInstruct call asks for: about 48 per request written plus 32
    for the list's framing, at most 1024."""
    return min(1024, 48 * num_instructions + 32)


def clean_line(line: str) -> str:
    """One output line without list markers, emphasis and wrapping quotes ('' if nothing left)."""
    text = line.strip()
    for _ in range(3):  # "- 1. **text**" has several layers
        stripped = _MARKER.sub("", text, count=1).strip()
        stripped = re.sub(r"^\*\*(.+?)\*\*:?\s*", r"\1 ", stripped).strip()  # **bold** lead
        stripped = stripped.replace("**", "").strip()
        if len(stripped) >= 2 and stripped[0] in _QUOTES and stripped[-1] in _QUOTES:
            stripped = stripped[1:-1].strip()
        if stripped == text:
            break
        text = stripped
    return text


def _is_marked(line: str) -> bool:
    return bool(_MARKER.match(line.strip()))


def copies(line: str, sources: list[list[str]], share: float = 0.9, min_tokens: int = 6) -> bool:
    """True when ``line`` (``min_tokens`` or longer) is a copy of one of ``sources`` (token
    lists): at least ``share`` of its tokens appear there in the same order."""
    tokens = rouge_tokens(line)
    if len(tokens) < min_tokens:
        return False
    return any(lcs_length(tokens, src) >= share * len(tokens) for src in sources)


def parse_instructions(
    text: str | None,
    limit: int | None = None,
    truncated: bool = False,
    prompt_parts: list[str] | None = None,
) -> list[str]:
    """The requests in a model output: one per line, cleaned (see the module docstring).

    When two or more lines carry list markers, only those lines count: the rest is the model's
    commentary around its list. Lines ending with ``:`` are lead-ins (or requests announcing an
    input that is not there) and are skipped, as are answer lines (``A: ...``) and lines that
    copy one of ``prompt_parts`` (the context, a guideline line: small models echo their prompt).
    """
    sources = [rouge_tokens(p) for p in prompt_parts or []]
    if not text:
        return []
    lines = text.splitlines()
    if truncated:
        while lines and not lines[-1].strip():
            lines.pop()
        lines = lines[:-1]  # the last line was cut mid-sentence
    lines = [ln for ln in lines if ln.strip() and not _HEADING.match(ln)]
    marked = [ln for ln in lines if _is_marked(ln)]
    if len(marked) >= 2:
        lines = marked
    out: list[str] = []
    seen: set[str] = set()
    for raw in lines:
        line = clean_line(raw)
        if not line or line.endswith(":") or _LEAD_IN.match(line) or _ANSWER.match(line):
            continue
        if not re.search(r"[^\W_]", line) or copies(line, sources):
            continue
        key = " ".join(line.lower().split())
        if key in seen:
            continue
        seen.add(key)
        out.append(line)
        if limit is not None and len(out) >= limit:
            break
    return out


class SelfInstruct(Task):
    """``input`` (a context text) → ``instructions`` (a list of user requests).

    Parameters: ``num_instructions`` (asked for, and the most kept), ``criteria`` (guideline
    lines of the prompt), ``application_description`` (who receives the requests), ``column``
    (the context column). A truncated output keeps its complete lines (``truncated: keep`` is
    the default here).
    """

    kind: ClassVar[str] = "self_instruct"
    column: str = "input"
    output: str = "instructions"
    num_instructions: int = Field(default=5, ge=1, le=50)
    criteria: list[str] = Field(default_factory=lambda: list(DEFAULT_CRITERIA))
    application_description: str = "an AI assistant"
    truncated: Literal["drop", "keep"] = "keep"
    #: ``max_tokens`` defaults to what the instructions asked for need: 48 per line + 32, at most 1024
    defaults: ClassVar[dict[str, dict[str, Any]]] = {"instructions": {"temperature": 0.7}}

    @model_validator(mode="after")
    def _plain_text(self) -> SelfInstruct:
        no_markup("self_instruct criteria", self.criteria)
        no_markup("self_instruct application_description", self.application_description)
        return self

    def required_columns(self) -> list[str]:
        return [self.column]

    def text_paths(self) -> list[Path]:
        return [(self.column,)]

    def produces(self) -> list[str]:
        return [self.output]

    def prompt(self, context: str) -> str:
        return template("self-instruct.jinja2").render(
            input=context.strip(),
            num_instructions=self.num_instructions,
            criteria=self.criteria,
            application_description=self.application_description,
        )

    def requests(self, row: Row, ctx: Context) -> list[Request]:
        context = row.get(self.column)
        if not isinstance(context, str):
            raise Dropped(
                "not text", f"column {self.column!r} holds {type(context).__name__}, not text"
            )
        if is_missing(context):
            raise Dropped(
                "empty input", f"column {self.column!r} has no text to write requests about"
            )
        return [
            Request.chat(
                self.prompt(context),
                **{
                    "max_tokens": request_tokens(self.num_instructions),
                    **self.request_defaults("instructions"),
                },
            )
        ]

    def parse(self, completions: list[list[Completion]], row: Row) -> Row:
        completion = completions[0][0]
        found = parse_instructions(
            completion.text,
            self.num_instructions,
            truncated=completion.finish_reason == "length",
            prompt_parts=self.prompt(str(row.get(self.column, ""))).splitlines(),
        )
        if not found:
            raise ParseError("no instructions in output", completion.text)
        return {self.output: found}
