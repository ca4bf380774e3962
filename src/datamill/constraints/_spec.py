"""What one constraint type is (:class:`Spec`), its parameters (:class:`Param`) and the text helpers
the checkers share (words, sentences, paragraphs).

A spec's ``check(response, kwargs, prompt)`` returns ``None`` when the response meets the
constraint, else a short phrase saying what was found instead (``"found 12 words"``); the public
:func:`datamill.constraints.check` turns that into the one-line reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

Kwargs = dict[str, Any]
Checker = Callable[[str, Kwargs, "str | None"], "str | None"]

RELATIONS = ("less than", "at least")


@dataclass(frozen=True)
class Param:
    """One keyword argument: ``kind`` is ``int``, ``str`` or ``list`` (a list of words);
    ``lo``/``hi`` bound an int (inclusive); ``choices`` lists the allowed values; ``regex`` marks
    a string (or each word) the reference checker uses as a regular expression, so it must
    compile."""

    kind: type
    lo: int | None = None
    hi: int | None = None
    choices: tuple[Any, ...] | None = None
    optional: bool = False
    regex: bool = False

    def validate(self, cid: str, name: str, value: Any) -> None:
        where = f"constraint {cid!r}: kwarg {name!r}"
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{where} must be a whole number, got {value!r}")
            if (self.lo is not None and value < self.lo) or (
                self.hi is not None and value > self.hi
            ):
                raise ConfigError(f"{where} must be between {self.lo} and {self.hi}, got {value}")
        elif self.kind is str:
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{where} must be a non-empty string, got {value!r}")
        elif self.kind is list and (
            not isinstance(value, list)
            or not value
            or not all(isinstance(w, str) and w.strip() for w in value)
        ):
            raise ConfigError(f"{where} must be a non-empty list of words, got {value!r}")
        if self.regex:
            for pattern in value if isinstance(value, list) else [value]:
                try:
                    re.compile(pattern)
                except re.error as e:
                    raise ConfigError(
                        f"{where}: {pattern!r} is read as a regular expression by IFEval's "
                        f"checker and does not compile ({e}); escape it or use plain words"
                    ) from None
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(repr(c) for c in self.choices)
            raise ConfigError(f"{where} must be one of {allowed}, got {value!r}")


@dataclass(frozen=True)
class Spec:
    """One constraint type: its id, parameters, kwargs sampler, instruction text and checker.
    ``extra`` validates relations between kwargs (raises ConfigError)."""

    id: str
    params: dict[str, Param]
    sample: Callable[[Any], Kwargs]
    describe: Callable[[Kwargs], str]
    check: Checker
    extra: Callable[[str, Kwargs], None] = field(default=lambda cid, kw: None)

    def validate(self, kwargs: Any) -> Kwargs:
        """Return ``kwargs`` without ``None`` values (IFEval's dataset pads every row with all
        keys set to None), checked against the params; raise ConfigError one line."""
        if not isinstance(kwargs, dict):
            raise ConfigError(f"constraint {self.id!r}: kwargs must be a mapping, got {kwargs!r}")
        kw = {k: v for k, v in kwargs.items() if v is not None}
        unknown = sorted(set(kw) - set(self.params))
        if unknown:
            known = ", ".join(self.params) or "none"
            raise ConfigError(
                f"constraint {self.id!r}: unknown kwarg {unknown[0]!r} (it takes: {known})"
            )
        for name, p in self.params.items():
            if name in kw:
                p.validate(self.id, name, kw[name])
            elif not p.optional:
                raise ConfigError(f"constraint {self.id!r}: kwarg {name!r} is required")
        self.extra(self.id, kw)
        return kw


def compare(value: int, relation: str, n: int) -> bool:
    """IFEval's two relations: ``less than`` is ``value < n``, ``at least`` is ``value >= n``."""
    return value < n if relation == "less than" else value >= n


def relation_words(relation: str) -> str:
    return "fewer than" if relation == "less than" else "at least"


# -- text helpers (regex only: no NLTK data, so they work on a fresh machine) ------------------

_WORD = re.compile(r"\w+")
_SENT_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+|\n\s*\n|\n(?=\s*(?:[*\-•]|\d+[.)])\s)")
_ABBREV = re.compile(r"\b(?:Mr|Mrs|Ms|Dr|Prof|St|Jr|Sr|vs|etc|e\.g|i\.e|Inc|Ltd|Co)\.$", re.I)


def words(text: str) -> list[str]:
    """Runs of word characters — IFEval's ``count_words`` (NLTK's ``RegexpTokenizer(r"\\w+")``)."""
    return _WORD.findall(text)


def sentences(text: str) -> list[str]:
    """Split ``text`` into sentences: after ``.``/``!``/``?`` (plus closing quotes/brackets) and
    whitespace, at blank lines and before list items; a piece ending in a common abbreviation
    (``Dr.``, ``e.g.``) or a single capital initial joins the next one. Pieces with no word
    character are dropped."""
    parts = [p.strip() for p in _SENT_END.split(text.strip())]
    merged: list[str] = []
    for p in parts:
        if not p:
            continue
        if merged and (_ABBREV.search(merged[-1]) or re.search(r"\b[A-Z]\.$", merged[-1])):
            merged[-1] = f"{merged[-1]} {p}"
        else:
            merged.append(p)
    return [s for s in merged if _WORD.search(s)]


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
