"""Running the sandbox's child process: bounded capture of its output, the backstop deadline,
and killing what is left -- once blocking (selectors) and once for asyncio.

Deliberately not here: deciding what a run's outcome means (``datamill.sandbox`` does that).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass

HEAD_BYTES = 8 * 1024  # kept from the start of each stream
TAIL_BYTES = 64 * 1024  # kept from the end (the records are written last)
GRACE_SECONDS = 2.0  # how long to wait for the pipes' end after the child has exited


class Capture:
    """The first ``HEAD_BYTES`` and the last ``TAIL_BYTES`` of a stream; counts the rest."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = HEAD_BYTES - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > TAIL_BYTES:
                del self.tail[: len(self.tail) - TAIL_BYTES]

    @property
    def cut(self) -> int:
        """Bytes dropped between head and tail."""
        return self.total - len(self.head) - len(self.tail)


@dataclass
class Spawn:
    """What to start and how long it may take: ``deadline`` is a ``time.monotonic()`` value."""

    argv: list[str]
    cwd: str
    env: dict[str, str]
    deadline: float


@dataclass
class Finished:
    out: Capture
    err: Capture
    returncode: int
    backstop_hit: bool  # the child itself failed to end by the deadline and was killed from here


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def run_blocking(spawn: Spawn) -> Finished:
    out, err = Capture(), Capture()
    proc = subprocess.Popen(
        spawn.argv,
        cwd=spawn.cwd,
        env=spawn.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    backstop = False
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        deadline = spawn.deadline
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in sel.select(min(left, 0.05)):
                data = os.read(key.fd, 65536)
                if data:
                    key.data.feed(data)
                else:
                    sel.unregister(key.fileobj)
            if proc.poll() is not None and deadline > time.monotonic() + GRACE_SECONDS:
                deadline = time.monotonic() + GRACE_SECONDS  # only leftovers hold the pipes
    try:
        proc.wait(timeout=max(0.0, spawn.deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        backstop = True
        kill_group(proc.pid)
        proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    return Finished(out, err, proc.returncode, backstop)


async def _pump(stream: asyncio.StreamReader, capture: Capture) -> None:
    while data := await stream.read(65536):
        capture.feed(data)


async def run_async(spawn: Spawn) -> Finished:
    out, err = Capture(), Capture()
    proc = await asyncio.create_subprocess_exec(
        *spawn.argv,
        cwd=spawn.cwd,
        env=spawn.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    pumps = [
        asyncio.ensure_future(_pump(proc.stdout, out)),
        asyncio.ensure_future(_pump(proc.stderr, err)),
    ]
    backstop = False
    try:
        try:
            await asyncio.wait_for(proc.wait(), max(0.0, spawn.deadline - time.monotonic()))
        except asyncio.TimeoutError:
            backstop = True
            kill_group(proc.pid)
            await proc.wait()
        await asyncio.wait(pumps, timeout=GRACE_SECONDS)
    finally:
        for pump in pumps:
            pump.cancel()
        if proc.returncode is None:  # cancelled while waiting: leave nothing running
            kill_group(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    assert proc.returncode is not None
    return Finished(out, err, proc.returncode, backstop)
