"""Verifier steps (``datamill.steps.verify``): verdicts, drop/keep, chains, cached verdicts,
run.json and the CLI's yield line.

verify_code and verify_constraints are tested here against stand-ins of ``datamill.sandbox`` and
``datamill.constraints`` put into ``sys.modules`` (their plumbing: columns, extraction, limits,
concurrency, reasons); end-to-end tests with the real libraries live beside those libraries.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from datamill import (
    ConfigError,
    FakeModel,
    Pipeline,
    PipelineError,
    TextGeneration,
    VerifyCode,
    VerifyConstraints,
    VerifyJSON,
    VerifyMath,
    VerifyPython,
)
from datamill.cli import main
from datamill.errors import MissingDependency
from datamill.recipes.loader import recipe_from_dict
from datamill.recipes.registry import STEP_KINDS, step_class
from datamill.steps.verify.base import Verdict
from datamill.steps.verify.code import extract_code
from datamill.steps.verify.math import (
    extract_answer,
    extract_boxed,
    extract_hash,
    extract_last_number,
    reference_answer,
)

SRC = Path(__file__).resolve().parents[1] / "src"


def run(steps: list[Any], rows: list[dict[str, Any]], out: Path | None = None, **kw: Any) -> Any:
    """Run ``steps`` over ``rows`` (no model is called: FakeModel stands by)."""
    return Pipeline(steps, source=rows, models={"default": FakeModel()}).run(
        out, progress=False, **kw
    )


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module ``checks`` in a folder on sys.path: ``checks:even`` counts its executions in
    the file ``$CHECK_LOG`` (one line per row it checked, written before it returns)."""
    folder = tmp_path / "usermods"
    folder.mkdir()
    (folder / "checks.py").write_text(
        textwrap.dedent(
            """
            import os

            def even(row):
                with open(os.environ["CHECK_LOG"], "a") as f:
                    f.write(f"{row['n']}\\n")
                if int(row["n"]) == int(os.environ.get("CHECK_KILL_AT", "-1")):
                    os.kill(os.getpid(), 9)
                return (row["n"] % 2 == 0, f"{row['n']} is odd")

            def plain(row):
                return row["n"] > 2

            def wrong_type(row):
                return "yes"

            def boom(row):
                raise ValueError("no luck")

            async def later(row):
                return row["n"] != 3

            NOT_A_FUNCTION = 3
            """
        ),
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(folder))
    log = tmp_path / "executions.log"
    monkeypatch.setenv("CHECK_LOG", str(log))
    sys.modules.pop("checks", None)
    yield log
    sys.modules.pop("checks", None)


def executions(log: Path) -> list[int]:
    return [int(x) for x in log.read_text().split()] if log.exists() else []


# -- answers ---------------------------------------------------------------------------------


def test_answer_extraction_by_format() -> None:
    text = "First \\boxed{3} then \\boxed{\\frac{1}{\\sqrt{2}}} so.\n#### 1,234\nmaybe 7"
    assert extract_boxed(text) == "\\frac{1}{\\sqrt{2}}"  # the last one, nested braces kept
    assert extract_boxed("\\boxed{unclosed") is None
    assert extract_hash(text) == "1,234"
    assert extract_hash("no marker") is None
    assert extract_last_number(text) == "7"
    assert extract_last_number("It costs -3.5 or 3/4 of 1,000,000 dollars.") == "1,000,000"
    assert extract_last_number("none here") is None
    assert extract_answer(text, "auto") == "\\frac{1}{\\sqrt{2}}"
    assert extract_answer("So 5 apples\n#### 5", "auto") == "5"
    assert extract_answer("so it is 12.", "auto") == "12"
    assert extract_answer("so it is 12.", "boxed") is None
    assert reference_answer("Natalia sold 48/2 = 24 clips.\n#### 72") == "72"
    assert reference_answer("\\frac{1}{2}") == "\\frac{1}{2}"


def test_verify_math_verdicts_name_expected_and_got() -> None:
    rows = [
        {"solution": "Half of it: \\boxed{0.5}", "reference_answer": "\\frac{1}{2}"},
        {"solution": "3 * 5 = 15\n#### 15", "reference_answer": "She has 12.\n#### 12"},
        {"solution": "I do not know.", "reference_answer": "12"},
        {"solution": "The total is 1,000 dollars.", "reference_answer": "1000"},
    ]
    result = run([VerifyMath(on_fail="keep")], rows)
    got = [(r["verified"], r["verification"]) for r in result.rows]
    assert got == [
        (True, "ok"),
        (False, "wrong answer: expected 12, got 15"),
        (False, "no answer found: no number in the answer"),
        (True, "ok"),
    ]
    assert result.summary["verification"]["verify_math"] == {
        "passed": 2,
        "failed": 2,
        "yield": 0.5,
        "cached": 0,
        "reasons": {"wrong answer": 1, "no answer found": 1},
    }


def test_verify_math_answer_format_is_obeyed() -> None:
    row = {"solution": "The answer is \\boxed{4}. Check: 2+2=4, not 5", "reference_answer": "4"}
    assert run([VerifyMath(answer_format="boxed")], [row]).rows[0]["verified"] is True
    last = run([VerifyMath(answer_format="last_number", on_fail="keep")], [row]).rows[0]
    assert last["verification"] == "wrong answer: expected 4, got 5"
    hashed = run([VerifyMath(answer_format="hash", on_fail="keep")], [row]).rows[0]
    assert hashed["verification"] == "no answer found: no #### in the answer"


def test_verify_math_works_off_the_main_thread() -> None:
    """math-verify's timeout uses signal.alarm, which only the main thread may set; a run whose
    loop is in another thread (Jupyter, the web app) must still verify, not read nothing."""
    import threading

    rows = [{"solution": "\\boxed{\\frac{2}{4}}", "reference_answer": "0.5"}]
    out: list[Any] = []
    worker = threading.Thread(target=lambda: out.append(run([VerifyMath()], rows)))
    worker.start()
    worker.join()
    assert [r["verified"] for r in out[0].rows] == [True] and out[0].failures == []


def test_failed_rows_are_dropped_as_failure_records_with_the_reason(tmp_path: Path) -> None:
    rows = [
        {"solution": "#### 12", "reference_answer": "12"},
        {"solution": "#### 15", "reference_answer": "12"},
        {"solution": "#### 9", "reference_answer": ""},  # nothing to check against
    ]
    result = run([VerifyMath()], rows, tmp_path / "out")
    assert [r["solution"] for r in result.rows] == ["#### 12"]
    assert result.rows[0]["verified"] is True and result.rows[0]["verification"] == "ok"
    by_reason = {f["reason"]: f for f in result.failures}
    assert by_reason["wrong answer"]["detail"] == "wrong answer: expected 12, got 15"
    assert by_reason["wrong answer"]["step"] == "verify_math"
    assert "reference_answer" in by_reason["empty input"]["detail"]
    run_json = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run_json["verification"]["verify_math"]["passed"] == 1
    assert run_json["verification"]["verify_math"]["reasons"] == {"wrong answer": 1}
    assert run_json["failures_by_step"]["verify_math"] == {"wrong answer": 1, "empty input": 1}


def test_a_missing_column_is_refused_before_any_call() -> None:
    model = FakeModel()
    p = Pipeline(
        [TextGeneration(output="solution", template="{{ q }}"), VerifyMath()],
        source=[{"q": "1+1?"}],
        models={"default": model},
    )
    with pytest.raises(PipelineError, match="needs column 'reference_answer'"):
        p.run(None, progress=False)
    assert model.calls == []


def test_chained_verifiers_and_their_reasons(user_module: Path) -> None:
    rows = [
        {"n": 4, "solution": "#### 4", "reference_answer": "4"},
        {"n": 3, "solution": "#### 4", "reference_answer": "3"},
        {"n": 5, "solution": "#### 5", "reference_answer": "5"},
    ]
    steps = [
        VerifyMath(on_fail="keep"),
        VerifyPython(fn="checks:even", reads=["n"], on_fail="keep"),
    ]
    result = run(steps, rows)
    got = [(r["n"], r["verified"], r["verification"]) for r in result.rows]
    assert got == [
        (4, True, "ok"),
        (3, False, "wrong answer: expected 3, got 4; 3 is odd"),
        (5, False, "5 is odd"),
    ]
    # a dropping verifier after a keeping one: the kept failure goes on, its own failure drops
    dropped = run([VerifyMath(on_fail="keep"), VerifyPython(fn="checks:plain", reads=["n"])], rows)
    assert [(r["n"], r["verified"]) for r in dropped.rows] == [(4, True), (3, False), (5, True)]


# -- verify_python -----------------------------------------------------------------------------


def test_verify_python_return_shapes(user_module: Path) -> None:
    rows = [{"n": n} for n in range(1, 5)]
    plain = run([VerifyPython(fn="checks:plain", on_fail="keep")], rows).rows
    assert [r["verification"] for r in plain] == [
        "rejected by checks:plain",
        "rejected by checks:plain",
        "ok",
        "ok",
    ]
    later = run([VerifyPython(fn="checks:later")], rows)  # async functions are awaited
    assert [r["n"] for r in later.rows] == [1, 2, 4]
    wrong = run([VerifyPython(fn="checks:wrong_type")], rows[:1])
    assert wrong.rows == [] and wrong.failures[0]["reason"] == "error: TypeError"
    assert "returned str" in wrong.failures[0]["detail"]


def test_verify_python_from_python_takes_a_function() -> None:
    def short(row: dict[str, Any]) -> tuple[bool, str]:
        return len(row["text"]) < 6, f"too long ({len(row['text'])} chars)"

    result = run(
        [VerifyPython(fn=short, reads=["text"], on_fail="keep")],
        [{"text": "a"}, {"text": "abcdefgh"}],
    )
    assert [r["verification"] for r in result.rows] == ["ok", "too long (8 chars)"]


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        ("nowhere_module_xyz:f", "cannot import 'nowhere_module_xyz'"),
        ("checks:missing", "module 'checks' has no 'missing'"),
        ("checks:NOT_A_FUNCTION", "is not a function"),
        ("checks", "expected 'module:function'"),
    ],
)
def test_verify_python_import_errors_are_one_line_at_build(
    user_module: Path, fn: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        VerifyPython(fn=fn)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=message) as err:
        recipe_from_dict(
            {"name": "t", "source": {"rows": [{"n": 1}]}, "steps": [{"verify_python": {"fn": fn}}]}
        )
    assert "\n" not in str(err.value) and "verify_python" in str(err.value)


def test_a_raising_function_is_an_error_record_and_is_not_cached(
    user_module: Path, isolated_cache: Path
) -> None:
    result = run([VerifyPython(fn="checks:boom", on_fail="keep")], [{"n": 1}])
    assert result.rows == []
    assert result.failures[0]["reason"] == "error: ValueError"
    assert "verification" not in result.summary  # no verdict was counted
    run([VerifyPython(fn="checks:plain", on_fail="keep")], [{"n": 1}])
    db = sqlite3.connect(isolated_cache)
    try:  # only the verdict of checks:plain is kept
        assert [k.split(":")[0] for (k,) in db.execute("SELECT key FROM results")] == [
            "verify_python"
        ]
    finally:
        db.close()


# -- cached verdicts -----------------------------------------------------------------------------


def test_verdicts_are_cached_a_rerun_executes_nothing(user_module: Path, tmp_path: Path) -> None:
    rows = [{"n": n, "other": "x"} for n in range(6)]
    steps = lambda: [VerifyPython(fn="checks:even", reads=["n"], on_fail="keep")]  # noqa: E731
    first = run(steps(), rows, tmp_path / "a")
    assert sorted(executions(user_module)) == list(range(6))
    second = run(steps(), rows, tmp_path / "b")
    assert len(executions(user_module)) == 6  # nothing executed again
    assert [r["verification"] for r in second.rows] == [r["verification"] for r in first.rows]
    assert second.summary["verification"]["verify_python"]["cached"] == 6
    # the key is the values read, not the other columns or the row's position
    shuffled = [{"n": r["n"], "other": "changed"} for r in reversed(rows)]
    run(steps(), shuffled)
    assert len(executions(user_module)) == 6
    # a changed parameter is a new verdict; on_fail is not part of it
    run([VerifyPython(fn="checks:even", reads=["n"])], rows)
    assert len(executions(user_module)) == 6
    run([VerifyPython(fn="checks:even", reads=["n"], cache=False, on_fail="keep")], rows)
    assert len(executions(user_module)) == 12
    run(steps(), rows, cache=False)
    assert len(executions(user_module)) == 18


def test_identical_inputs_in_one_run_are_verified_once(user_module: Path) -> None:
    rows = [{"n": 2}] * 5 + [{"n": 3}] * 5
    result = run([VerifyPython(fn="checks:even", reads=["n"], on_fail="keep")], rows)
    assert sorted(executions(user_module)) == [2, 3]
    assert [r["verified"] for r in result.rows] == [True] * 5 + [False] * 5


def test_a_partial_first_run_leaves_only_the_rest_to_verify(
    user_module: Path, tmp_path: Path
) -> None:
    rows = [{"n": n} for n in range(8)]
    run([VerifyPython(fn="checks:even", reads=["n"], on_fail="keep")], rows[:3])
    assert executions(user_module) == [0, 1, 2]
    result = run([VerifyPython(fn="checks:even", reads=["n"], on_fail="keep")], rows)
    assert sorted(executions(user_module)) == [0, 1, 2, 3, 4, 5, 6, 7]  # 3 … 7 once each
    assert result.summary["verification"]["verify_python"]["cached"] == 3


def test_kill_9_during_verification_reverifies_only_what_had_not_finished(
    user_module: Path, tmp_path: Path
) -> None:
    script = tmp_path / "go.py"
    script.write_text(
        textwrap.dedent(
            """
            from datamill import FakeModel, Pipeline, VerifyPython
            rows = [{"n": n} for n in range(8)]
            Pipeline([VerifyPython(fn="checks:even", reads=["n"], on_fail="keep")], source=rows,
                     models={"default": FakeModel()}).run(None, progress=False)
            """
        ),
        encoding="utf-8",
    )
    env = {
        **os.environ,
        "CHECK_KILL_AT": "5",  # the 6th row kills the process inside its check
        "PYTHONPATH": os.pathsep.join([str(SRC), str(tmp_path / "usermods")]),
    }
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    assert executions(user_module) == [0, 1, 2, 3, 4, 5]  # 5 began and never finished
    result = run(
        [VerifyPython(fn="checks:even", reads=["n"], on_fail="keep")], [{"n": n} for n in range(8)]
    )
    assert executions(user_module) == [0, 1, 2, 3, 4, 5, 5, 6, 7]  # only 5, 6, 7 again
    assert [r["verified"] for r in result.rows] == [n % 2 == 0 for n in range(8)]
    assert result.summary["verification"]["verify_python"]["cached"] == 5


# -- verify_json -----------------------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "items": {
            "type": "array",
            "items": {"type": "object", "properties": {"price": {"type": "number"}}},
        },
    },
    "required": ["name"],
}


def test_verify_json_against_a_schema_names_the_first_error_path(tmp_path: Path) -> None:
    rows = [
        {"response": 'Here:\n```json\n{"name": "a", "items": [{"price": 1}]}\n```'},
        {"response": {"name": "b", "items": [{"price": 1}, {"price": "abc"}]}},
        {"response": '{"items": []}'},
        {"response": "not json at all"},
    ]
    result = run([VerifyJSON(schema=SCHEMA, on_fail="keep")], rows)
    assert [r["verification"] for r in result.rows] == [
        "ok",
        "schema mismatch at $.items[1].price: 'abc' is not of type 'number'",
        "schema mismatch at $: 'name' is a required property",
        "not JSON: Expecting value: line 1 column 1 (char 0)",
    ]
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA), encoding="utf-8")
    from_file = run([VerifyJSON(schema=str(path), on_fail="keep")], rows)
    assert [r["verified"] for r in from_file.rows] == [True, False, False, False]


def test_verify_json_keys_on_the_schema_content(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"type": "object"}), encoding="utf-8")
    rows = [{"response": "[1]"}]
    assert run([VerifyJSON(schema=str(path), on_fail="keep")], rows).rows[0]["verified"] is False
    path.write_text(json.dumps({"type": "array"}), encoding="utf-8")  # the file changed
    assert run([VerifyJSON(schema=str(path), on_fail="keep")], rows).rows[0]["verified"] is True


def test_verify_json_with_a_pydantic_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "shapes.py").write_text(
        "from pydantic import BaseModel\n\n"
        "class Item(BaseModel):\n    price: float\n\n"
        "class Order(BaseModel):\n    name: str\n    items: list[Item]\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    rows = [
        {"response": '{"name": "a", "items": [{"price": 2.5}]}'},
        {"response": '{"name": "a", "items": [{"price": 1}, {"price": "abc"}]}'},
    ]
    result = run([VerifyJSON(pydantic_model="shapes:Order", on_fail="keep")], rows)
    assert result.rows[0]["verification"] == "ok"
    assert result.rows[1]["verification"].startswith("schema mismatch at $.items[1].price: ")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "give either schema"),
        ({"schema": {"type": "object"}, "pydantic_model": "x:Y"}, "cannot import 'x'"),
        ({"schema": {"type": "nonsense"}}, "not a valid JSON Schema: at \\$.type"),
        ({"schema": "missing.json"}, "schema file 'missing.json' not found"),
        ({"pydantic_model": "json:loads"}, "is not a pydantic model class"),
        ({"schema": {"type": "object"}, "colum": "x"}, "unknown parameter 'colum'"),
    ],
)
def test_verify_json_bad_parameters_are_one_line(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        VerifyJSON(**params)
    assert "\n" not in str(err.value)


# -- verify_code, against a stand-in sandbox ------------------------------------------------------------


@dataclass
class FakeResult:
    passed: bool
    reason: str


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """A stand-in ``datamill.sandbox``: runs nothing; a program passes when the tests text is in
    it. Records each call and the most programs in flight at once."""
    seen = types.SimpleNamespace(calls=[], in_flight=0, most=0)

    @dataclass(frozen=True)
    class Limits:
        wall_seconds: float = 10.0
        cpu_seconds: int = 5
        memory_mb: int = 512
        file_size_mb: int = 16
        processes: int = 32
        network: bool = False

    async def arun_python(
        code: str, tests: str, *, limits: Limits = Limits(), style: str = "auto"
    ) -> FakeResult:
        seen.calls.append((code, tests, limits, style))
        seen.in_flight += 1
        seen.most = max(seen.most, seen.in_flight)
        for _ in range(5):
            await asyncio.sleep(0)  # let every other row reach the gate
        seen.in_flight -= 1
        if "while True" in code:
            return FakeResult(False, f"timeout after {limits.wall_seconds:g} s")
        if tests in code:
            return FakeResult(True, "ok")
        return FakeResult(False, f"test failed: {tests}")

    module = types.ModuleType("datamill.sandbox")
    module.Limits = Limits  # type: ignore[attr-defined]
    module.arun_python = arun_python  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datamill.sandbox", module)
    return seen


def test_extract_code_takes_the_python_block() -> None:
    answer = "Here:\n```python\ndef f():\n    return 1\n```\nUsage:\n```python\nf()\n```"
    assert extract_code(answer) == "def f():\n    return 1\n"
    assert extract_code("```\nx = 1\n```") == "x = 1\n"
    assert extract_code("x = 1") == "x = 1"


def test_verify_code_passes_columns_limits_and_style(sandbox: types.SimpleNamespace) -> None:
    rows = [
        {
            "solution": "```python\ndef f(): return 1\nassert f() == 1\n```",
            "tests": "assert f() == 1",
        },
        {"solution": "def f(): return 2", "tests": ["assert f() == 1", "assert f() > 0"]},
        {"solution": "while True: pass", "tests": "assert True"},
    ]
    step = VerifyCode(limits={"wall_seconds": 5, "memory_mb": 256}, style="assert", on_fail="keep")
    result = run([step], rows)
    assert [r["verification"] for r in result.rows] == [
        "ok",
        "test failed: assert f() == 1\nassert f() > 0".replace("\n", " "),
        "timeout after 5 s",
    ]
    code, tests, limits, style = sandbox.calls[0]
    assert code == "def f(): return 1\nassert f() == 1\n" and tests == "assert f() == 1"
    assert (limits.wall_seconds, limits.memory_mb, limits.cpu_seconds, style) == (
        5,
        256,
        5,
        "assert",
    )
    assert sandbox.calls[1][1] == "assert f() == 1\nassert f() > 0"
    assert result.summary["verification"]["verify_code"]["reasons"] == {
        "test failed": 1,
        "timeout": 1,
    }


def test_verify_code_runs_at_most_max_workers_at_once(sandbox: types.SimpleNamespace) -> None:
    rows = [{"solution": f"x = {i}", "tests": f"x = {i}"} for i in range(8)]
    result = run([VerifyCode(max_workers=3)], rows)
    assert len(result.rows) == 8 and len(sandbox.calls) == 8
    assert sandbox.most == 3


def test_verifiers_can_be_pickled_after_use(
    sandbox: types.SimpleNamespace, user_module: Path
) -> None:
    """Ray ships steps to its workers by pickling them, also after a local segment used them."""
    import pickle

    code = VerifyCode(max_workers=2)
    python = VerifyPython(fn="checks:plain", reads=["n"], on_fail="keep")
    json_step = VerifyJSON(schema={"type": "object"}, column="solution", on_fail="keep")
    rows = [{"solution": "{}", "tests": "{}", "n": 3}]
    run([code, python, json_step], rows)
    for step in (code, python, json_step, VerifyMath(), VerifyConstraints()):
        again = pickle.loads(pickle.dumps(step))
        assert again.model_dump() == step.model_dump()
    assert [r["verified"] for r in run([pickle.loads(pickle.dumps(code))], rows).rows] == [True]


def test_verify_code_bad_limits_are_refused() -> None:
    with pytest.raises(ConfigError, match="limits"):
        VerifyCode(limits={"wall_secs": 3})
    with pytest.raises(ConfigError, match="max_workers"):
        VerifyCode(max_workers=0)


# -- verify_constraints, against a stand-in library ------------------------------------------------


@pytest.fixture
def constraints_lib(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """A stand-in ``datamill.constraints`` with two checkers: ``lowercase`` and
    ``max_words(n)``; an unknown id is a ConfigError, as in the real library."""
    prompts: list[Any] = []

    @dataclass(frozen=True)
    class Constraint:
        id: str
        kwargs: dict[str, Any]

    @dataclass(frozen=True)
    class CheckResult:
        id: str
        passed: bool
        reason: str

    def from_dicts(items: list[dict[str, Any]]) -> list[Constraint]:
        out = []
        for item in items:
            if item.get("id") not in ("lowercase", "max_words"):
                raise ConfigError(f"unknown constraint {item.get('id')!r}")
            out.append(Constraint(item["id"], dict(item.get("kwargs") or {})))
        return out

    def check(
        response: str, constraints: list[Constraint], *, prompt: str | None = None
    ) -> list[CheckResult]:
        prompts.append(prompt)
        results = []
        for c in constraints:
            if c.id == "lowercase":
                results.append(CheckResult(c.id, response == response.lower(), "has capitals"))
            else:
                n = len(response.split())
                results.append(CheckResult(c.id, n <= c.kwargs["n"], f"{n} words"))
        return results

    module = types.ModuleType("datamill.constraints")
    module.from_dicts = from_dicts  # type: ignore[attr-defined]
    module.check = check  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datamill.constraints", module)
    return prompts


def test_verify_constraints_reasons(constraints_lib: list[Any]) -> None:
    both = [{"id": "lowercase", "kwargs": {}}, {"id": "max_words", "kwargs": {"n": 3}}]
    rows = [
        {"response": "all lower", "constraints": both, "prompt": "p1"},
        {"response": "Has Capitals", "constraints": both, "prompt": "p2"},
        {"response": "Far Too Many Words", "constraints": json.dumps(both), "prompt": "p3"},
        {"response": "Anything", "constraints": [], "prompt": "p4"},
        {"response": "x", "constraints": [{"id": "nope"}], "prompt": "p5"},
        {"response": "x", "constraints": None, "prompt": "p6"},
    ]
    result = run([VerifyConstraints(prompt="prompt", on_fail="keep")], rows)
    assert [r["verification"] for r in result.rows] == [
        "ok",
        "constraint 'lowercase' not met: has capitals",
        "constraints not met: 'lowercase', 'max_words'",
        "ok",
    ]
    assert [(f["reason"], f["detail"]) for f in result.failures] == [
        ("bad constraints", "unknown constraint 'nope'"),
        ("empty input", "column 'constraints' is null; verify_constraints needs a value"),
    ]
    assert constraints_lib == ["p1", "p2", "p3", "p4"]
    counts = result.summary["verification"]["verify_constraints"]
    assert (counts["passed"], counts["failed"], counts["reasons"]) == (
        2,
        2,
        {"constraint not met": 2},
    )


# -- registry, recipes, CLI -------------------------------------------------------------------------


def test_every_verifier_kind_is_registered_and_builds_from_a_recipe(tmp_path: Path) -> None:
    kinds = {"verify_math", "verify_code", "verify_constraints", "verify_json", "verify_python"}
    assert kinds <= set(STEP_KINDS)
    for kind in kinds:
        cls = step_class(kind)
        assert cls.kind == kind and set(cls.model_construct().produces()) == {
            "verified",
            "verification",
        }
    p = recipe_from_dict(
        {
            "name": "t",
            "source": {"rows": [{"solution": "#### 3", "reference_answer": "3"}]},
            "steps": [{"verify_math": {"answer_format": "hash"}}],
        }
    )
    assert p.check()[-1] == ["solution", "reference_answer", "verified", "verification"]
    with pytest.raises(ConfigError, match="answer_format") as err:
        recipe_from_dict(
            {
                "name": "t",
                "source": {"rows": [{"a": 1}]},
                "steps": [{"verify_math": {"answer_format": "box"}}],
            }
        )
    assert "\n" not in str(err.value)


def test_verdict_categories() -> None:
    assert Verdict.fail("wrong answer: expected 1, got 2").category == "wrong answer"
    assert Verdict.fail("timeout after 5 s").category == "timeout"
    assert Verdict.fail("timeout after 2.5s").category == "timeout"
    assert (
        Verdict.fail("constraints not met: 'a'", "constraint not met").category
        == "constraint not met"
    )
    assert Verdict.ok().category == "ok"


def test_missing_math_verify_is_the_pip_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "math_verify" else real(name, *a),
    )
    with pytest.raises(MissingDependency, match=r"pip install 'datamill\[verify\]'"):
        VerifyMath()


def test_cli_prints_the_yield_per_verifier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        textwrap.dedent(
            """
            name: mathcheck
            source:
              rows:
                - {solution: "#### 12", reference_answer: "12"}
                - {solution: "#### 15", reference_answer: "12"}
                - {solution: "#### 7", reference_answer: "7"}
            steps:
              - verify_math: {answer_format: hash}
            """
        ),
        encoding="utf-8",
    )
    code = 0
    try:
        main(["run", str(recipe), "-o", str(tmp_path / "out"), "--quiet", "--model", "fake"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr().out
    assert code == 0, out
    assert "yield verify_math: 2 of 3 verified (67%); 1 wrong answer" in out
    assert "1 row lost at verify_math: 1 wrong answer" in out
