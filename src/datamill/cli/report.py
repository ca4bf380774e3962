"""``datamill report OUT``: print the quality report of a dataset.

For a datamill output folder it prints the ``report.json`` the run wrote; for any other dataset
(a folder of parquet files, a ``.jsonl``/``.json``/``.parquet`` file, a ``save_to_disk`` folder)
— or with ``--recompute`` — it computes the report from the rows. ``--write`` stores a recomputed
report (``report.json`` + ``report.png``) in the folder; ``--json`` prints the raw JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ..errors import InputError
from ..words import plural

out = Console()


def _rows_and_summary(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    from ..io.sources import ParquetSource, source_from_path

    summary: dict[str, Any] = {}
    name = path.name
    if path.is_dir() and (path / "run.json").is_file():
        try:
            summary = json.loads((path / "run.json").read_text(encoding="utf-8"))
            name = summary.get("pipeline", name)
        except ValueError:
            summary = {}
    if path.is_dir() and (path / "data").is_dir():
        rows = ParquetSource(
            path / "data"
        ).rows()  # may be empty: an empty dataset still has a report
    else:
        rows = source_from_path(path).rows()
    return rows, summary, name


def report(
    output: Annotated[
        Path, typer.Argument(help="A datamill output folder, or any dataset file/folder.")
    ],
    recompute: Annotated[
        bool,
        typer.Option(
            "--recompute", help="Compute the report from the rows even when report.json exists."
        ),
    ] = False,
    write: Annotated[
        bool,
        typer.Option(
            "--write", help="Store a computed report (report.json, report.png) in the folder."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Print the quality report of a dataset: rows per step, losses, diversity, lengths, ratings."""
    from ..report import build_report, load_report, to_json, write_report

    if not output.exists():
        raise InputError(
            f"{output}: no such file or folder; give a datamill output folder (e.g. out/instructions-basic)"
        )
    data = None if recompute or not output.is_dir() else load_report(output)
    if data is None:
        rows, summary, name = _rows_and_summary(output)
        if write and output.is_dir():
            data = write_report(output, rows, summary, name=name)
        else:
            data = {**to_json(build_report(rows, summary)), "name": name}
    if as_json:
        out.print_json(json.dumps(data, ensure_ascii=False, default=str))
        return
    print_report(data, output)


def print_report(data: dict[str, Any], where: Path) -> None:
    from ..report.topup import topup_text
    from ..report.write import format_value

    out.print(f"[bold]{data.get('name', where.name)}[/]: {plural(data.get('rows', 0), 'row')}")
    fields = data.get("fields") or {}
    if fields:
        table = Table(
            "field",
            "texts",
            "words p10/med/p90",
            "dist-1",
            "dist-2",
            "ROUGE-L",
            "emb. sim",
            title="diversity and length",
        )
        for name, f in fields.items():
            w = f.get("words") or {}
            table.add_row(
                name,
                str(f.get("count", 0)),
                f"{format_value(w.get('p10'), 0)} / {format_value(w.get('median'), 0)} / {format_value(w.get('p90'), 0)}",
                format_value(f.get("distinct_1")),
                format_value(f.get("distinct_2")),
                format_value((f.get("rouge_l_self") or {}).get("mean")),
                format_value((f.get("embedding_similarity") or {}).get("mean")),
            )
        out.print(table)
        out.print(
            "[dim]dist-n: unique n-grams / all n-grams (higher: more varied). ROUGE-L: mean overlap of random pairs; "
            "emb. sim: mean cosine of sampled pairs (lower: more diverse).[/]"
        )
    steps = data.get("steps") or []
    if steps:
        table = Table("step", "rows in", "rows out", "lost", "why", title="steps")
        for s in steps:
            why = ", ".join(
                f"{n} {r}"
                for r, n in sorted((s.get("reasons") or {}).items(), key=lambda kv: -kv[1])
            )
            table.add_row(s["step"], str(s["rows_in"]), str(s["rows_out"]), str(s["lost"]), why)
        out.print(table)
    decontam = data.get("decontamination") or []
    if decontam:
        table = Table(
            "step", "benchmark", "checked", "overlapping", "n-gram", "fuzzy", "embedding", "dropped",
            title="decontamination",
        )  # fmt: skip
        for e in decontam:
            table.add_row(
                *(str(e.get(k, 0)) for k in ("step", "benchmark", "checked", "flagged")),
                *(str(e.get(k, 0)) for k in ("ngram", "fuzzy", "embedding", "dropped")),
            )
        out.print(table)
    for name, r in (data.get("ratings") or {}).items():
        hist = "  ".join(f"{k}: {v}" for k, v in (r.get("histogram") or {}).items())
        out.print(
            f"ratings [bold]{name}[/]: mean {format_value(r.get('mean'))} over {r.get('count', 0)}   {hist}"
        )
    topup = topup_text(data.get("topup") or {}, mixed=bool(data.get("mix")))
    if topup:
        out.print(topup, highlight=False)
    print_mix(data.get("mix"))
    first = next((f.get("first_words") for f in fields.values() if f.get("first_words")), None)
    if first:
        out.print("most common first words: " + ", ".join(f"{w} ({n})" for w, n in first[:10]))
    for note in data.get("notes") or []:
        out.print(f"[dim]note: {note}[/]")
    for key, err in (data.get("errors") or {}).items():
        out.print(f"[yellow]not computed: {key}: {err}[/]")
    if data.get("plot") and where.is_dir() and (where / data["plot"]).exists():
        out.print(f"plot: {where / data['plot']}")


def print_mix(entry: dict[str, Any] | None) -> None:
    """The mixture against its targets: one line, then a part / target / actual / count table."""
    if not entry:
        return
    from ..report.mix import headline

    out.print(headline(entry), highlight=False)
    table = Table("part", "target", "actual", "count")
    for r in entry.get("rows") or []:
        table.add_row(r["part"], f"{r['target']:.2f}", f"{r['actual']:.2f}", str(r["count"]))
    out.print(table)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
