"""The ``datamill`` command line. Library errors become one line; ``DATAMILL_DEBUG=1`` shows the
traceback. Each command group lives in its own module of this package."""

from __future__ import annotations

import os
import sys

import typer

from ..errors import ConfigError, DatamillError, InputError
from . import run as _run

app = typer.Typer(
    name="datamill",
    help="Make synthetic datasets (SFT and DPO) for training language models. Offline by default.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_run.register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and turn datamill errors into one line and an exit code."""
    try:
        app(args=argv, standalone_mode=False)
    except DatamillError as exc:
        if os.environ.get("DATAMILL_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2 if isinstance(exc, (ConfigError, InputError)) else 1)
    except KeyboardInterrupt:
        print("interrupted: every finished model call is saved in the cache; run the same command again to resume", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors come here in non-standalone mode
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(130)
        raise
