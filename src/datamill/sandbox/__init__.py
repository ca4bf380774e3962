"""Run untrusted (model-written) Python against tests, in a process of its own with limits.

``run_python(code, tests)`` starts ``python -I`` (isolated mode) in a new session, with a fresh
temporary folder as working folder and ``HOME``, a minimal environment and stdin at ``/dev/null``.
The code runs, then the tests, in one module namespace; the outcome is a :class:`SandboxResult`
whose ``reason`` is one line (``"ok"``, ``"test failed: <line>"``, ``"timeout after 10 s"``,
``"cpu time limit"``, ``"memory limit"``, ``"file size limit"``, ``"process limit"``,
``"syntax error: ..."``, ``"crashed: ..."``, ``"network blocked"``, ``"write blocked: <path>"``,
``"subprocess blocked"``, ``"native call blocked"``, ``"error: <ExcType>: <msg>"``, ``"no tests: ..."``).

A run passes only when a record written *after* the tests finished says so: ``sys.exit`` or
``os._exit`` in the code can never read as a pass. Any blocked action fails the run, even if the
code caught the ``PermissionError``.

Protections, strongest first (``sandbox_info()`` says which are active on this machine):

* **resource limits** in the worker (``setrlimit``): CPU seconds, address space, file size,
  process count, no core dumps; plus a wall-clock limit after which the worker's process group
  is killed. A supervisor process (a child subreaper on Linux) kills and reaps every process the
  code left behind, including ones that called ``setsid``.
* **network namespace**: on Linux, as root (or as a user allowed user namespaces), the code runs
  in a new, empty network namespace -- no interface but a loopback that is down.
* **read-only file system**: on Linux, as root or inside the user namespace, a private mount
  namespace in which every mount except the temporary folder (and /dev, /proc) is remounted
  read-only -- the real boundary for writes (``read_only_root``); the host's mounts never change.
  Not root, the user namespace maps only the user's own uid and gid, and the worker drops the
  capabilities it gave before the code runs.
* **privileges**: as root, the worker becomes a uid of its own (random, per run, owning only the
  temporary folder) with ``no_new_privs``; then ``RLIMIT_NPROC`` is enforced (it never is for
  root) and the code can read only what other users can. When the interpreter lives where other
  users cannot reach it (e.g. under ``/root``, mode 0700), that closed folder is covered, in the
  private mount namespace, by a tmpfs holding only the interpreter's folders (the rest of it
  hidden). Where that is not possible the worker keeps ``CAP_DAC_READ_SEARCH`` so it can still
  import, and can then *read* any file (``reads_restricted`` is False).
* **audit hook** (``sys.addaudithook``) in the worker, refusing writes outside the temporary
  folder (``open`` for writing, remove, rename, mkdir, chmod, link, ...), every ``socket.*``
  event when ``network`` is False, starting programs (``subprocess``, ``os.system``, ``exec*``,
  ``posix_spawn``) and native calls through ``ctypes``. This is best-effort, NOT a security
  boundary: C extensions bypass it (and ``dir_fd=`` opens slip past its path check). Without a
  network namespace it is the only network block; without a read-only root, the only write block
  for world-writable folders such as /tmp.

Deliberately not here: a chroot or an empty file system (the code reads what other users can),
seccomp, cgroups, and protection against code that reads the run's token from its own
process memory to forge a pass (the tests run in the same interpreter as the code). Linux only
for the namespace and subreaper; elsewhere they are reported off and the rest still applies.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import secrets
import shutil
import signal
import stat
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from datamill.sandbox import _io

__all__ = ["Limits", "SandboxResult", "arun_python", "run_python", "sandbox_info"]

Style = Literal["assert", "pytest", "auto"]
_CHILD = Path(__file__).with_name("_child.py")
_BACKSTOP_SECONDS = 5.0  # beyond the wall limit, for the child's own start and clean-up
_SHOWN_CHARS = 4096
_SIGNALS: dict[int, str] = {signal.SIGXCPU: "cpu time limit", signal.SIGXFSZ: "file size limit"}


@dataclass(frozen=True)
class Limits:
    """Per-run limits. Seconds are wall-clock (``wall_seconds``) or CPU (``cpu_seconds``)."""

    wall_seconds: float = 10.0  # wall-clock timeout of the whole run
    cpu_seconds: int = 5  # RLIMIT_CPU
    memory_mb: int = 512  # RLIMIT_AS (address space, so set it well above the data's size)
    file_size_mb: int = 16  # RLIMIT_FSIZE: the largest file the code may write
    processes: int = 32  # RLIMIT_NPROC: processes and threads of the run's own uid
    network: bool = False

    def __post_init__(self) -> None:
        for name in ("wall_seconds", "cpu_seconds", "memory_mb", "file_size_mb", "processes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive number, got {value!r}")
        for name in ("cpu_seconds", "memory_mb", "file_size_mb", "processes"):
            if not isinstance(getattr(self, name), int):
                raise ValueError(
                    f"Limits.{name} must be a whole number, got {getattr(self, name)!r}"
                )


@dataclass(frozen=True)
class SandboxResult:
    passed: bool
    reason: str  # one line; "ok" when passed
    seconds: float  # wall-clock seconds of the whole run, start-up included
    stdout: str  # at most a few KB: head and tail, with a marker where output was cut
    stderr: str
    tests_passed: int | None  # None when the tests never ran
    tests_total: int | None


def run_python(
    code: str, tests: str, *, limits: Limits = Limits(), style: Style = "auto"
) -> SandboxResult:
    """Run ``code`` then ``tests`` in the sandbox and block until done (at most about
    ``limits.wall_seconds`` plus a few seconds of start-up and clean-up).

    ``style``: ``"assert"`` -- the tests are plain statements run after the code; each top-level
    ``assert`` counts as one test (a block without one counts as one). ``"pytest"`` -- ``test*``
    functions and ``Test*`` classes' ``test*`` methods in the tests are called, no pytest needed.
    ``"auto"`` -- pytest when the tests define ``def test...``. Raises ``ValueError`` on bad
    arguments; everything the code does is reported in the result, never raised.
    """
    job = _Job.prepare(code, tests, limits, style)
    try:
        return job.finish(_io.run_blocking(job.spawn))[0]
    finally:
        job.cleanup()


async def arun_python(
    code: str, tests: str, *, limits: Limits = Limits(), style: Style = "auto"
) -> SandboxResult:
    """:func:`run_python` as a coroutine: waits on an asyncio subprocess, never blocks the loop
    (apart from creating and removing the small temporary folder)."""
    job = _Job.prepare(code, tests, limits, style)
    try:
        return job.finish(await _io.run_async(job.spawn))[0]
    finally:
        job.cleanup()


@functools.lru_cache(maxsize=1)
def sandbox_info() -> dict[str, bool]:
    """Which protections are active on this machine, found by one real run (cached): keys
    ``network_namespace``, ``rlimits``, ``process_limit``, ``privileges_dropped``,
    ``reads_restricted``, ``read_only_root``, ``no_new_privs``, ``audit_hooks``, ``subreaper``.
    Raises ``RuntimeError`` when even an empty program cannot run here."""
    job = _Job.prepare("", "assert True", Limits(), "assert")
    try:
        result, found = job.finish(_io.run_blocking(job.spawn))
    finally:
        job.cleanup()
    if not result.passed:
        raise RuntimeError(f"the sandbox cannot run the simplest program here: {result.reason}")
    keys = (
        *("network_namespace", "rlimits", "process_limit", "privileges_dropped"),
        *("reads_restricted", "read_only_root", "no_new_privs", "audit_hooks", "subreaper"),
    )
    return {key: bool(found.get(key)) for key in keys}


def _pick_style(tests: str, style: str) -> str:
    if style not in ("assert", "pytest", "auto"):
        raise ValueError(f"style must be 'assert', 'pytest' or 'auto', got {style!r}")
    if style != "auto":
        return style
    found = re.search(r"^\s*(async\s+)?def\s+test|^\s*class\s+Test", tests, re.MULTILINE)
    return "pytest" if found else "assert"


def _readable_by_others(path: str) -> bool:
    """Whether a user other than the owner can reach and read ``path``."""
    current = Path(path).resolve()
    for part in [current, *current.parents]:
        try:
            mode = part.stat().st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH or (part == current and not mode & stat.S_IROTH):
            return False
    return True


def _interpreter_paths() -> list[str]:
    """The folders the worker imports from (it never starts a program)."""
    paths = sysconfig.get_paths()
    names = ("stdlib", "platstdlib", "purelib", "platlib")
    return sorted({sys.base_prefix, sys.prefix, *(paths[n] for n in names)})


@functools.lru_cache(maxsize=1)
def _interpreter_readable_by_others() -> bool:
    return all(_readable_by_others(p) for p in _interpreter_paths())


def _show(capture: _io.Capture, text: bytes, removed: int = 0) -> str:
    """At most about ``_SHOWN_CHARS`` characters: the head and the tail, with a marker between
    that gives the stream's size (less the ``removed`` bytes of records)."""
    shown = text.decode("utf-8", "replace")
    if len(shown) <= _SHOWN_CHARS and not capture.cut:
        return shown
    marker = f"\n[... output cut: {capture.total - removed} bytes in all ...]\n"
    return shown[: _SHOWN_CHARS * 3 // 4] + marker + shown[-_SHOWN_CHARS // 4 :]


@dataclass
class _Job:
    """One run: its temporary folder, token, child command line and limits."""

    spawn: _io.Spawn
    workdir: str
    token: str
    limits: Limits
    uid: int | None
    started: float
    sweep: bool = True  # kill leftovers by uid here: the child did not report its own clean-up

    @classmethod
    def prepare(cls, code: str, tests: str, limits: Limits, style: str) -> _Job:
        if not isinstance(code, str) or not isinstance(tests, str):
            raise ValueError("code and tests must be str (Python source text)")
        if not isinstance(limits, Limits):
            raise ValueError(f"limits must be a datamill.sandbox.Limits, got {limits!r}")
        style = _pick_style(tests, style)
        root = hasattr(os, "geteuid") and os.geteuid() == 0
        uid = 100_000 + secrets.randbelow(1_000_000_000) if root else None
        workdir = tempfile.mkdtemp(prefix="datamill-sandbox-")
        token = secrets.token_hex(16)
        config = {
            "token": token,
            "workdir": workdir,
            "code": code,
            "tests": tests,
            "style": style,
            "uid": uid,
            "keep_read": root and not _interpreter_readable_by_others(),
            "interpreter_paths": _interpreter_paths(),
            "wall_seconds": limits.wall_seconds,
            "cpu_seconds": limits.cpu_seconds,
            "memory_mb": limits.memory_mb,
            "file_size_mb": limits.file_size_mb,
            "processes": limits.processes,
            "network": limits.network,
        }
        config_path = os.path.join(workdir, ".config.json")
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f)
        if uid is not None:
            os.chown(workdir, uid, uid)
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": workdir,
            "TMPDIR": workdir,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "USER": "sandbox",
            "LOGNAME": "sandbox",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        argv = [sys.executable, "-I", "-B", "-X", "utf8", str(_CHILD), config_path]
        started = time.monotonic()
        deadline = started + limits.wall_seconds + _BACKSTOP_SECONDS
        spawn = _io.Spawn(argv=argv, cwd=workdir, env=env, deadline=deadline)
        return cls(spawn, workdir, token, limits, uid, started)

    def cleanup(self) -> None:
        if self.uid is not None and self.sweep:
            _kill_uid(self.uid)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def finish(self, done: _io.Finished) -> tuple[SandboxResult, dict[str, Any]]:
        """Read the records out of stdout and turn the run into a result and its protections."""
        records, out_text = _records(done.out, self.token.encode())
        result, exit_ = records.get("result"), records.get("exit")
        self.sweep = exit_ is None
        found = {**(result or {}).get("protections", {}), **(exit_ or {}).get("protections", {})}
        passed, counts = False, (None, None)
        if exit_ is None or exit_["timed_out"]:
            reason = f"timeout after {self.limits.wall_seconds:g} s"
            if exit_ is None and not done.backstop_hit:
                reason = f"crashed: the sandbox supervisor ended with {_code(done.returncode)}"
        elif result is not None:
            passed, reason = result["passed"], result["reason"]
            counts = (result["tests_passed"], result["tests_total"])
        else:
            reason = _crash_reason(exit_["code"], exit_["cpu_seconds"], self.limits)
        raw_out = len(done.out.head) + len(done.out.tail)
        stdout = _show(done.out, out_text, raw_out - len(out_text))
        stderr = _show(done.err, bytes(done.err.head) + bytes(done.err.tail))
        seconds = round(time.monotonic() - self.started, 3)
        return SandboxResult(passed, reason, seconds, stdout, stderr, *counts), found


def _code(code: int) -> str:
    return f"signal {_signal_name(-code)}" if code < 0 else f"exit code {code}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _crash_reason(code: int, cpu_seconds: float, limits: Limits) -> str:
    """The worker ended without a result record: a limit, a signal or an early exit."""
    if code < 0 and -code in _SIGNALS:
        return _SIGNALS[-code]
    if code == -9 and cpu_seconds >= limits.cpu_seconds - 0.05:
        return "cpu time limit"  # the hard limit, one second after an ignored SIGXCPU
    if code < 0:
        return f"crashed: {_code(code)}"
    return f"crashed: {_code(code)} before the tests finished"


def _records(capture: _io.Capture, token: bytes) -> tuple[dict[str, dict[str, Any]], bytes]:
    """The child's records (by kind) and stdout without them."""
    text = bytes(capture.head) + bytes(capture.tail)
    records: dict[str, dict[str, Any]] = {}
    pattern = re.compile(rb"\n?" + re.escape(token) + rb" ([^\n]*)\n?")
    for match in pattern.finditer(text):
        try:
            record = json.loads(match.group(1))
        except ValueError:
            continue
        records[record.get("kind", "")] = record
    return records, pattern.sub(b"", text)


def _kill_uid(uid: int) -> None:
    """Kill any process still running as the run's own uid (a backstop; the child does this)."""
    for _ in range(50):
        alive = False
        for name in os.listdir("/proc") if os.path.isdir("/proc") else []:
            if not name.isdigit():
                continue
            try:
                status = Path(f"/proc/{name}/status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if fields.get("Uid", "").split()[:1] == [str(uid)] and "Z" not in fields.get(
                "State", ""
            ):
                alive = True
                with contextlib.suppress(OSError):
                    os.kill(int(name), signal.SIGKILL)
        if not alive:
            return
        time.sleep(0.01)
