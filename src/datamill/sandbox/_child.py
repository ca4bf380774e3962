"""The sandbox's own process: run by :mod:`datamill.sandbox`, never imported.

Started as ``python -I -B -X utf8 _child.py CONFIG`` in a fresh session, it is two processes:

* the **supervisor** reads and deletes the config file, becomes a child subreaper (so every
  orphaned descendant is re-parented to it), leaves the network namespace (when asked and allowed),
  as root enters a private mount namespace (the interpreter exposed, every mount but the run's
  folder read-only), forks the worker, enforces the wall-clock limit, then kills and reaps everything the worker left
  behind and writes one ``exit`` record (the worker's wait status, CPU seconds, timeout flag);
* the **worker** moves to its own process group, sets the resource limits, drops privileges,
  installs the audit hook, runs the code and then the tests in one module namespace, and writes
  one ``result`` record -- only after the tests have finished, so an early ``sys.exit`` or
  ``os._exit`` can never read as a pass.

Records are single lines ``<token> <json>`` on stdout, written on a duplicate of fd 1 taken before
the code runs; the token is random per run and known only to this process and the caller.

Deliberately not here: any protection against code that reads the token out of this process's own
memory (the tests run in the same interpreter as the code), and any dependency beyond the stdlib.
"""

from __future__ import annotations

import ast
import contextlib
import ctypes
import errno
import json
import os
import re
import resource
import select
import signal
import sys
import time
import types

TYPE_CHECKING = (
    False  # typing is not imported at run time: the child starts as few modules as it can
)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_CLONE_NEWNS = 0x00020000
_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_MOUNT_OPTIONS = (
    (b"nosuid", _MS_NOSUID), (b"nodev", _MS_NODEV), (b"noexec", _MS_NOEXEC),
    (b"noatime", 1024), (b"nodiratime", 2048), (b"relatime", 1 << 21), (b"strictatime", 1 << 24),
)  # fmt: skip
_PR_SET_KEEPCAPS = 8
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NO_NEW_PRIVS = 38
_CAP_DAC_READ_SEARCH = 2
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_MAX_TEXT = 400
_AF_UNIX = 1

_ONE_PATH_EVENTS = {
    "os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate", "os.utime",
    "os.mkfifo", "os.mknod", "os.chflags", "os.lchflags", "os.setxattr", "os.removexattr",
    "shutil.rmtree", "shutil.chown",
}  # fmt: skip
_TWO_PATH_EVENTS = {"os.rename", "os.link", "shutil.copyfile", "shutil.copymode", "shutil.copystat"}
_SPAWN_EVENTS = {
    "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "pty.spawn",
    "os.startfile",
}  # fmt: skip


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _call(libc: ctypes.CDLL | None, name: str, *args: int) -> bool:
    fn = getattr(libc, name, None) if libc is not None else None
    return fn is not None and fn(*args) == 0


def _enter_namespaces(libc: ctypes.CDLL | None, network: bool) -> tuple[bool, bool, bool]:
    """New namespaces for the run: as root a network and a mount namespace; as another user a
    user namespace (mapping only this uid and gid) with them, where the kernel allows it.
    Returns (network namespace, mount namespace, user namespace)."""
    net = 0 if network else _CLONE_NEWNET
    if os.geteuid() == 0:
        net_ns = bool(net) and _call(libc, "unshare", net)
        return net_ns, _call(libc, "unshare", _CLONE_NEWNS), False
    uid, gid = os.getuid(), os.getgid()
    if not _call(libc, "unshare", _CLONE_NEWUSER | _CLONE_NEWNS | net):
        return False, False, False
    for name, text in (
        ("setgroups", "deny"),
        ("uid_map", f"{uid} {uid} 1"),
        ("gid_map", f"{gid} {gid} 1"),
    ):
        with contextlib.suppress(OSError), open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    return bool(net), True, True


def _private_mounts(libc: ctypes.CDLL | None) -> Callable[..., int] | None:
    """Make the (new) mount namespace private, so nothing done in it reaches the host's mounts.
    Returns libc's ``mount``, or None where that is not possible."""
    mount = getattr(libc, "mount", None) if libc is not None else None
    if mount is None:
        return None
    mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong]
    mount.argtypes += [ctypes.c_void_p]
    return mount if mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) == 0 else None


def _open_to_others(path: str) -> bool:
    """Whether a user other than the owner can reach and read ``path``."""
    parts = os.path.realpath(path).split("/")
    try:
        modes = [os.stat("/".join(parts[:i]) or "/").st_mode for i in range(1, len(parts) + 1)]
    except OSError:
        return False
    return all(m & 0o001 for m in modes) and bool(modes[-1] & 0o004)


def _expose(mount: Callable[..., int], paths: list[str]) -> bool:
    """Cover each closed folder above ``paths`` (one others cannot search, e.g. /root) with a
    tmpfs holding only those paths, bind-mounted: the interpreter stays importable by the run's
    uid without CAP_DAC_READ_SEARCH, and the rest of that folder is hidden."""
    real = sorted({os.path.realpath(p) for p in paths})
    real = [p for p in real if not any(p.startswith(q + "/") for q in real)]
    closed: dict[str, list[str]] = {}
    for path in real:
        parts = path.split("/")
        for i in range(2, len(parts)):
            above = "/".join(parts[:i])
            if not os.stat(above).st_mode & 0o001:
                closed.setdefault(above, []).append(path)
                break
    for above, inner in closed.items():
        fds = [(p, os.open(p, os.O_PATH)) for p in inner]
        if mount(b"tmpfs", above.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, b"mode=755") != 0:
            return False
        for path, fd in fds:
            os.makedirs(path, mode=0o755, exist_ok=True)
            source = f"/proc/self/fd/{fd}".encode()
            if mount(source, path.encode(), None, _MS_BIND | _MS_REC, None) != 0:
                return False
            os.close(fd)
    return all(_open_to_others(p) for p in paths)


def _read_only_root(mount: Callable[..., int], workdir: str) -> bool:
    """Remount every mount but ``workdir`` (and /dev, /proc) read-only, so the code cannot write
    outside its folder whatever it calls. Only ever called inside a private mount namespace."""
    folder = os.fsencode(workdir)
    if mount(folder, folder, None, _MS_BIND, None) != 0:
        return False
    ok = True
    with open("/proc/self/mountinfo", "rb") as f:
        entries = [line.split() for line in f]
    for fields in entries:
        point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), fields[4])
        if point == folder or point in (b"/dev", b"/dev/pts") or point.startswith(b"/proc"):
            continue
        options = fields[5].split(b",")
        flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY
        for name, bit in _MOUNT_OPTIONS:  # kept as they are (a user namespace may not change them)
            flags |= bit if name in options else 0
        ok = mount(None, point, None, flags, None) == 0 and ok
    return ok


def _emit(fd: int, token: bytes, record: dict[str, Any]) -> None:
    data = b"\n" + token + b" " + json.dumps(record).encode() + b"\n"
    while data:
        data = data[os.write(fd, data) :]


# ---------------------------------------------------------------- supervisor


def main() -> None:
    path = sys.argv[1]
    with open(path, "rb") as f:
        cfg = json.loads(f.read())
    os.unlink(path)
    token = cfg["token"].encode()
    out = os.dup(1)
    libc = _libc()
    subreaper = _call(libc, "prctl", _PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    net_ns, mount_ns, cfg["userns"] = _enter_namespaces(libc, cfg["network"])
    mount = _private_mounts(libc) if mount_ns else None
    if mount is not None and cfg["keep_read"] and _expose(mount, cfg["interpreter_paths"]):
        cfg["keep_read"] = False  # the interpreter is now readable without the capability
    read_only = mount is not None and _read_only_root(mount, os.path.realpath(cfg["workdir"]))
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            _worker(cfg, libc, out, token)
        except BaseException:  # a fault of this script, not of the code under test
            import traceback

            traceback.print_exc()
        finally:
            os._exit(70)
    with contextlib.suppress(OSError):  # the worker may have done it already, or exited
        os.setpgid(pid, pid)
    status, cpu, timed_out = _wait(pid, start + cfg["wall_seconds"])
    _kill_descendants(pid)
    _emit(
        out,
        token,
        {
            "kind": "exit",
            "code": os.waitstatus_to_exitcode(status),
            "cpu_seconds": cpu,
            "timed_out": timed_out,
            "protections": {
                "network_namespace": net_ns,
                "subreaper": subreaper,
                "read_only_root": read_only,
            },
        },
    )


def _wait(pid: int, deadline: float) -> tuple[int, float, bool]:
    """Wait for the worker until ``deadline``; kill its group past it. Returns (status, cpu, late)."""
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    timed_out = False
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage.ru_utime + usage.ru_stime, timed_out
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            _killpg(pid)
            _, status, usage = os.wait4(pid, 0)
            return status, usage.ru_utime + usage.ru_stime, timed_out
        if pidfd is not None:
            select.select([pidfd], [], [], left)
        else:
            time.sleep(min(left, 0.01))


def _killpg(pgid: int) -> bool:
    try:
        os.killpg(pgid, signal.SIGKILL)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _kill_descendants(pgid: int) -> None:
    """Kill the worker's process group and every orphan re-parented to this subreaper; reap all."""
    me = os.getpid()
    for _ in range(400):
        _killpg(pgid)
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return  # no descendant left, not even a zombie
        for pid in _children_of(me):  # descendants that left the group (setsid) but not us
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.005)


def _children_of(parent: int) -> list[int]:
    found = []
    for name in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                found.append(int(name))
    return found


# ---------------------------------------------------------------- worker


def _worker(cfg: dict[str, Any], libc: ctypes.CDLL | None, out: int, token: bytes) -> None:
    os.setpgid(0, 0)
    main_pid = os.getpid()
    workdir = os.path.realpath(cfg["workdir"])
    protections = {"rlimits": _set_limits(cfg)}
    protections.update(_drop_privileges(cfg, libc))
    os.chdir(workdir)
    for name, text in (("solution.py", cfg["code"]), ("tests.py", cfg["tests"])):
        with contextlib.suppress(OSError), open(name, "w") as f:  # only for tracebacks' lines
            f.write(text)
    state: dict[str, Any] = {"violation": None}
    sys.addaudithook(_hook(workdir, cfg["network"], state))
    protections["audit_hooks"] = True
    record = _run(cfg["code"], cfg["tests"], cfg["style"], state)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    if os.getpid() == main_pid:  # a process the code forked never reports
        record.update(kind="result", protections=protections)
        _emit(out, token, record)
    os._exit(0)


def _processes_of(uid: int) -> int:
    """How many processes ``uid`` runs now (a generous guess of 4096 where /proc is missing)."""
    if not os.path.isdir("/proc"):
        return 4096
    count = 0
    for name in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            count += name.isdigit() and os.stat(f"/proc/{name}").st_uid == uid
    return count


def _set_limits(cfg: dict[str, Any]) -> bool:
    nproc = cfg["processes"]
    if cfg["uid"] is None and os.geteuid() != 0:  # RLIMIT_NPROC counts all of this user's processes
        nproc += _processes_of(os.getuid())
    mb = 1024 * 1024
    wanted = [
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_CPU, cfg["cpu_seconds"], cfg["cpu_seconds"] + 1),
        (resource.RLIMIT_AS, cfg["memory_mb"] * mb, cfg["memory_mb"] * mb),
        (resource.RLIMIT_FSIZE, cfg["file_size_mb"] * mb, cfg["file_size_mb"] * mb),
        (resource.RLIMIT_NPROC, nproc, nproc),
    ]
    ok = True
    for res, soft, hard in wanted:
        _, cur_hard = resource.getrlimit(res)
        if cur_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, cur_hard), min(hard, cur_hard)
        try:
            resource.setrlimit(res, (soft, hard))
        except (ValueError, OSError):
            ok = False
    return ok


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _set_capabilities(libc: ctypes.CDLL | None, mask: int) -> bool:
    """Keep only the capabilities in ``mask`` (effective and permitted; none inheritable)."""
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    data[0].effective = data[0].permitted = mask
    capset = getattr(libc, "capset", None) if libc is not None else None
    return capset is not None and capset(ctypes.byref(header), data) == 0


def _drop_privileges(cfg: dict[str, Any], libc: ctypes.CDLL | None) -> dict[str, bool]:
    """As root: become ``cfg["uid"]`` (a uid of this run alone); keep only CAP_DAC_READ_SEARCH
    when the interpreter cannot be read by other users (``keep_read``). In a user namespace:
    drop the capabilities it gave (else the code could remount its folders writable)."""
    dropped = restricted = False
    uid = cfg["uid"]
    if uid is not None and os.geteuid() == 0:
        keep_read = cfg["keep_read"] and _call(libc, "prctl", _PR_SET_KEEPCAPS, 1, 0, 0, 0)
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        dropped = True
        restricted = not keep_read
        if keep_read and not _set_capabilities(libc, 1 << _CAP_DAC_READ_SEARCH):
            os._exit(71)  # it would keep more than asked for: refuse to run the code
    elif cfg.get("userns") and not _set_capabilities(libc, 0):
        os._exit(71)  # it would keep the user namespace's capabilities (mount, ...): refuse
    no_new_privs = _call(libc, "prctl", _PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    return {
        "privileges_dropped": dropped,
        "reads_restricted": restricted,
        "process_limit": dropped or os.geteuid() != 0,
        "no_new_privs": no_new_privs,
    }


def _hook(
    workdir: str, network: bool, state: dict[str, Any]
) -> Callable[[str, tuple[Any, ...]], None]:
    """The audit hook: refuse writes outside ``workdir``, sockets, new programs and native calls."""
    realpath, fsdecode, prefix = os.path.realpath, os.fsdecode, workdir + os.sep
    busy = [False]

    def inside(path: object) -> bool:
        if path is None or isinstance(path, int):
            return True  # an already open descriptor
        full = realpath(fsdecode(path))  # type: ignore[arg-type]
        return full == workdir or full.startswith(prefix) or full == os.devnull

    def deny(why: str) -> None:
        if state["violation"] is None:
            state["violation"] = why
        raise PermissionError(f"blocked by the datamill sandbox: {why}")

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if busy[0]:
            return
        busy[0] = True
        try:
            if event == "open":
                if args[2] & _WRITE_FLAGS and not inside(args[0]):
                    deny(f"write blocked: {args[0]}")
            elif event in _ONE_PATH_EVENTS:
                if not inside(args[0]):
                    deny(f"write blocked: {args[0]}")
            elif event in _TWO_PATH_EVENTS:
                for path in args[:2]:
                    if not inside(path):
                        deny(f"write blocked: {path}")
            elif event == "os.symlink":
                if not inside(args[1]):
                    deny(f"write blocked: {args[1]}")
            elif event.startswith("socket.") and not network:
                if not (event == "socket.__new__" and args[1] == _AF_UNIX):
                    deny("network blocked")  # unconnected local pairs (asyncio's) stay allowed
            elif event in _SPAWN_EVENTS:
                deny("subprocess blocked")
            elif event in ("ctypes.dlsym", "ctypes.call_function") or (
                event == "ctypes.dlopen" and args[0] is not None
            ):
                deny("native call blocked")
        finally:
            busy[0] = False

    return hook


# ---------------------------------------------------------------- running code and tests


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"SystemExit: {exc.code}"
    msg = str(exc)
    return _short(f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__)


def _print_traceback(exc: BaseException) -> None:
    """The first failure's traceback, on the code's stderr (so it reaches ``result.stderr``)."""
    with contextlib.suppress(BaseException):
        import traceback

        tb = exc.__traceback__  # start at the code's own frames, not this script's
        while tb is not None and tb.tb_frame.f_code.co_filename not in ("solution.py", "tests.py"):
            tb = tb.tb_next
        shown = traceback.format_exception(type(exc), exc, tb or exc.__traceback__)
        sys.stderr.write("".join(shown))


def _limit_hit(exc: BaseException, state: dict[str, Any]) -> str | None:
    """The sandbox-level reason behind ``exc`` (a blocked action or a resource limit), if any."""
    violation: str | None = state["violation"]
    if violation:
        return violation
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 8:
        if isinstance(cur, MemoryError):
            return "memory limit"
        if isinstance(cur, OSError) and cur.errno == errno.EFBIG:
            return "file size limit"
        if isinstance(cur, BlockingIOError) and cur.errno == errno.EAGAIN:
            return "process limit"
        if isinstance(cur, RuntimeError) and "can't start new thread" in str(cur):
            return "process limit"
        cur, seen = cur.__cause__ or cur.__context__, seen + 1
    return None


def _failure(exc: BaseException, lines: list[str]) -> str:
    """``<failing tests.py line>`` plus the exception (an assertion shows only its message)."""
    lineno = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "tests.py":
            lineno = tb.tb_lineno
        tb = tb.tb_next
    where = lines[lineno - 1].strip() if lineno and lineno <= len(lines) else ""
    if isinstance(exc, AssertionError):
        what = _short(str(exc))
        return _short(f"{where} ({what})" if what and where else where or what or "AssertionError")
    return _short(f"{where}: {_describe(exc)}" if where else _describe(exc))


def _outcome(
    reason: str | None, passed: int | None, total: int | None, state: dict[str, Any]
) -> dict[str, Any]:
    reason = state["violation"] or reason
    return {
        "passed": reason is None,
        "reason": reason or "ok",
        "tests_passed": passed,
        "tests_total": total,
    }


def _syntax(exc: BaseException, name: str) -> str:
    if isinstance(exc, SyntaxError):
        return _short(f"{exc.msg} ({name} line {exc.lineno})")
    return _short(f"{exc} ({name})")


def _run(code: str, tests: str, style: str, state: dict[str, Any]) -> dict[str, Any]:
    try:
        code_obj = compile(code, "solution.py", "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        return _outcome(f"syntax error: {_syntax(exc, 'solution.py')}", None, None, state)
    try:
        tree = ast.parse(tests, "tests.py")
    except (SyntaxError, ValueError) as exc:
        return _outcome(f"syntax error in tests: {_syntax(exc, 'tests.py')}", None, None, state)
    module = types.ModuleType("solution")
    module.__file__ = "solution.py"
    sys.modules["solution"] = module
    ns = module.__dict__
    try:
        exec(code_obj, ns)
    except BaseException as exc:
        limit = _limit_hit(exc, state)
        if limit is None and isinstance(exc, SystemExit):
            limit = f"error: {_describe(exc)} (the program exited before the tests ran)"
        _print_traceback(exc)
        return _outcome(limit or f"error: {_describe(exc)}", None, None, state)
    lines = tests.splitlines()
    if style == "pytest":
        return _run_test_functions(tree, ns, lines, state)
    return _run_asserts(tree, ns, lines, state)


def _run_asserts(
    tree: ast.Module, ns: dict[str, Any], lines: list[str], state: dict[str, Any]
) -> dict[str, Any]:
    """Run the tests statement by statement; each top-level ``assert`` is one test, and a failing
    one does not stop the rest. With no top-level assert the whole block is one test."""
    if not tree.body:
        return _outcome("no tests: the tests are empty", 0, 0, state)
    n_asserts = sum(isinstance(s, ast.Assert) for s in tree.body)
    total, passed, first = n_asserts or 1, 0, None
    for stmt in tree.body:
        is_assert = isinstance(stmt, ast.Assert)
        try:
            exec(compile(ast.Module([stmt], type_ignores=[]), "tests.py", "exec"), ns)
        except BaseException as exc:
            limit = _limit_hit(exc, state)
            if limit:
                return _outcome(limit, passed, total, state)
            if first is None:
                _print_traceback(exc)
                first = f"test failed: {_failure(exc, lines)}"
            if not is_assert or isinstance(exc, (SystemExit, KeyboardInterrupt)):
                return _outcome(first, passed, total, state)
            continue
        passed += is_assert
    if not n_asserts and first is None:
        passed = 1
    return _outcome(first, passed, total, state)


def _collect(ns: dict[str, Any]) -> list[tuple[str, types.FunctionType, object]]:
    """``test*`` functions and ``Test*`` classes' ``test*`` methods defined in tests.py, in order."""
    found: list[tuple[str, types.FunctionType, object]] = []
    for name, obj in list(ns.items()):
        if isinstance(obj, types.FunctionType) and name.startswith("test"):
            if obj.__code__.co_filename == "tests.py":
                found.append((name, obj, None))
        elif isinstance(obj, type) and name.startswith("Test"):
            for attr, fn in vars(obj).items():
                is_test = isinstance(fn, types.FunctionType) and attr.startswith("test")
                if is_test and fn.__code__.co_filename == "tests.py":
                    found.append((f"{name}.{attr}", fn, obj))
    return found


def _call_test(fn: types.FunctionType, cls: object) -> None:
    args = [cls()] if cls is not None else []  # type: ignore[operator]
    required = fn.__code__.co_argcount - len(fn.__defaults__ or ()) - len(args)
    if required > 0:
        raise TypeError("it takes arguments (pytest fixtures), which this runner does not provide")
    result = fn(*args)
    if fn.__code__.co_flags & 0x80:  # CO_COROUTINE
        import asyncio

        asyncio.run(result)


def _run_test_functions(
    tree: ast.Module, ns: dict[str, Any], lines: list[str], state: dict[str, Any]
) -> dict[str, Any]:
    """pytest style without pytest: load tests.py into the module, then call each test once."""
    try:
        exec(compile(tree, "tests.py", "exec"), ns)
    except BaseException as exc:
        _print_traceback(exc)
        reason = _limit_hit(exc, state) or f"test failed: loading the tests: {_failure(exc, lines)}"
        return _outcome(reason, None, None, state)
    tests = _collect(ns)
    if not tests:
        return _outcome("no tests: no test_* functions found", 0, 0, state)
    passed, first = 0, None
    for name, fn, cls in tests:
        try:
            _call_test(fn, cls)
        except BaseException as exc:
            limit = _limit_hit(exc, state)
            if limit:
                return _outcome(limit, passed, len(tests), state)
            if first is None:
                _print_traceback(exc)
                first = f"test failed: {name}: {_failure(exc, lines)}"
        else:
            passed += 1
    return _outcome(first, passed, len(tests), state)


if __name__ == "__main__":
    main()
