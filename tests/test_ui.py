"""The web app's parts without a browser: drafting, form → recipe, jobs, viewer, push, CLI.

Everything runs on the fake model (``fake`` spec or a FakeModel object); the browser test
(tests/test_ui_browser.py) drives the whole app on the embedded model.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from pathlib import Path

import pytest

from datamill import (
    CallCache,
    Completion,
    FakeModel,
    FormatSFT,
    Pipeline,
    Request,
    TextGeneration,
)
from datamill.cli import main
from datamill.errors import ConfigError, InputError
from datamill.recipes.loader import load_recipe, recipe_from_dict
from datamill.ui import app, builder, drafting, handlers, viewer
from datamill.ui.form import FIELDS, FormValues
from datamill.ui.hub import check_push
from datamill.ui.jobs import Job

BIKE = "customer support for a bike shop"


# -- drafting ----------------------------------------------------------------------------------
def test_template_prompt_describes_the_users_not_the_data() -> None:
    prompt = drafting.template_prompt(BIKE)
    assert prompt.startswith(
        "You are an AI assistant. Users come to you with questions and requests"
    )
    assert '"customer support for a bike shop"' in prompt
    assert "generate" not in prompt.lower()


#: The grammar of the template: fixed sentences, the topic only ever quoted after a colon.
PROMPT_SHAPE = re.compile(
    r'You are an AI assistant\. Users come to you with questions and requests on this topic: "([^"]+)"\. '
    r"Answer each one accurately, clearly and concisely\."
)


@pytest.mark.parametrize(
    ("description", "topic"),
    [
        # a clause: kept whole ("questions" is not peeled without its preposition)
        (
            "questions a beginner asks about baking sourdough bread",
            "questions a beginner asks about baking sourdough bread",
        ),
        ("help me write cover letters", "help me write cover letters"),  # an imperative
        ('Write a poem about "cats"!', "write a poem about 'cats'"),  # inner quotes made single
        ("Baking.", "baking"),  # one word, trailing punctuation
        ("“Tax law?”", "tax law"),  # wrapped in quotes
        ("data science interview questions", "data science interview questions"),
        ("A dataset of questions about bike repair.", "bike repair"),  # a noun phrase, peeled
        (
            "I run a small bike shop.\n  My customers ask about repairs, prices and opening hours;\n"
            "they are often in a hurry...",
            "I run a small bike shop. My customers ask about repairs, prices and opening hours; "
            "they are often in a hurry",
        ),  # a paragraph: collapsed, quoted whole
        ("dataset", "dataset"),  # nothing but dataset words: kept as typed
    ],
)
def test_template_prompt_reads_as_sentences_for_any_description(
    description: str, topic: str
) -> None:
    prompt = drafting.template_prompt(description)
    shape = PROMPT_SHAPE.fullmatch(prompt)
    assert shape is not None, prompt
    assert shape.group(1) == topic
    assert topic == topic.strip(" .!?;:,") and "  " not in topic and "\n" not in topic
    # no word of the description is dropped from the middle: the topic is its tail
    typed = " ".join(description.split()).replace('"', "'").strip(" .!?;:,“”").lower()
    assert typed.endswith(topic.lower())


def test_empty_description_is_one_clear_error() -> None:
    for empty in ("   ", " ?! ", '""'):
        with pytest.raises(ConfigError, match="describe the dataset"):
            drafting.template_prompt(empty)
    prompt, note = handlers.draft_template("")
    assert prompt == "" and note.startswith("⚠") and "describe the dataset" in note


def test_clean_model_draft_keeps_only_a_second_person_prompt() -> None:
    raw = 'System prompt: "You are a friendly helper for bike shop customers. You answer repair questions."\n\nExample: x'
    assert (
        drafting.clean_model_draft(raw)
        == "You are a friendly helper for bike shop customers. You answer repair questions."
    )
    assert drafting.clean_model_draft("Sure! Here is a prompt for the shop.") is None
    assert drafting.clean_model_draft("you are short") is None
    assert (
        drafting.clean_model_draft(
            "I'm here to help. You're looking for recipes and cooking times, I can help."
        )
        is None
    )
    copied = (
        "You are an AI assistant that helps users with cooking at home. Users ask you for recipes."
    )
    assert drafting.clean_model_draft(copied, BIKE) is None  # the worked example, not the topic
    assert (
        drafting.clean_model_draft(copied.replace("cooking at home", "bike repairs"), BIKE)
        is not None
    )


def test_draft_with_model_uses_the_engine_and_its_cache() -> None:
    good = "System prompt: You are an AI assistant that helps bike shop customers with repairs, orders and returns."
    model = FakeModel(lambda request, i: good)
    draft = drafting.draft_with_model(BIKE, model)
    assert draft.source == "model"
    assert (
        draft.text
        == "You are an AI assistant that helps bike shop customers with repairs, orders and returns."
    )
    assert len(model.calls) == 1 and BIKE in model.calls[0].messages[-1]["content"]  # type: ignore[index]
    again = drafting.draft_with_model(BIKE, model)  # same request → served by the call cache
    assert again.text == draft.text and len(model.calls) == 1


def test_draft_with_model_falls_back_to_the_template_when_the_answer_is_unusable() -> None:
    model = FakeModel(lambda request, i: "Bike bike bike.")
    draft = drafting.draft_with_model(BIKE, model)
    assert draft.source == "template"
    assert draft.text == drafting.template_prompt(BIKE)
    assert "did not read as a system prompt" in draft.note


# -- form → recipe -----------------------------------------------------------------------------
def test_model_spec_for_each_choice(tmp_path: Path) -> None:
    assert builder.model_spec("embedded") == "llamacpp"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert builder.model_spec("gguf", str(gguf)) == f"llamacpp:{gguf}"
    assert (
        builder.model_spec("openai", url="http://127.0.0.1:8000/v1", model_name="qwen")
        == "openai:qwen@http://127.0.0.1:8000/v1"
    )
    assert builder.model_spec(
        "openai", url="https://x.example/v1", model_name="m", api_key_env="MY_KEY"
    ) == {
        "spec": "openai:m@https://x.example/v1",
        "api_key_env": "MY_KEY",
    }
    with pytest.raises(ConfigError, match="does not exist"):
        builder.model_spec("gguf", str(tmp_path / "missing.gguf"))
    with pytest.raises(ConfigError, match="http"):
        builder.model_spec("openai", url="127.0.0.1:8000", model_name="m")
    with pytest.raises(ConfigError, match="model name"):
        builder.model_spec("openai", url="http://127.0.0.1:8000/v1")
    with pytest.raises(ConfigError, match="unknown model choice"):
        builder.model_spec("gpu-please")


def test_spec_check_rejects_bad_form_values() -> None:
    with pytest.raises(ConfigError, match="system prompt is empty"):
        builder.DatasetSpec(system_prompt=" ").check()
    with pytest.raises(ConfigError, match="at least 1"):
        builder.DatasetSpec(system_prompt="You are x.", num_rows=0).check()
    with pytest.raises(ConfigError, match="unknown technique"):
        builder.DatasetSpec(system_prompt="You are x.", technique="magic").check()
    with pytest.raises(ConfigError, match="unknown dataset kind"):
        builder.DatasetSpec(system_prompt="You are x.", kind="rlhf").check()


def test_recipe_yaml_is_a_recipe_the_cli_loads(tmp_path: Path) -> None:
    spec = builder.DatasetSpec(
        system_prompt=drafting.template_prompt(BIKE),
        technique="prompting",
        num_rows=3,
        model="fake",
        max_tokens=64,
    )
    recipe = builder.build_recipe(spec)
    path = tmp_path / "recipe.yaml"
    path.write_text(builder.recipe_yaml(recipe), encoding="utf-8")
    loaded = load_recipe(str(path))
    direct = recipe_from_dict(recipe)
    assert [s.label for s in loaded.steps] == [s.label for s in direct.steps]
    assert loaded.models["default"].spec == "fake"
    assert loaded.source is not None and len(loaded.source.load()) == 3


def judge_or_answer(request, i):  # type: ignore[no-untyped-def]
    """A fake model that writes queries, answers by temperature, and rates the hotter answers worse."""
    if request.prompt is not None:  # Magpie's pre-query prompt
        return "How do I fix a flat tyre on my road bike?"
    if request.json_schema is not None:  # the UltraFeedback judge (structured output)
        user = request.messages[-1]["content"]
        shown = re.findall(r"<text (\d+)>\n(.*?)\n</text \1>", user, flags=re.S)
        return json.dumps(
            {
                f"text_{k}": {"rationale": "clear steps", "rating": 5}
                if "0.3" in text
                else {"rationale": "rambles", "rating": 2}
                for k, text in shown
            }
        )
    return f"answer at temperature {request.temperature} ({request.seed})"


@pytest.mark.parametrize("technique", ["magpie", "self_instruct", "prompting"])
def test_sft_recipe_for_each_technique_runs_on_the_fake(technique: str, tmp_path: Path) -> None:
    spec = builder.DatasetSpec(
        system_prompt=drafting.template_prompt(BIKE),
        description=BIKE,
        technique=technique,
        num_rows=4,
        model="fake",
        max_tokens=64,
    )
    result = builder.build_pipeline(spec).run(tmp_path / technique)
    assert len(result.rows) == 4, result.stats.losses()  # the rows asked for, topped up
    assert result.summary["target_rows"] == 4 and result.summary["reached"]
    # the fake writes 3 queries per SelfInstruct context: a second context makes up the 4th row
    assert result.summary["attempts"] == (2 if technique == "self_instruct" else 4)
    assert all(
        r["messages"][0] == {"role": "system", "content": spec.system_prompt} for r in result.rows
    )
    assert all(r["messages"][-1]["role"] == "assistant" for r in result.rows)


def test_recipes_are_cut_from_the_builtin_templates() -> None:
    sp = drafting.template_prompt(BIKE)
    magpie = builder.build_recipe(
        builder.DatasetSpec(system_prompt=sp, technique="magpie", num_rows=7, max_tokens=300)
    )
    kinds = [next(iter(s)) for s in magpie["steps"]]
    assert kinds[:3] == [
        "magpie",
        "filter_ends_with",
        "filter_refusal",
    ]  # as in the built-in magpie recipe
    params = magpie["steps"][0]["magpie"]
    assert (
        params["system_prompt"] == sp
        and params["response_max_tokens"] == 300
        and magpie["source"] == {"num_rows": 7}
    )
    seeded = builder.build_recipe(
        builder.DatasetSpec(
            system_prompt=sp, description=BIKE, technique="self_instruct", num_rows=10
        )
    )
    assert [next(iter(s)) for s in seeded["steps"]][:4] == [
        "self_instruct",
        "expand",
        "filter_self_instruct",
        "text_generation",
    ]
    assert (
        seeded["source"]["rows"][0]["input"] == BIKE and seeded["source"]["repeat"] == 3
    )  # 4 queries per context
    dpo = builder.build_recipe(
        builder.DatasetSpec(
            system_prompt=sp, kind="dpo", technique="magpie", model="llamacpp:/m.gguf"
        )
    )
    assert [next(iter(s)) for s in dpo["steps"]][-4:] == [
        "response_pool",
        "ultrafeedback",
        "format_dpo",
        "keep",
    ]
    assert dpo["steps"][0]["magpie"]["only_instruction"] is True
    assert {m["spec"] if isinstance(m, dict) else m for m in dpo["models"].values()} == {
        "llamacpp:/m.gguf"
    }
    assert (
        dpo["models"]["a"]["temperature"] != dpo["models"]["b"]["temperature"]
    )  # two samplers make the pool


def test_preference_dataset_from_the_form_and_its_viewer(tmp_path: Path) -> None:
    from datamill.pipeline.graph import ModelSettings

    spec = builder.DatasetSpec(
        system_prompt=drafting.template_prompt(BIKE),
        kind="dpo",
        technique="magpie",
        num_rows=3,
        model="fake",
        max_tokens=64,
    )
    pipeline = builder.build_pipeline(spec)
    fake = FakeModel(judge_or_answer)
    pipeline.models = {
        name: ModelSettings(spec=fake, sampling=s.sampling) for name, s in pipeline.models.items()
    }
    job = Job(pipeline, tmp_path / "dpo").start()
    assert job.wait(60) and job.state == "done", job.error
    view = viewer.open_folder(tmp_path / "dpo")
    assert view.kind == "dpo" and len(view.rows) == 3
    row = view.rows[0]
    assert row["score_chosen"] == 5 and row["score_rejected"] == 2
    html_row = viewer.render_row(row)
    assert "answer at temperature 0.3" in html_row and "answer at temperature 1.1" in html_row
    assert (
        html_row.index("temperature 0.3")
        < html_row.index("dm-rejected")
        < html_row.index("temperature 1.1")
    )
    assert "clear steps" in html_row and "rambles" in html_row  # each side's rationale


# -- jobs ----------------------------------------------------------------------------------------
def sft_pipeline(model: FakeModel, rows: int) -> Pipeline:
    return Pipeline(
        [
            TextGeneration(output="question", truncated="keep"),
            TextGeneration(template="{{ question }}", output="response"),
            FormatSFT(instruction="question", response="response"),
        ],
        source=[{"instruction": f"seed {i}"} for i in range(rows)],
        models={"default": model},
        name="job-test",
    )


def test_job_runs_in_the_background_and_reports_progress(tmp_path: Path) -> None:
    # the calls wait until the test has seen the running job's progress: the job cannot finish
    # between two looks, however slow this thread is on a loaded machine (bounds stop a hang)
    seen_running = threading.Event()

    class Gated(FakeModel):
        async def generate(self, request: Request) -> list[Completion]:
            for _ in range(6000):
                if seen_running.is_set():
                    break
                await asyncio.sleep(0.01)
            return await super().generate(request)

    job = Job(sft_pipeline(Gated(max_concurrency=2), 6), tmp_path / "out").start()
    for _ in range(6000):
        progress = job.progress()
        if progress.state == "running" and progress.total == 6:
            seen_running.set()
            break
        time.sleep(0.01)
    assert seen_running.is_set(), job.progress()
    assert job.wait(60)
    assert job.state == "done", job.error
    final = job.progress()
    assert final.fraction == 1.0 and final.text.startswith("6 rows")
    assert (tmp_path / "out" / "data" / "train-00000-of-00001.parquet").exists()
    assert json.loads((tmp_path / "out" / "run.json").read_text())["rows"] == 6
    assert job.summary_line().startswith(f"wrote 6 rows to {tmp_path / 'out'}")


def test_cancelled_job_keeps_finished_calls_in_the_cache(
    tmp_path: Path, isolated_cache: Path
) -> None:
    # four calls answer at once, every later one takes an hour: the job is surely still running
    # when it is cancelled, whatever the load (the loop below bounds a hang, it times nothing)
    asked: list[Request] = []

    def latency(request: Request) -> float:
        asked.append(request)
        return 0.0 if len(asked) <= 4 else 3600.0

    model = FakeModel(latency=latency, max_concurrency=2)
    job = Job(sft_pipeline(model, 40), tmp_path / "out").start()
    for _ in range(6000):
        if job.stats is not None and job.stats.model_calls >= 4:
            break
        time.sleep(0.01)
    assert job.stats is not None and job.stats.model_calls >= 4 and job.state == "running"
    job.cancel()
    assert job.wait(30)
    assert job.state == "cancelled"
    assert "cached" in job.summary_line()
    assert not (tmp_path / "out" / ".datamill.lock").exists()
    cache = CallCache(isolated_cache)
    try:
        assert len(cache) >= 4
    finally:
        cache.close()
    resumed = Job(sft_pipeline(FakeModel(), 40), tmp_path / "out").start()
    assert resumed.wait(60) and resumed.state == "done"
    assert resumed.result is not None and resumed.result.stats.cache_hits >= 4


def test_topup_line_says_whether_the_row_target_was_reached() -> None:
    from datamill.ui.jobs import topup_line

    assert topup_line({"rows": 3}) == ""  # no target: nothing to say
    one = {"target_rows": 1, "reached": True, "attempts": 1, "max_attempts": 4}
    assert topup_line(one) == "target of 1 row reached after 1 source row tried"
    reached = {"target_rows": 3, "reached": True, "attempts": 6, "max_attempts": 12, "trimmed": 1}
    assert (
        topup_line(reached)
        == "target of 3 rows reached after 6 source rows tried; 1 surplus row cut"
    )
    short = {"target_rows": 3, "reached": False, "attempts": 12, "max_attempts": 12}
    assert (
        topup_line(short)
        == "target of 3 rows not reached after 12 source rows tried (the cap, max_attempts 12)"
    )


def test_failed_job_reports_one_line(tmp_path: Path) -> None:
    p = Pipeline(
        [TextGeneration(template="{{ missing }}")],
        source=[{"instruction": "x"}],
        models={"default": FakeModel()},
    )
    job = Job(p, tmp_path / "out").start()
    assert job.wait(30)
    assert job.state == "failed"
    assert "needs column 'missing'" in job.summary_line() and "\n" not in job.summary_line()


# -- the app's handlers ----------------------------------------------------------------------------
#: the form on the fake model, with the prompting technique (one query call, one answer call)
FORM = FormValues(
    description=BIKE,
    system_prompt=drafting.template_prompt(BIKE),
    technique="prompting",
    model_source="fake",
    max_tokens=64,
    temperature=0.9,
)


def form(**changes: object) -> FormValues:
    return FORM.but(**changes)


def last(gen):  # type: ignore[no-untyped-def]
    """The final update of a streaming handler."""
    return list(gen)[-1]


def test_preview_shows_rows_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    status, rows_html = last(handlers.run_preview(form(preview_rows=2, num_rows=20)))
    assert 'data-state="done"' in status and "2 rows" in status
    assert rows_html.count('class="dm-row dm-sft"') == 2
    assert "on this topic: &quot;customer support for a bike shop&quot;" in rows_html
    assert list(tmp_path.iterdir()) == [] or not (tmp_path / "out").exists()


def test_preview_tops_up_to_the_rows_asked_for_and_lists_what_was_lost() -> None:
    # the fake's answers are 24-36 words: at 28 tokens most are cut, and cut answers are dropped
    status, rows_html = last(handlers.run_preview(form(max_tokens=28, preview_rows=3, num_rows=20)))
    assert 'data-state="done"' in status and "3 rows (" in status, status
    assert rows_html.count('class="dm-row dm-sft"') == 3
    losses_line = re.search(r"(\d+) rows? lost at answer: \1 truncated at max_tokens", status)
    topup = re.search(
        r"target of 3 rows reached after (\d+) source rows tried(?: \((\d+) rows? beyond it cut\))?",
        status,
    )
    assert losses_line and topup, status
    lost, tried, trimmed = int(losses_line.group(1)), int(topup.group(1)), int(topup.group(2) or 0)
    assert lost >= 1 and tried == 3 + lost + trimmed  # every attempt shown, lost or cut
    assert f"{lost} rows lost on the way" in rows_html or f"{lost} row lost on the way" in rows_html
    losses = rows_html[rows_html.index('id="dm-losses"') :]
    assert losses.count('class="dm-lost-reason">truncated at max_tokens<') == lost
    assert rows_html.index('class="dm-row dm-sft"') < rows_html.index('id="dm-losses"')


def test_preview_that_reaches_its_attempt_cap_shows_what_it_got_and_why() -> None:
    status, rows_html = last(
        handlers.run_preview(form(max_tokens=8, preview_rows=2, num_rows=20))
    )  # every answer is cut
    cap = builder.attempt_cap(builder.DatasetSpec(system_prompt="x", technique="prompting"), 2)
    assert (
        f"target of 2 rows not reached after {cap} source rows tried (the cap, max_attempts {cap})"
        in status
    )
    assert f"{cap} rows lost at answer: {cap} truncated at max_tokens" in status
    assert "no rows" in rows_html and f"{cap} rows lost on the way" in rows_html
    assert rows_html.count('class="dm-lost"') == cap


def test_generate_writes_the_cli_folder_reuses_preview_calls_and_offers_downloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    last(handlers.run_preview(form(preview_rows=2, num_rows=4)))
    status, rows_html, parquet, jsonl, job_id, folder = last(
        handlers.run_generate(form(num_rows=4, output=str(tmp_path / "ds")))
    )
    assert "wrote 4 rows" in status, status
    job = handlers.JOBS.get(job_id)
    assert job is not None and job.result is not None
    assert job.result.stats.cache_hits == 4  # the preview's two rows (question + answer each)
    out = Path(folder)
    for name in (
        "data/train-00000-of-00001.parquet",
        "run.json",
        "failures.jsonl",
        "README.md",
        "recipe.yaml",
    ):
        assert (out / name).exists(), name
    lines = Path(jsonl).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["messages"][0]["role"] == "system"
    import pyarrow.parquet as pq

    assert pq.read_table(parquet).num_rows == 4
    # the same run from the command line costs no model call: same engine, same cache
    main(["run", str(out / "recipe.yaml"), "-o", str(tmp_path / "again"), "-q"])
    again = json.loads((tmp_path / "again" / "run.json").read_text())
    assert again["rows"] == 4 and again["model_calls"] == 0 and again["cache_hits"] == 8


def test_selfinstruct_preview_is_the_start_of_the_same_run(tmp_path: Path) -> None:
    status, rows_html = last(
        handlers.run_preview(form(technique="self_instruct", preview_rows=2, num_rows=8))
    )
    assert (
        "model calls 4" in status and rows_html.count('class="dm-row dm-sft"') == 2
    )  # 1 context: 1 + 3 answers
    status, *_, job_id, folder = last(
        handlers.run_generate(
            form(technique="self_instruct", num_rows=8, output=str(tmp_path / "si"))
        )
    )
    run = json.loads((Path(folder) / "run.json").read_text())
    assert run["rows"] == 8 and run["reached"] and run["attempts"] == 3, status  # 3 contexts × 3
    assert run["cache_hits"] >= 4 and "target of 8 rows reached" in status  # the preview's 4 calls


def test_generate_with_bad_form_shows_error_and_runs_nothing(tmp_path: Path) -> None:
    status, *_ = last(
        handlers.run_generate(form(system_prompt="", num_rows=4, output=str(tmp_path / "x")))
    )
    assert "dm-error" in status and "system prompt is empty" in status
    assert not (tmp_path / "x").exists()


def test_default_output_folder_is_under_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    status, *_, folder = last(handlers.run_generate(form(num_rows=1, output="")))
    assert Path(folder).parent == Path("out") and Path(folder).name.startswith("ui-")
    assert (tmp_path / folder / "run.json").exists(), status


def test_stop_without_a_job() -> None:
    assert handlers.stop_job("") == "no job is running"


def test_one_folder_is_written_by_one_job_at_a_time_and_stop_stops_it(tmp_path: Path) -> None:
    folder = tmp_path / "busy"
    slow = handlers.JOBS.add(
        # calls of an hour: the job is still writing the folder when the form asks for it
        Job(sft_pipeline(FakeModel(latency=3600, max_concurrency=1), 50), folder).start()
    )
    try:
        status, *_ = last(handlers.run_generate(form(num_rows=2, output=str(folder))))
        assert "already writing" in status and str(folder) in status
    finally:
        assert handlers.stop_job(slow.id).startswith("stopping")
        assert slow.wait(30)
    assert slow.state == "cancelled"


# -- verified data: the built-in verified recipes from the form ------------------------------------
#: the form asking for verified data (no system prompt: the recipes bring their own prompts)
VERIFIED = FormValues(kind="verified", model_source="fake", max_tokens=256)


def stored(folder: Path) -> list[dict[str, object]]:
    import pyarrow.parquet as pq

    return [
        r for f in sorted((folder / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()
    ]


def arithmetic_answer(problem: str) -> int:
    """The answer of a generated word problem read from its words (not from ``steps.arithmetic``)."""
    n = [int(x) for x in re.findall(r"\d+", problem)]
    for words, value in (
        ("gives", lambda: n[0] + n[1]),
        ("gave away", lambda: n[0] - n[1]),
        ("bags with", lambda: n[0] * n[1]),
        ("equally among", lambda: n[0] // n[1]),
        ("packs of", lambda: n[0] * n[1] - n[2]),
        ("an hour", lambda: n[0] * n[1] * n[2]),
    ):
        if words in problem:
            return value()
    assert "change" in problem, problem
    return n[2] - n[0] * n[1]


def half_right_solver(request: Request, i: int) -> str:
    """Odd samples give the problem's answer, even ones the answer plus one."""
    problem = str(request.messages[-1]["content"]).split("Problem:", 1)[-1]  # type: ignore[index]
    answer = arithmetic_answer(problem) + (0 if i % 2 else 1)
    return f"Sample {i} works it out.\n#### {answer}"


class HalfRightSolver(FakeModel):
    """The ``solver`` backend of the math tests: :func:`half_right_solver` under its own name."""

    def __init__(self, **options: object) -> None:
        super().__init__(half_right_solver, **{**options, "name": "half-right"})


@pytest.fixture
def solver(monkeypatch: pytest.MonkeyPatch) -> str:
    """A model spec, ``solver``, for :class:`HalfRightSolver` (registered for this test only)."""
    from datamill.models import registry

    monkeypatch.setitem(registry.BACKENDS, "solver", (__name__, "HalfRightSolver", None))
    return "solver"


@pytest.mark.parametrize("name", sorted(builder.VERIFIED_RECIPES))
def test_verified_recipe_is_the_builtin_one_on_the_chosen_model(name: str) -> None:
    spec = VERIFIED.but(
        verified_recipe=name,
        model_source="openai",
        url="http://127.0.0.1:9/v1",
        model_name="m",
        max_tokens=300,
        num_rows=5,
    ).spec()
    assert spec.recipe == name and spec.system_prompt == ""
    recipe = builder.build_recipe(spec)
    builtin = builder.template_recipe(name)
    assert [next(iter(s)) for s in recipe["steps"]] == [next(iter(s)) for s in builtin["steps"]]
    for mine, theirs in zip(recipe["steps"], builtin["steps"], strict=True):
        kind = next(iter(mine))
        changed = {
            k for k in {**mine[kind], **theirs[kind]} if mine[kind].get(k) != theirs[kind].get(k)
        }
        assert changed == ({"max_tokens"} if kind == "text_generation" else set()), kind
        if kind == "text_generation":
            assert mine[kind]["max_tokens"] == 300
    assert recipe["models"] == {"default": "openai:m@http://127.0.0.1:9/v1"}
    assert (recipe["target_rows"], recipe["max_attempts"]) == (5, builder.attempt_cap(spec, 5))
    if "num_rows" in builtin["source"]:
        assert recipe["source"] == {**builtin["source"], "num_rows": 5}
    else:
        assert recipe["source"] == builtin["source"]  # its prompts, cycled by the top-up
    recipe_from_dict(recipe)  # the loader accepts it


def test_verified_form_errors_are_one_line_before_any_call(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="choose a verified recipe: one of math-verified"):
        VERIFIED.but(verified_recipe="poetry").spec()
    status, *_ = last(
        handlers.run_generate(VERIFIED.but(verified_recipe="", output=str(tmp_path / "x")))
    )
    assert "dm-error" in status and "choose a verified recipe" in status
    assert not (tmp_path / "x").exists()


def test_verified_math_preview_then_generate_shows_rows_yield_and_target(
    tmp_path: Path, solver: str
) -> None:
    math = VERIFIED.but(verified_recipe="math-verified", model_source=solver)
    status, rows_html = last(handlers.run_preview(math.but(preview_rows=2, num_rows=3)))
    assert 'data-state="done"' in status and "2 rows (" in status, status
    assert rows_html.count('class="dm-row dm-sft"') == 2
    assert "yield verify_math: 4 of 8 verified (50%); 4 wrong answer" in status
    assert "target of 2 rows reached after 2 source rows tried" in status
    status, rows_html, parquet, jsonl, job_id, folder = last(
        handlers.run_generate(math.but(num_rows=3, output=str(tmp_path / "math")))
    )
    assert "wrote 3 rows" in status, status
    run = json.loads((Path(folder) / "run.json").read_text())
    v = run["verification"]["verify_math"]
    assert (run["rows"], v["passed"], v["failed"]) == (3, 6, 6), status
    assert f"yield verify_math: {v['passed']} of 12 verified (50%); 6 wrong answer" in status
    assert (
        "wrote 3 rows" in status and "target of 3 rows reached after 3 source rows tried" in status
    )
    # the preview's 2 problems come from the cache (one call of 4 samples each); the 3rd is new
    assert (run["cache_hits"], run["model_calls"]) == (2, 1)
    assert rows_html.count('class="dm-row dm-sft"') == 3 and parquet and jsonl
    rows = stored(Path(folder))
    assert len(rows) == 3
    for r in rows:  # re-checked from the stored columns: the answer read from the problem's words
        assert r["verified"] is True and r["sample"] % 2 == 1
        assert r["solution"].endswith(f"#### {arithmetic_answer(str(r['problem']))}")
        assert r["messages"][-1]["content"] == r["solution"]  # type: ignore[index]
    md, shown, *_ = handlers.open_view(folder)
    assert "target of 3 rows reached" in md and "yield verify_math: 6 of 12 verified (50%)" in md


def test_verified_math_on_text_that_is_no_math_says_so(tmp_path: Path) -> None:
    # the default fake writes words, never a final number: nothing verifies, and the page says why
    status, rows_html = last(handlers.run_preview(VERIFIED.but(preview_rows=1, num_rows=1)))
    cap = builder.attempt_cap(builder.DatasetSpec(system_prompt="", kind="verified"), 1)
    assert (
        f"target of 1 row not reached after {cap} source row{'' if cap == 1 else 's'} tried (the cap, max_attempts {cap})"
        in status
    )
    assert f"yield verify_math: 0 of {4 * cap} verified (0%); {4 * cap} no answer found" in status
    assert "no rows" in rows_html


def test_verified_constraints_rows_meet_their_constraints(tmp_path: Path) -> None:
    from datamill.constraints import check, from_dicts

    status, rows_html, *_, folder = last(
        handlers.run_generate(
            VERIFIED.but(verified_recipe="constraints", num_rows=2, output=str(tmp_path / "c"))
        )
    )
    run = json.loads((Path(folder) / "run.json").read_text())
    v = run["verification"]["verify_constraints"]
    checked = v["passed"] + v["failed"]
    assert f"yield verify_constraints: {v['passed']} of {checked} verified" in status, status
    assert checked == 4 * run["attempts"] and 0 < v["passed"] < checked
    rows = stored(Path(folder))
    assert rows and rows_html.count('class="dm-row dm-sft"') == len(rows) == run["rows"]
    for r in rows:
        items = r["constraints"]
        items = json.loads(items) if isinstance(items, str) else list(items)  # type: ignore[arg-type]
        assert all(c.passed for c in check(str(r["response"]), from_dicts(items)))


def test_the_kind_shows_its_own_widgets() -> None:
    recipe, technique, temperature = app._kind_shows("verified")
    assert (recipe.visible, technique.visible, temperature.visible) == (True, False, False)
    recipe, technique, temperature = app._kind_shows("sft")
    assert (recipe.visible, technique.visible, temperature.visible) == (False, True, True)


# -- viewer ----------------------------------------------------------------------------------------
def test_viewer_shows_rows_failures_and_report(tmp_path: Path) -> None:
    def answer(request, i):  # type: ignore[no-untyped-def]
        text = request.messages[-1]["content"]
        return "" if "seed 1" in text else f"answer to {text}"

    sft_pipeline(FakeModel(answer), 3).run(tmp_path / "out")
    (tmp_path / "out" / "report.json").write_text(
        json.dumps({"rows": 2, "fields": {"question": {"count": 2, "distinct_2": 0.81}}})
    )
    (tmp_path / "out" / "report").mkdir()
    (tmp_path / "out" / "report" / "lengths.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    md, rows, first, table, failures, report, chart, index = handlers.open_view(
        str(tmp_path / "out")
    )
    assert "2 rows (sft)" in md and "1 row lost at text_generation: 1 empty completion" in md
    assert len(rows) == 2 and "answer to seed 0" in first
    assert list(table.columns)[:2] == ["instruction", "question"]
    assert len(failures) == 1 and failures.iloc[0]["reason"] == "empty completion"
    assert "0.81" in report and "question" in report
    assert chart is not None and chart.endswith("report.png")  # the report's own plot comes first
    assert "other charts in the folder: `report/lengths.png`" in report
    html_row, i, label = handlers.show_row(rows, index, 1)
    assert i == 1 and label == "row 2 of 2" and "answer to seed 2" in html_row
    assert handlers.show_row(rows, 1, 1)[1] == 1  # stays on the last row


def test_viewer_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such folder"):
        viewer.open_folder(tmp_path / "nope")
    with pytest.raises(InputError, match="not a datamill output folder"):
        viewer.open_folder(tmp_path)
    md, *_ = handlers.open_view(str(tmp_path))
    assert md.startswith("⚠") and "not a datamill output folder" in md


def test_preference_rows_render_side_by_side_and_escaped() -> None:
    row = {
        "prompt": "How do I fix a flat <tyre>?",
        "chosen": [
            {"role": "user", "content": "How do I fix a flat <tyre>?"},
            {"role": "assistant", "content": "Patch the tube."},
        ],
        "rejected": [
            {"role": "user", "content": "How do I fix a flat <tyre>?"},
            {"role": "assistant", "content": "<script>x</script>"},
        ],
        "chosen_rating": 5,
        "rejected_rating": 2,
        "ratings": [5, 2],
        "rationales": ["clear and correct", "not an answer"],
        "chosen_index": 0,
        "rejected_index": 1,
        "chosen_model": "a (smol)",
    }
    assert viewer.row_kind([row]) == "dpo"
    html_row = viewer.render_row(row)
    assert "<script>" not in html_row and "&lt;script&gt;" in html_row
    assert (
        html_row.index("dm-chosen")
        < html_row.index("Patch the tube.")
        < html_row.index("dm-rejected")
    )
    assert "score 5" in html_row and "score 2" in html_row
    assert "clear and correct" in html_row and "not an answer" in html_row
    assert "How do I fix a flat &lt;tyre&gt;?" in html_row and "a (smol)" in html_row


def test_losses_are_listed_with_step_reason_and_escaped_raw_output() -> None:
    assert viewer.render_losses([]) == ""
    failures = [
        {
            "step": "magpie",
            "reason": "instruction: truncated at max_tokens",
            "raw_output": "<b>x</b>",
        },
        {"step": "answer", "reason": "refusal", "detail": "y" * 400},
    ]
    out = viewer.render_losses(failures)
    assert "2 rows lost on the way" in out and out.count('class="dm-lost"') == 2
    assert (
        '"dm-lost-step">magpie</span>: <span class="dm-lost-reason">instruction: truncated' in out
    )
    assert "&lt;b&gt;x&lt;/b&gt;" in out and "<b>x" not in out
    assert "y" * 299 + "…" in out and "y" * 300 not in out
    many = viewer.render_losses(failures * 3, limit=4)
    assert many.count('class="dm-lost"') == 4 and "… and 2 more" in many


def test_row_kinds() -> None:
    assert viewer.row_kind([{"messages": [{"role": "user", "content": "x"}]}]) == "sft"
    assert viewer.row_kind([{"instruction": "x", "response": "y"}]) == "sft"
    assert viewer.row_kind([{"a": 1}]) == "table"
    assert viewer.row_kind([]) == "table"


# -- push ------------------------------------------------------------------------------------------
def test_push_checks_before_any_network_call(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nothing to push"):
        check_push("")
    with pytest.raises(ConfigError, match="no data/ folder"):
        check_push(tmp_path)
    (tmp_path / "data").mkdir()
    assert check_push(tmp_path) == tmp_path
    message = handlers.push_to_hub(str(tmp_path), "", "hf_x", True)
    assert "dm-error" in message and "give the dataset repository" in message


def test_push_without_network_fails_with_one_clear_line(tmp_path: Path) -> None:
    sft_pipeline(FakeModel(), 1).run(tmp_path / "out")
    message = handlers.push_to_hub(
        str(tmp_path / "out"), "alice/bikes", "hf_not_a_real_token", True
    )
    assert message.startswith('<span class="dm-error"') and "push to alice/bikes failed:" in message
    assert "\n" not in message and "Traceback" not in message
    assert "offline mode is on" in message or "cannot reach the Hub" in message
    bad = handlers.push_to_hub(str(tmp_path / "out"), "not a repo!", "hf_x", True)
    assert "is not a Hub repository id" in bad


# -- the Blocks and the command ----------------------------------------------------------------------
def test_build_app_wires_the_screens() -> None:
    demo = app.build_app()
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    for needed in (
        "description",
        "draft-btn",
        "draft-model-btn",
        "system-prompt",
        "verified-recipe",
        "preview-btn",
        "generate-btn",
        "download-parquet",
        "download-jsonl",
        "push-btn",
        "view-folder",
        "view-row",
        "view-failures",
        "view-report",
    ):
        assert needed in ids, needed


def test_the_form_reaches_its_handlers_as_one_typed_object() -> None:
    demo = app.build_app()
    events = list(demo.fns.values()) if isinstance(demo.fns, dict) else list(demo.fns)

    def inputs_of(output_id: str) -> list[object]:
        (event,) = [
            e
            for e in events
            if output_id in {getattr(o, "elem_id", None) for o in e.outputs} and e.inputs
        ]
        return list(event.inputs)

    preview, generate = inputs_of("preview-status"), inputs_of("generate-status")
    assert [getattr(w, "elem_id", None) for w in preview] == [
        getattr(w, "elem_id", None) for w in generate
    ]
    assert len(preview) == len(FIELDS) and "preview-rows" in {w.elem_id for w in preview}  # type: ignore[attr-defined]
    # each widget starts at its field's default, so an untouched form is FormValues()
    untouched = FormValues.from_values([w.value if w.value is not None else "" for w in preview])  # type: ignore[attr-defined]
    assert untouched == FormValues()
    with pytest.raises(ConfigError, match="system prompt is empty"):
        untouched.spec()
    spec = untouched.but(system_prompt=" You help bakers. ").spec()
    assert (spec.system_prompt, spec.num_rows, spec.max_tokens, spec.model) == (
        "You help bakers.",
        20,
        256,
        "llamacpp",
    )
    with pytest.raises(TypeError, match=f"the form has {len(FIELDS)} fields"):
        FormValues.from_values(["only a description"])


def test_cli_ui_help_and_bad_port(capsys: pytest.CaptureFixture[str]) -> None:
    main(["ui", "--help"])  # help exits quietly in the non-standalone entry point
    text = capsys.readouterr().out
    assert "--port" in text and "--host" in text
    with pytest.raises(SystemExit) as exit_info:
        main(["ui", "--port", "70000"])
    assert exit_info.value.code == 2
    assert "--port must be between 1 and 65535" in capsys.readouterr().err


def test_datamill_ui_serves_on_localhost_and_prints_its_url(tmp_path: Path) -> None:
    import signal
    import socket
    import subprocess
    import sys
    import urllib.request

    def serve() -> tuple[subprocess.Popen[str], int, str]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from datamill.cli import main; main()",
                "ui",
                "--port",
                str(port),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp_path,
        )
        assert proc.stdout is not None
        return proc, port, proc.stdout.readline()  # blocks until the server is up (or it ends)

    # a port picked free may be taken by another program before the app binds it: pick again
    for tries_left in reversed(range(5)):
        proc, port, line = serve()
        if not (line.startswith("error: cannot serve on") and tries_left):
            break
        proc.wait(60)
    try:
        assert proc.stdout is not None
        assert line.startswith(f"datamill ui running at http://127.0.0.1:{port}/"), (
            line + proc.stdout.read()
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=60) as page:
            assert page.status == 200 and "datamill" in page.read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)  # handled like Ctrl-C: the server closes
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
