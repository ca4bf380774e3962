"""``datamill decontam pack BENCH… -o FILE``: a hashed n-gram pack of benchmarks.

The pack holds the 64-bit hashes of the benchmarks' normalised n-grams and their item ids, no
text (``datamill.decontam.pack``), so it can be shared and used offline by a ``decontaminate``
step (``against: [FILE]``) exactly like the files it was made from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..errors import ConfigError
from ..words import plural

out = Console()
app = typer.Typer(
    name="decontam",
    help="Benchmark decontamination tools (see the `decontaminate` step).",
    no_args_is_help=True,
)


@app.command("pack")
def pack(
    benchmarks: Annotated[
        list[Path],
        typer.Argument(
            metavar="BENCH...",
            help="Benchmarks: JSONL/JSON/Parquet files, dataset folders, or packs to merge.",
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The pack to write (.npz).")],
    n: Annotated[int, typer.Option("--n", min=1, max=64, help="Words per n-gram.")] = 13,
    name: Annotated[
        list[str] | None,
        typer.Option(
            "--name", help="A benchmark's name (once per BENCH, in order; default: file name)."
        ),
    ] = None,
    column: Annotated[
        list[str] | None,
        typer.Option(
            "--column", "-c", help="A column holding benchmark text (repeatable; default: text)."
        ),
    ] = None,
    id_column: Annotated[
        str | None,
        typer.Option("--id", help="The column holding each item's id (default: row number)."),
    ] = None,
) -> None:
    """Hash the n-grams of benchmarks into a pack: no benchmark text is stored, only hashes and ids."""
    from ..decontam.benchmarks import PACK_SUFFIX, BenchmarkSpec
    from ..decontam.pack import make_pack

    if output.suffix != PACK_SUFFIX:
        raise ConfigError(
            f"the pack must be a {PACK_SUFFIX} file, e.g. -o {output.stem}{PACK_SUFFIX}"
        )
    names = list(name or [])
    if names and len(names) != len(benchmarks):
        raise ConfigError(
            f"give one --name per benchmark ({len(benchmarks)} benchmarks, {len(names)} names)"
        )
    specs = []
    for i, path in enumerate(benchmarks):
        name_i = names[i] if names else None
        if path.suffix == PACK_SUFFIX:
            specs.append(BenchmarkSpec(path=str(path), name=name_i))
        else:
            specs.append(
                BenchmarkSpec(
                    path=str(path), columns=list(column or ["text"]), id=id_column, name=name_i
                )
            )
    table = make_pack(specs, n)
    table.save(output)
    size = output.stat().st_size
    out.print(
        f"[bold green]wrote[/] {output}: {len(table.benchmarks)} benchmark(s) "
        f"({', '.join(table.benchmarks)}), {plural(len(table.ids), 'item')}, {len(table.hashes):,} {n}-gram hashes, "
        f"{size / 1024:.0f} KiB",
        highlight=False,
    )


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="decontam")
