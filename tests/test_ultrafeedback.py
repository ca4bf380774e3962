"""UltraFeedback: parsers on real-looking malformed judge output, the JSON-schema path, order-swap
agreement and self-judging rules."""

from __future__ import annotations

import json
from typing import Any

import pytest

from datamill import FakeModel, Pipeline, Request, UltraFeedback
from datamill.errors import ParseError
from datamill.recipes.registry import step_class
from datamill.tasks.ultrafeedback import (
    SCALES,
    judgement_schema,
    parse_json_judgement,
    parse_rating,
    parse_text_judgement,
    verdicts_agree,
)


# -- the text parser -----------------------------------------------------------------------------
def test_spec_invariant() -> None:
    text = "#### Output for Text 1\nRating: 4\nRationale: r1\n\n#### Output for Text 2\nRating: 5 (Excellent)\nRationale: r2"
    assert parse_text_judgement(text, 2) == ([4, 5], ["r1", "r2"])


def test_blank_lines_inside_a_rationale_do_not_shift_ratings() -> None:
    text = (
        "#### Output for Text 1\nRating: 2\nRationale: The answer is vague.\n\nIt also repeats itself.\n\n\n"
        "#### Output for Text 2\nRating: 4\nRationale: Clear.\n\nCould cite a source.\n"
    )
    ratings, rationales = parse_text_judgement(text, 2)
    assert ratings == [2, 4]
    assert rationales[0] == "The answer is vague.\n\nIt also repeats itself."
    assert rationales[1] == "Clear.\n\nCould cite a source."


def test_na_is_a_none_rating_for_honesty_only() -> None:
    text = "#### Output for Text 1\nRating: N/A\nRationale: a poem\n#### Output for Text 2\nRating: 3\nRationale: ok"
    assert parse_text_judgement(text, 2, allow_na=True)[0] == [None, 3]
    with pytest.raises(ParseError) as info:
        parse_text_judgement(text, 2)
    assert info.value.reason == "unparsable rating"
    assert info.value.raw == text


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("6", "rating out of range"),
        ("0", "rating out of range"),
        ("8/10", "rating out of range"),
        ("3.5", "unparsable rating"),
        ("great", "unparsable rating"),
        ("", "unparsable rating"),
    ],
)
def test_bad_ratings(value: str, reason: str) -> None:
    text = f"#### Output for Text 1\nRating: {value}\nRationale: x\n#### Output for Text 2\nRating: 3\nRationale: y"
    with pytest.raises(ParseError) as info:
        parse_text_judgement(text, 2)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("[4]", 4),
        ("**4**", 4),
        ("4/5", 4),
        ("4.0", 4),
        ("Rating 3 of 5", 3),
        ("Good", 4),
        ("excellent.", 5),
    ],
)
def test_tolerated_rating_spellings(value: str, expected: int) -> None:
    assert parse_rating(value, scale=SCALES["overall-rating"]) == expected


def test_fewer_blocks_than_responses() -> None:
    text = "#### Output for Text 1\nRating: 4\nRationale: fine"
    with pytest.raises(ParseError) as info:
        parse_text_judgement(text, 3)
    assert info.value.reason == "fewer ratings than responses"
    # a header whose block has no rating counts as missing
    text2 = text + "\n#### Output for Text 2\nRationale: I could not decide."
    with pytest.raises(ParseError, match="fewer ratings"):
        parse_text_judgement(text2, 2)


def test_extra_and_repeated_blocks_never_change_the_length() -> None:
    text = (
        "#### Output for Text 2\nRating: 1\nRationale: b\n"
        "#### Output for Text 1\nRating: 5\nRationale: a\n"
        "#### Output for Text 1\nRating: 2\nRationale: repeated\n"
        "#### Output for Text 3\nRating: 3\nRationale: there is no text 3\n"
    )
    assert parse_text_judgement(text, 2) == ([5, 1], ["a", "b"])


def test_markdown_variants_and_preamble() -> None:
    text = (
        "Sure! Here is my evaluation.\n\n"
        "### **Output for Text 1**\n**Rating:** 3\n**Rationale:** Partly right.\n\n"
        "## Text 2\n- Rating: [5]\n- Rationale: Complete.\n"
    )
    assert parse_text_judgement(text, 2) == ([3, 5], ["Partly right.", "Complete."])


def test_blocks_without_headers_are_read_in_order() -> None:
    text = "Rating: 2\nRationale: weak\n\nmore about it\n\nRating: 4\nRationale: strong"
    assert parse_text_judgement(text, 2) == ([2, 4], ["weak\n\nmore about it", "strong"])


def test_helpfulness_style_type_lines_are_ignored() -> None:
    text = "#### Output for Text 1\nType: [1, 2]\nRationale: relevant\nRating: 4\nRationale: informative\n#### Output for Text 2\nType: None\nRationale: off\nRating: 1\nRationale: wrong"
    assert parse_text_judgement(text, 2) == ([4, 1], ["informative", "wrong"])


# -- the JSON path -------------------------------------------------------------------------------
def test_schema_has_exactly_one_entry_per_response_with_an_enum_rating() -> None:
    schema = judgement_schema(3, 100)
    assert schema["required"] == ["text_1", "text_2", "text_3"]
    entry = schema["properties"]["text_2"]
    assert entry["properties"]["rating"]["enum"] == [1, 2, 3, 4, 5]
    assert entry["properties"]["explanation"]["maxLength"] == 100
    # explanation before rating, also for a backend that sorts keys
    assert list(entry["properties"]) == ["explanation", "rating"] == sorted(entry["properties"])


def test_json_parser() -> None:
    ok = json.dumps(
        {
            "text_1": {"explanation": " fine ", "rating": 4},
            "text_2": {"explanation": "bad", "rating": 1},
        }
    )
    assert parse_json_judgement("```json\n" + ok + "\n```", 2) == ([4, 1], ["fine", "bad"])
    # raw newlines inside a string (seen from llama.cpp grammars) and the older key name
    raw = '{ "text_1": { "rating": 2, "explanation": "cut here\n\n" }, "text_2": {"rationale": "r", "rating": 3}}'
    assert parse_json_judgement(raw, 2) == ([2, 3], ["cut here", "r"])
    for text, reason in [
        ("not json at all", "unparsable judgement"),
        ('{"text_1": {"explanation": "x", "rating": 4}', "unparsable judgement"),
        (json.dumps({"text_1": {"explanation": "x", "rating": 4}}), "fewer ratings than responses"),
        (json.dumps({"text_1": {"rating": 9}, "text_2": {"rating": 1}}), "rating out of range"),
        (json.dumps({"text_1": {"rating": "N/A"}, "text_2": {"rating": 1}}), "unparsable rating"),
        (json.dumps({"text_1": {"rating": True}, "text_2": {"rating": 1}}), "unparsable rating"),
    ]:
        with pytest.raises(ParseError) as info:
            parse_json_judgement(text, 2)
        assert info.value.reason == reason, text


# -- the step on the fake model -------------------------------------------------------------------
def rows(n: int = 1) -> list[dict[str, Any]]:
    return [
        {
            "instruction": f"Question {i}?",
            "generations": [f"good answer {i}", f"poor answer {i}", f"middling answer {i}"],
            "generation_models": ["a (fake)", "b (fake)", "judge (fake) · revision of #1"],
        }
        for i in range(n)
    ]


def texts_in(request: Request) -> list[str]:
    user = request.messages[-1]["content"]  # type: ignore[index]
    return [
        line
        for line in user.splitlines()
        if line.endswith(tuple("0123456789")) and "answer" in line
    ]


def quality(text: str) -> int:
    return 5 if text.startswith("good") else 1 if text.startswith("poor") else 3


def fair_judge(request: Request, i: int) -> str:
    """Rates by content, in whatever order the answers come (JSON when a schema is sent)."""
    answers = texts_in(request)
    if request.json_schema is not None:
        assert request.json_schema["required"] == [f"text_{j}" for j in range(1, len(answers) + 1)]
        return json.dumps(
            {
                f"text_{j}": {"explanation": f"about {t}", "rating": quality(t)}
                for j, t in enumerate(answers, 1)
            }
        )
    return "\n\n".join(
        f"#### Output for Text {j}\nRating: {quality(t)}\nRationale: about {t}\n\nsecond paragraph"
        for j, t in enumerate(answers, 1)
    )


def position_judge(request: Request, i: int) -> str:
    """Always prefers the first answer shown: the bias order-swapping exposes."""
    answers = texts_in(request)
    return json.dumps(
        {
            f"text_{j}": {"explanation": "first is best", "rating": max(1, 6 - j * 2)}
            for j in range(1, len(answers) + 1)
        }
    )


def run(step: UltraFeedback, model: FakeModel, source: list[dict[str, Any]] | None = None) -> Any:
    p = Pipeline([step], source=source or rows(), models={"judge": model, "a": model, "b": model})
    return p.run(None, cache=False)


def test_structured_path_when_the_model_honours_schemas() -> None:
    model = FakeModel(fair_judge, json_schema=True)
    result = run(UltraFeedback(model="judge"), model)
    row = result.rows[0]
    assert row["ratings"] == [5, 1, 3]
    assert row["rationales"][0] == "about good answer 0"
    assert row["judge_model"] == "judge (fake)"
    assert model.calls[0].json_schema is not None and model.calls[0].temperature == 0.0


def test_text_path_otherwise() -> None:
    model = FakeModel(fair_judge, json_schema=False)
    result = run(UltraFeedback(model="judge", aspect="honesty"), model)
    assert model.calls[0].json_schema is None
    assert "#### Output for Text 3" in model.calls[0].messages[-1]["content"]  # type: ignore[index]
    assert "N/A" in model.calls[0].messages[-1]["content"]  # type: ignore[index]  # honesty allows it
    assert result.rows[0]["ratings"] == [5, 1, 3]
    assert result.rows[0]["rationales"][1] == "about poor answer 0\n\nsecond paragraph"


def test_every_aspect_renders_its_own_rubric() -> None:
    systems = set()
    for aspect, scale in SCALES.items():
        request = UltraFeedback(aspect=aspect).request("Q?", ["a", "b"], structured=True)
        system, user = (m["content"] for m in request.messages)  # type: ignore[union-attr]
        assert f"from 1 ({scale[0]}) to 5 ({scale[4]})" in system
        assert all(label.lower() in system for label in scale[1:4])
        assert "N/A" not in system  # the schema's enum cannot say N/A
        assert user.startswith("Instruction: Q?") and "<text 2>\nb\n</text 2>" in user
        systems.add(system)
    assert len(systems) == 5
    honesty_text = UltraFeedback(aspect="honesty").request("Q?", ["a"], structured=False)
    assert "N/A" in honesty_text.messages[0]["content"]  # type: ignore[index]
    assert "1 answer to it" in honesty_text.messages[0]["content"]  # type: ignore[index]


def test_unparsable_judgement_is_a_recorded_failure() -> None:
    model = FakeModel(lambda r, i: "I think both are fine.")
    result = run(UltraFeedback(model="judge", structured="text"), model)
    assert result.rows == []
    assert result.failures[0]["reason"] == "fewer ratings than responses"
    assert result.failures[0]["raw_output"] == "I think both are fine."


def test_order_swap_keeps_agreeing_verdicts() -> None:
    model = FakeModel(fair_judge)
    result = run(UltraFeedback(model="judge", bias_control="agree"), model)
    assert len(model.calls) == 2
    first, second = (texts_in(c) for c in model.calls)
    assert first == second[::-1]
    assert model.calls[0].seed != model.calls[1].seed
    row = result.rows[0]
    assert row["ratings"] == row["ratings_reversed"] == [5, 1, 3]
    assert row["orders_agree"] is True


def test_shuffled_order_is_repeatable_per_row_and_ratings_map_back() -> None:
    source = rows(8)
    model = FakeModel(fair_judge)
    result = run(UltraFeedback(model="judge"), model, source)
    by_row = {
        int(texts_in(c)[0].split()[-1]): texts_in(c) for c in model.calls
    }  # calls may interleave
    shown = [by_row[i] for i in range(len(source))]
    assert all(sorted(s) == sorted(r["generations"]) for s, r in zip(shown, source, strict=True))
    assert len({tuple(t.split()[0] for t in s) for s in shown}) > 1  # not always the same order
    assert all(r["ratings"] == [5, 1, 3] for r in result.rows)  # back in pool order
    again = FakeModel(fair_judge)
    run(UltraFeedback(model="judge"), again, source)
    assert sorted(texts_in(c) for c in again.calls) == sorted(shown)
    given = FakeModel(fair_judge)
    run(UltraFeedback(model="judge", order="given"), given, source)
    assert sorted(texts_in(c) for c in given.calls) == sorted(r["generations"] for r in source)


def test_order_swap_drops_a_position_biased_judge() -> None:
    result = run(UltraFeedback(model="judge", bias_control="agree"), FakeModel(position_judge))
    assert result.rows == []
    assert result.stats.failures_by_step["ultrafeedback"] == {"judges disagree on order": 1}


def test_order_swap_average() -> None:
    result = run(
        UltraFeedback(model="judge", bias_control="average", order="given"),
        FakeModel(position_judge),
    )
    row = result.rows[0]
    # pass 1 rates by position 4,2,1; pass 2 sees the reversed order and also rates 4,2,1
    assert row["ratings_reversed"] == [1, 2, 4]
    assert row["ratings"] == [2.5, 2.0, 2.5]
    assert row["orders_agree"] is False
    assert result.stats.as_dict()["events"] == {"ultrafeedback": {"orders disagree": 1}}


def test_verdicts_agree_definition() -> None:
    assert verdicts_agree([5, 1, 3], [4, 2, 3])  # same best (0) and worst (1)
    assert not verdicts_agree([5, 1, 3], [5, 3, 1])  # worst differs
    assert not verdicts_agree([5, 5, 1], [5, 4, 1])  # tie on top in one pass only
    assert not verdicts_agree([5, None, 1], [5, 3, 1])
    assert verdicts_agree([2, 2], [3, 3])


def test_self_judging_forbid_setting_skips_the_judges_own_answer() -> None:
    model = FakeModel(fair_judge)
    result = run(UltraFeedback(model="judge", self_judging="forbid_setting"), model)
    row = result.rows[0]
    assert sorted(texts_in(model.calls[0])) == ["good answer 0", "poor answer 0"]
    assert row["ratings"] == [5, 1, None]
    assert row["rationales"][2].startswith("not judged")
    assert row["judge_skipped"] == 1
    assert result.stats.events["ultrafeedback"]["responses not judged (self-judging)"] == 1


def test_self_judging_forbid_model_counts_settings_of_the_same_weights() -> None:
    model = FakeModel(fair_judge)
    result = run(UltraFeedback(model="judge", self_judging="forbid_model"), model)
    assert result.rows == [] and model.calls == []
    assert result.stats.failures_by_step["ultrafeedback"] == {"self-judging forbidden": 1}
    # a different model under another setting is judged; an undeclared label is compared by name
    other = FakeModel(name="other")
    source = [{**rows()[0], "generation_models": ["a (other)", "x (fake)", "y (unknown-model)"]}]
    model2 = FakeModel(fair_judge)
    p = Pipeline(
        [UltraFeedback(model="judge", self_judging="forbid_model")],
        source=source,
        models={"judge": model2, "a": other},
    )
    row = p.run(None, cache=False).rows[0]
    assert row["ratings"] == [5, None, 3] and row["judge_skipped"] == 1


def test_registry_and_columns() -> None:
    assert step_class("ultrafeedback") is UltraFeedback
    step = UltraFeedback(bias_control="agree", self_judging="forbid_setting")
    assert step.required_columns() == ["instruction", "generations", "generation_models"]
    assert step.produces() == [
        "ratings",
        "rationales",
        "judge_model",
        "ratings_reversed",
        "orders_agree",
        "judge_skipped",
    ]


# -- the real embedded model ---------------------------------------------------------------------
@pytest.mark.real
def test_real_model_judgement_parses_under_the_schema(embedded_model) -> None:  # type: ignore[no-untyped-def]
    source = [
        {
            "instruction": "What is synthetic data?",
            "generations": [
                "Synthetic data is data made by a program or model instead of being collected from real events; it is used to train models when real data is scarce or private.",
                "Pizza is a food from Italy.",
            ],
        }
    ]
    p = Pipeline(
        [UltraFeedback(model="judge", rationale_chars=60, bias_control="agree")],
        source=source,
        models={"judge": embedded_model},
    )
    result = p.run(None, cache=False)
    assert result.stats.model_calls == 2
    if result.rows:
        row = result.rows[0]
        assert len(row["ratings"]) == 2 and all(r in (1, 2, 3, 4, 5) for r in row["ratings"])
        assert len(row["rationales"]) == 2
    else:  # the only allowed loss under the schema: the two orders disagree
        assert result.stats.failures_by_step["ultrafeedback"] == {"judges disagree on order": 1}
