"""Where a :class:`~datamill.models.llamacpp_batch.BatchEngine` runs: a thread of this process
(:class:`ThreadHost`) or a worker process of its own (:class:`ProcessHost`).

Both hosts take :class:`Job` objects from any thread and hand back a
``concurrent.futures.Future`` per job, so callers on any event loop can await it
(``asyncio.wrap_future``); cancelling that future takes the job out of the batch. A host's loop
drains its inbox, runs one engine step and resolves the jobs that finished; it blocks only when
the engine is idle.

A worker process is started fresh (a new interpreter that runs :func:`worker_main`, the
equivalent of multiprocessing's ``spawn``) and talks over a socket pair with pickled messages.
It is not forked: a process that loaded llama.cpp and then forked can hang, and ``spawn`` through
multiprocessing would re-import the user's ``__main__`` script. The worker ignores Ctrl-C (the
parent decides) and exits when the parent's end of the socket closes.

Deliberately not here: the model interface, chat templates, grammars (``llamacpp``).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import Future, InvalidStateError
from multiprocessing.connection import Connection
from typing import Any

from .llamacpp_batch import BatchEngine, Job, JobResult


class EngineHost:
    """Common bookkeeping: pending futures by job id and the number of samples outstanding."""

    def __init__(self, engine_options: dict[str, Any]) -> None:
        self.engine_options = engine_options
        self.pending: dict[int, tuple[Future[JobResult], int]] = {}
        self.load = 0  #: samples submitted and not yet finished
        self.flag: CoreShare | None = None  #: where this worker's "busy" is published, if shared
        self._lock = threading.Lock()
        self.ready: Future[None] = Future()

    def submit(self, job: Job) -> Future[JobResult]:
        future: Future[JobResult] = Future()
        with self._lock:
            self.pending[job.id] = (future, job.n)
            self._add_load(job.n)
        try:
            self._send(("job", job))
        except BaseException:
            with self._lock:
                self.pending.pop(job.id, None)
                self._add_load(-job.n)
            raise
        future.add_done_callback(lambda f: self._cancel(job.id) if f.cancelled() else None)
        return future

    def _add_load(self, n: int) -> None:
        """Under the lock: count samples in (or out) and publish busy/idle where shared."""
        before, self.load = self.load, self.load + n
        if self.flag is not None and (before > 0) != (self.load > 0):
            self.flag.set(self.load > 0)

    def _resolve(self, result: JobResult) -> None:
        with self._lock:
            entry = self.pending.pop(result.id, None)
            if entry is not None:
                self._add_load(-entry[1])
        if entry is not None:
            with contextlib.suppress(InvalidStateError):  # cancelled meanwhile
                entry[0].set_result(result)

    def _fail_pending(self, message: str) -> None:
        with self._lock:
            entries = list(self.pending.items())
            self.pending.clear()
            self._add_load(-self.load)
        for job_id, (future, _) in entries:
            with contextlib.suppress(InvalidStateError):
                future.set_result(
                    JobResult(job_id, error=message, reason="engine stopped", fatal=True)
                )

    def _cancel(self, job_id: int) -> None:
        with self._lock:
            entry = self.pending.pop(job_id, None)
            if entry is not None:
                self._add_load(-entry[1])
        if entry is not None:
            with contextlib.suppress(
                OSError, RuntimeError
            ):  # a stopped engine has nothing to cancel
                self._send(("cancel", job_id))

    def _send(self, message: tuple[Any, ...]) -> None:
        raise NotImplementedError

    def launch(self) -> None:
        """Begin loading the engine; :attr:`ready` resolves (or fails) when it is loaded."""
        raise NotImplementedError

    def start(self) -> None:
        """Load the engine and wait until it serves; raises what loading raised."""
        self.launch()
        self.ready.result()

    def close(self) -> None:
        raise NotImplementedError


class CoreShare:
    """Worker processes lend each other their cores. One byte per worker in a small shared file
    says whether it has requests outstanding; the parent process sets it when it hands a worker
    its first request and clears it when the worker's last result is back (so a worker counts as
    busy from the moment work is on its way). Before each step a worker takes the threads of the
    idle ones (``cores // busy workers``): when one worker's requests run long and the other's
    are done, the long ones get both cores instead of one. The engine checks that lent threads
    pay (``BatchEngine._time_threads``): with other programs busy on the cores they do not, and
    it pauses lending.
    """

    def __init__(self, path: str, index: int, cores: int, workers: int) -> None:
        import mmap

        fd = os.open(path, os.O_RDWR)
        try:
            self.map = mmap.mmap(fd, workers)
        finally:
            os.close(fd)
        self.index, self.cores = index, cores

    def set(self, busy: bool) -> None:
        """Parent side: this worker has requests outstanding (or not)."""
        self.map[self.index] = int(busy)

    def threads(self) -> int:
        """Worker side: the threads this (busy) worker may use now."""
        busy = 1 + sum(self.map[:]) - self.map[self.index]
        return max(1, self.cores // busy)

    def close(self) -> None:
        self.map.close()


def serve(engine: BatchEngine, receive: Any, deliver: Any, share: CoreShare | None = None) -> None:
    """The host loop: take messages, step the engine, deliver finished jobs; until ``close``.

    ``receive(block)`` returns the next message (or None when not blocking and there is none);
    ``deliver(result)`` passes one finished job on; ``share`` lends idle workers' cores.
    """
    while True:
        message = receive(not engine.busy)
        while message is not None:
            kind = message[0]
            if kind == "close":
                return
            if kind == "job":
                job = message[1]
                try:
                    early = engine.submit(job)
                except Exception as exc:  # one bad job must not stop the others
                    early = JobResult(job.id, error=f"cannot queue the request: {exc!r}")
                if early is not None:
                    deliver(early)
            elif kind == "cancel":
                engine.cancel(message[1])
            message = receive(False)
        if share is not None and engine.busy:
            engine.lent_threads = share.threads()
        for result in engine.step():
            deliver(result)


class ThreadHost(EngineHost):
    """The engine on one background thread of this process."""

    def __init__(self, engine_options: dict[str, Any]) -> None:
        super().__init__(engine_options)
        self._inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.engine: BatchEngine | None = None  #: for inspection (tests); used by its thread only

    def launch(self) -> None:
        self._thread = threading.Thread(target=self._run, name="llamacpp-engine", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            engine = self.engine = BatchEngine(**self.engine_options)
        except Exception as exc:
            self.ready.set_exception(exc)
            return
        self.ready.set_result(None)

        def receive(block: bool) -> tuple[Any, ...] | None:
            try:
                return self._inbox.get(block=block)
            except queue.Empty:
                return None

        try:
            serve(engine, receive, self._resolve)
        except Exception as exc:  # an engine bug must not leave callers waiting forever
            self._fail_pending(f"the llama.cpp engine stopped: {exc!r}")
        finally:
            engine.close()

    def _send(self, message: tuple[Any, ...]) -> None:
        self._inbox.put(message)

    def close(self) -> None:
        if self._thread is not None:
            self._inbox.put(("close",))
            self._thread.join()
            self._thread = None
        self._fail_pending("the model was closed")


class ProcessHost(EngineHost):
    """The engine in a worker process of its own (started fresh, never forked)."""

    def __init__(
        self, engine_options: dict[str, Any], share: tuple[str, int, int, int] | None = None
    ) -> None:
        super().__init__(engine_options)
        self.share = share  #: (path, index, cores, workers) for :class:`CoreShare`, or None
        self._conn: Connection | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._send_lock = threading.Lock()
        self.error: str | None = None  #: what the worker reported when it could not load
        self.stopped: str | None = None  #: set once the worker has gone away

    def launch(self) -> None:
        mine, theirs = socket.socketpair()
        fd = theirs.fileno()
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _worker_code(fd)], pass_fds=(fd,), stdin=subprocess.DEVNULL
        )
        theirs.close()
        self._conn = Connection(mine.detach())
        if self.share is not None:
            self.flag = CoreShare(*self.share)
        self._conn.send((self.engine_options, self.share))
        self._reader = threading.Thread(
            target=self._read, name="llamacpp-worker-reader", daemon=True
        )
        self._reader.start()

    def _read(self) -> None:
        assert self._conn is not None
        try:
            while True:
                kind, payload = self._conn.recv()
                if kind == "done":
                    self._resolve(payload)
                elif kind == "ready":
                    self.ready.set_result(None)
                elif kind == "error":
                    self.error = payload
                    self.ready.set_exception(RuntimeError(payload))
                    return
        except (EOFError, OSError):
            pass
        code = self._proc.wait() if self._proc is not None else None
        message = self.error or f"the llama.cpp worker process exited (code {code})"
        self.stopped = message
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(message))
        self._fail_pending(message)

    def _send(self, message: tuple[Any, ...]) -> None:
        if self._conn is None or self.stopped is not None:
            raise RuntimeError(self.stopped or "the llama.cpp worker is not running")
        with self._send_lock:
            self._conn.send(message)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError, RuntimeError):  # it may be gone already
                self._send(("close",))
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
        self._conn = self._proc = self._reader = None
        self._fail_pending("the model was closed")
        if self.flag is not None:
            with self._lock:
                self.flag.close()
                self.flag = None


def _worker_code(fd: int) -> str:
    """The worker's command line: this very datamill's two engine modules and nothing else.

    ``datamill`` and ``datamill.models`` are stood in by empty packages pointing at their folders,
    so the worker skips the package imports (pipeline, pyarrow, ...) and starts faster; it also
    finds these modules when datamill runs from a source tree that is not installed. Likewise
    ``llama_cpp`` is stood in by its ctypes bindings alone (and its log routing), without the
    high-level ``Llama`` class and what that imports (numpy, jinja2): 25 ms instead of 140.
    """
    import llama_cpp

    models = os.path.dirname(os.path.abspath(__file__))
    package = os.path.dirname(models)
    bindings = list(llama_cpp.__path__)
    return (
        "import sys, types\n"
        f"for name, path in (('datamill', [{package!r}]), ('datamill.models', [{models!r}]),"
        f" ('llama_cpp', {bindings!r})):\n"
        "    module = types.ModuleType(name)\n"
        "    module.__path__ = path\n"
        "    sys.modules[name] = module\n"
        "import llama_cpp.llama_cpp\n"
        "sys.modules['llama_cpp'].__dict__.update(\n"
        "    (k, v) for k, v in vars(llama_cpp.llama_cpp).items() if not k.startswith('__'))\n"
        "import llama_cpp._logger\n"
        "from datamill.models.llamacpp_worker import worker_main\n"
        f"worker_main({fd})\n"
    )


def worker_main(fd: int) -> None:
    """Entry point of a worker process: load the engine, then serve jobs from the socket."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(fd)
    options, shared = conn.recv()
    try:
        engine = BatchEngine(**options)
        share = CoreShare(*shared) if shared else None
    except Exception as exc:
        conn.send(("error", str(exc)))
        return
    conn.send(("ready", None))

    def receive(block: bool) -> tuple[Any, ...] | None:
        if block or conn.poll():
            message: tuple[Any, ...] = conn.recv()
            return message
        return None

    with contextlib.suppress(EOFError, OSError):  # OSError, EOFError: the parent went away
        serve(engine, receive, lambda result: conn.send(("done", result)), share)
    # the process ends here: the OS frees the weights and the KV cache faster than llama.cpp's
    # destructors and the interpreter's shutdown would, and the parent waits on this exit
    os._exit(0)
