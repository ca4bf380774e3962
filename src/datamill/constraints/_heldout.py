"""Held-out-style constraints in the spirit of IFBench (Pyatkin et al. 2025, arXiv:2507.02833):
counting, ratio, word and format rules that IFEval does not train on, to test generalisation.

These are datamill's own checkers (ids ``ifbench:<name>``): if-verifiable's IFBench checkers
cannot be imported offline without side effects — ``if_verifiable.ifbench.instructions_util``
calls ``nltk.download`` for four data packages at import time — and 7 of its 58 fail without
that data. Every check here is a regex or a count, no data files.
"""

from __future__ import annotations

import re
import string
from typing import Any

from ..errors import ConfigError
from ._spec import Kwargs, Param, Spec, plural, sentences, words

EMOJIS = ("🌟", "🚀", "🔥", "🌈", "🍀", "🎉", "📚", "💡")
CONJUNCTIONS = ("for", "and", "nor", "but", "or", "yet", "so")
# Common English function words (close to NLTK's English stop-word list, lowercase).
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing don down during each few for
    from further had has have having he her here hers herself him himself his how i if in into
    is it its itself just me more most my myself no nor not now of off on once only or other our
    ours ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    s t ll re ve d m""".split()
)
_LETTER = re.compile(r"[^\W\d_]")
_DOUBLE = re.compile(r"([^\W\d_])\1", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*(?![\w])")


def _lower_words(text: str) -> list[str]:
    return [w.lower() for w in words(text)]


def _word_range(response: str, kw: Kwargs, prompt: str | None) -> str | None:
    n = len(words(response))
    return None if kw["min_words"] <= n <= kw["max_words"] else f"found {plural(n, 'word')}"


def _range_extra(cid: str, kw: Kwargs) -> None:
    if kw["min_words"] > kw["max_words"]:
        raise ConfigError(
            f"constraint {cid!r}: min_words ({kw['min_words']}) must not exceed "
            f"max_words ({kw['max_words']})"
        )


def _no_double(response: str, kw: Kwargs, prompt: str | None) -> str | None:
    for w in re.findall(r"[^\W\d_]+", response):
        if _DOUBLE.search(w):
            return f"{w!r} has a letter twice in a row"
    return None


def _start_letter(response: str, kw: Kwargs, prompt: str | None) -> str | None:
    want = kw["letter"].lower()
    for i, s in enumerate(sentences(response), 1):
        first = _LETTER.search(s)
        if first is None or first.group().lower() != want:
            got = first.group() if first else "no letter"
            return f"sentence {i} starts with {got!r}"
    return None


def _exact_lines(response: str, kw: Kwargs, prompt: str | None) -> str | None:
    n = sum(1 for line in response.splitlines() if line.strip())
    return None if n == kw["num_lines"] else f"found {plural(n, 'non-empty line')}"


def _palindrome(response: str, kw: Kwargs, prompt: str | None) -> str | None:
    for w in re.findall(r"[^\W\d_]+", response):
        if len(w) >= kw["min_length"] and w.lower() == w.lower()[::-1]:
            return None
    return f"no palindrome word of {kw['min_length']} or more letters"


def _emoji(response: str, kw: Kwargs, prompt: str | None) -> str | None:
    n = response.count(kw["emoji"])
    return None if n == kw["count"] else f"{kw['emoji']} appears {plural(n, 'time')}"


def _stop_ratio(response: str, kw: Kwargs, prompt: str | None) -> str | None:
    ws = _lower_words(response)
    pct = 100.0 * sum(w in STOP_WORDS for w in ws) / len(ws) if ws else 0.0
    return None if pct <= kw["max_percent"] else f"stop words are {pct:.1f}% of the words"


def _unique(response: str, kw: Kwargs, prompt: str | None) -> str | None:
    n = len(set(_lower_words(response)))
    return None if n >= kw["min_unique"] else f"found {plural(n, 'different word')}"


def _numbers(response: str, kw: Kwargs, prompt: str | None) -> str | None:
    n = len(_NUMBER.findall(response))
    return None if n == kw["num_numbers"] else f"found {plural(n, 'number')}"


def _conjunctions(response: str, kw: Kwargs, prompt: str | None) -> str | None:
    used = sorted(set(_lower_words(response)) & set(CONJUNCTIONS))
    if len(used) >= kw["min_conjunctions"]:
        return None
    return f"found {plural(len(used), 'different conjunction')} ({', '.join(used) or 'none'})"


def _range_sample(r: Any) -> Kwargs:
    lo = r.randint(5, 30) * 10
    return {"min_words": lo, "max_words": lo + r.randint(5, 15) * 10}


SPECS: list[Spec] = [
    Spec(
        "ifbench:word_count_range",
        {"min_words": Param(int, 1, 100000), "max_words": Param(int, 1, 100000)},
        _range_sample,
        lambda kw: (
            f"Your response must contain between {kw['min_words']} and {kw['max_words']} words."
        ),
        _word_range,
        _range_extra,
    ),
    Spec(
        "ifbench:no_double_letters",
        {},
        lambda r: {},
        lambda kw: (
            "Do not use any word that has the same letter twice in a row "
            '(such as "letter" or "book").'
        ),
        _no_double,
    ),
    Spec(
        "ifbench:sentence_start_letter",
        {"letter": Param(str, choices=tuple(string.ascii_letters))},
        lambda r: {"letter": r.choice("abcdefhilmnoprstw")},
        lambda kw: (
            f'Every sentence of your response must start with the letter "{kw["letter"].upper()}".'
        ),
        _start_letter,
    ),
    Spec(
        "ifbench:exact_lines",
        {"num_lines": Param(int, 1, 1000)},
        lambda r: {"num_lines": r.randint(3, 10)},
        lambda kw: (
            f"Your response must have exactly {plural(kw['num_lines'], 'line')} "
            "(blank lines do not count)."
        ),
        _exact_lines,
    ),
    Spec(
        "ifbench:palindrome_word",
        {"min_length": Param(int, 3, 20)},
        lambda r: {"min_length": r.randint(3, 5)},
        lambda kw: (
            "Include at least one palindrome word (spelled the same backwards, such as "
            f'"level") of {kw["min_length"]} or more letters.'
        ),
        _palindrome,
    ),
    Spec(
        "ifbench:emoji_count",
        {"emoji": Param(str, choices=EMOJIS), "count": Param(int, 1, 100)},
        lambda r: {"emoji": r.choice(EMOJIS), "count": r.randint(1, 4)},
        lambda kw: f"Use the emoji {kw['emoji']} exactly {plural(kw['count'], 'time')}.",
        _emoji,
    ),
    Spec(
        "ifbench:stop_word_ratio",
        {"max_percent": Param(int, 1, 100)},
        lambda r: {"max_percent": r.choice((30, 35, 40, 45, 50))},
        lambda kw: (
            'Stop words (such as "the", "and", "of", "is") must make up no more than '
            f"{kw['max_percent']}% of the words in your response."
        ),
        _stop_ratio,
    ),
    Spec(
        "ifbench:unique_word_count",
        {"min_unique": Param(int, 1, 100000)},
        lambda r: {"min_unique": r.randint(3, 10) * 10},
        lambda kw: f"Use at least {kw['min_unique']} different words in your response.",
        _unique,
    ),
    Spec(
        "ifbench:numbers_count",
        {"num_numbers": Param(int, 0, 100)},
        lambda r: {"num_numbers": r.randint(1, 5)},
        lambda kw: (
            f"Include exactly {plural(kw['num_numbers'], 'number')} written in digits "
            "(such as 7 or 2024)."
        ),
        _numbers,
    ),
    Spec(
        "ifbench:conjunctions",
        {"min_conjunctions": Param(int, 1, 7)},
        lambda r: {"min_conjunctions": r.randint(2, 5)},
        lambda kw: (
            f"Use at least {kw['min_conjunctions']} different coordinating conjunctions "
            "(for, and, nor, but, or, yet, so)."
        ),
        _conjunctions,
    ),
]
