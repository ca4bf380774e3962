"""Rejection sampling's last half: keep verified samples, or pair a verified one with a failed one.

A generating step with ``samples: K`` turns each prompt into K candidate rows (``sample`` 0…K-1);
verifiers mark each (``verified``, ``verification``). These global steps then look at the
candidates of one prompt together — a *group*: the rows whose ``group_by`` columns hold the same
values (the prompt's own columns, e.g. ``[problem]``), so grouping is by content: it holds across
earlier global steps and expansions, and a prompt tried again by a top-up (``target_rows``) joins
its earlier candidates instead of making a duplicate.

- ``select_verified``: per group, ``keep: first`` (the first verified row, in row order: source
  row, then sample), ``all`` (every verified row) or ``best`` (the verified row with the highest,
  or with ``order: min`` the lowest, value of column ``by``). Rows not kept are failure records:
  ``not verified`` (detail: its ``verification``) or ``not selected`` (another sample was kept).
- ``pair_verified``: per group, a verified answer as ``chosen`` and a failed one as ``rejected``
  (RLVR-style pairs, as in Tulu 3, arXiv:2411.15124), in ``format_dpo``'s TRL layout
  (``prompt``, ``prompt_id``, ``chosen``/``rejected`` message lists, ``score_chosen`` 1.0 and
  ``score_rejected`` 0.0, ``chosen_model``/``rejected_model`` None) plus ``rejected_verification``
  (why the rejected answer failed). Needs the verifiers' ``on_fail: keep``. Up to ``max_pairs``
  pairs per group (the i-th verified with the i-th failed answer whose text differs). A group
  with no verified or no failed answer is recorded once, on its first row.

Deliberately not here: the verdicts (``steps.verify``), the samples (``Task.samples``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ..errors import ConfigError
from ..rows import Row
from .base import GlobalStep
from .dpo import OUTPUTS, conversation, same_text
from .format import prompt_id
from .verify.base import VERIFICATION, VERIFIED

Drop = Callable[[Row, str, str | None], None]


def _group_key(row: Row, columns: list[str]) -> str:
    return json.dumps([row.get(c) for c in columns], sort_keys=True, default=str)


def groups(rows: list[Row], columns: list[str]) -> list[list[Row]]:
    """``rows`` grouped by the values of ``columns``, groups in order of their first row, rows in
    their order."""
    found: dict[str, list[Row]] = {}
    for r in rows:
        found.setdefault(_group_key(r, columns), []).append(r)
    return list(found.values())


def passed(row: Row) -> bool:
    """Whether every verifier before passed ``row`` (``verified`` is exactly True)."""
    return row.get(VERIFIED) is True


class SelectVerified(GlobalStep):
    """``select_verified``: per group of samples, keep the first, all or the best verified row."""

    kind: ClassVar[str] = "select_verified"

    #: the columns whose values make one group (the prompt's columns)
    group_by: list[str] = Field(min_length=1)
    keep: Literal["first", "all", "best"] = "first"
    #: with ``keep: best``: the column ranking verified rows (a number; missing ranks last)
    by: str | None = None
    order: Literal["max", "min"] = "max"

    @model_validator(mode="after")
    def _by_with_best(self) -> SelectVerified:
        if (self.keep == "best") != (self.by is not None):
            raise ConfigError(
                "select_verified: keep: best needs by: <a number column> (and by is only read with keep: best)"
            )
        return self

    def required_columns(self) -> list[str]:
        return [*self.group_by, VERIFIED, *([self.by] if self.by else [])]

    def updates(self) -> list[str]:
        return []

    def _rank(self, row: Row) -> float:
        value = row.get(self.by or "")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            return float("-inf")
        return float(value) if self.order == "max" else -float(value)

    def process_all(self, rows: list[Row], drop: Drop) -> list[Row]:
        kept: list[Row] = []
        for group in groups(rows, self.group_by):
            good = [r for r in group if passed(r)]
            if self.keep == "first":
                chosen = good[:1]
            elif self.keep == "best":
                chosen = [max(good, key=self._rank)] if good else []
            else:
                chosen = good
            ids = {id(r) for r in chosen}
            for r in group:
                if id(r) in ids:
                    continue
                if passed(r):
                    drop(r, "not selected", f"keep: {self.keep} kept another verified sample")
                else:
                    drop(r, "not verified", str(r.get(VERIFICATION) or "verified is false"))
            kept.extend(chosen)
        return kept


class PairVerified(GlobalStep):
    """``pair_verified``: per group, a verified answer (``chosen``) and a failed one (``rejected``)."""

    kind: ClassVar[str] = "pair_verified"

    #: the columns whose values make one group (the prompt's columns)
    group_by: list[str] = Field(min_length=1)
    #: the column with the prompt text (the pair's ``prompt`` and user message)
    prompt: str = "instruction"
    #: the column with the answer
    response: str = "response"
    #: column holding a system prompt, if any
    system_prompt: str | None = None
    #: pairs per group at most (the i-th verified with the i-th failed answer)
    max_pairs: int = Field(default=1, ge=1)
    keep_columns: bool = False

    def required_columns(self) -> list[str]:
        cols = [*self.group_by, self.prompt, self.response, VERIFIED]
        return list(dict.fromkeys(cols + ([self.system_prompt] if self.system_prompt else [])))

    def updates(self) -> list[str]:
        return list(OUTPUTS)

    def output_columns(self, columns: list[str]) -> list[str]:
        new = [*OUTPUTS, "rejected_verification"]
        base = [c for c in columns if c not in new] if self.keep_columns else []
        return base + new

    def pair(self, good: Row, bad: Row) -> Row:
        prompt = str(good[self.prompt])
        system = good.get(self.system_prompt) if self.system_prompt else None
        new = {
            "prompt": prompt,
            "prompt_id": prompt_id(prompt),
            "chosen": conversation(prompt, str(good[self.response]), system),
            "rejected": conversation(prompt, str(bad[self.response]), system),
            "score_chosen": 1.0,
            "score_rejected": 0.0,
            "chosen_model": None,
            "rejected_model": None,
            "rejected_verification": str(bad.get(VERIFICATION) or ""),
        }
        return {**good, **new} if self.keep_columns else new

    def process_all(self, rows: list[Row], drop: Drop) -> list[Row]:
        out: list[Row] = []
        for group in groups(rows, self.group_by):
            good = [r for r in group if passed(r)]
            bad = [r for r in group if not passed(r)]
            if not good or not bad:
                what = "no verified answer" if not good else "no failed answer"
                hint = ""
                if not bad:
                    hint = " (a verifier with on_fail: keep lets failed answers reach this step)"
                drop(
                    group[0], what, f"{len(good)} verified, {len(bad)} failed of {len(group)}{hint}"
                )
                continue
            made = 0
            for g in good:
                text = str(g.get(self.response))
                match = next(
                    (b for b in bad if not same_text(text, str(b.get(self.response)))), None
                )
                if match is None:
                    continue
                bad.remove(match)
                out.append(self.pair(g, match))
                made += 1
                if made == self.max_pairs:
                    break
            if not made:
                drop(group[0], "identical responses", "every failed answer equals a verified one")
        return out


__all__ = ["PairVerified", "SelectVerified", "groups", "passed"]
