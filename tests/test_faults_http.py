"""Faults from models over real HTTP: every row ends done or recorded, and the counts add up.

A fault-injecting server on 127.0.0.1 answers 1,000 rows with a quarter of its answers spoiled
(timeouts, connection resets, 429 with and without Retry-After, 500, 503, empty completions,
truncated outputs, unparsable text). Transport faults are retried with backoff; what retrying
cannot fix ends in ``failures.jsonl`` with its reason and, where there was one, the raw output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest

from datamill import FakeModel, Pipeline, Request
from datamill.errors import ParseError
from datamill.models.base import Completion
from datamill.models.openai import OpenAIModel
from datamill.rows import Row
from datamill.steps.base import Context
from datamill.tasks.base import Task
from datamill.testing.server import FAULT_KINDS, Faults, serve_in_thread

pytestmark = pytest.mark.timeout(900)  # bounds a hang; a loaded machine is slow

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
HTTP_FAULTS = ("timeout", "reset", "429", "429-retry-after", "500", "503")
RETRY_REASONS = {
    "timeout",
    "connection reset",
    "rate limited",
    "server error 500",
    "server error 503",
}


class AnswerJSON(Task):
    """Asks for ``{"answer": ...}`` and refuses anything that is not that JSON."""

    kind: ClassVar[str] = "answer_json"

    def required_columns(self) -> list[str]:
        return ["question"]

    def produces(self) -> list[str]:
        return ["answer"]

    def requests(self, row: Row, ctx: Context) -> list[Request]:
        return [Request.chat(row["question"], max_tokens=64, json_schema=SCHEMA)]

    def parse(self, completions: list[list[Completion]], row: Row) -> Row:
        text = completions[0][0].text
        try:
            return {"answer": json.loads(text)["answer"]}
        except (ValueError, KeyError, TypeError):
            raise ParseError("unparsable JSON", text) from None


def answer(request: Request, i: int) -> str:
    return json.dumps({"answer": f"about {request.messages[-1]['content']}, in a few plain words"})  # type: ignore[index]


def test_a_thousand_rows_through_a_quarter_of_faults_end_done_or_recorded(tmp_path: Path) -> None:
    faults = Faults(rate=0.25, kinds=FAULT_KINDS, seed=11, retry_after=0.05, hang=60)
    rows = [{"id": i, "question": f"question number {i}"} for i in range(1000)]
    with serve_in_thread(FakeModel(answer), name="smollm", faults=faults) as server:
        model = OpenAIModel(
            "smollm",
            server.url,
            timeout=10.0,  # generous: only a timeout fault (held 60 s) reaches it, even under load
            max_retries=3,
            backoff=0.01,
            max_backoff=0.05,
            max_concurrency=64,
            min_concurrency=16,
            empty_retries=1,
        )
        result = Pipeline([AnswerJSON()], source=rows, models={"default": model}).run(
            tmp_path / "out"
        )
        seen = server.stats

    # every row is either in the dataset or in failures.jsonl, never both, never neither
    done = [r["id"] for r in result.rows]
    records = [
        json.loads(line) for line in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()
    ]
    lost = [r["row"]["id"] for r in records]
    assert sorted(done + lost) == list(range(1000))
    assert len(records) == result.stats.failed_rows == len(result.failures)
    assert all(r["answer"].startswith("about question number") for r in result.rows)

    # at least 1,000 requests, at least 20 % of them spoiled
    assert seen.requests >= 1000
    assert sum(seen.faults.values()) >= 0.2 * seen.requests
    assert set(seen.faults) == set(FAULT_KINDS)

    # the client made exactly the attempts the server saw
    assert model.counters["attempts"] == seen.requests, (model.counters, seen.as_dict())
    # each 200 answer became a done row, a recorded bad output, or (empty) one more try
    assert (
        seen.ok == len(done) + seen.faults["length"] + seen.faults["garbage"] + seen.faults["empty"]
    )
    # each transport fault was followed by a retry, or by the row's failure once retries ran out
    by_reason: dict[str, int] = {}
    for r in records:
        by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
    exhausted = sum(n for reason, n in by_reason.items() if reason in RETRY_REASONS)
    assert sum(seen.faults[k] for k in HTTP_FAULTS) == model.counters["retries"] + exhausted * 1
    assert model.counters["retries"] > 0

    # spoiled outputs are recorded with their reason and the raw text
    assert by_reason.get("truncated at max_tokens", 0) == seen.faults["length"]
    assert by_reason.get("unparsable JSON", 0) == seen.faults["garbage"]
    junk = [r for r in records if r["reason"] == "unparsable JSON"]
    assert junk and all(r["raw_output"] and not r["raw_output"][0].isalnum() for r in junk)
    assert set(by_reason) <= RETRY_REASONS | {
        "truncated at max_tokens",
        "unparsable JSON",
        "empty completion",
    }

    # run.json tells the same story
    run: dict[str, Any] = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["failed_rows"] == len(records) and run["rows"] == len(done)
    assert run["failures"] == by_reason
    # ... and says how many attempts were retried, and why
    facts = run["models"]["default"]
    assert facts["retries"] == model.counters["retries"] == sum(facts["retries_by_reason"].values())
    assert set(facts["retries_by_reason"]) <= RETRY_REASONS
    assert facts["structured_output"] == "json_schema"
