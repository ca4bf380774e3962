"""A step's identity (what its seeds, and so its cached calls, derive from) is its own name or
its parameters, never its position: other steps coming and going leave its calls cache hits."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamill import FakeModel, Pipeline, TextGeneration
from datamill.errors import PipelineError
from datamill.steps.base import Context, GlobalStep
from datamill.tasks.base import Task

ROWS = [{"instruction": f"Name one use of synthetic data, number {i}."} for i in range(3)]


def run(steps: list, cache: Path, out: Path) -> tuple[FakeModel, object]:
    model = FakeModel()
    result = Pipeline(steps, source=ROWS, models={"default": model}).run(out, cache=cache)
    return model, result


def answer(output: str, template: str = "{{ instruction }}") -> TextGeneration:
    return TextGeneration(template=template, output=output)


def test_inserting_a_step_first_keeps_the_others_cache_hits(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    steps = [answer("question"), answer("response", "{{ question }}")]
    _, first = run(steps, cache, tmp_path / "a")
    assert first.stats.model_calls == 6 and first.stats.cache_hits == 0
    # the old steps' labels move (text_generation -> text_generation_2); their calls do not
    inserted = [answer("note", "Comment on: {{ instruction }}")] + [
        answer("question"),
        answer("response", "{{ question }}"),
    ]
    model, second = run(inserted, cache, tmp_path / "b")
    assert second.stats.model_calls == 3 and second.stats.cache_hits == 6
    assert len(model.calls) == 3
    assert all("Comment on:" in r.messages[-1]["content"] for r in model.calls)
    assert [r["response"] for r in second.rows] == [r["response"] for r in first.rows]


def test_removing_and_reordering_unrelated_steps_keeps_cache_hits(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    a = answer("a", "First: {{ instruction }}")
    b = answer("b", "Second: {{ instruction }}")
    c = answer("c", "{{ b }}")
    _, first = run([a, b, c], cache, tmp_path / "1")
    assert first.stats.model_calls == 9
    model, removed = run(
        [answer("b", "Second: {{ instruction }}"), answer("c", "{{ b }}")], cache, tmp_path / "2"
    )
    assert model.calls == [] and removed.stats.cache_hits == 6
    swapped = [answer("b", "Second: {{ instruction }}"), answer("a", "First: {{ instruction }}")]
    model, reordered = run(swapped, cache, tmp_path / "3")
    assert model.calls == [] and reordered.stats.cache_hits == 6


def test_a_changed_parameter_changes_the_identity_and_an_explicit_name_keeps_it() -> None:
    plain, hotter = answer("x"), TextGeneration(output="x", temperature=1.2)
    Pipeline([plain], models={"default": FakeModel()})
    Pipeline([hotter], models={"default": FakeModel()})
    assert plain.identity.startswith("text_generation:") and plain.identity != hotter.identity
    named = TextGeneration(name="answer", output="x")
    renamed = TextGeneration(name="answer", output="x", temperature=1.2)
    assert named.identity == renamed.identity == "answer"


def test_identical_twins_get_different_seeds() -> None:
    one, two, three = answer("x"), answer("x"), answer("x")
    Pipeline([one, two, three], models={"default": FakeModel()})
    assert two.identity == one.identity + "#2" and three.identity == one.identity + "#3"
    assert one.label != two.label  # display names stay positional

    async def no_calls(model, request, options):  # pragma: no cover - never called
        raise AssertionError

    ctx = Context((0,), no_calls, lambda m: None, seed=7)
    assert len({one.row_seed(ctx), two.row_seed(ctx), three.row_seed(ctx)}) == 3


def test_rebuilding_a_pipeline_of_the_same_steps_keeps_identities() -> None:
    steps = [answer("x"), answer("x"), TextGeneration(name="mine", output="y")]
    Pipeline(steps, models={"default": FakeModel()})
    before = [s.identity for s in steps]
    labels = [s.label for s in steps]
    Pipeline(steps, models={"default": FakeModel()})  # plan() does this with the same objects
    assert [s.identity for s in steps] == before and [s.label for s in steps] == labels


# -- the task contract, checked when the pipeline is built --------------------------------------


class NoMethods(Task):
    kind = "no_methods"


class OnlyRequests(Task):
    kind = "only_requests"

    def requests(self, row, ctx):
        return []


class OwnProcess(Task):
    kind = "own_process"

    async def process(self, row, ctx):
        return [row]


class NoGlobal(GlobalStep):
    kind = "no_global"


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (
            NoMethods(),
            r"step 1 \(no_methods\): NoMethods implements neither requests.*missing: requests, parse",
        ),
        (OnlyRequests(), r"OnlyRequests implements neither .*\(missing: parse\)"),
        (NoGlobal(), r"NoGlobal implements neither process_all"),
    ],
)
def test_a_step_missing_its_methods_is_refused_when_built(step, message) -> None:
    model = FakeModel()
    with pytest.raises(PipelineError, match=message):
        Pipeline([step], source=[{"a": 1}], models={"default": model})
    assert model.calls == []


def test_a_task_with_its_own_process_is_accepted() -> None:
    result = Pipeline([OwnProcess()], source=[{"a": 1}], models={"default": FakeModel()}).run(None)
    assert result.rows == [{"a": 1}]


def test_every_registered_step_kind_meets_its_contract() -> None:
    from datamill.recipes.registry import STEP_KINDS, step_class

    for kind in STEP_KINDS:
        assert step_class(kind).model_construct().contract_error() is None, kind
