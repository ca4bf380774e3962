"""Counts in the printed lines agree with their number: ``1 row``, ``2 rows`` (``datamill.words``
and the lines that use it: run's summary, row losses, the mixture's short line, batch import)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datamill.cli import main
from datamill.pipeline.mix import short_line
from datamill.pipeline.stats import Stats
from datamill.words import plural


def test_plural_of_one_and_of_more() -> None:
    assert plural(1, "row") == "1 row"
    assert plural(2, "row") == "2 rows"
    assert plural(0, "row") == "0 rows"
    assert plural(1, "source row") == "1 source row"
    assert plural(3, "batch", "batches") == "3 batches"


@pytest.mark.parametrize(("n", "text"), [(1, "1 row lost"), (2, "2 rows lost")])
def test_loss_lines(n: int, text: str) -> None:
    stats = Stats()
    for _ in range(n):
        stats.failures_by_step["judge"]["timeout"] += 1
    assert stats.losses() == [f"{text} at judge: {n} timeout"]


@pytest.mark.parametrize(
    ("target", "text"), [(1, "travel 0 of 1 row ("), (2, "travel 0 of 2 rows (")]
)
def test_the_mixture_short_line(target: int, text: str) -> None:
    mix = {
        "short": ["travel"],
        "rows": {"travel": 0},
        "target_counts": {"travel": target},
        "actual": {"travel": 0.0},
        "targets": {"travel": 0.5},
        "within_tolerance": False,
        "by": "topic",
        "tolerance": 0.05,
    }
    line = short_line({"mix": mix, "stopped_by": "--max-cost 1", "attempts": 1})
    assert line is not None and text in line
    assert "fell short after 1 source row tried" in line


@pytest.mark.parametrize(("n", "text"), [(1, "wrote 1 row to"), (2, "wrote 2 rows to")])
def test_the_run_summary_line(
    n: int, text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["run", "instructions-basic", "--model", "fake", "--limit", str(n)]
    main([*args, "-o", str(tmp_path / "out"), "-q", "--no-cache"])
    assert text in capsys.readouterr().out


@pytest.mark.parametrize(("n", "text"), [(1, "1 request failed"), (2, "2 requests failed")])
def test_the_batch_import_line(
    n: int, text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results.jsonl"
    lines = [
        {"custom_id": f"{i:064x}-n1", "response": None, "error": "model not found"}
        for i in range(n)
    ]
    results.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    with pytest.raises(SystemExit) as done:
        main(["batch", "import", str(results), "--cache", str(tmp_path / "c.sqlite")])
    assert done.value.code == 1  # nothing imported
    out = " ".join(capsys.readouterr().out.split())
    assert "imported 0 answers" in out and f"; {text} (first:" in out
