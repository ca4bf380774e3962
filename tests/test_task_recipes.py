"""The SmolTalk-style task recipes (rewrite, summarize, system-chats, everyday-chats): each runs
on the fake model, from generated texts and from seed texts, and each refuses what its own checks
refuse; one runs on the embedded model (``real``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from datamill import FakeModel, ModelSettings
from datamill.errors import ParseError
from datamill.models.base import Completion, Request
from datamill.pipeline.graph import Pipeline
from datamill.recipes.loader import load_recipe
from datamill.tasks.chat import SimulatedChat, check_turns, clean_message
from datamill.tasks.transform import RewriteText, Summarize, full_sentences

LONG = (
    "The city library reopened on Monday after a year of building work. It now has a larger "
    "children's room, a quiet floor for study, a small café and a workshop where people can "
    "borrow tools, use a 3D printer and take evening classes in repairing bikes and clothes."
)


def on_model(p: Pipeline, model: Any) -> Pipeline:
    p.models = {n: ModelSettings(spec=model, sampling=s.sampling) for n, s in p.models.items()}
    return p


def last(request: Request) -> str:
    return str(request.messages[-1]["content"])


def failures(out: Path) -> dict[str, int]:
    return dict(json.loads((out / "run.json").read_text())["failures"])


def test_rewrite_recipe_writes_a_text_then_rewrites_it_to_the_sampled_style(tmp_path: Path) -> None:
    model = FakeModel()
    result = on_model(load_recipe("rewrite"), model).run(tmp_path / "out", limit=3)
    assert len(result.rows) == 3
    for r in result.rows:
        user, assistant = r["messages"]
        assert user["role"] == "user" and r["text"] in user["content"]
        assert f"in a {r['style']} style for {r['audience']}" in user["content"]
        assert assistant["content"] == r["rewrite"] != r["text"]
    asked = [last(c) for c in model.calls]
    assert sum(a.startswith("Write a short ") for a in asked) == 3  # one text written per row


def test_rewrite_refuses_copies_and_reads_seed_texts(tmp_path: Path) -> None:
    def answer(request: Request, index: int) -> str:
        text = last(request).split("Text:\n", 1)[1].split("\n\nRewrite", 1)[0]
        if "library" in text:
            return "Rewritten text: " + text.upper()  # identical but for case and a label
        if "tomatoes" in text:
            return text.replace("grows", "grow")  # barely changed
        return "Dear team, our garden kept growing, and we thank you for your work with us all."

    seeds = [
        {"text": LONG},
        {
            "text": "She grows tomatoes and beans on a dry hillside and sells them at the Saturday market in town."
        },  # fmt: skip
        {
            "text": "The garden grew all summer long thanks to many helpers who came every weekend to water it."
        },  # fmt: skip
        {"text": "Too short to rewrite."},
    ]
    step = RewriteText(target="for a manager", min_text_words=10)
    result = on_model(Pipeline([step], source=seeds), FakeModel(answer)).run(tmp_path / "o")
    assert [r["rewrite"] for r in result.rows] == [
        "Dear team, our garden kept growing, and we thank you for your work with us all."
    ]
    assert failures(tmp_path / "o") == {
        "rewrite identical to the text": 1,
        "rewrite barely changed": 1,
        "text too short": 1,
    }


def test_summarize_recipe_keeps_only_summaries_shorter_than_their_text(tmp_path: Path) -> None:
    def answer(request: Request, index: int) -> str:
        asked = last(request)
        if asked.startswith("Write a "):  # two topics get a text the summary will copy
            return LONG + (" Copy me." if "volcanoes" in asked or "beekeeping" in asked else "")
        if "Copy me." in asked:
            return "Summary: " + LONG  # as long as the text
        return "Summary: The library reopened with new rooms, a café and a repair workshop."

    written = ["summarize.write=Write a news article about {{ topic }}.", "summarize.text=written"]
    result = on_model(load_recipe("summarize", written), FakeModel(answer)).run(
        tmp_path / "out", limit=6
    )
    lost = failures(tmp_path / "out")
    assert set(lost) <= {"summary identical to the text", "summary not shorter than its text"}
    assert len(result.rows) + sum(lost.values()) == 6 and lost and result.rows
    for r in result.rows:
        assert r["summary"] == "The library reopened with new rooms, a café and a repair workshop."
        assert r["messages"][1]["content"] == r["summary"]
        # the summary is of the written text; the seed text stays in its column
        assert r["messages"][0]["content"].startswith(f"Text:\n{LONG}\n") and r["text"] != LONG
        assert "Summarize the text above in two sentences" in r["messages"][0]["content"]


def test_summarize_recipe_reads_its_seed_texts(tmp_path: Path) -> None:
    model = FakeModel()
    result = on_model(load_recipe("summarize"), model).run(tmp_path / "out", limit=3)
    assert len(result.rows) == 3 and len(model.calls) == 3  # no text written: seed texts
    for r in result.rows:
        assert r["messages"][0]["content"].startswith("Text:\n" + r["text"].strip())
        assert len(r["summary"].split()) < 0.7 * len(r["text"].split())


def test_a_written_text_cut_at_max_tokens_keeps_its_full_sentences(tmp_path: Path) -> None:
    assert full_sentences('One. Two "quoted!" Three is cut') == 'One. Two "quoted!"'
    assert full_sentences("no end at all") == ""
    cut = LONG + " And then the mayor said that"

    def answer(request: Request, index: int) -> str | Completion:
        if last(request).startswith("Write about"):
            return Completion(cut if "library" in last(request) else "Short. And", "length")
        return "A library reopened after a year, with more rooms and a repair workshop."

    step = Summarize(write="Write about {{ topic }}.", write_max_tokens=50)
    source = [{"topic": "the library"}, {"topic": "rain"}]
    model = FakeModel(answer)
    result = on_model(Pipeline([step], source=source), model).run(tmp_path / "o")
    assert [r["text"] for r in result.rows] == [LONG]
    assert failures(tmp_path / "o") == {"written text too short (< 20 words)": 1}
    assert {c.max_tokens for c in model.calls if last(c).startswith("Write about")} == {50}


def test_summarize_checks_and_columns() -> None:
    step = Summarize(max_ratio=0.5)
    with pytest.raises(ParseError, match="summary not shorter than its text"):
        step.check(" ".join(LONG.split()[:30]), LONG, "raw")
    assert step.check("A library reopened.", LONG, "raw") == "A library reopened."
    assert step.required_columns() == ["text"]
    generated = Summarize(write="Write about {{ topic }}.")
    assert generated.required_columns() == ["topic"]
    assert set(generated.produces()) == {"summary", "text", "instruction"}


def test_system_chats_follow_the_system_prompt_over_alternating_turns(tmp_path: Path) -> None:
    model = FakeModel()
    result = on_model(load_recipe("system-chats"), model).run(tmp_path / "out", limit=3)
    assert len(result.rows) == 3
    for r in result.rows:
        messages = r["messages"]
        assert messages[0] == {"role": "system", "content": f"You are {r['role']}. {r['rule']}"}
        assert [m["role"] for m in messages[1:]] == ["user", "assistant"] * 2
        assert all(m["content"].strip() for m in messages)
    # the assistant's calls carry the system prompt and the whole chat so far
    answers = [c for c in model.calls if c.messages[0]["role"] == "system"]
    assert len(answers) == 6 and [len(c.messages) for c in answers[:2]] == [2, 4]
    users = [last(c) for c in model.calls if c.messages[0]["role"] != "system"]
    assert all("You are playing the user" in u and "About you: A" in u for u in users)


def test_chat_messages_are_cleaned_and_checked(tmp_path: Path) -> None:
    assert clean_message('User: "Hi there!"\nAssistant: Hello!') == "Hi there!"
    assert clean_message("Sure thing.\nUser: and more") == "Sure thing."
    with pytest.raises(ParseError, match="roles do not alternate"):
        check_turns([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    with pytest.raises(ParseError, match="empty turn"):
        check_turns([{"role": "user", "content": "a"}, {"role": "assistant", "content": " "}])

    def answer(request: Request, index: int) -> str:
        if request.messages[0]["role"] == "system":
            return "Hi! Nice to hear from you."  # the same reply every turn: repeats
        return f"User: hello number {len(last(request))}\nAssistant: hi"

    step = SimulatedChat(system_prompt="Be brief.", n_turns=2)
    on_model(Pipeline([step], source=[{"x": 1}]), FakeModel(answer)).run(tmp_path / "o")
    assert failures(tmp_path / "o") == {"turn repeats an earlier one": 1}


def test_a_chat_message_cut_at_max_tokens_keeps_its_full_sentences(tmp_path: Path) -> None:
    def answer(request: Request, index: int) -> Completion:
        if "You are playing the user" in last(request):
            return Completion("Hi there, how are you? I wanted to ask about the", "length")
        return Completion("Doing well, thanks! And you", "length")

    trimmed = SimulatedChat(n_turns=1, trim_cut=True)
    rows = on_model(Pipeline([trimmed], source=[{"x": 1}]), FakeModel(answer)).run(tmp_path / "a")
    assert rows.rows[0]["conversation"] == [
        {"role": "user", "content": "Hi there, how are you?"},
        {"role": "assistant", "content": "Doing well, thanks!"},
    ]
    strict = SimulatedChat(n_turns=1)
    on_model(Pipeline([strict], source=[{"x": 1}]), FakeModel(answer)).run(tmp_path / "b")
    assert failures(tmp_path / "b") == {"truncated at max_tokens": 1}


def test_everyday_chats_are_short_small_talk(tmp_path: Path) -> None:
    def answer(request: Request, index: int) -> str:
        if request.messages[0]["role"] == "system":
            return "Doing well, thanks! " + ("very " * 55 if "rain" in last(request) else "You?")
        n = sum("User:" in line for line in last(request).splitlines())
        return ["Hey, how are you today?", "It might rain later, sadly."][min(n, 1)]

    model = FakeModel(answer)
    # a budget the long reply fits in (the recipe's 56 tokens would cut and trim it)
    p = on_model(load_recipe("everyday-chats", ["simulated_chat.response_max_tokens=200"]), model)
    result = p.run(tmp_path / "out", limit=3)
    assert failures(tmp_path / "out") == {"turn too long (> 50 words)": 3}
    assert not result.rows
    assert all(
        "at most 50 words" in last(c) for c in model.calls if c.messages[0]["role"] == "user"
    )
    ok = on_model(load_recipe("everyday-chats"), FakeModel()).run(tmp_path / "ok", limit=3)
    for r in ok.rows:
        assert all(len(m["content"].split()) <= 50 for m in r["messages"])
        assert [m["role"] for m in r["messages"]] == ["system"] + ["user", "assistant"] * 2


@pytest.mark.real
@pytest.mark.timeout(900)
def test_rewrite_on_the_embedded_model(embedded_model: Any, tmp_path: Path) -> None:
    overrides = ["rewrite_text.write_max_tokens=120", "rewrite_text.max_tokens=200"]
    p = on_model(load_recipe("rewrite", overrides), embedded_model)
    began = time.monotonic()
    result = p.run(tmp_path / "out", limit=2)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    print(f"\nrewrite: {len(result.rows)} rows, {run['model_calls']} calls, "
          f"{time.monotonic() - began:.1f}s; losses {run['failures']}")  # fmt: skip
    assert run["model_calls"] >= 2
    known = {"rewrite identical to the text", "rewrite barely changed", "rewrite over 3x its text",
             "truncated at max_tokens", "empty completion", "written text too short (< 20 words)"}  # fmt: skip
    assert set(run["failures"]) <= known, run["failures"]
    for r in result.rows:
        assert r["rewrite"].strip() and r["rewrite"] != r["text"]
        assert r["messages"][1]["content"] == r["rewrite"]
