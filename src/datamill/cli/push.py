"""``datamill push``: publish an output folder to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

out = Console()


def push(
    folder: Annotated[Path, typer.Argument(help="The output folder of `datamill run`.")],
    repo_id: Annotated[
        str,
        typer.Argument(
            metavar="ORG/NAME", help="Dataset repository on the Hub (created when missing)."
        ),
    ],
    private: Annotated[
        bool, typer.Option("--private", help="Create the repository private.")
    ] = False,
    message: Annotated[str | None, typer.Option("--message", "-m", help="Commit message.")] = None,
) -> None:
    """Upload an output folder to a dataset repository on the Hugging Face Hub.

    Sends the dataset (parquet), its card (README.md) and the run's report (run.json,
    failures.jsonl, report.json/png) in one commit. The token comes from $HF_TOKEN or `hf auth login`;
    $HF_ENDPOINT points at another Hub.
    """
    from ..io.hub import push_to_hub

    pushed = push_to_hub(folder, repo_id, private=private, commit_message=message)
    out.print(f"[bold green]pushed[/] {len(pushed.files)} files to {pushed.url}", highlight=False)
    if not pushed.complete:
        out.print(
            "[yellow]note: this run was stopped early (see run.json 'stopped_by'): the dataset is partial[/]"
        )


def register(app: typer.Typer) -> None:
    app.command("push")(push)
