"""The bad-input catalogue: each wrong recipe, option or input file gives one exact line on stderr
and the right exit code (2 for a config/input mistake, 1 for an unusable output folder), and no
model call is made.

Every case runs the real CLI entry point (``datamill.cli.main``) in this process, in a fresh folder,
on a fake model that logs each call to ``calls.log`` (``call_log`` option): a case passes only if
that file was never created. Row-level problems that cannot sink the whole run (a null in one row)
are recorded per row instead; those cases check the failure record and that only good rows were sent.

Policy, case by case:

- unreadable or malformed input (bad JSON, not UTF-8, NaN, a non-object line, an unreadable
  parquet, no rows, an oversized line) → one line naming file:line, before any call;
- a column the steps need missing from *some* rows, or empty in *every* row, or holding different
  types in different rows → one line naming the row, before any call;
- a column empty (null, NaN, blank) in *some* rows → those rows are recorded as ``empty input``
  (detail: which column and why) and never sent; the other rows run;
- a row too long for the model's context (1 MB) → recorded per row as ``request too long`` by the
  backend that knows its context (the embedded model; see the ``real`` test at the end).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from datamill.cli import main
from datamill.io.sinks import OutputFolder

RECIPE = """\
name: catalogue
models:
  default: {spec: fake, call_log: calls.log}
source:
  path: data.jsonl
steps:
  - text_generation: {output: answer}
"""

GOOD_ROWS = '{"instruction": "a"}\n{"instruction": "b"}\n'


def recipe(body: str) -> str:
    """A recipe whose model logs calls, with ``body`` (source + steps) after the models."""
    return "name: catalogue\nmodels:\n  default: {spec: fake, call_log: calls.log}\n" + body


INLINE_SOURCE = "source:\n  rows: [{instruction: a}]\n"


@dataclass
class Case:
    id: str
    files: dict[str, str | bytes]
    args: list[str]
    message: str
    code: int = 2
    extra: list[str] = field(default_factory=list)  #: appended after the default "-o out -q"


def parquet_bytes(columns: dict[str, list]) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({k: pa.array(v, pa.string()) for k, v in columns.items()}), buf)
    return buf.getvalue()


CASES = [
    # --- recipes: YAML, schema, steps, models -------------------------------------------------
    Case(
        "recipe file missing",
        {},
        ["run", "nope.yaml"],
        "error: recipe file nope.yaml does not exist",
    ),
    Case(
        "unknown built-in recipe",
        {},
        ["run", "no-such-recipe"],
        "error: unknown recipe 'no-such-recipe': give a YAML path or one of: <builtins>",
    ),
    Case(
        "recipe not valid YAML",
        {"r.yaml": "name: t\nsteps:\n  - text_generation: {output: answer\n"},
        ["run", "r.yaml"],
        "error: r.yaml:4: not valid YAML (expected ',' or '}', but got '<stream end>')",
    ),
    Case(
        "recipe not UTF-8",
        {"r.yaml": b"name: t\xff\n"},
        ["run", "r.yaml"],
        "error: r.yaml: not UTF-8 text",
    ),
    Case(
        "recipe is a list",
        {"r.yaml": "- a\n- b\n"},
        ["run", "r.yaml"],
        "error: r.yaml: a recipe must be a YAML mapping with name, source and steps",
    ),
    Case(
        "misspelt top-level field",
        {
            "r.yaml": recipe(
                "soruce:\n  rows: [{instruction: a}]\nsteps:\n  - text_generation: {}\n"
            )
        },
        ["run", "r.yaml"],
        "error: r.yaml:4: soruce: unknown field (did you mean 'source'?); allowed: <recipe fields>",
    ),
    Case(
        "step for steps",
        {"r.yaml": recipe(INLINE_SOURCE + "step:\n  - text_generation: {}\n")},
        ["run", "r.yaml"],
        "error: r.yaml:6: step: unknown field (did you mean 'steps'?); allowed: <recipe fields>",
    ),
    Case(
        "mix part the sampler never gives",
        {
            "r.yaml": recipe(
                "source:\n  num_rows: 4\n  samplers:\n"
                "    topic: {category: {values: [science, travel]}}\n"
                "steps:\n  - text_generation: {}\ntarget_rows: 10\n"
                "mix:\n  by: topic\n  targets:\n    science: 0.5\n    trvel: 0.5\n"
            )
        },
        ["run", "r.yaml"],
        "error: r.yaml:15: mix: the source never gives topic = 'trvel' (did you mean 'travel'?) "
        "(not one of its values, or its weight is 0), so that part can never be filled; it "
        "gives: science, travel; fix mix.targets or the sampler of topic",
    ),
    Case(
        "mix part no inline row has",
        {
            "r.yaml": recipe(
                "source:\n  rows: [{instruction: a, task: qa}, {instruction: b, task: code}]\n"
                "steps:\n  - text_generation: {}\ntarget_rows: 10\n"
                "mix: {by: task, targets: {qa: 0.5, cod: 0.5}}\n"
            )
        },
        ["run", "r.yaml"],
        "error: r.yaml:9: mix: no source row has task = 'cod' (did you mean 'code'?), so that "
        "part can never be filled; the source's task values are: code, qa; fix mix.targets or "
        "the source",
    ),
    Case(
        "no steps",
        {"r.yaml": recipe(INLINE_SOURCE)},
        ["run", "r.yaml"],
        "error: r.yaml:1: steps: Field required",
    ),
    Case(
        "empty steps",
        {"r.yaml": recipe(INLINE_SOURCE + "steps: []\n")},
        ["run", "r.yaml"],
        "error: r.yaml:6: steps: List should have at least 1 item after validation, not 0",
    ),
    Case(
        "source with two kinds",
        {"r.yaml": recipe(INLINE_SOURCE + "  num_rows: 3\nsteps:\n  - text_generation: {}\n")},
        ["run", "r.yaml"],
        "error: r.yaml:4: source: source needs exactly one of rows, path, num_rows",
    ),
    Case(
        "unknown step kind",
        {"r.yaml": recipe(INLINE_SOURCE + "steps:\n  - text_gen: {output: answer}\n")},
        ["run", "r.yaml"],
        "error: r.yaml:7: step 1: unknown step 'text_gen'; did you mean 'text_generation'? Known steps: <steps>",
    ),
    Case(
        "misspelt step parameter",
        {
            "r.yaml": recipe(
                INLINE_SOURCE + "steps:\n  - text_generation: {output: answer, temprature: 1}\n"
            )
        },
        ["run", "r.yaml"],
        "error: r.yaml:7: step 1 (text_generation): temprature: unknown parameter (did you mean "
        "'temperature'?); allowed: <text_generation parameters>",
    ),
    Case(
        "parameter of the wrong type",
        {"r.yaml": recipe(INLINE_SOURCE + "steps:\n  - text_generation: {temperature: hot}\n")},
        ["run", "r.yaml"],
        "error: r.yaml:7: step 1 (text_generation): temperature: must be a number of at least 0, got 'hot'",
    ),
    Case(
        "parameter out of range",
        {"r.yaml": recipe(INLINE_SOURCE + "steps:\n  - text_generation:\n      max_tokens: 0\n")},
        ["run", "r.yaml"],
        "error: r.yaml:8: step 1 (text_generation): max_tokens: must be a whole number of at least 1, got 0",
    ),
    Case(
        "parameter not one of the choices",
        {"r.yaml": recipe(INLINE_SOURCE + "steps:\n  - text_generation: {truncated: maybe}\n")},
        ["run", "r.yaml"],
        "error: r.yaml:7: step 1 (text_generation): truncated: Input should be 'drop' or 'keep'",
    ),
    Case(
        "step parameters not a mapping",
        {"r.yaml": recipe(INLINE_SOURCE + "steps:\n  - text_generation: 3\n")},
        ["run", "r.yaml"],
        "error: r.yaml:7: step 1 (text_generation): parameters must be a mapping, got int",
    ),
    Case(
        "template not valid Jinja",
        {
            "r.yaml": recipe(
                INLINE_SOURCE + 'steps:\n  - text_generation: {template: "{{ question }"}\n'
            )
        },
        ["run", "r.yaml"],
        "error: r.yaml:7: step 1 (text_generation): text_generation template is not valid Jinja: unexpected '}'",
    ),
    Case(
        "unknown model backend",
        {
            "r.yaml": "name: t\nmodels:\n  default: gpt5\n"
            + INLINE_SOURCE
            + "steps:\n  - text_generation: {}\n"
        },
        ["run", "r.yaml"],
        "error: r.yaml:3: models.default: unknown model backend 'gpt5' in spec 'gpt5': use one of anthropic, fake, llamacpp, openai, transformers, vllm",
    ),
    Case(
        "model sampling out of range",
        {
            "r.yaml": "name: t\nmodels:\n  default:\n    spec: fake\n    call_log: calls.log\n    temperature: -1\n"
            + INLINE_SOURCE
            + "steps:\n  - text_generation: {}\n"
        },
        ["run", "r.yaml"],
        "error: r.yaml:6: models.default.temperature: must be a number of at least 0, got -1",
    ),
    Case(
        "step uses an undeclared model",
        {"r.yaml": recipe(INLINE_SOURCE + "steps:\n  - text_generation:\n      model: judge\n")},
        ["run", "r.yaml"],
        "error: r.yaml:8: step 1 (text_generation): model 'judge' is not declared under models; declared: default",
    ),
    Case(
        "template reads a column no row has",
        {
            "r.yaml": recipe(
                INLINE_SOURCE + 'steps:\n  - text_generation: {template: "{{ question }}"}\n'
            )
        },
        ["run", "r.yaml"],
        "error: step 1 (text_generation) needs column 'question', but rows only have: instruction; "
        "add a rename step or set the step's column parameter",
    ),
    # --- command-line options -------------------------------------------------------------------
    Case(
        "--limit 0",
        {"r.yaml": RECIPE, "data.jsonl": GOOD_ROWS},
        ["run", "r.yaml"],
        "error: --limit must be at least 1, got 0",
        extra=["--limit", "0"],
    ),
    Case(
        "--limit not a number",
        {"r.yaml": RECIPE, "data.jsonl": GOOD_ROWS},
        ["run", "r.yaml"],
        "error: Invalid value for '--limit': Input should be a valid integer, unable to parse string as an integer (see 'datamill run --help')",
        extra=["--limit", "abc"],
    ),
    Case(
        "unknown option",
        {"r.yaml": RECIPE, "data.jsonl": GOOD_ROWS},
        ["run", "r.yaml"],
        "error: No such option: --bogus (see 'datamill run --help')",
        extra=["--bogus"],
    ),
    Case(
        "--set without =",
        {"r.yaml": RECIPE, "data.jsonl": GOOD_ROWS},
        ["run", "r.yaml", "--set", "foo"],
        "error: --set 'foo': use key=value, e.g. --set source.num_rows=20",
    ),
    Case(
        "--set names no step",
        {"r.yaml": RECIPE, "data.jsonl": GOOD_ROWS},
        ["run", "r.yaml", "--set", "nostep.x=1"],
        "error: --set 'nostep.x=1': no field or step named 'nostep' in the recipe (did you mean "
        "'steps'?)",
    ),
    Case(
        "--set misspells a step",
        {"r.yaml": RECIPE, "data.jsonl": GOOD_ROWS},
        ["run", "r.yaml", "--set", "text_generaton.max_tokens=5"],
        "error: --set 'text_generaton.max_tokens=5': no field or step named 'text_generaton' in "
        "the recipe (did you mean 'text_generation'?)",
    ),
    Case(
        "--model unknown backend",
        {"r.yaml": RECIPE, "data.jsonl": GOOD_ROWS},
        ["run", "r.yaml", "--model", "gpt5"],
        "error: unknown model backend 'gpt5' in spec 'gpt5': use one of anthropic, fake, llamacpp, openai, transformers, vllm",
    ),
    # --- input files ----------------------------------------------------------------------------
    Case(
        "input file missing",
        {"r.yaml": RECIPE},
        ["run", "r.yaml", "-i", "gone.jsonl"],
        "error: gone.jsonl: no such file",
    ),
    Case(
        "input of unknown type",
        {"r.yaml": RECIPE, "in.csv": "instruction\na\n"},
        ["run", "r.yaml", "-i", "in.csv"],
        "error: in.csv: unknown input type; use .jsonl, .json, .parquet or a dataset folder",
    ),
    Case(
        "JSONL line not valid JSON",
        {"r.yaml": RECIPE, "data.jsonl": '{"instruction": "a"}\n{"instruction": \n'},
        ["run", "r.yaml"],
        "error: data.jsonl:2: not valid JSON (Expecting value at column 18); each line must be one JSON object",
    ),
    Case(
        "JSONL line not UTF-8",
        {"r.yaml": RECIPE, "data.jsonl": b'{"instruction": "a"}\n{"instruction": "caf\xe9"}\n'},
        ["run", "r.yaml"],
        "error: data.jsonl:2: not UTF-8 (byte 20); re-encode the file as UTF-8",
    ),
    Case(
        "JSONL NaN",
        {
            "r.yaml": RECIPE,
            "data.jsonl": '{"instruction": "a"}\n{"instruction": "b", "score": NaN}\n',
        },
        ["run", "r.yaml"],
        "error: data.jsonl:2: NaN is not valid JSON; write null for a missing value",
    ),
    Case(
        "JSONL line not an object",
        {"r.yaml": RECIPE, "data.jsonl": '{"instruction": "a"}\n["b"]\n'},
        ["run", "r.yaml"],
        "error: data.jsonl:2: each line must be a JSON object, got a list",
    ),
    Case(
        "empty JSONL",
        {"r.yaml": RECIPE, "data.jsonl": "\n\n"},
        ["run", "r.yaml"],
        "error: data.jsonl has no rows: give at least one input row",
    ),
    Case(
        "empty JSON list",
        {"r.yaml": RECIPE, "in.json": "[]"},
        ["run", "r.yaml", "-i", "in.json"],
        "error: in.json has no rows: give at least one input row",
    ),
    Case(
        "JSON not a list",
        {"r.yaml": RECIPE, "in.json": '{"instruction": "a"}'},
        ["run", "r.yaml", "-i", "in.json"],
        "error: in.json: a .json source must hold a list of objects, got an object",
    ),
    Case(
        "JSON list of numbers",
        {"r.yaml": RECIPE, "in.json": "[1, 2]"},
        ["run", "r.yaml", "-i", "in.json"],
        "error: in.json row 1: the row is a number, not an object with columns",
    ),
    Case(
        "parquet with no rows",
        {"r.yaml": RECIPE, "in.parquet": parquet_bytes({"instruction": []})},
        ["run", "r.yaml", "-i", "in.parquet"],
        "error: in.parquet has no rows: give at least one input row",
    ),
    Case(
        "file that is not parquet",
        {"r.yaml": RECIPE, "in.parquet": b"PAR1 not really"},
        ["run", "r.yaml", "-i", "in.parquet"],
        "error: in.parquet: not a readable parquet file (Could not open Parquet input source 'in.parquet': "
        "Parquet magic bytes not found in footer. Either the file is corrupted or this is not a parquet file.)",
    ),
    Case(
        "line over the size limit",
        {
            "r.yaml": RECIPE,
            "data.jsonl": '{"instruction": "a"}\n'
            + json.dumps({"instruction": "x" * (8 * 1024 * 1024)})
            + "\n",
        },
        ["run", "r.yaml"],
        "error: data.jsonl:2: line is 8388628 bytes, over the 8388608-byte limit per row; shorten or split that row",
    ),
    # --- input values ---------------------------------------------------------------------------
    Case(
        "column missing in some rows",
        {"r.yaml": RECIPE, "data.jsonl": '{"instruction": "a"}\n\n{"prompt": "b"}\n'},
        ["run", "r.yaml"],
        "error: data.jsonl:3: the row has no column 'instruction' (1 of 2 rows lack it); step 1 (text_generation) needs it in every row",
    ),
    Case(
        "column empty in every row",
        {"r.yaml": RECIPE, "data.jsonl": '{"instruction": null}\n{"instruction": "  "}\n'},
        ["run", "r.yaml"],
        "error: data.jsonl: column 'instruction' is empty in all 2 rows; step 1 (text_generation) needs a value there",
    ),
    Case(
        "NaN in every row of a parquet column",
        {"r.yaml": RECIPE, "in.parquet": parquet_bytes({"instruction": [None, None]})},
        ["run", "r.yaml", "-i", "in.parquet"],
        "error: in.parquet: column 'instruction' is empty in all 2 rows; step 1 (text_generation) needs a value there",
    ),
    Case(
        "number among text",
        {"r.yaml": RECIPE, "data.jsonl": '{"instruction": "a"}\n{"instruction": 42}\n'},
        ["run", "r.yaml"],
        "error: data.jsonl:2: column 'instruction' holds a number here but text in data.jsonl:1; "
        "step 1 (text_generation) reads it: give it one type in every row",
    ),
    Case(
        "list among text",
        {
            "r.yaml": RECIPE,
            "data.jsonl": '{"instruction": "a"}\n{"instruction": "b"}\n{"instruction": ["x", "y"]}\n',
        },
        ["run", "r.yaml"],
        "error: data.jsonl:3: column 'instruction' holds a list here but text in data.jsonl:1; "
        "step 1 (text_generation) reads it: give it one type in every row",
    ),
    # --- the output folder ----------------------------------------------------------------------
    Case(
        "output is a file",
        {"r.yaml": RECIPE, "data.jsonl": GOOD_ROWS, "taken": "not a folder"},
        ["run", "r.yaml", "-o", "taken", "-q"],
        "error: cannot create output folder taken: File exists",
        code=1,
    ),
]


def expand(message: str) -> str:
    """Fill in the lists a message quotes from the code (they grow as steps and fields are added)."""
    from datamill.recipes.loader import RecipeSpec, builtin_recipes
    from datamill.recipes.registry import STEP_KINDS
    from datamill.tasks.text_generation import TextGeneration

    lists = {
        "<builtins>": list(builtin_recipes()),
        "<steps>": sorted(STEP_KINDS),
        "<recipe fields>": list(RecipeSpec.model_fields),
        "<text_generation parameters>": [k for k in TextGeneration.model_fields if k != "name"],
    }
    for placeholder, items in lists.items():
        message = message.replace(placeholder, ", ".join(items))
    return message


def _write(folder: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``datamill ARGS`` in this process; return (exit code, stdout, stderr)."""
    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.delenv("DATAMILL_DEBUG", raising=False)
    monkeypatch.setenv(
        "DATAMILL_REPORT_EMBEDDINGS", "0"
    )  # the report's embedder is not under test here
    return folder


def test_catalogue_is_large_enough() -> None:
    assert len(CASES) >= 20
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_exact_line(
    case: Case, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(workdir, case.files)
    args = list(case.args)
    if "-o" not in args:
        args += ["-o", "out", "-q"]
    code, _, err = run_cli(args + case.extra, capsys)
    expected = expand(case.message)
    assert err == expected + "\n", err
    assert code == case.code
    assert not (workdir / "calls.log").exists(), "a model was called"
    assert not (workdir / "out" / "run.json").exists()


def test_locked_output_folder_is_refused(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(workdir, {"r.yaml": RECIPE, "data.jsonl": GOOD_ROWS})
    holder = OutputFolder(workdir / "out")  # another run holds the folder
    holder.lock()
    try:
        code, _, err = run_cli(["run", "r.yaml", "-o", "out", "-q"], capsys)
    finally:
        holder.unlock()
    assert (
        err
        == f"error: another datamill run (pid {os.getpid()}) is writing to out; wait for it or choose another --output\n"
    )
    assert code == 1
    assert not (workdir / "calls.log").exists()
    # once the other run is gone, the same command works
    code, out, _ = run_cli(["run", "r.yaml", "-o", "out", "-q"], capsys)
    assert code == 0 and "wrote 2 rows" in out


def _calls(workdir: Path) -> list[str]:
    log = workdir / "calls.log"
    if not log.exists():
        return []
    return [
        json.loads(line)["payload"]
        for line in log.read_text().splitlines()
        if json.loads(line)["event"] == "start"
    ]


def _failures(workdir: Path) -> list[dict]:
    return [
        json.loads(line) for line in (workdir / "out" / "failures.jsonl").read_text().splitlines()
    ]


@pytest.mark.parametrize(
    ("value", "what"),
    [("null", "null"), ('""', "blank"), ('"   \\n"', "blank")],
)
def test_empty_value_in_some_rows_is_recorded_per_row_and_never_sent(
    value: str, what: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = f'{{"instruction": "good one"}}\n{{"instruction": {value}}}\n{{"instruction": "good two"}}\n'
    _write(workdir, {"r.yaml": RECIPE, "data.jsonl": rows})
    code, out, err = run_cli(["run", "r.yaml", "-o", "out", "-q"], capsys)
    assert code == 0, err
    assert "wrote 2 rows" in out
    assert "1 row lost at text_generation: 1 empty input" in out
    [record] = _failures(workdir)
    assert record["reason"] == "empty input"
    assert record["key"] == [1]
    assert (
        record["detail"] == f"column 'instruction' is {what}; text_generation needs a value there"
    )
    sent = _calls(workdir)
    assert len(sent) == 2 and all("good" in p for p in sent)
    run = json.loads((workdir / "out" / "run.json").read_text())
    assert run["failures"] == {"empty input": 1}


def test_nan_in_some_parquet_rows_is_recorded_per_row(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"instruction": ["first", "second", "third"], "score": [1.0, float("nan"), 2.0]}),
        workdir / "in.parquet",
    )
    recipe_text = recipe(
        "source:\n  path: in.parquet\nsteps:\n  - text_generation: {template: '{{ instruction }} {{ score }}', output: answer}\n"
    )
    _write(workdir, {"r.yaml": recipe_text})
    code, out, err = run_cli(["run", "r.yaml", "-o", "out", "-q"], capsys)
    assert code == 0, err
    [record] = _failures(workdir)
    assert (record["reason"], record["key"]) == ("empty input", [1])
    assert record["detail"] == "column 'score' is null; text_generation needs a value there"
    assert len(_calls(workdir)) == 2


def test_empty_value_produced_mid_pipeline_is_recorded_not_sent(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty value made by an earlier step (here a rename of a blank column) is caught per row too."""
    rows = '{"q": "fine"}\n{"q": ""}\n'
    recipe_text = recipe(
        "source:\n  path: data.jsonl\nsteps:\n  - rename: {columns: {q: instruction}}\n  - text_generation: {output: answer}\n"
    )
    _write(workdir, {"r.yaml": recipe_text, "data.jsonl": rows})
    code, out, err = run_cli(["run", "r.yaml", "-o", "out", "-q"], capsys)
    assert code == 0, err
    [record] = _failures(workdir)
    assert (record["reason"], record["step"]) == ("empty input", "text_generation")
    assert len(_calls(workdir)) == 1


def test_bare_command_shows_help_and_debug_shows_traceback(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run_cli([], capsys)
    assert code == 2 and "Usage: datamill" in out + err and "run" in out + err
    monkeypatch.setenv("DATAMILL_DEBUG", "1")
    from datamill.errors import ConfigError

    with pytest.raises(ConfigError, match="recipe file nope.yaml does not exist"):
        main(["run", "nope.yaml"])


@pytest.mark.real
def test_one_megabyte_row_is_recorded_per_row_by_the_embedded_model(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 1 MB prompt does not fit the embedded model's context: that row is recorded, the rest run."""
    big = json.dumps({"instruction": "word " * 200_000})
    assert len(big) > 1_000_000
    rows = big + "\n" + json.dumps({"instruction": "Say hi."}) + "\n"
    recipe_text = (
        "name: big\nmodels:\n  default: {spec: llamacpp, n_ctx: 512}\nsource:\n  path: data.jsonl\n"
        "steps:\n  - text_generation: {output: answer, max_tokens: 4, truncated: keep}\n"
    )
    _write(workdir, {"r.yaml": recipe_text, "data.jsonl": rows})
    code, out, err = run_cli(["run", "r.yaml", "-o", "out", "-q", "--no-cache"], capsys)
    assert code == 0, err
    assert "wrote 1 row to" in out
    assert "1 row lost at text_generation: 1 request too long" in out
    [record] = _failures(workdir)
    assert record["reason"] == "request too long" and record["key"] == [0]
    assert "exceed context window of 512" in record["detail"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_refused_run_leaves_no_progress_bar(
    case: Case, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without ``-q`` the live bar is on: a run refused for bad input shows only its one line, not
    an empty bar above it."""
    _write(workdir, case.files)
    args = list(case.args)
    if "-o" not in args:
        args += ["-o", "out"]
    code, out, err = run_cli(args + case.extra, capsys)
    assert code == case.code
    assert err == expand(case.message) + "\n", err
    assert "rows" not in out and "loading" not in out, out
