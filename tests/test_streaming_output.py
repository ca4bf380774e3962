"""Memory bounded by the rows in flight: finished rows spill to disk in key order (RowSpool), the
Parquet file is written a row group at a time, the report samples, the failure log counts, and
large runs give ``RunResult.rows`` as a sequence read back from disk."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from datamill import FakeModel, FormatSFT, Pipeline, TextGeneration, step
from datamill.errors import InputError
from datamill.io import sinks
from datamill.io.sources import (
    EmptyRows,
    JsonlSource,
    Read,
    RowsSource,
    check_rows,
    scan_and_check,
)
from datamill.pipeline import run as run_module
from datamill.pipeline import spool as spool_module
from datamill.pipeline.runner import FailureLog, Runner
from datamill.pipeline.spool import RowSpool, SpooledRows
from datamill.pipeline.stats import Stats
from datamill.report import write as report_write
from datamill.steps.dedup import ExactDedup


def tiny_spool(monkeypatch: pytest.MonkeyPatch, keep: int = 10) -> None:
    """Spill after a handful of rows, so small runs go through files and merges."""
    monkeypatch.setattr(spool_module, "BUFFER_ROWS", 7)
    monkeypatch.setattr(spool_module, "BATCH_ROWS", 3)
    monkeypatch.setattr(run_module, "KEEP_ROWS", keep)


# -- the spool ---------------------------------------------------------------------------------
def test_spool_reads_scrambled_rows_back_in_key_order_through_spilled_runs() -> None:
    keys = [(i,) for i in range(200)] + [(i, j) for i in range(0, 200, 9) for j in range(2)]
    random.Random(3).shuffle(keys)
    spool = RowSpool(buffer_rows=5, batch_rows=4)
    for n, key in enumerate(keys):
        spool.add(key, {"key": list(key)})
        if n % 11 == 0:
            spool.advance(min(keys[n:]))  # what is still to come is never below this
    spool.finish()
    assert spool.spilled and spool.runs > 1
    expected = sorted(keys)
    assert [k for k, _ in spool] == expected
    assert [tuple(r["key"]) for _, r in spool] == expected  # a second read gives the same
    assert len(spool) == len(keys)
    folder = spool._folder.path
    assert folder is not None and any(folder.iterdir())
    spool.close()
    assert not folder.exists()


def test_spool_rows_in_key_order_make_one_run() -> None:
    spool = RowSpool(buffer_rows=5, batch_rows=4)
    for i in range(100):
        spool.add((i,), {"i": i})
        spool.advance((i + 1,))
    spool.finish()
    assert spool.runs == 1 and spool.spilled
    assert [r["i"] for _, r in spool] == list(range(100))


def test_spool_equal_keys_keep_the_order_they_came_in() -> None:
    spool = RowSpool(buffer_rows=2, batch_rows=2)
    for n in range(9):
        spool.add((n % 3,), {"n": n})
    spool.finish()
    assert [r["n"] for _, r in spool] == [0, 3, 6, 1, 4, 7, 2, 5, 8]


def test_spool_files_go_with_the_spool() -> None:
    spool = RowSpool.of((((i,), {"i": i}) for i in range(50)), buffer_rows=4, batch_rows=4)
    folder = spool._folder.path
    assert folder is not None and folder.exists()
    del spool
    assert not folder.exists()


def test_spooled_rows_is_a_read_only_sequence() -> None:
    rows = [{"i": i, "tags": [i, "x"]} for i in range(30)]
    view = RowSpool.of(((i,), r) for i, r in enumerate(rows)).rows()
    assert isinstance(view, SpooledRows)
    assert len(view) == 30
    assert view == rows and view != rows[:-1]
    assert view[0] == rows[0] and view[-1] == rows[-1] and view[7] == rows[7]
    assert view[3:9:2] == rows[3:9:2] and view[::-1] == rows[::-1]
    assert list(view) == rows
    with pytest.raises(IndexError):
        view[30]
    assert "30 rows" in repr(view)


# -- the runner and a whole run ----------------------------------------------------------------
def pipeline(rows: int, latency: object = 0.0, dedup: bool = False) -> Pipeline:
    steps: list[object] = [
        TextGeneration(template="Write about {{ topic }}.", output="response", truncated="keep"),
        FormatSFT(instruction="topic", response="response"),
    ]
    if dedup:
        steps.insert(1, ExactDedup(columns=["topic"]))
    return Pipeline(
        steps,  # type: ignore[arg-type]
        source=[{"topic": f"topic {i % 40 if dedup else i}"} for i in range(rows)],
        models={"default": FakeModel(max_concurrency=16, latency=latency)},  # type: ignore[arg-type]
    )


def slow_sevens(request: object) -> float:
    """Rows whose topic ends in 7 answer late, so rows finish out of key order."""
    text = json.dumps(getattr(request, "messages", None) or getattr(request, "prompt", ""))
    return 0.02 if "7." in text else 0.0


def test_a_spilled_run_gives_the_rows_of_an_in_memory_run_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = pipeline(120, slow_sevens).run(None, cache=False)
    assert isinstance(small.rows, list) and len(small.rows) == 120
    tiny_spool(monkeypatch)
    big = pipeline(120, slow_sevens).run(tmp_path / "out", cache=False)
    assert isinstance(big.rows, SpooledRows)
    assert big.rows == small.rows
    assert [r["messages"][0]["content"] for r in big.rows] == [f"topic {i}" for i in range(120)]
    table = pq.read_table(tmp_path / "out" / sinks.DATA_FILE)
    assert table.to_pylist() == list(small.rows)
    assert json.loads((tmp_path / "out" / "run.json").read_text())["rows"] == 120


def test_fifty_thousand_rows_come_back_in_order_and_as_a_small_run_gives_them(
    tmp_path: Path,
) -> None:
    big = pipeline(50_000).run(tmp_path / "out", cache=False)
    assert isinstance(big.rows, SpooledRows) and len(big.rows) == 50_000
    small = pipeline(300).run(None, cache=False)
    assert big.rows[:300] == small.rows
    expected = iter(f"topic {i}" for i in range(50_000))
    assert all(r["messages"][0]["content"] == next(expected) for r in big.rows)
    data = pq.ParquetFile(tmp_path / "out" / sinks.DATA_FILE)
    assert data.metadata.num_rows == 50_000 and data.num_row_groups > 1
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["rows"] == 50_000
    assert any("sample of 20,000 of the 50,000 rows" in n for n in report["notes"])
    assert report["fields"]["instruction"]["count"] == 20_000  # drawn as the Parquet was written


def test_a_global_step_over_spilled_rows_keeps_what_it_keeps_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = pipeline(200, slow_sevens, dedup=True).run(None, cache=False)
    assert len(small.rows) == 40  # 40 distinct topics
    tiny_spool(monkeypatch, keep=5)
    big = pipeline(200, slow_sevens, dedup=True).run(tmp_path / "o", cache=False)
    assert isinstance(big.rows, SpooledRows)
    assert list(big.rows) == list(small.rows)
    assert big.stats.failures == small.stats.failures == {"exact duplicate": 160}
    assert big.failures == small.failures  # the same rows, keys and details
    assert big.failures[0]["key"] == [40] and big.failures[0]["row"]["topic"] == "topic 0"


def test_dedup_streams_spooled_rows_and_keeps_only_hashes() -> None:
    rows = [{"id": i, "text": f"text {i % 7}"} for i in range(50)]
    spool = RowSpool.of((((i,), r) for i, r in enumerate(rows)), buffer_rows=4, batch_rows=4)
    runner = Runner({}, Stats(), FailureLog(None))
    out = asyncio.run(runner.run_global(ExactDedup(columns=["text"]), spool))
    assert isinstance(out, RowSpool)
    assert [(k, r["id"]) for k, r in out] == [((i,), i) for i in range(7)]
    assert [r["key"] for r in runner.failures.records] == [[i] for i in range(7, 50)]
    assert runner.stats.steps["dedup_exact"].rows_out == 7


def test_a_top_up_run_still_reaches_its_target_with_a_tiny_spool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tiny_spool(monkeypatch, keep=1_000)
    every_third = step(reads=["row"])(lambda r: r if r["row"] % 3 == 0 else None)
    p = Pipeline(
        [every_third, ExactDedup(columns=["row"])],
        source=EmptyRows(10),
        models={"default": FakeModel()},
        target_rows=10,
        max_attempts=100,
    )
    result = p.run(None, cache=False)
    assert [r["row"] for r in result.rows] == list(range(0, 30, 3))
    assert result.summary["reached"] is True and result.summary["rounds"] == 2


# -- the sink ----------------------------------------------------------------------------------
def test_parquet_row_groups_share_one_type_per_column(tmp_path: Path) -> None:
    rows = [
        {"n": 1, "meta": {"a": 1}, "mixed": "text", "blank": None},
        {"n": 2, "meta": {"a": 2}, "mixed": "more", "blank": None},
        {"n": 2.5, "meta": {"b": "x"}, "mixed": 3, "blank": None},
        {"n": 4, "meta": None, "mixed": [1], "blank": "now"},
        {"n": None, "meta": {"a": 5, "b": "y"}, "mixed": None, "blank": None},
    ]
    path = tmp_path / "d.parquet"
    sinks.write_parquet(path, rows, row_group_rows=2)
    assert pq.ParquetFile(path).num_row_groups == 3
    back = pq.read_table(path).to_pylist()
    assert [r["n"] for r in back] == [1.0, 2.0, 2.5, 4.0, None]
    assert [r["meta"] for r in back] == [
        {"a": 1, "b": None},
        {"a": 2, "b": None},
        {"a": None, "b": "x"},
        None,
        {"a": 5, "b": "y"},
    ]
    assert [r["mixed"] for r in back] == ['"text"', '"more"', "3", "[1]", None]
    assert [r["blank"] for r in back] == [None, None, None, "now", None]
    whole = tmp_path / "whole.parquet"
    sinks.write_parquet(whole, rows)  # one row group: what rows_to_table gives
    assert pq.read_table(whole).to_pylist() == sinks.rows_to_table(rows).to_pylist() == back


# -- failures, the report, the source check ----------------------------------------------------
def test_failure_log_keeps_some_records_and_counts_and_writes_all(tmp_path: Path) -> None:
    log = FailureLog(tmp_path / "f.jsonl", keep=3)
    for i in range(10):
        log.add({"step": "s", "reason": "r", "key": [i], "row": {"i": i}})
    log.close()
    assert log.count == 10
    assert [r["key"] for r in log.records] == [[0], [1], [2]]
    lines = (tmp_path / "f.jsonl").read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == [[i] for i in range(10)]
    assert len(FailureLog(None).records) == 0 and FailureLog(None).keep is None


def test_a_run_with_many_failures_keeps_a_thousand_records_and_writes_them_all(
    tmp_path: Path,
) -> None:
    p = Pipeline(
        [TextGeneration(template="{{ topic }}", output="response", max_tokens=1)],
        source=[{"topic": f"topic number {i}"} for i in range(1_200)],
        models={"default": FakeModel()},
    )
    result = p.run(tmp_path / "out", cache=False)
    assert result.stats.failed_rows == 1_200
    assert len(result.failures) == 1_000
    assert [r["key"] for r in result.failures] == [[i] for i in range(1_000)]
    lines = (tmp_path / "out" / "failures.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["key"][0] for line in lines) == list(range(1_200))


def test_report_measures_a_sample_of_a_large_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_write, "REPORT_ROWS", 50)
    rows = [{"instruction": f"question {i} " * (1 + i % 5), "response": "ok"} for i in range(400)]
    report = report_write.write_report(tmp_path, rows, {})
    assert report["rows"] == 400
    assert report["fields"]["instruction"]["count"] == 50
    assert "measured on a random sample of 50 of the 400 rows" in report["notes"]
    small = report_write.write_report(tmp_path, rows[:50], {})
    assert small["fields"]["instruction"]["count"] == 50
    assert not any("sample" in n for n in small["notes"])


def test_sample_rows_is_uniform_ordered_and_fixed() -> None:
    first = report_write.sample_rows(({"i": i} for i in range(10_000)), 100)
    again = report_write.sample_rows(({"i": i} for i in range(10_000)), 100)
    assert first == again and len(first) == 100
    picked = [r["i"] for r in first]
    assert picked == sorted(picked) and len(set(picked)) == 100
    assert sum(p >= 5_000 for p in picked) in range(30, 71)  # both halves are sampled
    assert report_write.sample_rows(iter([{"i": 1}]), 100) == [{"i": 1}]


def test_check_rows_reads_a_stream_once_and_refuses_as_before(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    lines = [{"topic": f"t{i}"} for i in range(50)] + [{"topic": 7}] + [{"other": 1}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    source = JsonlSource(path)
    read = {"topic": Read("step 1 (text_generation)", True, as_text=True)}
    passes: list[int] = []

    def once() -> object:
        passes.append(1)
        yield from source.stream()

    with pytest.raises(InputError) as err:
        check_rows(source, once(), read)
    assert passes == [1]
    # a missing column is reported before a type mix, as a check of all rows at once would
    assert str(err.value) == (
        f"{path}:52: the row has no column 'topic' (1 of 52 rows lack it); "
        "step 1 (text_generation) needs it in every row"
    )
    path.write_text("".join(json.dumps(r) + "\n" for r in lines[:-1]))
    with pytest.raises(InputError, match=r"in.jsonl:51: column 'topic' holds a number here"):
        check_rows(source, source.stream(), read)
    assert source.scan().rows == 51 and source.scan().columns == ["topic"]


class CountedRows(RowsSource):
    """Inline rows that count how often they are read from the start."""

    def __init__(self, data: list[dict[str, object]]) -> None:
        super().__init__(data)
        self.passes = 0

    def iter_rows(self) -> Iterator[dict[str, object]]:
        self.passes += 1
        return super().iter_rows()


def test_scan_and_check_reads_the_source_once_when_the_first_row_has_every_column() -> None:
    steps = [TextGeneration(template="{{ x }}", output="out")]
    source = CountedRows([{"x": f"v{i}", "y": i} for i in range(20)])
    scan = scan_and_check(source, steps)
    assert (scan.rows, scan.columns, scan.common) == (20, ["x", "y"], ["x", "y"])
    assert source.passes == 2  # the first row (to know the columns), then one pass
    late = CountedRows([{"y": 0}] + [{"x": f"v{i}", "y": i} for i in range(1, 20)])
    with pytest.raises(InputError) as err:
        scan_and_check(late, steps)
    assert str(err.value) == (
        "inline rows row 1: the row has no column 'x' (1 of 20 rows lack it); "
        "step 1 (text_generation) needs it in every row"
    )
    assert late.passes == 3  # a column the first row lacks: the check takes its own pass
