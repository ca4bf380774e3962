"""``--limit N`` is at most N source rows in every run: with ``target_rows`` or a ``mix`` it caps
the top-up's tries (never silently exceeded), and the run says so (stderr line, ``run.json``
``limit``, the card, the report). A limit above the recipe's own cap changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datamill import ConfigError, FakeModel, Pipeline, step
from datamill.cli import app
from datamill.io.sources import EmptyRows
from datamill.pipeline.mix import Mix, shares


def every_third() -> Pipeline:
    keep = step(reads=["row"])(lambda r: r if r["row"] % 3 == 0 else None)
    return Pipeline(
        [keep], source=EmptyRows(10), models={"default": FakeModel()}, target_rows=10,
        max_attempts=100,
    )  # fmt: skip


def test_limit_caps_the_top_up_and_says_so(tmp_path: Path) -> None:
    result = every_third().run(tmp_path / "out", limit=4)
    assert result.summary["attempts"] == 4 and result.summary["reached"] is False
    assert [r["row"] for r in result.rows] == [0, 3]
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["limit"] == 4 and run["max_attempts"] == 4
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["topup"]["limit"] == 4
    card = (tmp_path / "out" / "README.md").read_text()
    assert "not reached after 4 source rows tried" in card
    assert "(--limit 4 caps the source rows tried)" in card


def test_a_limit_above_the_recipes_cap_changes_nothing(tmp_path: Path) -> None:
    free = every_third().run(tmp_path / "a")
    loose = every_third().run(tmp_path / "b", limit=500)
    assert loose.summary["attempts"] == free.summary["attempts"] == 28
    assert "limit" not in loose.summary and loose.rows == free.rows


def test_cli_limit_caps_a_mixture_recipe(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["run", "mixture", "--model", "fake", "--limit", "3", "--set", "target_rows=10"]
    result = CliRunner().invoke(app, [*args, "-o", str(out), "-q"])
    run = json.loads((out / "run.json").read_text())
    assert run["attempts"] == 3 and run["limit"] == 3 and run["reached"] is False
    assert sum(run["mix"]["tried"].values()) == 3
    output = " ".join(result.output.split())
    assert "target of 10 rows not reached after 3 source rows tried" in output
    assert "(--limit 3 caps the source rows tried)" in output
    assert "mix by task fell short after 3 source rows tried (--limit 3 caps" in output
    assert "raise --limit (or drop it)" in output and "max_attempts" not in output


def test_readme_mixture_minimum_target_rows() -> None:
    """The README's rule: for 50/30/20 at tolerance 0.02 the N whole rows can meet start at 10
    (then 14, 16, 20, 22, every N from 24); a smaller N is refused naming 10."""
    mix = Mix.parse(
        {"by": "task", "targets": {"qa": 0.5, "code": 0.3, "poem": 0.2}, "tolerance": 0.02}
    )
    fits = [n for n in range(1, 60) if mix.within(shares(mix.counts(n)))]
    assert fits == [10, 14, 16, 20, 22, *range(24, 60)]
    loose = Mix.parse({**mix.__dict__, "tolerance": 0.05})
    assert min(n for n in range(1, 60) if loose.within(shares(loose.counts(n)))) == 4
    assert mix.fitting_totals() == ([10, 14, 16, 20, 22], 24)
    assert loose.fitting_totals() == ([4, 6, 8], 10)
    for wrong in (6, 15, 23):  # 15 and 23 are above 14 yet do not fit: every fit is named
        with pytest.raises(ConfigError) as err:
            mix.check_total(wrong)
        assert str(err.value).endswith("; use target_rows 10, 14, 16, 20, 22 or any from 24")
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    assert "the smallest is 10 (then 14, 16, 20, 22 and every N from 24)" in readme
    assert "(`use target_rows 10, 14, 16, 20, 22 or any from 24`)" in readme


def test_datamill_report_shows_the_limit_like_the_run_line_and_the_card(tmp_path: Path) -> None:
    every_third().run(tmp_path / "out", limit=4)
    line = (
        "target of 10 rows not reached after 4 source rows tried (--limit 4 caps the source "
        "rows tried); yield 0.50 rows per source row"
    )
    assert f"- {line}\n" in (tmp_path / "out" / "README.md").read_text()
    shown = CliRunner().invoke(app, ["report", str(tmp_path / "out")])
    assert shown.exit_code == 0, shown.output
    assert line in " ".join(shown.output.split())
