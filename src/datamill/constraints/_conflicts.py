"""Which constraint ids cannot be asked for together. Symmetric; every id conflicts with itself.

The IFEval part is IFEval's own ``INSTRUCTION_CONFLICTS`` (``instructions_registry.py``): e.g.
``json_format`` excludes everything but ``existence``/``forbidden_words``, and
``constrained_response`` excludes everything. The held-out part is ours: rules that would make a
pair impossible or ambiguous (``sentence_start_letter`` vs a fixed end phrase, English-only word
rules vs ``response_language``, two word counts at once).
"""

from __future__ import annotations

from collections.abc import Iterable

_ALL = "*"

# id -> ids it conflicts with ("*" = every id, minus the listed exceptions in _EXCEPT)
_PAIRS: dict[str, set[str]] = {
    "language:response_language": {
        "detectable_format:multiple_sections",
        "keywords:existence",
        "keywords:frequency",
        "keywords:forbidden_words",
        "startend:end_checker",
        "change_case:english_capital",
        "change_case:english_lowercase",
        "ifbench:stop_word_ratio",
        "ifbench:conjunctions",
        "ifbench:palindrome_word",
        "ifbench:no_double_letters",
        "ifbench:sentence_start_letter",
    },
    "length_constraints:number_paragraphs": {
        "length_constraints:nth_paragraph_first_word",
        "length_constraints:number_sentences",
    },
    "detectable_format:multiple_sections": {"detectable_format:number_highlighted_sections"},
    "change_case:capital_word_frequency": {
        "change_case:english_lowercase",
        "change_case:english_capital",
    },
    "change_case:english_lowercase": {"change_case:english_capital"},
    "startend:quotation": {"detectable_format:title"},
    # held-out
    "ifbench:word_count_range": {"length_constraints:number_words", "ifbench:unique_word_count"},
    "ifbench:unique_word_count": {"length_constraints:number_words"},
    "ifbench:no_double_letters": {
        "keywords:existence",
        "keywords:frequency",
        "startend:end_checker",
        "length_constraints:nth_paragraph_first_word",
        "detectable_content:postscript",
    },
    "ifbench:sentence_start_letter": {
        "detectable_format:title",
        "length_constraints:nth_paragraph_first_word",
        "startend:end_checker",
        "detectable_content:postscript",
        "detectable_format:multiple_sections",
        "detectable_content:number_placeholders",
    },
    "ifbench:exact_lines": {
        "length_constraints:number_paragraphs",
        "length_constraints:nth_paragraph_first_word",
        "detectable_format:number_bullet_lists",
        "detectable_format:multiple_sections",
    },
    "ifbench:numbers_count": {"detectable_format:multiple_sections"},
}

# ids that conflict with every id except the listed ones (IFEval's set(INSTRUCTION_DICT) - {...})
_EXCEPT: dict[str, set[str]] = {
    "detectable_format:constrained_response": set(),
    "detectable_format:json_format": {"keywords:forbidden_words", "keywords:existence"},
    "combination:two_responses": {
        "keywords:forbidden_words",
        "keywords:existence",
        "language:response_language",
        "detectable_format:title",
        "punctuation:no_comma",
    },
    "combination:repeat_prompt": {
        "keywords:existence",
        "detectable_format:title",
        "punctuation:no_comma",
    },
}


def build(ids: Iterable[str]) -> dict[str, frozenset[str]]:
    """The symmetric table over ``ids``: id -> every id it conflicts with (itself included)."""
    ids = list(ids)
    table: dict[str, set[str]] = {i: {i} for i in ids}
    for a, bs in _PAIRS.items():
        for b in bs:
            table[a].add(b)
            table[b].add(a)
    for a, keep in _EXCEPT.items():
        for b in ids:
            if b not in keep:
                table[a].add(b)
                table[b].add(a)
    return {k: frozenset(v) for k, v in table.items()}
