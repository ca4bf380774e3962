"""The card's "Licence and provenance" section and ``license:`` header, and the licence check
``datamill push`` runs before anything is sent.

:func:`with_provenance` is the one call ``io.sinks.dataset_card`` makes: it sets the header's
``license:`` to ``run.json``'s ``provenance.licence`` and appends the section (each model and
input with its licence and where it was read, the recipe, datamill's version).
:func:`push_licence` is what ``datamill push --license L`` runs: it refuses in one line what
``datamill.licences`` forbids for the inputs ``run.json`` records, unless a reason is given
(``--accept-licence-risk``), which it records in the card; it sets the header to what is pushed.

Deliberately not here: finding licences (``datamill.provenance``), the table (``licences``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from . import licences
from .errors import ConfigError
from .provenance import FRONT_MATTER

HEADING = "## Licence and provenance"
_ACCEPTED = "- licence risk accepted"


def _cell(value: Any) -> str:
    """``value`` as one Markdown table cell (a ``|`` in a path would end the cell)."""
    return " ".join(str(value).split()).replace("|", "\\|")


def card_section(prov: dict[str, Any]) -> str:
    """The card's "Licence and provenance" section for a run's ``provenance``."""
    lic = prov.get("licence", licences.UNKNOWN)
    why = (
        "its inputs' licences conflict (no licence is allowed by all of them): check before publishing"
        if prov.get("conflict")
        else "no model or input dataset went into it"
        if not prov.get("models") and not prov.get("inputs")
        else "the licence of at least one input is unknown: check its terms before publishing"
        if lic == licences.UNKNOWN
        else "the licence of its inputs that asks the most of users"
    )
    lines = [
        HEADING + "\n",
        f"Licence of this dataset: **{lic}** ({why}; datamill's licence table is "
        f"{licences.NOTE}).\n",
        "| input | what | licence | from |",
        "|---|---|---|---|",
    ]
    for m in prov.get("models", []):
        lines.append(
            f"| model `{_cell(m['name'])}` | {_cell(m['model'])} ({_cell(m['backend'])}) "
            f"| {_cell(m['licence'])} | {_cell(m['from'])} |"
        )
    for i in prov.get("inputs", []):
        lines.append(
            f"| dataset | {_cell(i['name'])} | {_cell(i['licence'])} | {_cell(i['from'])} |"
        )
    recipe = prov.get("recipe", {})
    kind = "built-in" if recipe.get("builtin") else "own"
    digest = f", sha256 {recipe['sha256'][:16]}" if recipe.get("sha256") else ""
    lines += [
        "",
        f"- recipe: `{recipe.get('name', '?')}` ({kind}{digest})",
        f"- made with datamill {prov.get('datamill', '?')}",
        "",
    ]
    return "\n".join(lines)


def with_provenance(card: str, summary: dict[str, Any]) -> str:
    """``card`` with its header's ``license:`` and the provenance section (when ``summary``
    has a ``provenance``; the card unchanged otherwise)."""
    prov = summary.get("provenance")
    if not isinstance(prov, dict):
        return card
    return set_header_licence(card, str(prov.get("licence", licences.UNKNOWN))).rstrip("\n") + (
        "\n\n" + card_section(prov)
    )


def set_header_licence(card: str, licence: str) -> str:
    """``card`` with ``license: licence`` in its YAML header (a header is added when missing)."""
    found = FRONT_MATTER.match(card)
    meta: dict[str, Any] = {}
    if found:
        loaded = yaml.safe_load(found.group(1))
        meta = loaded if isinstance(loaded, dict) else {}
    meta = {"license": licence, **{k: v for k, v in meta.items() if k != "license"}}
    head = "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"
    return head + (card[found.end() :] if found else card)


def push_licence(
    folder: Path, licence: str | None, accept_risk: str | None, *, write: bool = True
) -> list[str]:
    """Check the licence a dataset folder is pushed under (``licence``, else its card's) against
    its ``run.json`` provenance, before anything is sent. Raises :class:`ConfigError` (one line)
    when the table forbids it and no ``accept_risk`` reason is given; returns warnings (inputs of
    unknown licence, a folder without provenance). Rewrites the folder's card when the header
    licence changes or a risk is accepted (the reason is recorded there; ``write=False``: only
    check)."""
    from .atomic import write_atomic

    if accept_risk is not None and not accept_risk.strip():
        raise ConfigError(
            '--accept-licence-risk needs a reason, e.g. "we have a separate agreement"'
        )
    try:
        prov = json.loads((folder / "run.json").read_text(encoding="utf-8")).get("provenance")
    except (OSError, ValueError, AttributeError):
        prov = None
    if not isinstance(prov, dict):
        warnings = [
            f"{folder}/run.json has no provenance (made by an older datamill): licences not checked"
        ]
        prov = {}
    else:
        warnings = []
    target = licences.normalize(licence or prov.get("licence"))
    inputs = [
        (f"model {m.get('name')!r} ({m.get('model')})", str(m.get("licence")))
        for m in prov.get("models", [])
    ] + [(f"input {i.get('name')!r}", str(i.get("licence"))) for i in prov.get("inputs", [])]
    verdict = licences.check(target, inputs)
    warnings += verdict.warnings
    if verdict.refusals and accept_risk is None:
        raise ConfigError(
            f"cannot push as {target}: {verdict.refusals[0]}; push under a licence it allows "
            f'(--license), or add --accept-licence-risk "REASON" if you hold other rights '
            f"(the check is {licences.NOTE})"
        )
    if not write:
        return warnings
    card_path = folder / "README.md"
    card = card_path.read_text(encoding="utf-8")
    new = set_header_licence(card, target) if licence else card
    if verdict.refusals and accept_risk is not None:
        new = _record_risk(new, target, verdict.refusals, accept_risk.strip())
    if new != card:
        write_atomic(card_path, new.encode())
    return warnings


def _record_risk(card: str, target: str, refusals: list[str], reason: str) -> str:
    """``card`` with one line saying the licence risk was accepted, why, and what was refused."""
    kept = [line for line in card.split("\n") if not line.startswith(_ACCEPTED)]
    line = (
        f"{_ACCEPTED} when pushing as {target}: {reason} "
        f"(datamill's table refused it: {'; '.join(refusals)})"
    )
    if HEADING in kept:
        at = kept.index(HEADING) + 2  # after the heading and its blank line
        kept[at:at] = [line, ""]
        return "\n".join(kept)
    return "\n".join(kept).rstrip("\n") + f"\n\n{HEADING}\n\n{line}\n"


__all__ = ["HEADING", "card_section", "push_licence", "set_header_licence", "with_provenance"]
