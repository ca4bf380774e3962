"""The reusable filters (steps.filters): ROUGE-L, length, keywords, ends-with, refusal and the
combined Self-Instruct filter, each drop counted under its own reason."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from datamill import FakeModel, Pipeline, step
from datamill.errors import ConfigError, Dropped
from datamill.recipes.loader import recipe_from_dict
from datamill.recipes.registry import step_class
from datamill.steps.base import Context
from datamill.steps.filters import (
    EndsWithFilter,
    KeywordFilter,
    LengthFilter,
    RefusalFilter,
    RougeFilter,
    RougePool,
    SelfInstructFilter,
    lcs_length,
    rouge_l,
    rouge_tokens,
)


def dp_lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def run_rows(steps: list, rows: list[dict], tmp_path: Path | None = None):
    return Pipeline(steps, source=rows, models={"default": FakeModel()}).run(tmp_path)


def ctx() -> Context:
    async def nogen(model, request):  # pragma: no cover - filters never call models
        raise AssertionError("a filter called a model")

    return Context((0,), nogen, lambda m: None)


def check(f, text: str) -> None:
    asyncio.run(f.process({f.column: text}, ctx()))


# -- ROUGE-L ------------------------------------------------------------------------------------


def test_rouge_tokens_match_rouge_score_tokenizer_on_ascii() -> None:
    assert rouge_tokens("Hello, World! It's 2024-ready.") == [
        "hello",
        "world",
        "it",
        "s",
        "2024",
        "ready",
    ]
    assert rouge_tokens("Ça va? Größe") == ["ça", "va", "größe"]
    assert rouge_tokens("...") == []


def test_bit_parallel_lcs_equals_dynamic_programming() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        a = [rng.choice("abcdef") for _ in range(rng.randint(0, 40))]
        b = [rng.choice("abcdef") for _ in range(rng.randint(0, 40))]
        assert lcs_length(a, b) == dp_lcs(a, b)
    long_a = [str(rng.randint(0, 9)) for _ in range(300)]  # wider than a machine word
    long_b = [str(rng.randint(0, 9)) for _ in range(250)]
    assert lcs_length(long_a, long_b) == dp_lcs(long_a, long_b)


def test_rouge_l_f_measure_values() -> None:
    assert rouge_l("the cat sat", "the cat sat") == 1.0
    # LCS 3 of 3 and 6 tokens: P = 1, R = 0.5, F = 2/3
    assert rouge_l("the cat sat", "the cat sat on the mat") == pytest.approx(2 / 3)
    assert rouge_l("The CAT sat!", "the cat, sat") == 1.0
    assert rouge_l("alpha beta", "gamma delta") == 0.0
    assert rouge_l("", "anything") == 0.0


def test_pool_max_score_equals_brute_force_and_prunes() -> None:
    rng = random.Random(3)
    vocab = "write explain list describe a the data model garden river budget plan why how".split()
    texts = [" ".join(rng.choice(vocab) for _ in range(rng.randint(3, 12))) for _ in range(200)]
    pool = RougePool(texts)
    for _ in range(50):
        query = " ".join(rng.choice(vocab) for _ in range(rng.randint(3, 12)))
        best, similar = pool.max_score(query)
        expected = max(rouge_l(query, t) for t in texts)
        assert best == pytest.approx(expected)
        assert similar is not None and rouge_l(query, similar) == pytest.approx(expected)
    # with a threshold the decision (and the score above it) is still exact
    near = [t + " again" for t in texts[:60]] + [
        " ".join(reversed(t.split())) for t in texts[60:90]
    ]
    for query in near:
        expected = max(rouge_l(query, t) for t in texts)
        got, _ = pool.max_score(query, threshold=0.7)
        assert (got > 0.7) == (expected > 0.7)
        if expected > 0.7:
            assert got == pytest.approx(expected)
    # a text sharing no token with the pool is never compared
    before = pool.comparisons
    assert pool.max_score("zebra xylophone quartz") == (0.0, None)
    assert pool.comparisons == before
    # with a threshold, pool texts that cannot exceed it are skipped
    unrelated = RougePool(
        ["one two three four five six seven eight", "a completely different sentence here"]
    )
    unrelated.max_score("one nine ten eleven twelve thirteen fourteen fifteen", threshold=0.7)
    assert unrelated.comparisons == 0


# -- RougeFilter (global, key order) -------------------------------------------------------------


def test_rouge_filter_drops_near_duplicates_keeping_the_first(tmp_path: Path) -> None:
    rows = [
        {"instruction": "Explain how composting turns kitchen scraps into soil."},
        {"instruction": "Explain how composting turns kitchen scraps into rich soil."},  # near copy
        {"instruction": "List three ways to save money on groceries."},
        {"instruction": "Describe the water cycle to a ten year old."},
    ]
    result = run_rows([RougeFilter()], rows, tmp_path / "out")
    assert [r["instruction"] for r in result.rows] == [
        rows[0]["instruction"],
        rows[2]["instruction"],
        rows[3]["instruction"],
    ]
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["failures_by_step"]["filter_rouge"] == {"rouge-l > 0.7": 1}
    failure = json.loads((tmp_path / "out" / "failures.jsonl").read_text().splitlines()[0])
    assert failure["row"]["instruction"] == rows[1]["instruction"]
    assert "ROUGE-L 0.9" in failure["detail"]


def test_rouge_filter_fixed_pool_column_and_no_growth() -> None:
    seeds = ["Give me a recipe for pancakes."]
    rows = [
        {"instruction": "Give me a recipe for pancakes please.", "seeds": ["Name a planet."]},
        {"instruction": "Name a planet in our solar system.", "seeds": []},
        {
            "instruction": "Write a haiku about autumn leaves.",
            "seeds": "Write a haiku about autumn leaves falling.",
        },
        {"instruction": "Write a haiku about autumn leaves.", "seeds": []},
    ]
    kept = run_rows([RougeFilter(pool=seeds, pool_column="seeds")], rows).rows
    assert [r["instruction"] for r in kept] == ["Name a planet in our solar system."]
    # without growth, duplicates among the new rows both stay (only the fixed pool counts)
    dupes = [
        {"instruction": "Tell me a joke about cats."},
        {"instruction": "Tell me a joke about cats."},
    ]
    assert len(run_rows([RougeFilter(grow=False)], dupes).rows) == 2
    assert len(run_rows([RougeFilter()], dupes).rows) == 1
    # threshold is a parameter
    loose = [{"instruction": "the cat sat"}, {"instruction": "the cat sat on the mat"}]
    assert len(run_rows([RougeFilter(threshold=0.7)], loose).rows) == 2  # F = 0.67
    assert len(run_rows([RougeFilter(threshold=0.6)], loose).rows) == 1


def test_pool_filter_result_does_not_depend_on_completion_order() -> None:
    """Rows reach the global filter in key order however the upstream calls finish."""

    texts = [
        "Summarise the plot of Hamlet.",
        "Summarise the plot of Hamlet briefly.",
        "Name three prime numbers.",
    ]

    def latency(request) -> float:
        return {0: 0.15, 1: 0.0, 2: 0.05}[int(request.messages[-1]["content"])]

    def handler(request, i) -> str:
        return texts[int(request.messages[-1]["content"])]

    from datamill import TextGeneration

    p = Pipeline(
        [TextGeneration(template="{{ n }}", output="instruction"), RougeFilter()],
        source=[{"n": str(i)} for i in range(3)],
        models={"default": FakeModel(handler, latency=latency)},
    )
    result = p.run(None, cache=False)
    # row 1 finished first, but row 0 comes first in key order and is the one kept
    assert [r["instruction"] for r in result.rows] == [texts[0], texts[2]]


# -- per-row filters -----------------------------------------------------------------------------


def test_length_filter_words_chars_and_reasons() -> None:
    f = LengthFilter(min=4, max=6)
    check(f, "one two three four")
    with pytest.raises(Dropped) as short:
        check(f, "one two three")
    assert short.value.reason == "too short (< 4 words)" and short.value.detail == "3 words"
    with pytest.raises(Dropped) as long:
        check(f, "a b c d e f g")
    assert long.value.reason == "too long (> 6 words)"
    chars = LengthFilter(column="response", max=5, unit="chars")
    asyncio.run(chars.process({"response": "  abcde  "}, ctx()))
    with pytest.raises(Dropped, match="too long"):
        asyncio.run(chars.process({"response": "abcdef"}, ctx()))


def test_length_filter_tokens_use_the_embedded_vocabulary() -> None:
    f = LengthFilter(max=3, unit="tokens")
    check(f, "Hello world")
    with pytest.raises(Dropped) as exc:
        check(f, "Hello world, this is a much longer sentence.")
    assert exc.value.reason == "too long (> 3 tokens)"
    assert int(exc.value.detail.split()[0]) > 3


def test_length_filter_bad_parameters_fail_at_build() -> None:
    with pytest.raises(ConfigError, match="needs min, max"):
        LengthFilter()
    with pytest.raises(ConfigError, match="larger than max"):
        LengthFilter(min=10, max=2)
    with pytest.raises(ConfigError, match="unit: tokens"):
        LengthFilter(max=3, tokenizer="x.gguf")


def test_keyword_filter_whole_words_any_case_and_phrases() -> None:
    f = KeywordFilter()
    for bad in (
        "Draw a cat.",
        "Describe these MAPS.",
        "Open the file and count lines.",
        "Go  to the shop for me.",
    ):
        with pytest.raises(Dropped) as exc:
            check(f, bad)
        assert exc.value.reason == "blacklisted keyword"
    for fine in (
        "Explain the mapping between keys and values.",
        "What is a profile?",
        "Plotting a novel: give tips.",
        "Where do birds go today?",
    ):
        check(f, fine)
    custom = KeywordFilter(column="response", keywords=["as an AI"])
    with pytest.raises(Dropped, match="blacklisted"):
        asyncio.run(custom.process({"response": "As an AI, I think..."}, ctx()))
    with pytest.raises(ConfigError):
        recipe_from_dict(
            {
                "name": "x",
                "source": {"rows": [{"instruction": "a"}]},
                "steps": [{"filter_keywords": {"keywords": [" "]}}],
            }
        )


def test_ends_with_filter() -> None:
    f = EndsWithFilter()
    with pytest.raises(Dropped) as exc:
        check(f, "Translate the following sentence into French:  \n")
    assert exc.value.reason == "ends with ':'"
    check(f, "Translate 'good morning' into French.")
    g = EndsWithFilter(suffixes=["...", "?"])
    with pytest.raises(Dropped, match=r"ends with '\?'"):
        check(g, "Why?")


def test_refusal_filter() -> None:
    f = RefusalFilter()
    assert f.column == "response"
    for bad in (
        "I'm sorry, but I can't help with that.",
        "I\u2019m sorry, that is not something I do.",
        "As an AI language model, I do not have opinions.",
        "Unfortunately I cannot provide medical advice.",
    ):
        with pytest.raises(Dropped) as exc:
            asyncio.run(f.process({"response": bad}, ctx()))
        assert exc.value.reason == "refusal"
    for fine in (
        "I cannot stress enough how useful compost is: it feeds the soil.",
        "Photosynthesis turns light into sugar. " * 10
        + "I'm sorry if that was long.",  # past the window
        "Here is a recipe for pancakes.",
    ):
        asyncio.run(f.process({"response": fine}, ctx()))
    with pytest.raises(ConfigError, match="regular expression"):
        RefusalFilter(patterns=["("])


def test_non_text_values_are_dropped_with_a_reason() -> None:
    with pytest.raises(Dropped) as exc:
        asyncio.run(EndsWithFilter().process({"instruction": ["a", "b"]}, ctx()))
    assert exc.value.reason == "not text"


# -- SelfInstructFilter --------------------------------------------------------------------------


SELF_INSTRUCT_CASES = [
    ("Explain how vaccines train the immune system.", None),
    ("Define entropy.", "too short (< 4 words)"),
    (" ".join(["word"] * 151), "too long (> 150 words)"),
    ("Plot the monthly sales figures for me.", "blacklisted keyword"),
    ("Write a program that sorts a list of numbers.", "starts with 'write a program'"),
    ("write a Program to add two numbers together", "starts with 'write a program'"),
    ('"Describe a sunset over the sea."', "starts with punctuation"),
    ("¿Cómo se prepara una tortilla española?", "starts with non-ascii"),
    ("Explain how vaccines train the immune system quickly.", "rouge-l > 0.7"),
    ("Suggest a name for a bakery that sells bagels.", "rouge-l > 0.7"),  # near the seed
    ("Compare the climates of Norway and Spain in winter.", None),
]


def test_self_instruct_filter_applies_every_rule_with_its_reason(tmp_path: Path) -> None:
    rows = [{"instruction": text} for text, _ in SELF_INSTRUCT_CASES]
    f = SelfInstructFilter(pool=["Suggest a name for a bakery that sells bagels and coffee."])
    result = run_rows([f], rows, tmp_path / "out")
    assert [r["instruction"] for r in result.rows] == [
        t for t, reason in SELF_INSTRUCT_CASES if reason is None
    ]
    failures = [
        json.loads(line) for line in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()
    ]
    got = {f["row"]["instruction"]: f["reason"] for f in failures}
    assert got == {t: reason for t, reason in SELF_INSTRUCT_CASES if reason is not None}
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    counts = run["failures_by_step"]["filter_self_instruct"]
    assert counts["rouge-l > 0.7"] == 2 and counts["starts with 'write a program'"] == 2
    assert sum(counts.values()) == 9


def test_self_instruct_filter_only_kept_rows_join_the_pool() -> None:
    rows = [
        {"instruction": "Draw a picture of the solar system planets."},  # dropped by keyword
        {
            "instruction": "Draw a picture of the solar system planets now."
        },  # also keyword, not rouge
        {"instruction": "Describe the planets of the solar system."},
    ]
    p = Pipeline([SelfInstructFilter()], source=rows, models={"default": FakeModel()})
    result = p.run(None)
    assert [r["instruction"] for r in result.rows] == ["Describe the planets of the solar system."]
    assert dict(result.stats.failures_by_step["filter_self_instruct"]) == {"blacklisted keyword": 2}


def test_filters_work_after_expand_in_a_pipeline() -> None:
    @step(reads=["input"], writes=["instructions"])
    def split(row: dict) -> dict:
        return {**row, "instructions": row["input"].split("|")}

    from datamill import Expand

    p = Pipeline(
        [
            split,
            Expand(columns=["instructions"], rename={"instructions": "instruction"}),
            SelfInstructFilter(),
        ],
        source=[
            {"input": "Name the largest ocean on Earth.|Name the largest ocean on the Earth."},
            {"input": "Explain why the sky looks blue.|ok"},
        ],
        models={"default": FakeModel()},
    )
    result = p.run(None)
    assert [r["instruction"] for r in result.rows] == [
        "Name the largest ocean on Earth.",
        "Explain why the sky looks blue.",
    ]


def test_filter_kinds_are_registered() -> None:
    kinds = {
        "filter_rouge": RougeFilter,
        "filter_length": LengthFilter,
        "filter_keywords": KeywordFilter,
        "filter_ends_with": EndsWithFilter,
        "filter_refusal": RefusalFilter,
        "filter_self_instruct": SelfInstructFilter,
    }
    for kind, cls in kinds.items():
        assert step_class(kind) is cls and cls.kind == kind


def test_filter_recipe_errors_point_at_the_step() -> None:
    with pytest.raises(ConfigError, match=r"step 1 \(filter_rouge\): threshold"):
        recipe_from_dict(
            {
                "name": "x",
                "source": {"rows": [{"instruction": "a"}]},
                "steps": [{"filter_rouge": {"threshold": 1.5}}],
            }
        )
    with pytest.raises(ConfigError, match="unknown parameter"):
        recipe_from_dict(
            {
                "name": "x",
                "source": {"rows": [{"instruction": "a"}]},
                "steps": [{"filter_length": {"min": 1, "minimum": 2}}],
            }
        )
