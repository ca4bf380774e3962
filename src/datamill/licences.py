"""A small table of common licences and what each lets a dataset made from it be published as.

This table is a guard against an obvious mistake (a non-commercial model's output pushed as
apache-2.0), not legal advice: licences of model outputs are contested, terms change, and your
rights may differ (a separate agreement, a fair-use position). ``datamill push`` refuses what the
table forbids unless the user says why (``--accept-licence-risk "reason"``, recorded in the card).

Each input (a model whose output is in the rows, a source dataset) allows a set of licences for
the data made from it; the data may carry a licence every input allows:

==================  ==============  ================================================================
id (Hub / SPDX)     terms           the dataset may be published as
==================  ==============  ================================================================
mit, apache-2.0     permissive      anything (keep the notice)
cc-by-4.0           attribution     anything (credit the source)
cc-by-sa-4.0        share-alike     cc-by-sa-4.0
cc-by-nc-4.0        non-commercial  cc-by-nc-4.0, cc-by-nc-sa-4.0
cc-by-nc-sa-4.0     nc + sa         cc-by-nc-sa-4.0
llama3, llama3.1,   use-restricted  the same licence, or ``other`` (the terms' use policy and
llama3.2, llama3.3                  naming rules travel with the data; a permissive licence drops them)
gemma               use-restricted  gemma, or ``other``
openrail, openrail++,               the same licence, or ``other`` (use restrictions travel)
*-openrail-m
other, unknown      not checked     anything, with a warning: read the terms yourself
==================  ==============  ================================================================

A licence not in the table (``gpl-3.0``…) is treated like ``other`` when it is an input and, as
a target, is allowed only where an input allows anything.

Deliberately not here: reading licences from files (``datamill.provenance``), pushing
(``datamill.io.hub``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: a licence this table cannot judge: data made from it may be pushed, with a warning
UNKNOWN = "unknown"
OTHER = "other"
NOTE = "a guard, not legal advice"


@dataclass(frozen=True)
class Licence:
    """One row of the table: ``allows`` is the licences a derived dataset may carry (``None``:
    any); ``rank`` orders how much a licence asks of users (the card's default picks the most)."""

    id: str
    terms: str
    allows: frozenset[str] | None
    rank: int


def _row(id_: str, terms: str, allows: Iterable[str] | None, rank: int) -> Licence:
    return Licence(id_, terms, None if allows is None else frozenset(allows), rank)


_LLAMA = ("llama3", "llama3.1", "llama3.2", "llama3.3")
_OPENRAIL = (
    "openrail",
    "openrail++",
    "creativeml-openrail-m",
    "bigscience-openrail-m",
    "bigcode-openrail-m",
)

TABLE: dict[str, Licence] = {
    lic.id: lic
    for lic in [
        _row("mit", "permissive", None, 0),
        _row("apache-2.0", "permissive", None, 1),
        _row("cc-by-4.0", "attribution", None, 2),
        _row("cc-by-sa-4.0", "share-alike", ["cc-by-sa-4.0"], 3),
        *[_row(i, "use-restricted", [i, OTHER], 4) for i in (*_LLAMA, "gemma", *_OPENRAIL)],
        _row("cc-by-nc-4.0", "non-commercial", ["cc-by-nc-4.0", "cc-by-nc-sa-4.0"], 5),
        _row("cc-by-nc-sa-4.0", "non-commercial, share-alike", ["cc-by-nc-sa-4.0"], 6),
    ]
}

#: spellings seen in model files and cards → the table's id
ALIASES = {
    "apache": "apache-2.0",
    "apache2": "apache-2.0",
    "apache-2": "apache-2.0",
    "apache-license-2.0": "apache-2.0",
    "mit-license": "mit",
    "llama-3": "llama3",
    "llama-3.1": "llama3.1",
    "llama-3.2": "llama3.2",
    "llama-3.3": "llama3.3",
    "llama3.1-community": "llama3.1",
    "llama3.2-community": "llama3.2",
    "llama3.3-community": "llama3.3",
    "gemma-terms-of-use": "gemma",
    "none": UNKNOWN,
    "": UNKNOWN,
}


def normalize(value: object) -> str:
    """The table's id for a licence as written (``Apache-2.0``, ``apache 2.0`` → ``apache-2.0``);
    a licence not in the table keeps its lowercased, dash-joined spelling; nothing → ``unknown``."""
    if value is None:
        return UNKNOWN
    if isinstance(value, (list, tuple)):  # a card may list several: the first is the licence
        return normalize(value[0]) if value else UNKNOWN
    text = "-".join(str(value).strip().lower().replace("_", "-").split())
    return ALIASES.get(text, text)


def known(licence: str) -> bool:
    """Whether the table can judge ``licence`` (not ``unknown``, ``other`` or unlisted)."""
    return normalize(licence) in TABLE


def allows(source: str, target: str) -> bool:
    """Whether data made from an input under ``source`` may be published under ``target``
    (an input the table cannot judge allows anything: :func:`check` warns about it)."""
    entry = TABLE.get(normalize(source))
    return entry is None or entry.allows is None or normalize(target) in entry.allows


def allowed_for(sources: Sequence[str]) -> frozenset[str] | None:
    """The licences every judged input allows (``None``: any licence)."""
    found: frozenset[str] | None = None
    for s in sources:
        entry = TABLE.get(normalize(s))
        if entry is None or entry.allows is None:
            continue
        found = entry.allows if found is None else found & entry.allows
    return found


def default_licence(sources: Sequence[str]) -> str:
    """The licence a card made from inputs under ``sources`` declares: ``unknown`` when one of
    them is not known, ``other`` when they conflict (no licence allowed by all), else the input
    licence that asks the most of users and that every input allows (``apache-2.0`` + a
    ``cc-by-nc-4.0`` model → ``cc-by-nc-4.0``)."""
    ids = [normalize(s) for s in sources]
    if not ids or any(i not in TABLE for i in ids):
        return UNKNOWN
    allowed = allowed_for(ids)
    fits = [i for i in ids if allowed is None or i in allowed]
    if not fits:
        return OTHER if not allowed or OTHER in allowed else min(allowed)
    return max(fits, key=lambda i: TABLE[i].rank)


def conflicts(sources: Sequence[str]) -> bool:
    """Whether no licence is allowed by every input (e.g. cc-by-sa-4.0 and cc-by-nc-4.0)."""
    allowed = allowed_for(sources)
    return allowed is not None and not allowed


@dataclass(frozen=True)
class Verdict:
    """What :func:`check` found: ``refusals`` (one line each, the push stops) and ``warnings``."""

    refusals: list[str]
    warnings: list[str]


def check(target: str, inputs: Sequence[tuple[str, str]]) -> Verdict:
    """Whether a dataset made from ``inputs`` (``(what, licence)`` pairs, e.g. ``("model
    'default' (smollm2)", "apache-2.0")``) may be published as ``target``. An input the table
    forbids it for is a refusal; an input of unknown or unlisted licence is a warning."""
    goal = normalize(target)
    refusals: list[str] = []
    warnings: list[str] = []
    for what, licence in inputs:
        lic = normalize(licence)
        entry = TABLE.get(lic)
        if entry is None:
            said = (
                "an unknown licence"
                if lic == UNKNOWN
                else f"licence {lic!r}, not in datamill's table"
            )
            warnings.append(
                f"{what} has {said}: check that its terms let you publish data made from it as {goal}"
            )
        elif entry.allows is not None and goal not in entry.allows:
            refusals.append(
                f"{what} is {lic} ({entry.terms}), which allows only "
                f"{', '.join(sorted(entry.allows))} for data made from it"
            )
    return Verdict(refusals, warnings)


__all__ = [
    "NOTE",
    "OTHER",
    "TABLE",
    "UNKNOWN",
    "Licence",
    "Verdict",
    "allowed_for",
    "allows",
    "check",
    "conflicts",
    "default_licence",
    "known",
    "normalize",
]
