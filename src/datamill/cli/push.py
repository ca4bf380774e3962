"""``datamill push``: publish an output folder to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..words import plural

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
    license: Annotated[  # the Hub card's word
        str | None,
        typer.Option(
            "--license",
            "--licence",
            metavar="LICENCE",
            help="Publish under this licence (e.g. apache-2.0; the card's header is set to it). "
            "Refused when a model or input's licence does not allow it (default: the card's).",
        ),
    ] = None,
    accept_licence_risk: Annotated[
        str | None,
        typer.Option(
            "--accept-licence-risk",
            "--accept-license-risk",
            metavar="REASON",
            help="Push even though datamill's licence table (a guard, not legal advice) "
            "refuses it; the reason is recorded in the card.",
        ),
    ] = None,
) -> None:
    """Upload an output folder to a dataset repository on the Hugging Face Hub.

    Sends the dataset (parquet), its card (README.md) and the run's report (run.json,
    failures.jsonl, report.json/png) in one commit. The token comes from $HF_TOKEN or `hf auth login`;
    $HF_ENDPOINT points at another Hub. The licence pushed (--license, else the card's) is
    checked against the models' and inputs' licences in run.json (see README "Licence and
    provenance"): a licence they do not allow is refused unless --accept-licence-risk says why;
    an input of unknown licence is a warning.
    """
    from ..io.hub import push_to_hub

    pushed = push_to_hub(
        folder,
        repo_id,
        private=private,
        commit_message=message,
        license=license,
        accept_licence_risk=accept_licence_risk,
    )
    for warning in pushed.warnings:
        out.print(f"[yellow]licence warning:[/] {warning}", highlight=False)
    out.print(
        f"[bold green]pushed[/] {plural(len(pushed.files), 'file')} to {pushed.url}",
        highlight=False,
    )
    if not pushed.complete:
        out.print(
            "[yellow]note: this run was stopped early (see run.json 'stopped_by'): the dataset is partial[/]"
        )


def register(app: typer.Typer) -> None:
    app.command("push")(push)
