"""Verified data: ``samples: K``, ``select_verified``, ``pair_verified``, the checkable-prompt steps
and the recipes math-verified(-pairs), constraints(-pairs) and code-verified.

Every recipe test re-checks what was written *independently*, from the stored columns only: math
by reading the final number of the stored solution with a regex and comparing it to the stored
reference as a number; constraints with ``datamill.constraints.check``; code by running the stored
solution and tests with ``exec``. The fake models below answer some samples right and some wrong,
so each test sees both verdicts.
"""

from __future__ import annotations

import json
import random
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from datamill import FakeModel, Pipeline, Request, TextGeneration
from datamill.cli import main
from datamill.constraints import check, from_dicts
from datamill.errors import ConfigError, PipelineError
from datamill.pipeline.graph import ModelSettings
from datamill.recipes.loader import builtin_recipes, load_recipe
from datamill.steps.arithmetic import TEMPLATES, arithmetic_problem
from datamill.steps.problems import MathProblems, SampleConstraints, SplitTests, split_asserts
from datamill.steps.select import PairVerified, SelectVerified

RECIPES = [
    "math-verified",
    "math-verified-pairs",
    "constraints",
    "constraints-pairs",
    "code-verified",
]


def on_model(p: Pipeline, model: Any) -> Pipeline:
    p.models = {n: ModelSettings(spec=model, sampling=s.sampling) for n, s in p.models.items()}
    return p


def user_text(request: Request) -> str:
    return str(request.messages[-1]["content"])  # type: ignore[index]


def stored_rows(out: Path) -> list[dict[str, Any]]:
    files = sorted((out / "data").glob("*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


# -- independent re-checks ---------------------------------------------------------------------------

_FINAL = re.compile(r"####\s*(-?[\d,]+(?:\.\d+)?)")


def math_ok(solution: str, reference: str) -> bool:
    """The number after the last ``####`` of ``solution`` equals ``reference`` (plain Python)."""
    found = _FINAL.findall(solution)
    if not found:
        numbers = re.findall(r"-?\d+(?:\.\d+)?", solution)
        if not numbers:
            return False
        found = numbers
    return float(found[-1].replace(",", "")) == float(reference.replace(",", ""))


def constraints_ok(response: str, constraints: Any, prompt: str | None) -> bool:
    items = json.loads(constraints) if isinstance(constraints, str) else constraints
    return all(r.passed for r in check(response, from_dicts(list(items)), prompt=prompt))


def code_ok(solution: str, tests: str) -> bool:
    scope: dict[str, Any] = {}
    try:
        exec(compile(solution + "\n" + tests, "<recheck>", "exec"), scope)  # noqa: S102
    except Exception:
        return False
    return True


# -- fake models ------------------------------------------------------------------------------------


def arithmetic_solver(request: Request, i: int) -> str:
    """Tries one operation per sample on the problem's first two numbers: +, -, ×, ÷ → some right."""
    problem = user_text(request).split("Problem:", 1)[-1]
    a, b = (int(n) for n in re.findall(r"\d+", problem)[:2])
    value = [a + b, a - b, a * b, a // b if b else 0][i % 4]
    return f"We combine {a} and {b}.\n#### {value}"


def constraint_answerer(request: Request, i: int) -> str:
    """Even samples: lowercase, no commas (meets both test constraints); odd: neither."""
    return "the sky is blue and the grass is green" if i % 2 == 0 else "Hello, World. It Rains."


GOOD_CODE = {
    "add": "def add(a, b):\n    return a + b\n",
    "square": "def square(n):\n    return n * n\n",
}
BAD_CODE = {
    "add": "def add(a, b):\n    return a - b\n",
    "square": "def square(n):\n    return n + n\n",
}
TESTS = {
    "add": "assert add(2, 3) == 5\nassert add(0, 0) == 0\nassert add(-1, 1) == 0",
    "square": "assert square(3) == 9\nassert square(0) == 0\nassert square(-2) == 4",
}


def coder(request: Request, i: int) -> str:
    """Sample 1 and 3 write a correct function, 0 and 2 a wrong one; each with 3 asserts."""
    name = "add" if "add(" in user_text(request) else "square"
    code = (GOOD_CODE if i % 2 else BAD_CODE)[name]
    return f"Here it is:\n```python\n{code}\n{TESTS[name]}\n```\nDone."


@dataclass
class RunResult:
    passed: bool
    reason: str


@pytest.fixture
def exec_sandbox(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """A stand-in ``datamill.sandbox`` (until the real one is merged): ``exec`` in this process.
    Records each program it ran."""
    ran: list[tuple[str, str]] = []

    @dataclass(frozen=True)
    class Limits:
        wall_seconds: float = 10.0
        cpu_seconds: int = 5
        memory_mb: int = 512
        file_size_mb: int = 16
        processes: int = 32
        network: bool = False

    async def arun_python(code: str, tests: str, *, limits: Limits, style: str) -> RunResult:
        ran.append((code, tests))
        try:
            exec(compile(code + "\n" + tests, "<sandbox>", "exec"), {})  # noqa: S102
        except AssertionError as exc:
            return RunResult(False, f"test failed: {exc}")
        except Exception as exc:
            return RunResult(False, f"error: {type(exc).__name__}")
        return RunResult(True, "ok")

    module = types.ModuleType("datamill.sandbox")
    module.Limits = Limits  # type: ignore[attr-defined]
    module.arun_python = arun_python  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datamill.sandbox", module)
    return ran


# -- samples: K ------------------------------------------------------------------------------------


def test_samples_send_one_request_with_n_and_make_one_row_per_sample(tmp_path: Path) -> None:
    model = FakeModel()
    gen = TextGeneration(template="{{ q }}", output="a", samples=4)
    p = Pipeline([gen], source=[{"q": "one"}, {"q": "two"}], models={"default": model})
    result = p.run(tmp_path / "out", progress=False)
    assert [r.n for r in model.calls] == [4, 4]
    assert [(r["q"], r["sample"]) for r in result.rows] == [
        (q, j) for q in ("one", "two") for j in range(4)
    ]
    texts = [r["a"] for r in result.rows if r["q"] == "one"]
    assert len(set(texts)) == 4  # each sample drawn on its own
    again = Pipeline(
        [TextGeneration(template="{{ q }}", output="a", samples=4)],
        source=[{"q": "one"}, {"q": "two"}],
        models={"default": model},
    ).run(tmp_path / "again", progress=False)
    assert len(model.calls) == 2  # served from the cache, sample by sample
    assert [r["a"] for r in again.rows] == [r["a"] for r in result.rows]


def test_raising_samples_keeps_the_samples_already_drawn(tmp_path: Path) -> None:
    def run(k: int) -> list[str]:
        gen = TextGeneration(template="{{ q }}", output="a", samples=k)
        p = Pipeline([gen], source=[{"q": "one"}], models={"default": FakeModel()})
        return [r["a"] for r in p.run(tmp_path / f"k{k}", progress=False).rows]

    four, six = run(4), run(6)
    assert len(six) == 6 and six[:4] == four  # samples is not part of the step's identity


def test_a_bad_sample_is_lost_alone_and_counted(tmp_path: Path) -> None:
    def handler(request: Request, i: int) -> str:
        return "" if i == 1 else f"answer {i}"

    gen = TextGeneration(template="{{ q }}", output="a", samples=3)
    p = Pipeline([gen], source=[{"q": "x"}], models={"default": FakeModel(handler)})
    result = p.run(tmp_path / "out", progress=False)
    assert [r["sample"] for r in result.rows] == [0, 2]
    assert result.summary["events"]["text_generation"] == {"sample lost: empty completion": 1}
    every = Pipeline(
        [TextGeneration(template="{{ q }}", output="a", samples=2)],
        source=[{"q": "x"}],
        models={"default": FakeModel(lambda r, i: "", name="mute")},
    ).run(tmp_path / "none", progress=False)
    assert every.rows == [] and every.summary["failures"] == {"empty completion": 1}


def test_samples_on_a_multi_call_task_is_refused_when_built() -> None:
    from datamill.tasks.evol_instruct import EvolInstruct

    with pytest.raises(PipelineError, match="samples: 3 needs a task with one round of calls"):
        Pipeline([EvolInstruct(samples=3)], source=[{"instruction": "x"}])


# -- select_verified / pair_verified ----------------------------------------------------------------


def candidates() -> list[dict[str, Any]]:
    rows = []
    for q, verdicts in (("p1", [False, True, True]), ("p2", [False, False]), ("p3", [True])):
        for j, ok in enumerate(verdicts):
            rows.append(
                {
                    "q": q,
                    "a": f"{q} answer {j}",
                    "score": j,
                    "verified": ok,
                    "verification": "ok" if ok else "wrong answer: expected 1, got 2",
                }
            )
    return rows


def run_global(
    step: Any, rows: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[tuple[str, str | None]]]:
    drops: list[tuple[str, str | None]] = []
    kept = step.process_all(rows, lambda r, why, detail=None: drops.append((why, detail)))
    return kept, drops


@pytest.mark.parametrize(
    ("keep", "extra", "expected"),
    [
        ("first", {}, ["p1 answer 1", "p3 answer 0"]),
        ("all", {}, ["p1 answer 1", "p1 answer 2", "p3 answer 0"]),
        ("best", {"by": "score"}, ["p1 answer 2", "p3 answer 0"]),
        ("best", {"by": "score", "order": "min"}, ["p1 answer 1", "p3 answer 0"]),
    ],
)
def test_select_verified_keeps_per_group(
    keep: str, extra: dict[str, Any], expected: list[str]
) -> None:
    kept, drops = run_global(SelectVerified(group_by=["q"], keep=keep, **extra), candidates())
    assert [r["a"] for r in kept] == expected
    reasons = [why for why, _ in drops]
    assert reasons.count("not verified") == 3  # p1 #0, p2 #0 and #1: every row is accounted for
    assert len(kept) + len(drops) == len(candidates())
    assert ("not verified", "wrong answer: expected 1, got 2") in drops


def test_select_verified_best_needs_by() -> None:
    with pytest.raises(ConfigError, match="keep: best needs by"):
        SelectVerified(group_by=["q"], keep="best")


def test_pair_verified_pairs_a_verified_with_a_failed_answer_in_trl_layout() -> None:
    step = PairVerified(group_by=["q"], prompt="q", response="a")
    pairs, drops = run_global(step, candidates())
    assert len(pairs) == 1
    pair = pairs[0]
    assert pair["prompt"] == "p1"
    assert pair["chosen"] == [
        {"role": "user", "content": "p1"},
        {"role": "assistant", "content": "p1 answer 1"},
    ]
    assert pair["rejected"][-1] == {"role": "assistant", "content": "p1 answer 0"}
    assert (pair["score_chosen"], pair["score_rejected"]) == (1.0, 0.0)
    assert pair["rejected_verification"].startswith("wrong answer")
    assert sorted(why for why, _ in drops) == ["no failed answer", "no verified answer"]
    more, _ = run_global(
        PairVerified(group_by=["q"], prompt="q", response="a", max_pairs=2), candidates()
    )
    assert len(more) == 1  # p1 has one failed answer: one pair however many are allowed


# -- the checkable-prompt steps ---------------------------------------------------------------------


def test_arithmetic_answers_are_right_by_an_independent_reading() -> None:
    """Each template's problem, read back by its own words, gives the stored answer."""
    rng = random.Random(7)
    seen = set()
    for _ in range(300):
        problem, answer = arithmetic_problem(rng)
        want, kind = read_problem(problem)
        assert answer == want and answer >= 0, problem
        seen.add(kind)
    assert len(seen) == len(TEMPLATES)  # every template was drawn and read


def read_problem(problem: str) -> tuple[int, str]:
    """The answer of a generated arithmetic problem, read from its words (independently of
    ``steps.arithmetic``), and which kind of problem it is."""
    n = [int(x) for x in re.findall(r"\d+", problem)]
    if "gives" in problem:
        return n[0] + n[1], "add"
    if "gave away" in problem:
        return n[0] - n[1], "sub"
    if "bags with" in problem:
        return n[0] * n[1], "mul"
    if "equally among" in problem:
        assert n[0] % n[1] == 0
        return n[0] // n[1], "div"
    if "packs of" in problem:
        return n[0] * n[1] - n[2], "packs"
    if "an hour" in problem:
        return n[0] * n[1] * n[2], "wage"
    assert "change" in problem
    return n[2] - n[0] * n[1], "change"


async def _one(step: Any, row: dict[str, Any], key: tuple[int, ...] = (0,)) -> list[dict[str, Any]]:
    from datamill.steps.base import Context

    async def no_model(*_: Any) -> Any:
        raise AssertionError("no model call expected")

    return await step.process(row, Context(key, no_model, lambda m: None))


def test_math_problems_reads_gsm8k_math_and_plain_layouts() -> None:
    import asyncio

    step = MathProblems()
    gsm = asyncio.run(_one(step, {"question": "Q?", "answer": "3 + 4 = 7\n#### 7"}))[0]
    assert gsm == {
        "problem": "Q?",
        "reference_answer": "7",
        "reference_solution": "3 + 4 = 7\n#### 7",
    }
    math = asyncio.run(_one(step, {"problem": "P", "solution": "so \\boxed{\\frac{1}{2}}."}))[0]
    assert math["reference_answer"] == "\\frac{1}{2}" and "solution" not in math
    assert step.output_columns(["problem", "solution"]) == [
        "problem",
        "reference_answer",
        "reference_solution",
    ]
    made = asyncio.run(_one(step, {"row": 3}, key=(3,)))[0]
    assert made["problem"] and made["reference_answer"].isdigit()
    assert asyncio.run(_one(step, {"row": 3}, key=(3,)))[0] == made  # seeded by the key
    assert asyncio.run(_one(step, {"row": 4}, key=(4,)))[0]["problem"] != made["problem"]
    with pytest.raises(PipelineError, match="GSM8K layout"):
        step.output_columns(["text"])


def test_sample_constraints_writes_them_into_the_instruction() -> None:
    import asyncio

    step = SampleConstraints(
        k=2, ids=["punctuation:no_comma", "change_case:english_lowercase", "keywords:existence"]
    )
    row = asyncio.run(_one(step, {"instruction": "Tell me about rain."}))[0]
    assert row["base_instruction"] == "Tell me about rain."
    stored = from_dicts(row["constraints"])
    assert len(stored) == 2
    for c in stored:
        assert c.describe() in row["instruction"]
    with pytest.raises(ConfigError, match="unknown constraint id"):
        SampleConstraints(ids=["no_such"])
    with pytest.raises(ConfigError, match="mutually compatible"):
        SampleConstraints(k=2, ids=["punctuation:no_comma"])


def test_split_asserts_moves_the_tests_out() -> None:
    code, tests = split_asserts(
        "def f(x):\n    assert x\n    return x\n\nassert f(1) == 1\nassert (\n    f(2) == 2\n)\n"
    )
    assert code == "def f(x):\n    assert x\n    return x\n"
    assert tests == "assert f(1) == 1\nassert (\n    f(2) == 2\n)"
    assert SplitTests().produces() == ["solution", "tests"]


# -- the recipes on the fake model -------------------------------------------------------------------


def test_the_verified_recipes_are_listed() -> None:
    assert set(RECIPES) <= set(builtin_recipes())


def test_math_verified_writes_only_right_solutions(tmp_path: Path) -> None:
    p = on_model(load_recipe("math-verified"), FakeModel(arithmetic_solver))
    result = p.run(tmp_path / "out", limit=12, progress=False)
    rows = stored_rows(tmp_path / "out")
    assert rows and len(rows) == len(result.rows)
    assert len({r["problem"] for r in rows}) == len(rows)  # keep: first → one per problem
    for r in rows:
        assert r["verified"] is True and r["verification"] == "ok"
        assert math_ok(r["solution"], r["reference_answer"]), r
        assert r["reference_answer"] == str(read_problem(r["problem"])[0])
        assert r["messages"][-1]["content"] == r["solution"]
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    v = run["verification"]["verify_math"]
    assert v["passed"] + v["failed"] == 48 and 0 < v["yield"] < 1
    assert (
        run["rows"] + run["failures_by_step"].get("select_verified", {}).get("not selected", 0)
        <= v["passed"]
    )
    card = (tmp_path / "out" / "README.md").read_text()
    assert "### Verification" in card and "| verify_math | 48 |" in card


def test_math_verified_reads_a_gsm8k_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "gsm8k.jsonl"
    sums = {f"Tom has {a} and gets {b}. How many?": a + b for a, b in ((3, 4), (10, 5), (7, 7))}
    data.write_text(
        "".join(
            json.dumps({"question": q, "answer": f"working\n#### {total}"}) + "\n"
            for q, total in sums.items()
        )
    )
    p = on_model(load_recipe("math-verified"), FakeModel(arithmetic_solver))
    from datamill.io.sources import source_from_path

    out = tmp_path / "out"
    result = p.run(out, source=source_from_path(data), progress=False)
    assert len(result.rows) == 3  # sample 0 (a + b) is right for each
    for r in stored_rows(out):
        assert r["reference_answer"] == str(sums[r["problem"]])
        assert math_ok(r["solution"], str(sums[r["problem"]]))


def test_math_verified_pairs_are_right_against_wrong(tmp_path: Path) -> None:
    p = on_model(load_recipe("math-verified-pairs"), FakeModel(arithmetic_solver))
    p.run(tmp_path / "out", limit=10, progress=False)
    rows = stored_rows(tmp_path / "out")
    assert rows
    for r in rows:
        chosen, rejected = r["chosen"][-1]["content"], r["rejected"][-1]["content"]
        problem = r["prompt"]
        assert r["chosen"][0] == {"role": "user", "content": problem}
        truth = str(read_problem(problem)[0])
        assert math_ok(chosen, truth) and not math_ok(rejected, truth)
        assert r["rejected_verification"].startswith("wrong answer")


EASY = ["--set", "sample_constraints.ids=[punctuation:no_comma, change_case:english_lowercase]"]


def test_constraints_writes_only_answers_that_meet_their_constraints(tmp_path: Path) -> None:
    p = on_model(load_recipe("constraints", EASY[1:]), FakeModel(constraint_answerer))
    p.run(tmp_path / "out", limit=6, progress=False)
    rows = stored_rows(tmp_path / "out")
    assert len(rows) == 6
    for r in rows:
        assert r["sample"] % 2 == 0 and r["verified"] is True
        assert constraints_ok(r["response"], r["constraints"], None)
        for c in from_dicts(from_list(r["constraints"])):
            assert r["instruction"].endswith(c.describe())
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["verification"]["verify_constraints"]["yield"] == 0.5


def from_list(value: Any) -> list[dict[str, Any]]:
    return json.loads(value) if isinstance(value, str) else list(value)


def test_constraints_default_ids_on_default_fake_text(tmp_path: Path) -> None:
    p = on_model(load_recipe("constraints"), FakeModel())
    result = p.run(tmp_path / "out", limit=12, progress=False)
    rows = stored_rows(tmp_path / "out") if result.rows else []
    for r in rows:
        assert constraints_ok(r["response"], r["constraints"], None), r
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    v = run["verification"]["verify_constraints"]
    assert v["passed"] + v["failed"] == 48
    assert v["passed"] >= len(rows)


def test_constraints_pairs_meet_against_miss(tmp_path: Path) -> None:
    p = on_model(load_recipe("constraints-pairs", EASY[1:]), FakeModel(constraint_answerer))
    p.run(tmp_path / "out", limit=5, progress=False)
    rows = stored_rows(tmp_path / "out")
    assert len(rows) == 5
    for r in rows:
        chosen, rejected = r["chosen"][-1]["content"], r["rejected"][-1]["content"]
        assert constraints_ok(chosen, r["constraints"], None)
        assert not constraints_ok(rejected, r["constraints"], None)


def test_code_verified_writes_only_programs_that_pass_their_tests(
    tmp_path: Path, exec_sandbox: list[tuple[str, str]]
) -> None:
    source = [
        {"instruction": "Write a function add(a, b)."},
        {"instruction": "Write a function square(n)."},
    ]
    p = on_model(load_recipe("code-verified"), FakeModel(coder))
    from datamill.io.sources import RowsSource

    p.run(tmp_path / "out", source=RowsSource(source), progress=False)
    rows = stored_rows(tmp_path / "out")
    # 8 samples but 4 distinct programs: an identical program is verified once (cached verdict)
    assert len(rows) == 2 and len(exec_sandbox) == 4
    for r in rows:
        assert r["sample"] == 1  # the first correct one
        assert "assert" not in r["solution"] and r["tests"].count("assert") == 3
        assert code_ok(r["solution"], r["tests"])
    bad = [(c, t) for c, t in exec_sandbox if not code_ok(c, t)]
    assert len(bad) == 2


def test_target_rows_counts_verified_rows_and_reports_the_yield(tmp_path: Path) -> None:
    overrides = [*EASY[1:], "target_rows=15", "max_attempts=40"]
    p = on_model(load_recipe("constraints", overrides), FakeModel(constraint_answerer))
    result = p.run(tmp_path / "out", progress=False)
    assert len(result.rows) == 15 and result.summary["reached"] is True
    assert all(
        constraints_ok(r["response"], r["constraints"], None) for r in stored_rows(tmp_path / "out")
    )
    made = len(result.rows) + result.summary.get("trimmed", 0)
    assert result.summary["yield"] == round(made / result.summary["attempts"], 4)
    never = on_model(
        load_recipe("constraints", [*EASY[1:], "target_rows=5", "max_attempts=6"]),
        FakeModel(lambda r, i: "Hello, World.", name="stubborn"),
    ).run(tmp_path / "never", progress=False)
    assert never.rows == []
    assert (never.summary["reached"], never.summary["attempts"], never.summary["yield"]) == (
        False,
        6,
        0.0,
    )


def test_the_cli_prints_the_target_and_the_yield(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["run", "constraints", "--model", "fake", *EASY, "--set", "target_rows=4"]
    try:
        main([*args, "--set", "max_attempts=12", "-o", str(tmp_path / "cli"), "-q"])
    except SystemExit as exc:  # no rows written: exit 1, with the summary
        assert exc.code == 1
    printed = capsys.readouterr().out
    assert "yield verify_constraints:" in printed
    assert re.search(r"target of 4 rows (reached|not reached) after \d+ source rows tried", printed)
    assert "rows per source row" in printed


# -- the recipes on the embedded model ---------------------------------------------------------------


def recheck(name: str, row: dict[str, Any]) -> bool:
    """The independent re-check of one stored row of recipe ``name``."""
    if name == "math-verified":
        return math_ok(row["solution"], row["reference_answer"])
    if name == "math-verified-pairs":
        truth = str(read_problem(row["prompt"])[0])
        chosen, rejected = row["chosen"][-1]["content"], row["rejected"][-1]["content"]
        return math_ok(chosen, truth) and not math_ok(rejected, truth)
    if name == "constraints":
        return constraints_ok(row["response"], row["constraints"], None)
    if name == "constraints-pairs":
        chosen, rejected = row["chosen"][-1]["content"], row["rejected"][-1]["content"]
        return constraints_ok(chosen, row["constraints"], None) and not constraints_ok(
            rejected, row["constraints"], None
        )
    assert name == "code-verified"
    return code_ok(row["solution"], row["tests"])


@pytest.mark.real
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", RECIPES)
def test_verified_recipe_on_the_embedded_model(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if name == "code-verified":
        pytest.importorskip("datamill.sandbox", reason="the sandbox is not merged yet")
    out = tmp_path / "out"
    code = 0
    try:
        main(["run", name, "--limit", "2", "-o", str(out), "-q"])
    except SystemExit as exc:
        code = exc.code  # type: ignore[assignment]
    printed = capsys.readouterr()
    run = json.loads((out / "run.json").read_text())
    print(f"\n{name}: exit {code}, {run['rows']} rows, verification {run.get('verification')}")
    verdicts = next(iter(run["verification"].values()))
    assert verdicts["passed"] + verdicts["failed"] > 0  # candidates were made and checked
    rows = stored_rows(out) if run["rows"] else []
    if not rows:  # a low yield is a figure: then the CLI says so and exits non-zero
        assert code == 1 and "no rows written" in printed.err, printed
        return
    assert code == 0
    for row in rows:
        assert recheck(name, row), row
