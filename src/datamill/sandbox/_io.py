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


def kill_session(sid: int) -> None:
    """Kill every process of session ``sid`` (the child's, all its process groups included).
    Used only when the child failed to clean up itself: past the backstop, or on cancellation."""
    for _ in range(50):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(sid, signal.SIGKILL)
        members = _session_members(sid)
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if not members:
            return
        time.sleep(0.01)


def _session_members(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid``, from /proc (none found without /proc)."""
    found = []
    for name in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != b"Z" and int(fields[3]) == sid:  # state, ppid, pgrp, session
                found.append(int(name))
    return found


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
    try:
        _read_pipes(proc, out, err, spawn.deadline)
        try:
            proc.wait(timeout=max(0.0, spawn.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            backstop = True
            kill_session(proc.pid)
            proc.wait()
    except BaseException:  # interrupted (KeyboardInterrupt, ...): leave nothing running
        kill_session(proc.pid)
        proc.wait()
        raise
    finally:
        proc.stdout.close()
        proc.stderr.close()
    return Finished(out, err, proc.returncode, backstop)


def _read_pipes(proc: subprocess.Popen[bytes], out: Capture, err: Capture, deadline: float) -> None:
    """Read both pipes to their end, or until ``deadline``, or ``GRACE_SECONDS`` after the
    child exits (then only leftovers could still hold them)."""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, out)  # type: ignore[arg-type]
        sel.register(proc.stderr, selectors.EVENT_READ, err)  # type: ignore[arg-type]
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for key, _ in sel.select(min(left, 0.05)):
                data = os.read(key.fd, 65536)
                if data:
                    key.data.feed(data)
                else:
                    sel.unregister(key.fileobj)
            if proc.poll() is not None and deadline > time.monotonic() + GRACE_SECONDS:
                deadline = time.monotonic() + GRACE_SECONDS


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
            kill_session(proc.pid)
            await proc.wait()
        await asyncio.wait(pumps, timeout=GRACE_SECONDS)
    finally:
        for pump in pumps:
            pump.cancel()
        if proc.returncode is None:  # cancelled while waiting: leave nothing running
            kill_session(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    assert proc.returncode is not None
    return Finished(out, err, proc.returncode, backstop)
