"""The output folder: a full disk while writing it, files of another run beside new data, and
runs that write no rows (or fewer rows than the dataset they replace)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from datamill import FakeModel, OutputError, Pipeline, TextGeneration
from datamill.cli import main
from datamill.io import sinks

DATA = Path("data") / "train-00000-of-00001.parquet"


def pipeline(rows: int = 5, max_tokens: int | None = None, words: int = 6) -> Pipeline:
    text = " ".join(f"word{i}" for i in range(words))
    return Pipeline(
        [TextGeneration(output="answer", max_tokens=max_tokens)],
        source=[{"instruction": f"question {i}"} for i in range(rows)],
        models={"default": FakeModel(lambda r, i: text)},
    )


def recipe(folder: Path, rows: int = 5, max_tokens: int = 64) -> Path:
    lines = "\n".join(f"    - instruction: Question number {i}." for i in range(rows))
    path = folder / f"recipe-{rows}-{max_tokens}.yaml"
    path.write_text(
        f"""\
name: outfolder
models:
  default: {{spec: fake}}
source:
  rows:
{lines}
steps:
  - text_generation: {{output: answer, max_tokens: {max_tokens}}}
""",
        encoding="utf-8",
    )
    return path


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (but the lock) with a digest of its bytes."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != sinks.LOCK
    }


def no_space(path: Path, data: bytes) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


# -- a full disk under the output folder -------------------------------------------------------
def test_a_full_disk_while_writing_leaves_the_previous_run_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    pipeline(rows=3).run(out)
    before = snapshot(out)
    assert DATA.as_posix() in before and "run.json" in before
    real = sinks.write_atomic

    def full_at_the_card(path: Path, data: bytes) -> None:
        if path.name == "README.md":
            no_space(path, data)
        real(path, data)

    monkeypatch.setattr(sinks, "write_atomic", full_at_the_card)
    with pytest.raises(OutputError) as err:
        pipeline(rows=5, words=9).run(out)
    message = str(err.value)
    assert "\n" not in message and str(out) in message
    assert "No space left on device" in message and "previous dataset is untouched" in message
    assert snapshot(out) == before  # nothing of the failed run beside the old files, no temporaries


def test_cli_a_full_output_disk_is_one_line_and_a_failing_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def full(path: Path, rows: list[dict[str, object]]) -> None:
        no_space(path, b"")

    monkeypatch.setattr(sinks, "write_parquet", full)
    with pytest.raises(SystemExit) as stop:
        main(["run", str(recipe(tmp_path)), "-o", str(tmp_path / "out"), "-q"])
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err
    assert "Traceback" not in err and not (tmp_path / "out" / "run.json").exists()


def test_a_plot_that_fails_leaves_no_stale_plot_of_the_previous_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    pipeline(rows=3).run(out)
    if not (out / "report.png").exists():
        pytest.skip("no plot is drawn here (matplotlib missing)")
    from datamill.report import plots

    def broken(report: object, path: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(plots, "draw", broken)
    pipeline(rows=5, words=9).run(out)
    assert not (out / "report.png").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["rows"] == 5 and "plot" in report["errors"] and "plot" not in report


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def test_a_really_full_output_disk(tmp_path: Path) -> None:
    disk = tmp_path / "small"
    if os.geteuid() != 0 or not _mount_tmpfs(disk, "400k"):
        pytest.skip("cannot mount a small tmpfs here")
    try:
        out = disk / "out"
        pipeline(rows=2).run(out, cache=tmp_path / "calls.sqlite")
        before = snapshot(out)
        big = Pipeline(  # 300 answers of 4 KB of random hex: far more than the disk holds
            [TextGeneration(output="answer", max_tokens=4)],
            source=[{"instruction": f"question {i}"} for i in range(300)],
            models={"default": FakeModel(lambda r, i: os.urandom(2048).hex())},
        )
        with pytest.raises(OutputError, match="No space left on device"):
            big.run(out, cache=tmp_path / "calls.sqlite")
        assert snapshot(out) == before
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# -- runs that write no rows, or fewer -----------------------------------------------------------
def test_a_run_that_loses_every_row_keeps_the_earlier_dataset(tmp_path: Path) -> None:
    out = tmp_path / "out"
    pipeline(rows=4).run(out)
    before = snapshot(out)
    result = pipeline(rows=4, max_tokens=2).run(out)  # every answer is cut short: all lost
    assert result.rows == [] and result.previous_rows == 4
    assert result.failed_attempt == out / sinks.FAILED_ATTEMPT
    side = {k: v for k, v in snapshot(out).items() if not k.startswith(sinks.FAILED_ATTEMPT)}
    assert side == before  # the finished dataset is exactly as it was
    attempt = json.loads((result.failed_attempt / "run.json").read_text())
    assert attempt["rows"] == 0
    lost = (result.failed_attempt / "failures.jsonl").read_text().splitlines()
    assert len(lost) == 4 and all("truncated" in json.loads(x)["reason"] for x in lost)
    # the next finished run replaces the dataset and clears the failed attempt
    again = pipeline(rows=3).run(out)
    assert again.previous_rows == 4 and not (out / sinks.FAILED_ATTEMPT).exists()


def test_a_first_run_with_no_rows_writes_no_data_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = pipeline(rows=3, max_tokens=2).run(out)
    assert result.rows == [] and result.previous_rows is None and result.failed_attempt is None
    assert not (out / DATA).exists() and not (out / "data").exists()
    assert json.loads((out / "run.json").read_text())["rows"] == 0
    assert len((out / "failures.jsonl").read_text().splitlines()) == 3
    # its card says plainly that it failed, and points nothing at a data file
    card = (out / "README.md").read_text()
    assert "data_files" not in card and "parquet" not in card
    header, body = card.split("---\n")[1:3]
    assert "configs" not in header and "synthetic" in header
    assert "**This run failed: it wrote no rows** (3 truncated at max_tokens)" in body
    assert body.index("This run failed") < body.index("## Dataset")


def test_a_card_of_a_run_with_rows_points_at_its_data(tmp_path: Path) -> None:
    out = tmp_path / "out"
    pipeline(rows=3).run(out)
    card = (out / "README.md").read_text()
    assert "path: data/train-*.parquet" in card and "This run failed" not in card
    assert list((out / "data").glob("train-*.parquet")) == [out / DATA]


def test_a_stale_data_file_without_run_json_is_not_left_beside_a_0_row_run(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    pipeline(rows=3).run(out)
    (out / "run.json").unlink()  # as a run killed while writing leaves it
    pipeline(rows=3, max_tokens=2).run(out)
    assert json.loads((out / "run.json").read_text())["rows"] == 0
    assert not (out / DATA).exists()
    card = (out / "README.md").read_text()  # the earlier run's card is not left either
    assert "This run failed: it wrote no rows" in card and "data_files" not in card


def test_cli_no_rows_is_a_failing_exit_with_the_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    main(["run", str(recipe(tmp_path, rows=4)), "-o", str(out), "-q"])
    data = (out / DATA).read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(["run", str(recipe(tmp_path, rows=4, max_tokens=1)), "-o", str(out), "-q"])
    assert stop.value.code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "no rows written: 4 rows lost at text_generation: 4 truncated at max_tokens" in err
    assert f"the earlier dataset in {out} (4 rows) is kept" in err
    assert str(out / sinks.FAILED_ATTEMPT) in err
    assert (out / DATA).read_bytes() == data

    fresh = tmp_path / "fresh"
    with pytest.raises(SystemExit) as stop:
        main(["run", str(recipe(tmp_path, rows=4, max_tokens=1)), "-o", str(fresh), "-q"])
    assert stop.value.code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "no rows written" in err and "datasets cannot load a dataset of 0 rows" in err


def test_cli_fewer_rows_than_the_dataset_replaced_is_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    main(["run", str(recipe(tmp_path, rows=5)), "-o", str(out), "-q"])
    assert "warning" not in capsys.readouterr().err
    main(["run", str(recipe(tmp_path, rows=5)), "-o", str(out), "-q", "--limit", "2"])
    err = " ".join(capsys.readouterr().err.split())
    assert f"warning: {out} held 5 rows from an earlier run; this run replaced them with 2" in err
