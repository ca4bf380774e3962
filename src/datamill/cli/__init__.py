"""The ``datamill`` command line. Library errors become one line; ``DATAMILL_DEBUG=1`` shows the
traceback. Each command group lives in its own module of this package."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from typing import Any

import typer

from ..errors import ConfigError, DatamillError, InputError
from . import batch as _batch
from . import decontam as _decontam
from . import eval as _eval
from . import plan as _plan
from . import push as _push
from . import report as _report
from . import run as _run
from . import ui as _ui
from .options import flags_show_no_type

app = typer.Typer(
    name="datamill",
    help="Make synthetic datasets (SFT and DPO) for training language models. Offline by default.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_run.register(app)
_plan.register(app)
_push.register(app)
_ui.register(app)
_report.register(app)
_decontam.register(app)
_batch.register(app)
_eval.register(app)
flags_show_no_type()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and turn datamill errors into one line and an exit code.

    Ctrl-C (and SIGTERM, handled the same way) cancels the calls in flight, keeps the cache
    consistent, says how to resume and exits 130.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    previous = _sigterm_as_sigint()
    try:
        code = app(args=args, standalone_mode=False, prog_name="datamill")
    except DatamillError as exc:
        if os.environ.get("DATAMILL_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2 if isinstance(exc, (ConfigError, InputError)) else 1)
    except KeyboardInterrupt:
        _interrupted(args)
    except typer.TyperException as exc:  # command line usage errors (typer's own click)
        ctx = getattr(exc, "ctx", None)
        if (
            not args and ctx is not None
        ):  # bare `datamill`: the help (rich prints it on stdout itself)
            text = exc.format_message().strip()
            if text:
                print(text, file=sys.stderr)
            sys.exit(2)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        print(f"error: {exc.format_message()}{hint}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(1)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if code == 130:  # typer turns a KeyboardInterrupt inside a command into exit code 130
        _interrupted(args)
    if isinstance(code, int) and code:
        sys.exit(code)


def _interrupted(args: list[str]) -> None:
    command = shlex.join(["datamill", *args])
    from ..cachefile import resume_hint

    if "--no-cache" in args:
        print(f"interrupted: {resume_hint(False)}", file=sys.stderr)
    else:
        print(
            f"interrupted: every finished model call is saved in the cache; to resume, run the same command again: {command}",
            file=sys.stderr,
        )
    sys.exit(130)


def _sigterm_as_sigint() -> Any:
    """Make SIGTERM behave like Ctrl-C (a clean stop), returning the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def on_sigterm(signum: int, frame: Any) -> None:
        handler = signal.getsignal(signal.SIGINT)  # asyncio's while a run is going
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:  # SIGINT ignored (a background job): still stop cleanly
            raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, on_sigterm)
