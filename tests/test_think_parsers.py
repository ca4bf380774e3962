"""Every judge, scorer and evolution reads the answer, never the thinking, when the model thinks
first (a leading ``<think>`` block, or the reasoning a server sends apart). Each thinking block
below holds a draft in the very format the parser looks for, with other values than the answer:
a parser that read it would give the draft's values, not the answer's.

(TextGeneration, SelfInstruct, CritiqueRewrite, ResponsePool and the JSON UltraFeedback judge
are covered in ``test_output_faults.py``; Magpie in ``test_magpie_reasoning_tools.py``.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from datamill import (
    Completion,
    ComplexityScorer,
    EvolComplexity,
    EvolInstruct,
    EvolQuality,
    FakeModel,
    Pipeline,
    QualityScorer,
    Request,
    UltraFeedback,
)


def thinking_first(draft: str, answer: str, apart: bool) -> str | Completion:
    """The answer after a thinking block holding ``draft``: inline, or sent apart."""
    if apart:
        return Completion(text=answer, reasoning=f"Draft:\n{draft}\nNo, let me redo it.")
    return f"<think>Draft:\n{draft}\nNo, let me redo it.</think>\n\n{answer}"


def run(step: Any, rows: list[dict[str, Any]], handler: Callable[..., Any], **kw: Any) -> Any:
    result = Pipeline([step], source=rows, models={"default": FakeModel(handler, **kw)}).run(
        None, cache=False
    )
    assert dict(result.stats.failures) == {}, result.failures
    return result.rows


def no_thinking_in(rows: list[dict[str, Any]]) -> None:
    text = json.dumps(rows, ensure_ascii=False)
    assert "<think>" not in text and "Draft:" not in text and "redo it" not in text


APART = pytest.mark.parametrize("apart", [False, True], ids=["inline", "sent-apart"])


@APART
def test_ultrafeedback_text_judgement_reads_the_answer(apart: bool) -> None:
    def judge(request: Request, i: int) -> str | Completion:
        draft = "#### Output for Text 1\nRating: 1\nRationale: draft\n#### Output for Text 2\nRating: 1\nRationale: draft"
        answer = "#### Output for Text 1\nRating: 5\nRationale: exact\n#### Output for Text 2\nRating: 2\nRationale: vague"
        return thinking_first(draft, answer, apart)

    row = {"instruction": "Boiling point of water?", "generations": ["100 °C.", "Hot."]}
    [out] = run(UltraFeedback(order="given", structured="text"), [row], judge)
    assert (out["ratings"], out["rationales"]) == ([5, 2], ["exact", "vague"])
    no_thinking_in([out])


@APART
@pytest.mark.parametrize("structured", ["json", "text"])
@pytest.mark.parametrize("scorer", ["complexity", "quality"])
def test_deita_scorers_read_the_answer(apart: bool, structured: str, scorer: str) -> None:
    def judge(request: Request, i: int) -> str | Completion:
        if structured == "json":
            return thinking_first(
                '{"score_1": 1, "score_2": 3}', '{"score_1": 3, "score_2": 1}', apart
            )
        return thinking_first("[1] Score: 1\n[2] Score: 3", "[1] Score: 3\n[2] Score: 1", apart)

    rows = [{"instruction": "Explain tides.", "items": ["Tides in depth.", "Tides?"]}]
    step = (
        ComplexityScorer(instructions="items", output="s", structured=structured)  # type: ignore[arg-type]
        if scorer == "complexity"
        else QualityScorer(responses="items", output="s", structured=structured)  # type: ignore[arg-type]
    )
    [out] = run(step, rows, judge, json_schema=structured == "json")
    assert out["s"] == [3.0, 1.0]  # two items: the scale is 1..3


@APART
@pytest.mark.parametrize("cls", [EvolInstruct, EvolComplexity])
def test_evol_instruct_reads_the_evolved_prompt_and_the_answer(apart: bool, cls: type) -> None:
    def model(request: Request, i: int) -> str | Completion:
        content = request.messages[-1]["content"]  # type: ignore[index]
        if "#Rewritten Prompt#" in content or "#New Prompt#" in content:
            return thinking_first(
                "#Rewritten Prompt#:\nA wrong draft about nothing.",
                "#Rewritten Prompt#:\nExplain ocean tides, naming the moon and sun as causes.",
                apart,
            )
        return thinking_first("Answer: sorry.", "The moon's pull raises the water.", apart)

    rows = [{"instruction": "Explain tides."}]
    [out] = run(cls(generate_answers=True), rows, model)
    assert out["evolved_instruction"] == ("Explain ocean tides, naming the moon and sun as causes.")
    assert out["answer"] == "The moon's pull raises the water."
    no_thinking_in([out])


@APART
def test_evol_quality_reads_the_improved_answer(apart: bool) -> None:
    def model(request: Request, i: int) -> str | Completion:
        return thinking_first(
            "Improved answer: a wrong draft.", "Improved answer: 100 °C at sea level.", apart
        )

    rows = [{"instruction": "Boiling point of water?", "response": "Hot."}]
    [out] = run(EvolQuality(), rows, model)
    assert out["evolved_response"] == "100 °C at sea level."
    no_thinking_in([out])
