"""``datamill ui``: start the web app on this machine and print its URL."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

out = Console()


def ui(
    port: Annotated[
        int | None, typer.Option(help="Port to serve on (default: the first free one from 7860).")
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to bind; keep 127.0.0.1 unless you mean to expose the app.")
    ] = "127.0.0.1",
) -> None:
    """Start the web app: describe a dataset, preview rows, generate, download/push, and view outputs."""
    from ..errors import ConfigError

    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}")
    from ..ui.app import launch

    demo = launch(host, port)
    out.print(
        f"datamill ui running at [bold]{demo.local_url}[/]  (Ctrl-C to stop)", highlight=False
    )
    try:
        demo.block_thread()
    finally:
        demo.close()


def register(app: typer.Typer) -> None:
    app.command("ui")(ui)
