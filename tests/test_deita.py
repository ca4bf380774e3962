"""Deita: the scorers' prompts and parsing, deita_score, and the selection against a brute-force
reference of the paper's rule."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import numpy as np
import pytest

from datamill import ConfigError, FakeModel, Pipeline, Request
from datamill.errors import ParseError, PipelineError
from datamill.models.embeddings import Embedder
from datamill.steps.deita import DeitaScore, DeitaSelect, deita_score
from datamill.steps.embed import DiverseSet
from datamill.tasks.deita import ComplexityScorer, QualityScorer, parse_json_scores, parse_scores


# -- parsing --------------------------------------------------------------------------------------
def test_parse_the_documented_format() -> None:
    assert parse_scores("[1] Score: 2\n[2] Score: 5", 2, 6) == [2.0, 5.0]


def test_parse_maps_by_index_and_tolerates_formatting() -> None:
    text = (
        "Here you go:\n**[3] Score:** 1\n[1] score - 3.5\n2. Score: 2\n[2] Score: 3\n[4] Score: 2"
    )
    assert parse_scores(text, 3, 4) == [3.5, 2.0, 1.0]  # first mention of [2] wins; [4] ignored


def test_parse_refuses_missing_and_out_of_range_scores() -> None:
    with pytest.raises(ParseError, match=r"missing score for \[2\]") as info:
        parse_scores("[1] Score: 2\n[3] Score: 1", 3, 4)
    assert info.value.raw == "[1] Score: 2\n[3] Score: 1"
    with pytest.raises(ParseError, match="no score found"):
        parse_scores("I think it is quite hard.", 1, 6)
    with pytest.raises(ParseError, match="outside 1..3"):
        parse_scores("[1] Score: 4\n[2] Score: 1", 2, 3)
    with pytest.raises(ParseError, match="outside"):
        parse_scores("[1] Score: 0", 1, 6)


# -- scorers on the fake model -----------------------------------------------------------------
def judge(scores: dict[str, float], structured: bool = False) -> FakeModel:
    """A fake judge: scores each listed item by a keyword found in it (default 1), as
    ``[i] Score: s`` lines, or as JSON when the request carries a schema."""

    def answer(request: Request, _: int) -> str:
        prompt = request.messages[-1]["content"]  # type: ignore[index]
        items = re.findall(r"^\[(\d+)\] (?!Score)(.*)$", prompt, flags=re.MULTILINE)
        found = {int(i): next((s for k, s in scores.items() if k in text), 1) for i, text in items}
        if request.json_schema is not None:
            return json.dumps({f"score_{i}": v for i, v in found.items()})
        return "\n".join(f"[{i}] Score: {v:g}" for i, v in found.items())

    return FakeModel(answer, json_schema=structured)


def test_complexity_scorer_scores_one_instruction_on_an_absolute_scale() -> None:
    model = judge({"proof": 5, "hello": 1})
    rows = [
        {"instruction": "Write a proof that there are infinitely many primes."},
        {"instruction": "Say hello."},
    ]
    result = Pipeline([ComplexityScorer()], source=rows, models={"default": model}).run(None)
    assert [r["complexity_score"] for r in result.rows] == [5.0, 1.0]
    prompt = model.calls[0].messages[-1]["content"]  # type: ignore[index]
    assert "1 (trivial" in prompt and "to 6" in prompt and "[1] Score: <number>" in prompt
    assert model.calls[0].temperature == 0.0


def test_complexity_scorer_ranks_variants_jointly() -> None:
    model = judge({"v0": 1, "v1": 2, "v2": 4})
    rows = [{"evolved": ["v0 plain", "v1 harder", "v2 hardest"]}]
    result = Pipeline(
        [ComplexityScorer(instructions="evolved", output="scores")],
        source=rows,
        models={"default": model},
    ).run(None)
    assert result.rows[0]["scores"] == [1.0, 2.0, 4.0]
    prompt = model.calls[0].messages[-1]["content"]  # type: ignore[index]
    assert "3 versions of a request" in prompt and "give 4 only" in prompt
    assert prompt.index("[1] v0 plain") < prompt.index("[3] v2 hardest")


def test_quality_scorer_scores_responses_to_the_instruction() -> None:
    model = judge({"detailed": 3, "meh": 1})
    rows = [{"instruction": "Explain tides.", "responses": ["A detailed answer.", "meh"]}]
    result = Pipeline(
        [QualityScorer(responses="responses", output="q")], source=rows, models={"default": model}
    ).run(None)
    assert result.rows[0]["q"] == [3.0, 1.0]
    prompt = model.calls[0].messages[-1]["content"]  # type: ignore[index]
    assert "## Question\nExplain tides." in prompt and "cannot be improved" in prompt


def test_a_judge_with_json_schemas_answers_in_json() -> None:
    model = judge({"v0": 1, "v2": 4}, structured=True)
    rows = [{"evolved": ["v0 plain", "v1 harder", "v2 hardest"]}]
    result = Pipeline(
        [ComplexityScorer(instructions="evolved", output="scores")],
        source=rows,
        models={"default": model},
    ).run(None)
    assert result.rows[0]["scores"] == [1.0, 1.0, 4.0]
    schema = model.calls[0].json_schema
    assert schema is not None and schema["required"] == ["score_1", "score_2", "score_3"]
    assert schema["properties"]["score_1"]["enum"] == [1, 2, 3, 4]
    assert '"score_1" to "score_3"' in model.calls[0].messages[-1]["content"]  # type: ignore[index]
    text_only = Pipeline(
        [ComplexityScorer(instructions="evolved", output="s", structured="text")],
        source=rows,
        models={"default": judge({}, structured=True)},
    )
    assert text_only.run(None).rows[0]["s"] == [1.0, 1.0, 1.0]


def test_json_scores_parse_strictly() -> None:
    assert parse_json_scores('Sure! {"score_1": 2, "score_2": 5} done', 2, 6) == [2.0, 5.0]
    with pytest.raises(ParseError, match="unparsable scores"):
        parse_json_scores('{"score_1": 2', 1, 6)
    with pytest.raises(ParseError, match=r"missing score for \[2\]"):
        parse_json_scores('{"score_1": 2, "score_2": "high"}', 2, 6)
    with pytest.raises(ParseError, match="outside"):
        parse_json_scores('{"score_1": 7}', 1, 6)


def test_unparsable_judgement_is_a_recorded_failure() -> None:
    model = FakeModel(lambda r, i: "They are all great!", json_schema=False)
    result = Pipeline(
        [QualityScorer()], source=[{"instruction": "a", "response": "b"}], models={"default": model}
    ).run(None)
    assert result.rows == []
    assert (
        result.failures[0]["reason"] == "no score found"
        and result.failures[0]["raw_output"] == "They are all great!"
    )


# -- deita_score ---------------------------------------------------------------------------------
def test_deita_score_rules() -> None:
    assert deita_score(3, 4) == 12
    assert deita_score([2, 3], [4, 5]) == 2 * 4 + 3 * 5  # multi-turn: sum of per-turn products
    assert deita_score(None, 4) == 4 and deita_score(3, None) == 3
    assert deita_score(None, None) is None and deita_score("high", float("nan")) is None


def test_deita_score_step_drops_rows_without_scores() -> None:
    rows = [
        {"complexity_score": 2.0, "quality_score": 3.0},
        {"complexity_score": None, "quality_score": None},
    ]
    result = Pipeline([DeitaScore()], source=rows, models={"default": FakeModel()}).run(None)
    assert [r["deita_score"] for r in result.rows] == [6.0]
    assert result.failures[0]["reason"] == "no deita score"


# -- selection vs brute force --------------------------------------------------------------------
#: How far from the threshold every compared cosine must be (float32 rounding is ~1e-7).
TIE_MARGIN = 1e-5


def brute_force(vectors: np.ndarray, scores: list[float], tau: float, budget: int) -> list[int]:
    """The paper's rule, written the slow and obvious way (float64, one pair at a time).

    The step computes the same cosines in float32 blocks, whose sums round differently (~1e-7).
    So that no decision hangs on that rounding, every cosine compared here must lie at least
    ``TIE_MARGIN`` from ``tau``; the seeded inputs below do (the closest is 2.4e-5)."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    chosen: list[int] = []
    for i in order:
        if len(chosen) == budget:
            break
        cosines = [float(unit[i] @ unit[j]) for j in chosen]
        assert all(abs(c - tau) > TIE_MARGIN for c in cosines), "a near-tie: choose other inputs"
        if all(c < tau for c in cosines):
            chosen.append(i)
    return chosen


def clustered(
    rng: np.random.Generator, n: int, dim: int = 16, centers: int = 25, noise: float = 0.35
) -> np.ndarray:
    c = rng.normal(size=(centers, dim))
    return c[rng.integers(0, centers, size=n)] + noise * rng.normal(size=(n, dim))


@pytest.mark.parametrize("seed", range(6))
def test_selection_matches_brute_force_on_random_vectors(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    if seed % 2:  # compare with the selected set in small blocks, as large selections do
        monkeypatch.setattr(DiverseSet, "block", 16)
    rng = np.random.default_rng(seed)
    n = 300
    vectors = clustered(rng, n)
    scores = [
        float(s) for s in rng.integers(1, 8, size=n)
    ]  # many ties: order must break them the same way
    rows = [{"i": i, "deita_score": scores[i], "embedding": vectors[i].tolist()} for i in range(n)]
    for tau, budget, chunk in [(0.9, 40, 7), (0.8, 1000, 64), (0.95, 150, 1), (0.5, 20, 1024)]:
        dropped: list[tuple[int, str]] = []
        step = DeitaSelect(budget=budget, threshold=tau, embedding="embedding", chunk_size=chunk)
        kept = asyncio.run(
            step.aprocess_all(
                list(rows), lambda r, why, d, out=dropped: out.append((r["i"], why)), None
            )
        )  # type: ignore[arg-type, misc]
        expected = brute_force(vectors, scores, tau, budget)
        assert [r["i"] for r in kept] == expected
        assert len(kept) + len(dropped) == n
        assert {i for i, _ in dropped} == set(range(n)) - set(expected)


class TableEmbedder(Embedder):
    """Vectors from a table (text → vector), counting what it is asked for."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table
        self.identity = f"table:{id(table)}"
        self.name = "table"
        self.asked = 0

    async def _embed(self, texts: list[str]) -> np.ndarray:
        self.asked += len(texts)
        return np.stack([self.table[t] for t in texts])


def test_selection_embeds_on_demand_and_stops_at_the_budget() -> None:
    rng = np.random.default_rng(7)
    n = 2000
    vectors = rng.normal(size=(n, 32))  # random directions: nothing is a near duplicate
    texts = [f"text {i}" for i in range(n)]
    embedder = TableEmbedder(dict(zip(texts, vectors, strict=True)))
    rows = [
        {"i": i, "instruction": texts[i], "complexity_score": float(n - i), "quality_score": 1.0}
        for i in range(n)
    ]
    reasons: list[str] = []
    step = DeitaSelect(budget=50, columns=["instruction"], chunk_size=32, embedder=embedder)
    kept = asyncio.run(step.aprocess_all(rows, lambda r, why, d: reasons.append(why), None))  # type: ignore[arg-type]
    assert (
        [r["i"] for r in kept]
        == list(range(50))
        == brute_force(vectors, [float(n - i) for i in range(n)], 0.9, 50)
    )
    assert embedder.asked == 64  # two chunks of 32: the rows past the budget were never embedded
    assert reasons == ["over budget"] * (n - 50)
    assert kept[0]["deita_score"] == n and kept[0]["deita_nearest_similarity"] is None
    assert all(r["deita_nearest_similarity"] < 0.9 for r in kept[1:])


def test_selection_records_what_each_dropped_row_was_too_close_to(tmp_path: Path) -> None:
    rows = [
        {
            "instruction": "how do plants make food from sunlight",
            "response": "photosynthesis",
            "deita_score": 9.0,
        },
        {
            "instruction": "how do plants make food from sunlight",
            "response": "photosynthesis!",
            "deita_score": 8.0,
        },
        {"instruction": "name three prime numbers", "response": "2, 3, 5", "deita_score": 7.0},
        {
            "instruction": "what is the boiling point of water",
            "response": "100 C at sea level",
            "deita_score": 1.0,
        },
    ]
    step = DeitaSelect(budget=2, embedder="hash:256")
    result = Pipeline([step], source=rows, models={"default": FakeModel()}).run(tmp_path / "out")
    assert [r["deita_score"] for r in result.rows] == [9.0, 7.0]
    why = {f["row"]["deita_score"]: (f["reason"], f.get("detail", "")) for f in result.failures}
    assert (
        why[8.0][0] == "too similar to a selected row"
        and "with input row 0 (score 9)" in why[8.0][1]
    )
    assert why[1.0] == ("over budget", "2 rows were selected before this one (score 1)")
    assert result.summary["steps"]["deita_select"] == {"rows_in": 4, "rows_out": 2, "failed": 2}


def test_selection_needs_a_score_column_before_any_call() -> None:
    p = Pipeline(
        [DeitaSelect(budget=3, embedder="hash")],
        source=[{"instruction": "a", "response": "b"}],
        models={"default": FakeModel()},
    )
    with pytest.raises(PipelineError, match="needs a score"):
        p.check(["instruction", "response"])
    with pytest.raises(ConfigError, match="budget"):
        DeitaSelect(budget=0)


# -- the built-in recipe -----------------------------------------------------------------------
def test_deita_recipe_runs_on_an_sft_output(tmp_path: Path) -> None:
    from datamill.io.sources import RowsSource
    from datamill.pipeline.graph import ModelSettings
    from datamill.recipes.loader import load_recipe

    topics = ["bread", "tides", "primes", "volcanoes", "taxes", "chess"]
    sft = [
        {
            "messages": [
                {"role": "user", "content": f"Tell me about {t}, part {k}"},
                {"role": "assistant", "content": f"Facts about {t}."},
            ]
        }
        for t in topics
        for k in range(2)
    ]
    sft.append(dict(sft[0]))  # an exact duplicate
    model = judge({"bread": 2, "tides": 5, "primes": 6, "volcanoes": 3, "Facts": 3})
    pipeline = load_recipe("deita", ["deita_select.budget=4", "deita_select.embedder=hash:512"])
    pipeline.models = {"default": ModelSettings.parse(model)}
    result = pipeline.run(tmp_path / "out", source=RowsSource(sft))
    assert len(result.rows) == 4
    assert result.summary["steps"]["dedup_exact"]["failed"] == 1
    assert [r["deita_score"] for r in result.rows] == sorted(
        (r["deita_score"] for r in result.rows), reverse=True
    )
    assert result.rows[0]["instruction"].startswith("Tell me about primes")
    assert {"messages", "complexity_score", "quality_score", "deita_score"} <= set(result.rows[0])
    # each part-1/part-2 pair is nearly identical under the hash embedder: only one of a pair is kept
    assert len({r["instruction"].split(",")[0] for r in result.rows}) == 4


def test_deita_recipe_without_usable_columns_fails_before_any_call(tmp_path: Path) -> None:
    from datamill.io.sources import RowsSource
    from datamill.pipeline.graph import ModelSettings
    from datamill.recipes.loader import load_recipe

    model = FakeModel()
    pipeline = load_recipe("deita")
    pipeline.models = {"default": ModelSettings.parse(model)}
    with pytest.raises(ConfigError, match="neither 'messages' nor 'instruction'"):
        pipeline.run(tmp_path / "out", source=RowsSource([{"text": "hello"}]))
    assert model.calls == []


@pytest.mark.real
def test_the_embedded_model_always_gives_readable_scores(embedded_model: object) -> None:
    rows = [
        {
            "instruction": "Prove that the square root of 2 is irrational.",
            "response": "Assume it is a ratio p/q in lowest terms...",
        },
        {"instruction": "Say hi.", "response": "Hi!"},
    ]
    p = Pipeline(
        [ComplexityScorer(), QualityScorer()], source=rows, models={"default": embedded_model}
    )
    result = p.run(None, cache=False)
    assert result.failures == []  # a grammar holds the 135M judge to the schema
    for row in result.rows:
        assert 1 <= row["complexity_score"] <= 6 and 1 <= row["quality_score"] <= 6
