"""IFEval's 25 verifiable instruction types (Zhou et al. 2023, arXiv:2311.07911, Table 1).

Ids and kwarg names are IFEval's own, so the ``instruction_id_list``/``kwargs`` columns of
``google/IFEval`` load with :func:`datamill.constraints.from_dicts` unchanged. 23 verdicts come from
if-verifiable's copy of Google's reference checkers (imported lazily, on the first check); two —
``length_constraints:number_sentences`` and ``change_case:capital_word_frequency`` — are ours,
because the reference ones need NLTK's ``punkt`` data, which is downloaded at first use and so
fails offline. Ours count sentences with :func:`._spec.sentences` and words with a regex. The
instruction sentences are ours too (IFEval's read ``Include keywords ['a', 'b']``); they follow
IFEval's wording. Samplers draw IFEval's ranges (``instructions.py``'s constants).
"""

from __future__ import annotations

import collections
import json
import random
import re
import string
from functools import cache
from typing import Any

from ..errors import MissingDependency
from ._spec import (
    RELATIONS,
    Kwargs,
    Param,
    Spec,
    compare,
    plural,
    relation_words,
    sentences,
    words,
)

# IFEval's languages (instructions_util.LANGUAGE_CODES); langdetect knows every code here.
LANGUAGES = {
    "en": "English", "es": "Spanish", "pt": "Portuguese", "ar": "Arabic", "hi": "Hindi",
    "fr": "French", "ru": "Russian", "de": "German", "ja": "Japanese", "it": "Italian",
    "bn": "Bengali", "uk": "Ukrainian", "th": "Thai", "ur": "Urdu", "ta": "Tamil",
    "te": "Telugu", "bg": "Bulgarian", "ko": "Korean", "pl": "Polish", "he": "Hebrew",
    "fa": "Persian", "vi": "Vietnamese", "ne": "Nepali", "sw": "Swahili", "kn": "Kannada",
    "mr": "Marathi", "gu": "Gujarati", "pa": "Punjabi", "ml": "Malayalam", "fi": "Finnish",
}  # fmt: skip

# Everyday nouns for keyword kwargs; none has a doubled letter or a comma, so they combine with
# the held-out letter rules.
WORD_LIST = (
    "river", "garden", "window", "planet", "market", "engine", "forest", "island", "pencil",
    "mountain", "candle", "harbor", "ticket", "winter", "camera", "silver", "doctor", "rocket",
    "pocket", "farmer", "bridge", "jacket", "lemon", "basket", "violin", "desert", "canvas",
    "ladder", "marble", "orange", "pepper", "statue", "tunnel", "valley", "wizard", "anchor",
    "blanket", "compass", "diamond", "feather", "lantern", "melody", "notebook", "pyramid",
)  # fmt: skip

END_PHRASES = ("Any other questions?", "Is there anything else I can help with?")
OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")
_REL = Param(str, choices=RELATIONS)
_PLACEHOLDER = r"\[.*?\]"


@cache
def _instructions() -> Any:
    """if-verifiable's IFEval checkers; langdetect seeded so language verdicts are repeatable."""
    try:
        import langdetect
        from if_verifiable.ifeval import instructions
    except ImportError as e:
        raise MissingDependency("checking IFEval constraints", "verify") from e
    langdetect.DetectorFactory.seed = 0
    return instructions


def _lib(cls_name: str, found: Any) -> Any:
    """A checker that takes the verdict from if-verifiable's ``cls_name`` and, on failure, says
    what was found with ``found(response, kwargs)``."""

    def check(response: str, kw: Kwargs, prompt: str | None) -> str | None:
        checker = getattr(_instructions(), cls_name)(cls_name)
        checker.build_description(**kw)
        return None if checker.check_following(response) else found(response, kw)

    return check


def _count(pattern: str, flags: int = 0) -> Any:
    return lambda text: len(re.findall(pattern, text, flags))


def _quote_list(items: list[str], joiner: str) -> str:
    q = [f'"{w}"' for w in items]
    return q[0] if len(q) == 1 else ", ".join(q[:-1]) + f" {joiner} " + q[-1]


def _lang(text: str) -> str:
    _instructions()
    import langdetect

    try:
        code = langdetect.detect(text)
    except langdetect.LangDetectException:
        return "no detectable language"
    return f"language detected as {LANGUAGES.get(code, code)!r}"


def _paragraphs_found(text: str) -> str:
    parts = re.split(r"\s?\*\*\*\s?", text)
    if any(not p.strip() for p in parts[1:-1]):
        return "an empty paragraph between *** dividers"
    return f"found {plural(len([p for p in parts if p.strip()]), 'paragraph')} separated by ***"


def _paragraphs_blank_lines(text: str) -> list[str]:
    return [p for p in re.split(r"\n\n", text) if p.strip()]


def _nth_first_word(text: str, kw: Kwargs) -> str:
    paras = _paragraphs_blank_lines(text)
    n, nth = kw["num_paragraphs"], kw["nth_paragraph"]
    if len(paras) != n:
        return f"found {plural(len(paras), 'paragraph')} separated by blank lines"
    first = (words(paras[nth - 1]) or [""])[0]
    return f"paragraph {nth} starts with {first!r}"


def _nth_extra(cid: str, kw: Kwargs) -> None:
    from ..errors import ConfigError

    if kw["nth_paragraph"] > kw["num_paragraphs"]:
        raise ConfigError(
            f"constraint {cid!r}: nth_paragraph ({kw['nth_paragraph']}) must not exceed "
            f"num_paragraphs ({kw['num_paragraphs']})"
        )


def _json_found(text: str) -> str:
    body = text.strip().removeprefix("```json").removeprefix("```JSON").removeprefix("```")
    try:
        json.loads(body.removesuffix("```").strip())
    except ValueError as e:
        return f"the response is not valid JSON ({str(e).splitlines()[0]})"
    return "the response is not valid JSON"


def _repeat_prompt(response: str, kw: Kwargs, prompt: str | None) -> str | None:
    from ..errors import ConfigError

    request = kw.get("prompt_to_repeat") or prompt
    if not request:
        raise ConfigError(
            "constraint 'combination:repeat_prompt' needs the request to repeat: give kwarg "
            "'prompt_to_repeat' or pass prompt= (the request without the constraint sentences)"
        )
    checker = _instructions().RepeatPromptThenAnswer("combination:repeat_prompt")
    checker.build_description(prompt_to_repeat=request)
    if checker.check_following(response):
        return None
    return "the response does not start with the request, word for word"


def _number_sentences(response: str, kw: Kwargs, prompt: str | None) -> str | None:
    n = len(sentences(response))
    ok = compare(n, kw["relation"], kw["num_sentences"])
    return None if ok else f"found {plural(n, 'sentence')}"


def _capital_words(response: str, kw: Kwargs, prompt: str | None) -> str | None:
    n = sum(1 for w in re.findall(r"[\w'-]+", response) if w.isupper())
    ok = compare(n, kw["capital_relation"], kw["capital_frequency"])
    return None if ok else f"found {plural(n, 'all-capital word')}"


def _rel_sample(rng: random.Random) -> str:
    return rng.choice(RELATIONS)


def _count_sample(rng: random.Random, hi: int, names: tuple[str, str]) -> Kwargs:
    """A relation and a count in 1..hi (2..hi for ``less than``: "fewer than 1" reads badly)."""
    rel = _rel_sample(rng)
    return {names[1]: rel, names[0]: rng.randint(2 if rel == "less than" else 1, hi)}


SPECS: list[Spec] = [
    Spec(
        "keywords:existence",
        {"keywords": Param(list, regex=True)},
        lambda r: {"keywords": r.sample(WORD_LIST, 2)},
        lambda kw: f"Include the keywords {_quote_list(kw['keywords'], 'and')} in the response.",
        _lib(
            "KeywordChecker",
            lambda t, kw: (
                "missing " + ", ".join(repr(k) for k in kw["keywords"] if not re.search(k, t, re.I))
            ),
        ),
    ),
    Spec(
        "keywords:frequency",
        {"keyword": Param(str, regex=True), "frequency": Param(int, 1, 1000), "relation": _REL},
        lambda r: {
            "keyword": r.choice(WORD_LIST),
            **_count_sample(r, 3, ("frequency", "relation")),
        },
        lambda kw: (
            f'In your response, the word "{kw["keyword"]}" should appear '
            f"{relation_words(kw['relation'])} {plural(kw['frequency'], 'time')}."
        ),
        _lib(
            "KeywordFrequencyChecker",
            lambda t, kw: (
                f"{kw['keyword']!r} appears {plural(_count(kw['keyword'], re.I)(t), 'time')}"
            ),
        ),
    ),
    Spec(
        "keywords:forbidden_words",
        {"forbidden_words": Param(list, regex=True)},
        lambda r: {"forbidden_words": r.sample(WORD_LIST, 2)},
        lambda kw: (
            f"Do not include the words {_quote_list(kw['forbidden_words'], 'or')} in the response."
        ),
        _lib(
            "ForbiddenWords",
            lambda t, kw: (
                "found "
                + ", ".join(
                    repr(w) for w in kw["forbidden_words"] if re.search(rf"\b{w}\b", t, re.I)
                )
            ),
        ),
    ),
    Spec(
        "keywords:letter_frequency",
        {
            "letter": Param(str, choices=tuple(string.ascii_letters)),
            "let_frequency": Param(int, 1, 10000),
            "let_relation": _REL,
        },
        lambda r: {
            "letter": r.choice("abcdefghijklmnoprstuvwy"),
            **_count_sample(r, 10, ("let_frequency", "let_relation")),
        },
        lambda kw: (
            f'In your response, the letter "{kw["letter"]}" should appear '
            f"{relation_words(kw['let_relation'])} {plural(kw['let_frequency'], 'time')}."
        ),
        _lib(
            "LetterFrequencyChecker",
            lambda t, kw: (
                f"the letter {kw['letter']!r} appears "
                f"{plural(collections.Counter(t.lower())[kw['letter']], 'time')}"
            ),
        ),
    ),
    Spec(
        "language:response_language",
        {"language": Param(str, choices=tuple(LANGUAGES))},
        lambda r: {"language": r.choice(list(LANGUAGES))},
        lambda kw: (
            f"Your ENTIRE response should be in {LANGUAGES[kw['language']]}, "
            "no other language is allowed."
        ),
        _lib("ResponseLanguageChecker", lambda t, kw: _lang(t)),
    ),
    Spec(
        "length_constraints:number_sentences",
        {"num_sentences": Param(int, 1, 1000), "relation": _REL},
        lambda r: _count_sample(r, 20, ("num_sentences", "relation")),
        lambda kw: (
            f"Your response should contain {relation_words(kw['relation'])} "
            f"{plural(kw['num_sentences'], 'sentence')}."
        ),
        _number_sentences,
    ),
    Spec(
        "length_constraints:number_paragraphs",
        {"num_paragraphs": Param(int, 1, 100)},
        lambda r: {"num_paragraphs": r.randint(1, 5)},
        lambda kw: (
            f"There should be {plural(kw['num_paragraphs'], 'paragraph')}. "
            "Paragraphs are separated with the markdown divider: ***"
        ),
        _lib("ParagraphChecker", lambda t, kw: _paragraphs_found(t)),
    ),
    Spec(
        "length_constraints:number_words",
        {"num_words": Param(int, 1, 100000), "relation": _REL},
        lambda r: {"num_words": r.randint(100, 500), "relation": _rel_sample(r)},
        lambda kw: (
            f"Answer with {relation_words(kw['relation'])} {plural(kw['num_words'], 'word')}."
        ),
        _lib("NumberOfWords", lambda t, kw: f"found {plural(len(words(t)), 'word')}"),
    ),
    Spec(
        "length_constraints:nth_paragraph_first_word",
        {
            "num_paragraphs": Param(int, 1, 100),
            "nth_paragraph": Param(int, 1, 100),
            "first_word": Param(str),
        },
        lambda r: (
            lambda n: {
                "num_paragraphs": n,
                "nth_paragraph": r.randint(1, n),
                "first_word": r.choice(WORD_LIST),
            }
        )(r.randint(1, 5)),
        lambda kw: (
            f"There should be {plural(kw['num_paragraphs'], 'paragraph')}. Paragraphs "
            "and only paragraphs are separated with each other by two new lines as if it was "
            f"'\\n\\n' in python. Paragraph {kw['nth_paragraph']} must start with word "
            f"{kw['first_word']}."
        ),
        _lib("ParagraphFirstWordCheck", _nth_first_word),
        _nth_extra,
    ),
    Spec(
        "detectable_content:number_placeholders",
        {"num_placeholders": Param(int, 1, 100)},
        lambda r: {"num_placeholders": r.randint(1, 4)},
        lambda kw: (
            f"The response must contain at least "
            f"{plural(kw['num_placeholders'], 'placeholder')} represented by square brackets, "
            "such as [address]."
        ),
        _lib(
            "PlaceholderChecker",
            lambda t, kw: f"found {plural(_count(_PLACEHOLDER)(t), 'placeholder')}",
        ),
    ),
    Spec(
        "detectable_content:postscript",
        {"postscript_marker": Param(str, regex=True)},
        lambda r: {"postscript_marker": r.choice(("P.S.", "P.P.S"))},
        lambda kw: (
            "At the end of your response, please explicitly add a postscript starting "
            f"with {kw['postscript_marker']}"
        ),
        _lib("PostscriptChecker", lambda t, kw: f"no line starts with {kw['postscript_marker']!r}"),
    ),
    Spec(
        "detectable_format:number_bullet_lists",
        {"num_bullets": Param(int, 1, 100)},
        lambda r: {"num_bullets": r.randint(1, 5)},
        lambda kw: (
            f"Your answer must contain exactly {plural(kw['num_bullets'], 'bullet point')}. "
            "Use the markdown bullet points such as:\n* This is point 1.\n* This is point 2"
        ),
        _lib(
            "BulletListChecker",
            lambda t, kw: (
                "found "
                + plural(
                    _count(r"^\s*\*[^\*].*$", re.M)(t) + _count(r"^\s*-.*$", re.M)(t),
                    "bullet point",
                )
            ),
        ),
    ),
    Spec(
        "detectable_format:constrained_response",
        {},
        lambda r: {},
        lambda kw: f"Answer with one of the following options: {_quote_list(list(OPTIONS), 'or')}",
        _lib("ConstrainedResponseChecker", lambda t, kw: "none of the options appears"),
    ),
    Spec(
        "detectable_format:number_highlighted_sections",
        {"num_highlights": Param(int, 1, 100)},
        lambda r: {"num_highlights": r.randint(1, 4)},
        lambda kw: (
            f"Highlight at least {plural(kw['num_highlights'], 'section')} in your answer "
            "with markdown, i.e. *highlighted section*."
        ),
        _lib(
            "HighlightSectionChecker",
            lambda t, kw: (
                "found "
                + plural(
                    len([h for h in re.findall(r"\*[^\n\*]*\*", t) if h.strip("*").strip()]),
                    "highlighted section",
                )
            ),
        ),
    ),
    Spec(
        "detectable_format:multiple_sections",
        {"section_spliter": Param(str, regex=True), "num_sections": Param(int, 1, 100)},
        lambda r: {
            "section_spliter": r.choice(("Section", "SECTION")),
            "num_sections": r.randint(2, 5),
        },
        lambda kw: (
            f"Your response must have {plural(kw['num_sections'], 'section')}. Mark the "
            f"beginning of each section with {kw['section_spliter']} X, such as:\n"
            f"{kw['section_spliter']} 1\n[content of section 1]\n{kw['section_spliter']} 2\n"
            "[content of section 2]"
        ),
        _lib(
            "SectionChecker",
            lambda t, kw: (
                "found "
                + plural(
                    len(re.split(r"\s?" + kw["section_spliter"] + r"\s?\d+\s?", t)) - 1, "section"
                )
            ),
        ),
    ),
    Spec(
        "detectable_format:json_format",
        {},
        lambda r: {},
        lambda kw: (
            "Entire output should be wrapped in JSON format. You can use markdown ticks "
            "such as ```."
        ),
        _lib("JsonFormat", lambda t, kw: _json_found(t)),
    ),
    Spec(
        "detectable_format:title",
        {},
        lambda r: {},
        lambda kw: (
            "Your answer must contain a title, wrapped in double angular brackets, "
            "such as <<poem of joy>>."
        ),
        _lib("TitleChecker", lambda t, kw: "no title in <<double angular brackets>>"),
    ),
    Spec(
        "combination:two_responses",
        {},
        lambda r: {},
        lambda kw: (
            "Give two different responses. Responses and only responses should be "
            "separated by 6 asterisk symbols: ******."
        ),
        _lib(
            "TwoResponsesChecker",
            lambda t, kw: "the response is not two different answers split by ******",
        ),
    ),
    Spec(
        "combination:repeat_prompt",
        {"prompt_to_repeat": Param(str, optional=True)},
        lambda r: {},
        lambda kw: (
            "First repeat the request word for word without change, then give your "
            "answer (1. do not say any words or characters before repeating the request; 2. the "
            "request you need to repeat does not include this sentence)"
        ),
        _repeat_prompt,
    ),
    Spec(
        "startend:end_checker",
        {"end_phrase": Param(str)},
        lambda r: {"end_phrase": r.choice(END_PHRASES)},
        lambda kw: (
            f'Finish your response with this exact phrase "{kw["end_phrase"]}". '
            "No other words should follow this phrase."
        ),
        _lib(
            "EndChecker",
            lambda t, kw: f"the response ends with {t.strip()[-len(kw['end_phrase']) :]!r}",
        ),
    ),
    Spec(
        "change_case:capital_word_frequency",
        {"capital_frequency": Param(int, 1, 10000), "capital_relation": _REL},
        lambda r: _count_sample(r, 20, ("capital_frequency", "capital_relation")),
        lambda kw: (
            "In your response, words with all capital letters should appear "
            f"{relation_words(kw['capital_relation'])} {plural(kw['capital_frequency'], 'time')}."
        ),
        _capital_words,
    ),
    Spec(
        "change_case:english_capital",
        {},
        lambda r: {},
        lambda kw: "Your entire response should be in English, and in all capital letters.",
        _lib(
            "CapitalLettersEnglishChecker",
            lambda t, kw: "found lowercase letters" if not t.isupper() else _lang(t),
        ),
    ),
    Spec(
        "change_case:english_lowercase",
        {},
        lambda r: {},
        lambda kw: (
            "Your entire response should be in English, and in all lowercase letters. "
            "No capital letters are allowed."
        ),
        _lib(
            "LowercaseLettersEnglishChecker",
            lambda t, kw: "found uppercase letters" if not t.islower() else _lang(t),
        ),
    ),
    Spec(
        "punctuation:no_comma",
        {},
        lambda r: {},
        lambda kw: "In your entire response, refrain from the use of any commas.",
        _lib("CommaChecker", lambda t, kw: f"found {plural(t.count(','), 'comma')}"),
    ),
    Spec(
        "startend:quotation",
        {},
        lambda r: {},
        lambda kw: "Wrap your entire response with double quotation marks.",
        _lib("QuotationChecker", lambda t, kw: "the response is not wrapped in double quotes"),
    ),
]
