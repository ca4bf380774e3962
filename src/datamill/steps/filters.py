"""Filters the instruction-data papers use, as steps any recipe can reuse. Each drop is counted.

- ``filter_rouge`` (:class:`RougeFilter`): ROUGE-L F against a pool of texts (Self-Instruct's
  novelty rule, 2212.10560: keep a new instruction only if ROUGE-L ≤ 0.7 with every earlier one)
- ``filter_length`` (:class:`LengthFilter`): length in words, characters or tokens
- ``filter_keywords`` (:class:`KeywordFilter`): a keyword blacklist (whole words, any case)
- ``filter_ends_with`` (:class:`EndsWithFilter`): text ending with e.g. ``:`` (Magpie 2406.08464)
- ``filter_refusal`` (:class:`RefusalFilter`): answers that refuse or apologise
- ``filter_self_instruct`` (:class:`SelfInstructFilter`): every rule of the Self-Instruct code at once

A filter keeps a row or raises :class:`~datamill.errors.Dropped` with a short, stable reason
(``"rouge-l > 0.7"``, ``"too short (< 4 words)"``, ``"blacklisted keyword"``…), so ``run.json``
counts each rule's drops and ``failures.jsonl`` names the row and the detail.

ROUGE-L is computed here (no ``rouge-score`` dependency): tokens are lowercase runs of letters and
digits, which is what ``rouge-score`` does (without stemming, as Self-Instruct) on ASCII text;
letters of other scripts count too. The LCS is a bit-parallel one (Crochemore et al. 2001) and a
pool is indexed by token, so only pool texts that share enough tokens to possibly pass the
threshold ever get an LCS.

Deliberately not here: embedding or MinHash near-duplicate removal (``steps.dedup``), model-judged
quality filters (tasks).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from ..errors import ConfigError, Dropped
from ..rows import Row
from .base import Context, GlobalStep, Step
from .paths import RecipePath

# -- ROUGE-L ------------------------------------------------------------------------------------

_TOKEN = re.compile(r"[^\W_]+")


def rouge_tokens(text: str) -> list[str]:
    """Lowercase runs of letters/digits (``rouge-score``'s tokenizer on ASCII, no stemming)."""
    return _TOKEN.findall(text.lower())


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists (bit-parallel)."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return 0
    masks: dict[str, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    return _lcs_with_masks(masks, len(a), b)


def _lcs_with_masks(masks: dict[str, int], n: int, b: Iterable[str]) -> int:
    full = (1 << n) - 1
    v = full
    for tok in b:
        m = masks.get(tok)
        if m is None:
            continue
        u = v & m
        v = ((v + u) | (v - u)) & full
    return n - v.bit_count()


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F-measure (β = 1) of two texts: ``2·LCS / (len(a) + len(b))``."""
    a, b = rouge_tokens(candidate), rouge_tokens(reference)
    if not a or not b:
        return 0.0
    return 2 * lcs_length(a, b) / (len(a) + len(b))


class RougePool:
    """Texts to compare against, indexed by token so that most comparisons are never made.

    ``max_score(text)`` returns the highest ROUGE-L F with any pool text (and that text). A pool
    text is scored only when the tokens it shares with ``text`` (counted with multiplicity, an
    upper bound of the LCS) could reach the threshold.
    """

    def __init__(self, texts: Iterable[str] = ()) -> None:
        self.texts: list[str] = []
        self._lengths: list[int] = []
        self._counts: list[Counter[str]] = []
        self._masks: list[dict[str, int]] = []
        self._index: dict[str, list[int]] = defaultdict(list)
        self.comparisons = 0  #: LCS computations made (for tests and benchmarks)
        for t in texts:
            self.add(t)

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, text: str) -> None:
        tokens = rouge_tokens(text)
        idx = len(self.texts)
        self.texts.append(text)
        self._lengths.append(len(tokens))
        counts = Counter(tokens)
        self._counts.append(counts)
        masks: dict[str, int] = {}
        for i, tok in enumerate(tokens):
            masks[tok] = masks.get(tok, 0) | (1 << i)
        self._masks.append(masks)
        for tok in counts:
            self._index[tok].append(idx)

    def max_score(self, text: str, threshold: float = 0.0) -> tuple[float, str | None]:
        """Best ROUGE-L F with the pool, exact whenever it exceeds ``threshold``; pool texts
        that cannot exceed it are never scored (so a result ≤ ``threshold`` is only a lower
        bound, which is enough to decide ``> threshold``).

        Pruning, cheapest first: (1) F ≤ 2·shared/(m+n), where *shared* counts common tokens,
        so a text can exceed ``t`` only if it shares more than ``t·m/(2-t)`` of the query's
        ``m`` tokens; by pigeonhole it then holds one of the query's ``m - need + 1`` rarest
        tokens, so only those tokens' index lists are read (prefix filtering); (2) the shared
        count bound per candidate; (3) the LCS, best bound first, stopping when no bound can
        beat the best score found.
        """
        tokens = rouge_tokens(text)
        if not tokens or not self.texts:
            return 0.0, None
        m = len(tokens)
        query = Counter(tokens)
        if threshold > 0:
            need = math.floor(threshold * m / (2 - threshold) - 1e-9) + 1
            if need > m:
                return 0.0, None
            rarest = sorted(tokens, key=lambda t: len(self._index.get(t, ())))
            probe = set(rarest[: m - need + 1])
        else:
            probe = set(query)
        candidates: set[int] = set()
        for tok in probe:
            candidates.update(self._index.get(tok, ()))
        bounds = []
        for idx in candidates:
            counts = self._counts[idx]
            shared = sum(min(q, counts.get(tok, 0)) for tok, q in query.items())
            bound = 2 * shared / (m + self._lengths[idx])
            if bound > threshold:
                bounds.append((bound, idx))
        bounds.sort(reverse=True)
        best, best_text = 0.0, None
        for bound, idx in bounds:
            if bound <= best:
                break
            self.comparisons += 1
            score = (
                2
                * _lcs_with_masks(self._masks[idx], self._lengths[idx], tokens)
                / (m + self._lengths[idx])
            )
            if score > best:
                best, best_text = score, self.texts[idx]
        return best, best_text


# -- counting -----------------------------------------------------------------------------------

_WORD = re.compile(r"\S+")


def word_count(text: str) -> int:
    return len(_WORD.findall(text))


_TOKENIZERS: dict[str, Any] = {}


def _gguf_tokenizer(path: str | None) -> Callable[[str], int]:
    """Token counter from a GGUF file's vocabulary (the embedded model's when ``path`` is None)."""
    key = path or ""
    if key not in _TOKENIZERS:
        from ..models.llamacpp import LlamaCppModel

        _TOKENIZERS[key] = LlamaCppModel(path)  # loads only the vocabulary to count
    count: Callable[[str], int] = _TOKENIZERS[key].count_tokens
    return count


def _text(row: Row, column: str) -> str:
    value = row.get(column)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Dropped(
            "not text", f"column {column!r} holds {type(value).__name__}, a filter needs text"
        )
    return value


# -- per-row filters ----------------------------------------------------------------------------


class _ColumnFilter(Step):
    column: str = "instruction"

    def required_columns(self) -> list[str]:
        return [self.column]

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        self.check(_text(row, self.column))
        return [row]

    def check(self, text: str) -> None:
        """Raise :class:`Dropped` when ``text`` fails the rule."""
        raise NotImplementedError


class LengthFilter(_ColumnFilter):
    """Keep texts with ``min <= length <= max`` (either bound optional).

    ``unit``: ``words`` (whitespace-separated), ``chars``, or ``tokens`` counted with a GGUF
    vocabulary (``tokenizer``: a .gguf path; default the embedded SmolLM2 one).
    """

    kind: ClassVar[str] = "filter_length"
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)
    unit: Literal["words", "chars", "tokens"] = "words"
    tokenizer: RecipePath | None = None

    @model_validator(mode="after")
    def _bounds(self) -> LengthFilter:
        if self.min is None and self.max is None:
            raise ConfigError("filter_length needs min, max or both (e.g. min: 4, max: 150)")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ConfigError(f"filter_length: min ({self.min}) is larger than max ({self.max})")
        if self.tokenizer is not None and self.unit != "tokens":
            raise ConfigError("filter_length: tokenizer only applies to unit: tokens")
        return self

    def measure(self, text: str) -> int:
        if self.unit == "words":
            return word_count(text)
        if self.unit == "chars":
            return len(text.strip())
        return _gguf_tokenizer(self.tokenizer)(text) if text.strip() else 0

    def check(self, text: str) -> None:
        n = self.measure(text)
        if self.min is not None and n < self.min:
            raise Dropped(f"too short (< {self.min} {self.unit})", f"{n} {self.unit}")
        if self.max is not None and n > self.max:
            raise Dropped(f"too long (> {self.max} {self.unit})", f"{n} {self.unit}")


#: Self-Instruct's blacklist: things a text-only model cannot see or do (bootstrap_instructions.py)
SELF_INSTRUCT_KEYWORDS = [
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files",
    "map", "maps", "draw", "plot", "go to",
]  # fmt: skip


def _keyword_pattern(keywords: list[str]) -> re.Pattern[str]:
    words = sorted({k.strip() for k in keywords if k.strip()}, key=len, reverse=True)
    body = "|".join(r"\s+".join(re.escape(part) for part in w.split()) for w in words)
    return re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE)


class KeywordFilter(_ColumnFilter):
    """Drop texts containing any keyword as a whole word or phrase, in any case.

    The default list is Self-Instruct's (image(s), graph(s), picture(s), file(s), map(s), draw,
    plot, "go to"): requests a text-only model cannot serve.
    """

    kind: ClassVar[str] = "filter_keywords"
    keywords: list[str] = Field(default_factory=lambda: list(SELF_INSTRUCT_KEYWORDS))
    _pattern: re.Pattern[str] = PrivateAttr()

    @field_validator("keywords")
    @classmethod
    def _some(cls, v: list[str]) -> list[str]:
        if not any(k.strip() for k in v):
            raise ValueError("give at least one keyword")
        return v

    def model_post_init(self, __context: Any) -> None:
        self._pattern = _keyword_pattern(self.keywords)

    def check(self, text: str) -> None:
        found = self._pattern.search(text)
        if found:
            raise Dropped("blacklisted keyword", f"contains {found.group(0)!r}")


class EndsWithFilter(_ColumnFilter):
    """Drop texts that end (after trailing spaces) with one of ``suffixes``.

    Magpie's released filter drops instructions ending with ``:`` — they announce an input that
    never comes.
    """

    kind: ClassVar[str] = "filter_ends_with"
    suffixes: list[str] = Field(default_factory=lambda: [":"], min_length=1)

    def check(self, text: str) -> None:
        stripped = text.rstrip()
        for s in self.suffixes:
            if s and stripped.endswith(s):
                raise Dropped(f"ends with {s!r}", stripped[-80:])


#: Openings and phrases of refusals and apologies (matched near the start of the text).
REFUSAL_PATTERNS = [
    r"i'?m sorry", r"i am sorry", r"i apologi[sz]e", r"my apologies", r"sorry, but",
    r"i (?:cannot|can ?not|can't|won'?t|will not) (?:help|assist|answer|provide|do|fulfil|fulfill|comply|create|write|give|share|generate|support)",
    r"i(?: am|'m) (?:not able|unable) to", r"i(?: am|'m) not allowed", r"i won'?t be able to",
    r"as an ai(?: language model)?,? i", r"i do(?:n'?t| not) have (?:access|the ability)",
    r"it(?: is|'s) not appropriate", r"i must decline",
]  # fmt: skip


class RefusalFilter(_ColumnFilter):
    """Drop answers that refuse or apologise: a refusal phrase within the first ``window``
    characters (refusals open with it; a late "I cannot stress enough" is not one)."""

    kind: ClassVar[str] = "filter_refusal"
    column: str = "response"
    patterns: list[str] = Field(default_factory=lambda: list(REFUSAL_PATTERNS), min_length=1)
    window: int = Field(default=200, ge=1)
    _pattern: re.Pattern[str] = PrivateAttr()

    def model_post_init(self, __context: Any) -> None:
        try:
            body = "|".join(f"(?:{p})" for p in self.patterns)
            self._pattern = re.compile(rf"(?<!\w)(?:{body})", re.IGNORECASE)
        except re.error as exc:
            raise ConfigError(
                f"filter_refusal: a pattern is not a valid regular expression ({exc})"
            ) from None

    def check(self, text: str) -> None:
        head = text.strip()[: self.window].replace("\u2019", "'")
        found = self._pattern.search(head)
        if found:
            raise Dropped("refusal", f"says {found.group(0)!r}")


# -- pool filters (global: the pool grows in key order) -----------------------------------------


class _PoolFilter(GlobalStep):
    """Shared by the ROUGE filters: a fixed pool (``pool`` and ``pool_column``) plus, with
    ``grow``, every text kept so far.

    Why a global step: the pool grows as rows are kept, so the outcome of a row depends on which
    rows came before it. As a streaming step that order would be completion order, which differs
    between runs (and between workers of a distributed run). A global step sees all rows and
    walks them in key order (source order, then fan-out order), so the same input always keeps
    the same rows. The price is a barrier: later steps start when every row has reached it.
    """

    column: str = "instruction"
    pool: list[str] = []
    pool_column: str | None = None
    threshold: float = Field(default=0.7, gt=0.0, le=1.0)
    grow: bool = True

    def required_columns(self) -> list[str]:
        return [self.column] + ([self.pool_column] if self.pool_column else [])

    def initial_pool(self, rows: list[Row]) -> RougePool:
        pool = RougePool(t for t in self.pool if t.strip())
        if self.pool_column:
            seen: set[str] = set(self.pool)
            for row in rows:
                value = row.get(self.pool_column)
                items = (
                    [value] if isinstance(value, str) else value if isinstance(value, list) else []
                )
                for item in items:
                    if isinstance(item, str) and item.strip() and item not in seen:
                        seen.add(item)
                        pool.add(item)
        return pool

    def rouge_check(self, pool: RougePool, text: str) -> None:
        score, similar = pool.max_score(text, self.threshold)
        if score > self.threshold:
            raise Dropped(f"rouge-l > {self.threshold:g}", f"ROUGE-L {score:.2f} with {similar!r}")

    def row_check(self, text: str) -> None:
        """Per-row rules applied before the ROUGE check (none here)."""

    def process_all(
        self, rows: list[Row], drop: Callable[[Row, str, str | None], None]
    ) -> list[Row]:
        pool = self.initial_pool(rows)
        kept = []
        for row in rows:
            try:
                text = _text(row, self.column)
                self.row_check(text)
                self.rouge_check(pool, text)
            except Dropped as exc:
                drop(row, exc.reason, exc.detail)
                continue
            if self.grow:
                pool.add(text)
            kept.append(row)
        return kept


class RougeFilter(_PoolFilter):
    """Drop a row whose ``column`` has ROUGE-L F > ``threshold`` with any pool text.

    The pool is ``pool`` (fixed texts, e.g. seed instructions), the values of ``pool_column``
    (a text or list of texts per row, all added up front), and — with ``grow`` (default) — each
    text kept so far, so near-duplicates among the new rows go too (the first one stays).
    """

    kind: ClassVar[str] = "filter_rouge"


class SelfInstructFilter(_PoolFilter):
    """All of Self-Instruct's instruction filters (Wang et al., 2212.10560; its
    ``bootstrap_instructions.py``), each drop counted under its own reason:

    - ``too short (< 4 words)`` / ``too long (> 150 words)`` — the paper's "≤ 3 or > 150 words"
    - ``blacklisted keyword`` — image(s), graph(s), picture(s), file(s), map(s), draw, plot, go to
    - ``starts with 'write a program'`` (any case)
    - ``starts with punctuation`` / ``starts with non-ascii``
    - ``rouge-l > 0.7`` against the seed instructions (``pool``/``pool_column``) and every
      instruction kept before it, in key order (see the class note on global steps)
    """

    kind: ClassVar[str] = "filter_self_instruct"
    min_words: int = Field(default=4, ge=0)
    max_words: int = Field(default=150, ge=1)
    keywords: list[str] = Field(default_factory=lambda: list(SELF_INSTRUCT_KEYWORDS))
    _keywords: re.Pattern[str] | None = PrivateAttr(default=None)

    def model_post_init(self, __context: Any) -> None:
        words = [k for k in self.keywords if k.strip()]
        self._keywords = _keyword_pattern(words) if words else None

    def row_check(self, text: str) -> None:
        text = text.strip()
        n = word_count(text)
        if n < self.min_words:
            raise Dropped(f"too short (< {self.min_words} words)", f"{n} words")
        if n > self.max_words:
            raise Dropped(f"too long (> {self.max_words} words)", f"{n} words")
        if self._keywords is not None:
            found = self._keywords.search(text)
            if found:
                raise Dropped("blacklisted keyword", f"contains {found.group(0)!r}")
        if re.match(r"write\s+a\s+program\b", text, re.IGNORECASE):
            raise Dropped("starts with 'write a program'", text[:80])
        if text[0] in string.punctuation:
            raise Dropped("starts with punctuation", text[:80])
        if not text[0].isascii():
            raise Dropped("starts with non-ascii", text[:80])
