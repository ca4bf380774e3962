"""Mixtures with targets: the final, filtered rows hold each part in its target share; the
top-up feeds more of the parts the filters drop, cuts the over-filled ones, and says when a part
fell short. Every setting is checked before any model call."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datamill import ConfigError, FakeModel, Pipeline, PipelineError, TextGeneration
from datamill.cli import app
from datamill.models.base import Request
from datamill.pipeline.mix import Mix
from datamill.steps.filters import KeywordFilter
from datamill.tasks.classify import Classify, parse_label

TASKS = {
    "qa": ["What is the capital of Peru?", "Why do leaves fall?", "Who wrote Hamlet?"],
    "code": ["Code: reverse a list in Python.", "Code: parse a date in Go.", "Code: sum a column."],
    "chat": ["Hi, how was your day?", "Tell me something cheerful."],
}
SEEDS = [{"instruction": text, "task": task} for task, texts in TASKS.items() for text in texts]
TARGETS = {"qa": 0.5, "code": 0.3, "chat": 0.2}


def user_text(request: Request) -> str:
    return next(m["content"] for m in request.messages or [] if m["role"] == "user")


def code_fails_half(request: Request, index: int) -> str:
    """Answers every prompt; a code answer is BROKEN for every other seed (about half)."""
    text = user_text(request)
    if text.startswith("Code:") and (request.seed or 0) % 2 == 0:
        return "BROKEN answer"
    return f"An answer to: {text} (seed {request.seed})"


def answer_and_filter() -> list:
    return [
        TextGeneration(template="{{ instruction }}", output="response"),
        KeywordFilter(column="response", keywords=["broken"]),
    ]


def test_a_filtered_part_is_fed_more_until_the_mix_meets_its_targets(tmp_path: Path) -> None:
    model = FakeModel(code_fails_half)
    p = Pipeline(
        answer_and_filter(),
        source=SEEDS,
        models={"default": model},
        target_rows=100,
        max_attempts=1000,
        mix={"by": "task", "targets": TARGETS, "tolerance": 0.02},
    )
    result = p.run(tmp_path / "out")
    assert Counter(r["task"] for r in result.rows) == {"qa": 50, "code": 30, "chat": 20}
    assert all("BROKEN" not in r["response"] for r in result.rows)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    mix = run["mix"]
    assert mix["within_tolerance"] is True and mix["short"] == {}
    assert mix["actual"] == {"qa": 0.5, "code": 0.3, "chat": 0.2}
    assert run["reached"] is True and run["rows"] == 100
    # code survives about half the time, so it was fed about twice its share of source rows
    fed = mix["tried"]
    assert fed["code"] / fed["qa"] > 1.2 * (0.3 / 0.5)
    assert run["failures"] == {"blacklisted keyword": run["steps"]["filter_keywords"]["failed"]}
    # the report shows the mix against the targets, in report.json, the card and the CLI
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["mix"]["rows"] == [
        {"part": "qa", "target": 0.5, "actual": 0.5, "count": 50},
        {"part": "code", "target": 0.3, "actual": 0.3, "count": 30},
        {"part": "chat", "target": 0.2, "actual": 0.2, "count": 20},
    ]
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| code | 0.30 | 0.30 | 30 |" in card
    shown = CliRunner().invoke(app, ["report", str(tmp_path / "out")])
    assert shown.exit_code == 0, shown.output
    assert "mix by task" in shown.output and "within tolerance 0.02" in shown.output
    assert [line.split()[:4] for line in shown.output.splitlines() if "│ code" in line] == [
        ["│", "code", "│", "0.30"]
    ]


def test_without_a_mix_the_same_filters_skew_the_shares(tmp_path: Path) -> None:
    """The control: the plain top-up reaches 100 rows, but code falls short of its 30%."""
    seeds = [row for row in SEEDS for _ in range({"qa": 5, "code": 3, "chat": 2}[row["task"]])]
    p = Pipeline(
        answer_and_filter(),
        source=seeds,
        models={"default": FakeModel(code_fails_half)},
        target_rows=100,
        max_attempts=1000,
    )
    result = p.run(tmp_path / "out")
    share = Counter(r["task"] for r in result.rows)["code"] / len(result.rows)
    assert share < 0.3 - 0.02


def classify_by_keyword(request: Request, index: int) -> str:
    """A fake that writes instructions (about cooking, maths or travel, by seed) and tags them
    by what they talk about; a cooking instruction is answered BROKEN half the time."""
    text = user_text(request)
    if text.startswith("Classify the text below"):
        body = text.split("## Text", 1)[1]
        return next(t for t in ("cooking", "maths", "travel") if t in body)
    if text.startswith("Write an instruction"):
        return f"An instruction about {('cooking', 'maths', 'travel')[(request.seed or 0) % 3]}"
    if "cooking" in text and (request.seed or 0) % 2 == 0:
        return "BROKEN"
    return f"answer {request.seed}"


def test_tags_from_a_classify_step_are_filled_by_generating_and_classifying(tmp_path: Path) -> None:
    model = FakeModel(classify_by_keyword)
    p = Pipeline(
        [
            TextGeneration(template="Write an instruction ({{ row }}).", output="instruction"),
            Classify(labels=["cooking", "maths", "travel"], output="topic", structured="text"),
            TextGeneration(template="{{ instruction }}", output="response"),
            KeywordFilter(column="response", keywords=["broken"]),
        ],
        source=[{"row": i} for i in range(12)],
        models={"default": model},
        target_rows=50,
        max_attempts=500,
        mix={"by": "topic", "targets": {"cooking": 0.6, "maths": 0.2, "travel": 0.2}},
    )
    result = p.run(tmp_path / "out")
    assert Counter(r["topic"] for r in result.rows) == {"cooking": 30, "maths": 10, "travel": 10}
    mix = result.summary["mix"]
    assert mix["within_tolerance"] is True and mix["cut"]["maths"] > 0  # over-filled: cut
    assert "tried" not in mix  # the tag came from a step, not the source


def test_the_cap_stops_a_short_mix_and_says_which_part(tmp_path: Path) -> None:
    recipe = tmp_path / "mix.yaml"
    rows = [
        {"instruction": f"Tell me about {t} {i}.", "task": t}
        for t in ("qa", "chat")
        for i in range(3)
    ]
    recipe.write_text(
        json.dumps(
            {
                "name": "short-mix",
                "source": {"rows": rows},
                "steps": [
                    {"text_generation": {"output": "response"}},
                    {"filter_keywords": {"column": "instruction", "keywords": ["chat"]}},
                ],
                "target_rows": 20,
                "max_attempts": 40,
                "mix": {"by": "task", "targets": {"qa": 0.5, "chat": 0.5}},
            }
        )
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(recipe), "--model", "fake", "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert run["attempts"] == 40 and run["reached"] is False
    assert run["mix"]["short"] == {"chat": 10} and run["mix"]["rows"] == {"qa": 10, "chat": 0}
    lines = [line for line in result.stderr.splitlines() if "fell short" in line]
    assert len(lines) == 1
    assert "chat 0 of 10 rows" in lines[0] and "max_attempts 40" in lines[0]


@pytest.mark.parametrize(
    ("mix", "target_rows", "problem"),
    [
        ({"by": "task", "targets": {"qa": 0.5, "code": 0.3}}, 10, "must sum to 1"),
        ({"by": "task", "targets": TARGETS, "tolerance": 0}, 10, "between 0 and 1"),
        ({"by": "task", "targets": TARGETS, "tolerance": 1.5}, 10, "between 0 and 1"),
        ({"by": "task", "targets": {"qa": 1.0}}, 10, "at least two parts"),
        ({"by": "task", "targets": {"qa": 1.2, "code": -0.2}}, 10, "above 0"),
        ({"by": "task", "targets": TARGETS, "share": 1}, 10, "unknown field 'share'"),
        ({"by": "task", "targets": TARGETS}, None, "mix needs target_rows"),
        ({"by": "task", "targets": TARGETS}, 7, "use target_rows 10, 14, 16, 20, 22 or any"),
    ],
)
def test_a_bad_mix_is_one_line_before_any_call(
    mix: dict, target_rows: int | None, problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem) as err:
        Pipeline(
            answer_and_filter(),
            source=SEEDS,
            models={"default": FakeModel()},
            target_rows=target_rows,
            mix=mix,
        )
    assert "\n" not in str(err.value)


def test_a_tag_column_no_row_has_or_a_part_no_source_row_has_fails_before_any_call(
    tmp_path: Path,
) -> None:
    model = FakeModel()
    missing = Pipeline(
        answer_and_filter(),
        source=SEEDS,
        models={"default": model},
        target_rows=10,
        mix={"by": "kind", "targets": {"a": 0.5, "b": 0.5}},
    )
    with pytest.raises(PipelineError, match="mix.by is 'kind', but the final rows only have"):
        missing.run(tmp_path / "a")
    absent = Pipeline(
        answer_and_filter(),
        source=SEEDS,
        models={"default": model},
        target_rows=10,
        mix={"by": "task", "targets": {"qa": 0.5, "poetry": 0.5}},
    )
    with pytest.raises(ConfigError, match="no source row has task = 'poetry'"):
        absent.run(tmp_path / "b")
    assert model.calls == []


def test_a_part_the_classifier_cannot_write_fails_before_any_call() -> None:
    model = FakeModel()
    p = Pipeline(
        [Classify(labels=["cooking", "maths"], output="topic", template="{{ instruction }}")],
        source=SEEDS,
        models={"default": model},
        target_rows=10,
        mix={"by": "topic", "targets": {"cooking": 0.5, "travel": 0.5}},
    )
    with pytest.raises(PipelineError, match="names 'travel', which step 1 \\(classify\\) never"):
        p.run()
    assert model.calls == []


def test_counts_follow_the_largest_remainder_and_sum_to_the_total() -> None:
    mix = Mix.parse({"by": "t", "targets": {"a": 0.5, "b": 0.3, "c": 0.2}})
    assert mix.counts(100) == {"a": 50, "b": 30, "c": 20}
    assert mix.counts(51) == {"a": 26, "b": 15, "c": 10}  # 25.5, 15.3, 10.2: a gets the extra
    assert sum(mix.counts(37).values()) == 37


def test_a_part_a_few_rows_short_is_made_up_within_the_tolerance() -> None:
    mix = Mix.parse({"by": "t", "targets": {"a": 0.5, "b": 0.3, "c": 0.2}, "tolerance": 0.02})
    assert mix.allot({"a": 60, "b": 40, "c": 30}, 100) == {"a": 50, "b": 30, "c": 20}
    # b is 2 rows short (0.28, within 0.02): a, next in line with rows to spare, makes them up
    assert mix.allot({"a": 55, "b": 28, "c": 22}, 100) == {"a": 52, "b": 28, "c": 20}
    assert mix.allot({"a": 51, "b": 28, "c": 22}, 100) == {"a": 51, "b": 28, "c": 21}
    assert mix.allot({"a": 55, "b": 27, "c": 22}, 100) is None  # 0.27: beyond the tolerance
    assert mix.allot({"a": 50, "b": 28, "c": 20}, 100) is None  # nobody can make up b's rows


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("code", "code"),
        ("Code.", "code"),
        ('"QA"', "qa"),
        ('{"label": "chat"}', "chat"),
        ("code: it asks for a function", "code"),
    ],
)
def test_a_label_is_read_only_when_the_answer_names_one(answer: str, label: str) -> None:
    assert parse_label(answer, ["qa", "code", "chat"]) == label


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("poetry", "no label in answer"),
        ("either qa or chat", "several labels in answer"),
        ('{"label": "poetry"}', "label not in the label set"),
    ],
)
def test_an_answer_without_exactly_one_label_is_a_parse_error(answer: str, reason: str) -> None:
    from datamill.errors import ParseError

    with pytest.raises(ParseError, match=reason):
        parse_label(answer, ["qa", "code", "chat"])


def long_code_half_the_time(request: Request, index: int) -> str:
    """Every answer is short, except a code answer for every other seed: 150 words, which the
    recipe's length filter drops."""
    if "Python function" in user_text(request) and (request.seed or 0) % 2 == 0:
        return " ".join(["def"] * 150)
    return f"A short answer (seed {request.seed})."


def test_the_builtin_mixture_recipe_meets_its_targets_when_code_fails_half(tmp_path: Path) -> None:
    from datamill.pipeline.graph import ModelSettings
    from datamill.recipes.loader import builtin_recipes, load_recipe

    assert "mixture" in builtin_recipes()
    p = load_recipe("mixture")
    p.models = {"default": ModelSettings(spec=FakeModel(long_code_half_the_time))}
    result = p.run(tmp_path / "out")
    assert Counter(r["task"] for r in result.rows) == {"qa": 25, "code": 15, "poem": 10}
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["mix"]["within_tolerance"] is True
    assert run["failures"] == {
        "too long (> 100 words)": run["mix"]["tried"]["code"]
        - 15
        - run["mix"]["cut"].get("code", 0)
    }
    assert set(result.rows[0]) == {"messages", "prompt_id", "task"}


@pytest.mark.real
def test_the_mixture_recipe_on_the_embedded_model(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["run", "mixture", "--limit", "40", "--set", "target_rows=10", "-o", str(out), "-q"]
    result = CliRunner().invoke(app, args)  # --limit caps the top-up's tries (tests/test_limit.py)
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert run["attempts"] <= 40
    assert run["mix"]["rows"] == {"qa": 5, "code": 3, "poem": 2}
    assert run["mix"]["within_tolerance"] is True
    assert sum(run["mix"]["tried"].values()) == run["attempts"]


def test_a_mix_over_fixed_rows_first_feeds_each_part_its_count(tmp_path: Path) -> None:
    """30 inline rows (10 per part), 10 wanted 5/3/2, nothing lost: 10 calls on the first rows
    of each part, no row cut; a lossy part then gets rows beyond under keys of their own."""
    tasks = ("qa", "code", "chat")
    rows = [{"instruction": f"Code: {i}", "task": tasks[i % 3]} for i in range(30)]
    fake = FakeModel()
    p = Pipeline(
        [TextGeneration(template="{{ instruction }}", output="response")],
        source=rows,
        models={"default": fake},
        target_rows=10,
        mix={"by": "task", "targets": TARGETS},
    )
    result = p.run(tmp_path / "a", cache=False)
    assert len(fake.calls) == 10 and result.summary["attempts"] == 10
    assert result.summary["mix"]["cut"] == {} and "trimmed" not in result.summary
    assert sorted(r["instruction"] for r in result.rows) == sorted(
        f"Code: {i}" for i in [0, 3, 6, 9, 12, 1, 4, 7, 2, 5]
    )
    lossy = Pipeline(
        answer_and_filter(),
        source=rows,
        models={"default": FakeModel(code_fails_half)},
        target_rows=10,
        max_attempts=200,
        mix={"by": "task", "targets": TARGETS},
    )
    result = lossy.run(tmp_path / "b", cache=False)
    assert Counter(r["task"] for r in result.rows) == {"qa": 5, "code": 3, "chat": 2}
    assert all("BROKEN" not in r["response"] for r in result.rows)
    assert result.summary["mix"]["tried"]["code"] > 3 and result.summary["rounds"] > 1


def test_the_yield_counts_rows_the_steps_kept_and_the_mix_cuts_are_said_apart(
    tmp_path: Path,
) -> None:
    """Nothing lost by the steps, rows cut by the mix: the yield is 1.00 (not kept / tried), and
    the cut rows are named as the mix's in the run line, the card and ``datamill report``."""
    from datamill import step
    from datamill.io.sources import EmptyRows

    tag = step(reads=["row"], writes=["task"])(
        lambda r: {**r, "task": "qa" if r["row"] < 6 else "code"}
    )
    p = Pipeline(
        [tag],
        source=EmptyRows(20),
        models={"default": FakeModel()},
        target_rows=4,
        mix={"by": "task", "targets": {"qa": 0.5, "code": 0.5}},
    )
    result = p.run(tmp_path / "out")
    # round 1: rows 0-3, all qa; round 2: 4 more (4-7: qa, qa, code, code); 4 qa cut
    assert [(r["row"], r["task"]) for r in result.rows] == [
        (0, "qa"), (1, "qa"), (6, "code"), (7, "code"),
    ]  # fmt: skip
    summary = result.summary
    assert (summary["attempts"], summary["yield"], summary["trimmed"]) == (8, 1.0, 4)
    assert summary["mix"]["cut"] == {"qa": 4}
    from datamill.cli.run import topup_line

    line = (
        "target of 4 rows reached after 8 source rows tried; yield 1.00 rows per source row; "
        "4 rows cut by the mix"
    )
    assert topup_line(summary) == line
    assert f"- {line}\n" in (tmp_path / "out" / "README.md").read_text()
    shown = CliRunner().invoke(app, ["report", str(tmp_path / "out")])
    assert line in " ".join(shown.output.split()), shown.output


def test_a_target_rows_the_mix_cannot_meet_is_one_line_naming_the_totals_that_fit(
    tmp_path: Path,
) -> None:
    from datamill.recipes.loader import load_recipe

    path = tmp_path / "mix.yaml"
    path.write_text(
        "name: m\nsource:\n  rows: [{task: qa}, {task: code}, {task: chat}]\n"
        "steps:\n  - text_generation: {output: q}\ntarget_rows: 15\n"
        "mix:\n  by: task\n  targets: {qa: 0.5, code: 0.3, chat: 0.2}\n  tolerance: 0.02\n"
    )
    with pytest.raises(ConfigError) as err:
        load_recipe(str(path))
    assert str(err.value) == (
        f"{path}:7: mix: 15 rows cannot meet the targets within tolerance 0.02 in whole rows "
        "(qa 8, code 4, chat 3); use target_rows 10, 14, 16, 20, 22 or any from 24"
    )
