"""datamill.constraints: every type passes a response that follows it and fails one that does not,
the conflict table is symmetric and sampling never pairs conflicting types, stored kwargs round-trip,
bad input is one ConfigError line. Offline: no NLTK data, no network."""

from __future__ import annotations

import random
import sys

import pytest

from datamill.constraints import (
    CheckResult,
    Constraint,
    catalogue,
    check,
    conflicts,
    from_dicts,
    sample,
)
from datamill.errors import ConfigError

# IFEval types whose verdict is if-verifiable's (the verify extra); the others are datamill's own
OWN = ("ifbench:", "length_constraints:number_sentences", "change_case:capital_word_frequency")


def _has_verify_extra() -> bool:
    try:
        import if_verifiable  # noqa: F401
    except ImportError:
        return False
    return True


def needs_verify_extra(cid: str) -> None:
    if not cid.startswith(OWN):
        pytest.importorskip("if_verifiable", reason="needs the verify extra")


ENGLISH = (
    "The river runs past the old mill every spring. Farmers bring their grain to the village "
    "and talk about the weather while they wait."
)
GERMAN = (
    "Der Fluss fliesst jeden Frühling an der alten Mühle vorbei. Die Bauern bringen ihr Getreide "
    "ins Dorf und sprechen über das Wetter, während sie warten."
)
SIX_PARAS = "\n\n".join(f"Paragraph {i} text here." for i in range(1, 4))

# (id, kwargs, a response that meets it, one that does not, prompt)
CASES: list[tuple[str, dict, str, str, str | None]] = [
    ("keywords:existence", {"keywords": ["river", "garden"]},
     "The river passes the garden.", "The river passes the field.", None),
    ("keywords:frequency", {"keyword": "river", "frequency": 2, "relation": "at least"},
     "A river, then another river.", "Only one river here.", None),
    ("keywords:frequency", {"keyword": "river", "frequency": 2, "relation": "less than"},
     "Only one river here.", "A river, then another river.", None),
    ("keywords:forbidden_words", {"forbidden_words": ["river", "garden"]},
     "The stream passes the field.", "The stream passes the Garden.", None),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 3, "let_relation": "at least"},
     "Zany zebras buzz.", "Zany cats purr.", None),
    ("language:response_language", {"language": "de"}, GERMAN, ENGLISH, None),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"},
     "One is here. Dr. Smith came too! Was it three?", "One is here. Dr. Smith came too!", None),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"},
     "One is here. Two are here.", "One. Two. Three.", None),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2},
     "First part.\n***\nSecond part.", "First part.\n\nSecond part.", None),
    ("length_constraints:number_words", {"num_words": 5, "relation": "at least"},
     "one two three four five", "one two three four", None),
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "river"},
     "Intro text.\n\nRiver flows here.\n\nThe end.", "Intro text.\n\nThe river.\n\nThe end.", None),
    ("detectable_content:number_placeholders", {"num_placeholders": 2},
     "Send it to [name] at [address].", "Send it to [name] soon.", None),
    ("detectable_content:postscript", {"postscript_marker": "P.S."},
     "Main text.\nP.S. remember me.", "Main text.\nPS remember me.", None),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2},
     "List:\n* first\n* second", "List:\n* first\n* second\n- third", None),
    ("detectable_format:constrained_response", {},
     "My answer is yes.", "Yes, definitely.", None),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2},
     "This is *one* and *two*.", "This is *one* only.", None),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "SECTION 1\nalpha\nSECTION 2\nbeta", "SECTION 1\nalpha and beta", None),
    ("detectable_format:json_format", {},
     '```json\n{"a": 1}\n```', '{"a": 1,}', None),
    ("detectable_format:title", {}, "<<A Song>>\nLa la.", "A Song\nLa la.", None),
    ("combination:two_responses", {},
     "First answer.\n******\nSecond answer.", "First answer.\n******\nFirst answer.", None),
    ("combination:repeat_prompt", {},
     "Name a fruit. An apple.", "An apple. Name a fruit.", "Name a fruit."),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Name a fruit."},
     "Name a fruit. A pear.", "A pear.", None),
    ("startend:end_checker", {"end_phrase": "Any other questions?"},
     "Here it is. Any other questions?", "Any other questions? Here it is.", None),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "This is VERY VERY loud.", "This is VERY loud.", None),
    ("change_case:capital_word_frequency",
     {"capital_frequency": 2, "capital_relation": "less than"},
     "This is VERY loud.", "This is VERY VERY loud.", None),
    ("change_case:english_capital", {}, ENGLISH.upper(), ENGLISH, None),
    ("change_case:english_lowercase", {}, ENGLISH.lower(), ENGLISH, None),
    ("change_case:english_lowercase", {}, ENGLISH.lower(), GERMAN.lower(), None),
    ("punctuation:no_comma", {}, "No commas here.", "Well, a comma.", None),
    ("startend:quotation", {}, '"All quoted."', '"Half quoted.', None),
    ("ifbench:word_count_range", {"min_words": 3, "max_words": 5},
     "one two three four", "one two three four five six", None),
    ("ifbench:no_double_letters", {}, "Cats run fast.", "Cats run fast to see.", None),
    ("ifbench:sentence_start_letter", {"letter": "s"},
     "Some cats sleep. So do dogs! \"Sure,\" said Sam.", "Some cats sleep. Dogs do too.", None),
    ("ifbench:exact_lines", {"num_lines": 3}, "a\nb\n\nc\n", "a\nb\nc\nd", None),
    ("ifbench:palindrome_word", {"min_length": 5}, "The radar works.", "The dad works.", None),
    ("ifbench:emoji_count", {"emoji": "🚀", "count": 2}, "Go 🚀 go 🚀!", "Go 🚀 go 🚀 🚀!", None),
    ("ifbench:stop_word_ratio", {"max_percent": 40},
     "Rivers carry cold water downhill quickly.", "It is the one that is in the box.", None),
    ("ifbench:unique_word_count", {"min_unique": 4},
     "cats eat fresh fish", "cats cats eat eat", None),
    ("ifbench:numbers_count", {"num_numbers": 2},
     "In 2024 we sold 3.5 tons.", "In 2024 we sold 3 tons to 7 shops.", None),
    ("ifbench:conjunctions", {"min_conjunctions": 3},
     "Cats and dogs, but not birds, or fish.", "Cats and dogs and birds.", None),
]  # fmt: skip


@pytest.mark.parametrize(("cid", "kwargs", "good", "bad", "prompt"), CASES)
def test_each_constraint_passes_a_follower_and_fails_a_breaker(cid, kwargs, good, bad, prompt):
    needs_verify_extra(cid)
    c = from_dicts([{"id": cid, "kwargs": kwargs}])
    [ok] = check(good, c, prompt=prompt)
    [no] = check(bad, c, prompt=prompt)
    assert ok == CheckResult(cid, True, "ok")
    assert not no.passed and no.id == cid
    assert no.reason and no.reason != "ok" and "\n" not in no.reason
    assert "not met" not in no.reason  # what was found; the verifier adds the id once


def test_every_catalogued_id_has_cases_and_the_catalogue_covers_ifeval():
    ids = catalogue()
    assert {case[0] for case in CASES} == set(ids)
    assert len([i for i in ids if not i.startswith("ifbench:")]) == 25
    assert len([i for i in ids if i.startswith("ifbench:")]) >= 8


def test_reasons_say_what_was_found():
    needs_verify_extra("keywords:")

    def reason(cid, kwargs, text):
        return check(text, [Constraint(cid, kwargs)])[0].reason

    assert reason("change_case:english_lowercase", {}, "Hello there friend") == (
        "found uppercase letters"
    )
    assert reason("length_constraints:number_words", {"num_words": 5, "relation": "at least"},
                  "one two") .endswith("found 2 words")  # fmt: skip
    assert reason("keywords:forbidden_words", {"forbidden_words": ["cat", "dog"]},
                  "A dog.").endswith("found 'dog'")  # fmt: skip
    assert reason("ifbench:sentence_start_letter", {"letter": "a"},
                  "Apples fall. Bees buzz.").endswith("sentence 2 starts with 'B'")  # fmt: skip


def test_an_empty_response_meets_nothing():
    cs = from_dicts([{"id": "punctuation:no_comma"}, {"id": "ifbench:no_double_letters"}])
    assert [r.passed for r in check("  \n", cs)] == [False, False]
    assert all(r.reason.endswith("the response is empty") for r in check("", cs))


def test_language_verdicts_repeat():
    needs_verify_extra("language:")
    c = [Constraint("language:response_language", {"language": "en"})]
    mixed = "Bonjour mes amis, this is half French et half English, n'est-ce pas, my friends?"
    assert len({check(mixed, c)[0] for _ in range(10)}) == 1


def test_conflict_table_is_symmetric_and_reflexive():
    ids = catalogue()
    for a in ids:
        assert conflicts(a, a)
        for b in ids:
            assert conflicts(a, b) == conflicts(b, a), (a, b)
    assert conflicts("change_case:english_lowercase", "change_case:english_capital")
    assert conflicts("detectable_format:json_format", "punctuation:no_comma")
    assert not conflicts("detectable_format:json_format", "keywords:existence")
    assert conflicts("detectable_format:constrained_response", "ifbench:emoji_count")
    assert not conflicts("punctuation:no_comma", "length_constraints:number_words")


NOT_IN_TEXT = {"language", "relation", "let_relation", "capital_relation", "prompt_to_repeat"}


def assert_describe_names_its_parameters(c: Constraint) -> None:
    text = c.describe().lower()
    for name, value in c.kwargs.items():
        if name in NOT_IN_TEXT:
            continue
        for v in value if isinstance(value, list) else [value]:
            assert str(v).lower() in text, (c, name, text)


def test_describe_uses_the_kwargs():
    [lang] = from_dicts([{"id": "language:response_language", "kwargs": {"language": "de"}}])
    assert "German" in lang.describe()
    [less] = from_dicts(
        [{"id": "keywords:frequency", "kwargs": {"keyword": "river", "frequency": 2,
                                                  "relation": "less than"}}]
    )  # fmt: skip
    assert less.describe() == 'In your response, the word "river" should appear fewer than 2 times.'


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_samples_are_compatible_valid_and_reproducible(k):
    for seed in range(300):
        cs = sample(random.Random(seed), k)
        assert len(cs) == k
        for i, a in enumerate(cs):
            for b in cs[i + 1 :]:
                assert not conflicts(a.id, b.id), (seed, a.id, b.id)
        stored = [{"id": c.id, "kwargs": c.kwargs} for c in cs]
        assert from_dicts(stored) == cs  # sampled kwargs pass validation
        for c in cs:
            assert_describe_names_its_parameters(c)
        assert sample(random.Random(seed), k) == cs


def test_sample_from_given_ids_and_refuses_impossible_requests():
    ids = ["change_case:english_lowercase", "change_case:english_capital", "punctuation:no_comma"]
    for seed in range(50):
        got = {c.id for c in sample(random.Random(seed), 2, ids=ids)}
        assert "punctuation:no_comma" in got and len(got) == 2
    with pytest.raises(ConfigError, match="cannot pick 3 mutually compatible"):
        sample(random.Random(0), 3, ids=ids)
    with pytest.raises(ConfigError, match="unknown constraint id 'nope'"):
        sample(random.Random(0), 1, ids=["nope"])


def test_sampling_reaches_every_type():
    alone = {c.id for seed in range(400) for c in sample(random.Random(seed), 1)}
    assert alone == set(catalogue())
    in_threes = {c.id for seed in range(400) for c in sample(random.Random(seed), 3)}
    # constrained_response ("My answer is yes.") conflicts with every other type
    assert in_threes == set(catalogue()) - {"detectable_format:constrained_response"}


def test_from_dicts_round_trips_and_drops_ifeval_none_padding():
    items = [
        {"id": "length_constraints:number_words", "kwargs": {"num_words": 300, "relation": "at least"}},
        {"id": "keywords:existence", "kwargs": {"keywords": ["river"], "num_words": None}},
        {"id": "startend:quotation"},
    ]  # fmt: skip
    cs = from_dicts(items)
    [upper] = from_dicts([{"id": "keywords:letter_frequency",
                           "kwargs": {"letter": "Z", "let_frequency": 2, "let_relation": "at least"}}])  # fmt: skip
    if _has_verify_extra():
        assert check("zz top", [upper])[0].passed  # IFEval reads the letter in any case
    assert cs[0] == Constraint(
        "length_constraints:number_words", {"num_words": 300, "relation": "at least"}
    )
    assert cs[0].describe() == "Answer with at least 300 words."
    assert cs[1].kwargs == {"keywords": ["river"]}
    assert from_dicts([{"id": c.id, "kwargs": c.kwargs} for c in cs]) == cs


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([{"id": "keywords:nope"}], "unknown constraint id 'keywords:nope'"),
        ([{"kwargs": {}}], "must be an object with an 'id'"),
        ("punctuation:no_comma", "must be a list"),
        ([{"id": "length_constraints:number_words", "kwargs": {"num_words": 3}}],
         "kwarg 'relation' is required"),
        ([{"id": "length_constraints:number_words",
           "kwargs": {"num_words": "3", "relation": "at least"}}], "must be a whole number"),
        ([{"id": "length_constraints:number_words",
           "kwargs": {"num_words": 3, "relation": "more than"}}], "must be one of"),
        ([{"id": "punctuation:no_comma", "kwargs": {"x": 1}}], "unknown kwarg 'x'"),
        ([{"id": "keywords:existence", "kwargs": {"keywords": []}}], "non-empty list"),
        ([{"id": "keywords:existence", "kwargs": {"keywords": ["[a"]}}], "does not compile"),
        ([{"id": "keywords:forbidden_words", "kwargs": {"forbidden_words": ["ok", "(x"]}}],
         "does not compile"),
        ([{"id": "length_constraints:nth_paragraph_first_word",
           "kwargs": {"num_paragraphs": 2, "nth_paragraph": 3, "first_word": "a"}}],
         "must not exceed"),
        ([{"id": "ifbench:word_count_range", "kwargs": {"min_words": 9, "max_words": 3}}],
         "must not exceed"),
    ],
)  # fmt: skip
def test_bad_stored_constraints_are_one_config_error_line(items, message):
    with pytest.raises(ConfigError, match=message) as e:
        from_dicts(items)
    assert "\n" not in str(e.value)


def test_check_validates_and_needs_the_prompt_for_repeat_prompt():
    needs_verify_extra("combination:")
    with pytest.raises(ConfigError, match="unknown constraint id"):
        check("text", [Constraint("nope", {})])
    with pytest.raises(ConfigError, match="needs the request to repeat"):
        check("text", [Constraint("combination:repeat_prompt", {})])
    with pytest.raises(ConfigError, match="must be one of"):
        Constraint("language:response_language", {"language": "xx"}).describe()


def test_checks_need_no_nltk_data_and_never_import_ifbench(monkeypatch):
    """A fresh machine has no NLTK data and no network: no check may load or download any, and
    if-verifiable's IFBench package (which downloads at import) must stay unimported."""
    nltk = pytest.importorskip("nltk")

    def refuse(*args, **kwargs):
        raise AssertionError(f"NLTK data requested: {args}")

    for name in ("load", "find"):
        monkeypatch.setattr(nltk.data, name, refuse)
    monkeypatch.setattr(nltk, "download", refuse)
    text = "Hello World. THIS IS LOUD, and *this* is [a] test!\n\n* one\n- two\nP.S. bye 🚀 2024"
    for cid in catalogue():
        c = sample(random.Random(7), 1, ids=[cid])
        [result] = check(text, c, prompt="Hello World.")
        assert result.id == cid
    assert "if_verifiable.ifbench" not in sys.modules


def test_paragraph_reasons_name_the_fault():
    needs_verify_extra("length_constraints:")
    c = [Constraint("length_constraints:number_paragraphs", {"num_paragraphs": 2})]
    assert check("One.\n***\n***\nTwo.", c)[0].reason.endswith(
        "an empty paragraph between *** dividers"
    )
    assert check("One.\n***\nTwo.\n***\nThree.", c)[0].reason.endswith(
        "found 3 paragraphs separated by ***"
    )


def test_verify_constraints_names_each_failure_once():
    """The verifier's reason with the real library: the id once, then what was found."""
    from datamill import FakeModel, Pipeline
    from datamill.steps.verify import VerifyConstraints

    start_a = [{"id": "ifbench:sentence_start_letter", "kwargs": {"letter": "a"}}]
    both = [*start_a, {"id": "ifbench:no_double_letters", "kwargs": {}}]
    rows = [
        {"response": "Apples fall. Bees buzz.", "constraints": start_a},
        {"response": "Bees see. Cats run.", "constraints": both},
        {"response": "Ants run. A cat naps.", "constraints": start_a},
    ]
    result = Pipeline(
        [VerifyConstraints(on_fail="keep")], source=rows, models={"default": FakeModel()}
    ).run(None, progress=False)
    assert [r["verification"] for r in result.rows] == [
        "constraint 'ifbench:sentence_start_letter' not met: sentence 2 starts with 'B'",
        "constraints not met: 'ifbench:sentence_start_letter', 'ifbench:no_double_letters'",
        "ok",
    ]
