"""Verifiable instructions: constraints a response can be checked against by code, not a judge.

IFEval's 25 types (Zhou et al. 2023, arXiv:2311.07911; ids such as
``length_constraints:number_words`` with IFEval's kwarg names) and 10 held-out-style types in the
spirit of IFBench (Pyatkin et al. 2025, arXiv:2507.02833; ids ``ifbench:<name>``). Each type has a
checker, a kwargs sampler, the instruction sentence to put in a prompt, and a row in a symmetric
conflict table. The ``verify_constraints`` step and the ``constraints`` recipe use this API::

    cs = sample(random.Random(0), 3)                 # 3 mutually compatible constraints
    prompt = question + "\\n\\n" + " ".join(c.describe() for c in cs)
    results = check(answer, cs, prompt=question)     # one CheckResult per constraint
    rows = [{"id": c.id, "kwargs": c.kwargs} for c in cs]; from_dicts(rows) == cs

Implementation, measured (2-core shared machine, no network, if-verifiable 0.1.2):

- if-verifiable holds Google's reference IFEval checkers (Apache-2.0, the same code lm-eval
  vendors; lm-eval itself was not an option: it brings torch and transformers). Offline, 23 of
  its 25 IFEval checkers work (``repeat_prompt`` once given the prompt); ``number_sentences`` and
  ``capital_word_frequency`` raise ``LookupError`` (they load NLTK's ``punkt``, which is
  downloaded at first use). Its IFBench subpackage calls
  ``nltk.download`` (4 packages) *at import time*; offline that prints errors, and 7 of its 58
  checkers then fail (stop words, POS tags, punkt).
- Cost: ``import if_verifiable.ifeval`` took 3.4 s wall at load ~3 and 6-9 s at load ~19
  (``-X importtime``: nltk 2.1-5.7 s, the ``datasets`` package its ``__init__`` pulls in
  1.4-3.0 s); the first language check adds ~1.7 s (langdetect loads its profiles). Installed:
  560 KB plus nltk 14 MB, emoji 4.5 MB, langdetect 2.5 MB, datasets 5.9 MB (+ its deps, already in
  ``[hf]``). This package alone imports in ~45 ms (``-X importtime``, loaded machine).
- Its API gives a bool per instruction (``check_following``) — no reason — and
  ``evaluate_instructions`` silently skips unknown ids; its description strings read
  ``Include keywords ['a', 'b'] in the response.``, and missing kwargs fall back to the global
  ``random``.

So: IFEval verdicts come from if-verifiable (benchmark fidelity; a well-kept reference beats our
code), imported lazily on the first check of one of those 23 types, so ``import
datamill.constraints`` stays fast and needs no extra; the two punkt-bound IFEval checkers and all
held-out ones are ours (regex sentence splitter and word counts, no data files); instruction
sentences, kwargs validation, sampling (from a caller's ``random.Random`` only), the reasons and
the conflict table are ours. ``langdetect`` (ships its profiles) is seeded (``DetectorFactory.seed
= 0``) so language verdicts repeat. if-verifiable is the ``verify`` extra; without it, checking an
IFEval type raises :class:`~datamill.errors.MissingDependency` with the pip line.

Deliberately not here: stripping ``<think>`` blocks or IFEval's "loose" variants (the step decides
what text to check), and writing the prompt (the recipe does).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from . import _conflicts, _heldout, _ifeval
from ._spec import Spec

__all__ = ["CheckResult", "Constraint", "catalogue", "check", "conflicts", "from_dicts", "sample"]

_SPECS: dict[str, Spec] = {s.id: s for s in [*_ifeval.SPECS, *_heldout.SPECS]}
_TABLE = _conflicts.build(_SPECS)


def _spec(cid: Any) -> Spec:
    spec = _SPECS.get(cid) if isinstance(cid, str) else None
    if spec is None:
        raise ConfigError(
            f"unknown constraint id {cid!r}; see datamill.constraints.catalogue() for the "
            f"{len(_SPECS)} supported ids"
        )
    return spec


@dataclass(frozen=True)
class Constraint:
    """One instruction with its parameters, e.g. ``Constraint("length_constraints:number_words",
    {"num_words": 300, "relation": "at least"})``. Build from stored data with :func:`from_dicts`,
    which validates; :func:`check` validates too."""

    id: str
    kwargs: dict[str, Any]

    def describe(self) -> str:
        """The instruction sentence to append to a prompt ("Answer with at least 300 words.")."""
        spec = _spec(self.id)
        return spec.describe(spec.validate(self.kwargs))


@dataclass(frozen=True)
class CheckResult:
    """Whether a response met one constraint; ``reason`` is ``"ok"`` or one line saying what was
    found instead (``found uppercase letters``), without the constraint's id (that is ``id``)."""

    id: str
    passed: bool
    reason: str


def catalogue() -> list[str]:
    """Every supported constraint id, IFEval's 25 first, then the held-out ones."""
    return list(_SPECS)


def conflicts(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` cannot be asked for together (symmetric; ``conflicts(a, a)`` is
    True). Unknown ids raise ConfigError."""
    return _spec(b).id in _TABLE[_spec(a).id]


def check(
    response: str, constraints: list[Constraint], *, prompt: str | None = None
) -> list[CheckResult]:
    """Check ``response`` against each constraint, in order. ``prompt`` is the request without
    the constraint sentences; only ``combination:repeat_prompt`` reads it (when its kwargs have
    no ``prompt_to_repeat``). An empty response meets nothing (IFEval's rule). Unknown ids, bad
    kwargs or a missing prompt raise ConfigError; a missing if-verifiable raises
    MissingDependency."""
    checked = [(c.id, _spec(c.id), _spec(c.id).validate(c.kwargs)) for c in constraints]
    out = []
    for cid, spec, kw in checked:
        found = (
            "the response is empty" if not response.strip() else spec.check(response, kw, prompt)
        )
        # what was found, not "constraint … not met": the verifier's reason names the id itself
        out.append(CheckResult(cid, found is None, "ok" if found is None else found))
    return out


def sample(rng: random.Random, k: int, *, ids: list[str] | None = None) -> list[Constraint]:
    """``k`` mutually compatible constraints drawn from ``ids`` (default: the whole catalogue),
    with kwargs drawn from ``rng`` only — the same seed gives the same list. Raises ConfigError
    when ``ids`` hold fewer than ``k`` compatible ones."""
    pool = catalogue() if ids is None else [_spec(i).id for i in dict.fromkeys(ids)]
    if k < 0:
        raise ConfigError(f"sample: k must be 0 or more, got {k}")
    if k == 0:
        return []
    for _ in range(64):
        order = rng.sample(pool, len(pool))
        chosen: list[str] = []
        for cid in order:
            if not any(conflicts(cid, c) for c in chosen):
                chosen.append(cid)
                if len(chosen) == k:
                    return [Constraint(c, _SPECS[c].sample(rng)) for c in chosen]
    raise ConfigError(
        f"sample: cannot pick {k} mutually compatible constraints from {len(pool)} ids; "
        "ask for fewer or pass more ids"
    )


def from_dicts(items: list[dict[str, Any]]) -> list[Constraint]:
    """Constraints from ``[{"id": ..., "kwargs": {...}}, ...]`` as stored in a dataset column;
    ``None`` kwargs are dropped (IFEval's rows carry every key). An unknown id or bad kwargs raise
    ConfigError one line."""
    if not isinstance(items, list):
        raise ConfigError(f"constraints must be a list of {{id, kwargs}} objects, got {items!r}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "id" not in item:
            raise ConfigError(f"constraint {i} must be an object with an 'id', got {item!r}")
        spec = _spec(item["id"])
        out.append(Constraint(spec.id, spec.validate(item.get("kwargs") or {})))
    return out
