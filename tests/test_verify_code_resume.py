"""A run killed (SIGKILL) in the middle of ``verify_code`` resumes without running any finished
program again: the verdicts are cached as they finish, like model calls (issue: verified data)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import datamill.sandbox
from datamill import FakeModel, Pipeline, VerifyCode

SRC = Path(__file__).resolve().parents[1] / "src"


def rows() -> list[dict[str, Any]]:
    """Eight programs; the odd ones are wrong (their test fails)."""
    return [
        {
            "solution": f"def f():\n    return {n if n % 2 == 0 else n + 1}\n",
            "tests": f"assert f() == {n}",
        }
        for n in range(8)
    ]


def steps() -> list[Any]:
    return [VerifyCode(on_fail="keep", max_workers=1)]  # one at a time: a known order


def test_kill_9_during_verify_code_runs_no_finished_program_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "executions.log"
    script = tmp_path / "go.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, signal
            import datamill.sandbox
            from datamill import FakeModel, Pipeline, VerifyCode
            real = datamill.sandbox.arun_python

            async def counted(code, tests, **kw):
                with open({str(log)!r}, "a") as fh:
                    fh.write(tests + "\\n")
                if tests.endswith("== 5"):  # the 6th program: killed while it runs
                    os.kill(os.getpid(), signal.SIGKILL)
                return await real(code, tests, **kw)

            datamill.sandbox.arun_python = counted
            rows = {rows()!r}
            Pipeline([VerifyCode(on_fail="keep", max_workers=1)], source=rows,
                     models={{"default": FakeModel()}}).run(None, progress=False)
            """
        ),
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, timeout=600)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    first = log.read_text().splitlines()
    assert first == [f"assert f() == {n}" for n in range(6)]  # 0-4 finished, 5 was killed

    real = datamill.sandbox.arun_python
    again: list[str] = []

    async def counted(code: str, tests: str, **kw: Any) -> Any:
        again.append(tests)
        return await real(code, tests, **kw)

    monkeypatch.setattr(datamill.sandbox, "arun_python", counted)
    result = Pipeline(steps(), source=rows(), models={"default": FakeModel()}).run(
        None, progress=False
    )
    assert again == [f"assert f() == {n}" for n in (5, 6, 7)]  # only what had not finished
    assert [r["verified"] for r in result.rows] == [n % 2 == 0 for n in range(8)]
    assert result.summary["verification"]["verify_code"]["cached"] == 5
