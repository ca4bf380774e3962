"""datamill.sandbox: model-written code run against tests, and the hostile catalogue.

Every hostile test bounds a hang with a generous pytest timeout; none asserts how long a run took.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import tempfile
import uuid
from pathlib import Path

import psutil
import pytest

from datamill.sandbox import Limits, SandboxResult, arun_python, run_python, sandbox_info

ADD = "def add(a, b):\n    return a + b\n"
QUICK = Limits(wall_seconds=20, cpu_seconds=5)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _printed_ints(result: SandboxResult, name: str) -> list[int]:
    return [int(v) for v in re.findall(rf"{name}=(\d+)", result.stdout)]


def _leftovers(pgid: int, uid: int | None) -> list[int]:
    """Live processes still in ``pgid`` or (when the run had a uid of its own) owned by ``uid``."""
    found = []
    for proc in psutil.process_iter(["pid", "uids", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            same_group = os.getpgid(proc.info["pid"]) == pgid
            same_uid = uid not in (None, 0, os.getuid()) and proc.info["uids"].real == uid
        except (psutil.Error, ProcessLookupError):
            continue
        if same_group or same_uid:
            found.append(proc.info["pid"])
    return found


# ------------------------------------------------------------------ ordinary outcomes


def test_a_correct_solution_passes_with_counts():
    result = run_python(ADD, "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n", limits=QUICK)
    assert (result.passed, result.reason) == (True, "ok")
    assert (result.tests_passed, result.tests_total) == (2, 2)
    assert result.seconds > 0


def test_a_wrong_answer_names_the_failing_assertion_and_counts_the_rest():
    tests = "assert add(1, 2) == 3\nassert add(2, 2) == 5, 'two and two'\nassert add(0, 0) == 0\n"
    result = run_python(ADD, tests, limits=QUICK)
    assert not result.passed
    assert result.reason == "test failed: assert add(2, 2) == 5, 'two and two' (two and two)"
    assert (result.tests_passed, result.tests_total) == (2, 3)


def test_an_exception_inside_an_assert_is_that_test_failing():
    result = run_python(ADD, "assert add(1, 2) == 3\nassert add(1, None) == 1\n", limits=QUICK)
    assert not result.passed
    assert result.reason.startswith("test failed: assert add(1, None) == 1: TypeError:")
    assert (result.tests_passed, result.tests_total) == (1, 2)


def test_a_check_function_block_without_top_level_asserts_is_one_test():
    tests = "def check(f):\n    assert f(1, 1) == 2\n    assert f(2, 2) == 4\n\ncheck(add)\n"
    assert run_python(ADD, tests, limits=QUICK).tests_total == 1
    bad = run_python("def add(a, b):\n    return a - b\n", tests, limits=QUICK)
    assert not bad.passed
    assert bad.reason == "test failed: assert f(1, 1) == 2"
    assert (bad.tests_passed, bad.tests_total) == (0, 1)


def test_pytest_style_runs_functions_and_classes_without_pytest():
    tests = (
        "def test_small():\n    assert add(1, 2) == 3\n\n"
        "def test_wrong():\n    value = add(2, 2)\n    assert value == 5\n\n"
        "class TestAdd:\n    def test_zero(self):\n        assert add(0, 0) == 0\n\n"
        "def test_needs_fixture(tmp_path):\n    pass\n\n"
        "async def test_async():\n    assert add(1, 1) == 2\n\n"
        "def helper():\n    raise AssertionError('not a test')\n"
    )
    result = run_python(ADD, tests, limits=QUICK, style="pytest")
    assert not result.passed
    assert result.reason == "test failed: test_wrong: assert value == 5"
    assert (result.tests_passed, result.tests_total) == (3, 5)


def test_pytest_style_ignores_test_named_functions_of_the_solution():
    code = ADD + "def test_helper():\n    raise AssertionError('solution code, not a test')\n"
    result = run_python(code, "def test_add():\n    assert add(2, 3) == 5\n", limits=QUICK)
    assert (result.passed, result.tests_passed, result.tests_total) == (True, 1, 1)


def test_auto_picks_the_style_from_the_tests():
    as_functions = run_python(ADD, "def test_add():\n    assert add(1, 1) == 2\n", limits=QUICK)
    assert (as_functions.passed, as_functions.tests_total) == (True, 1)
    as_asserts = run_python(ADD, "assert add(1, 1) == 2\nassert add(1, 2) == 3\n", limits=QUICK)
    assert (as_asserts.passed, as_asserts.tests_total) == (True, 2)


def test_empty_tests_never_pass():
    assert run_python(ADD, "", limits=QUICK).reason == "no tests: the tests are empty"
    result = run_python(ADD, "x = 1\n", limits=QUICK, style="pytest")
    assert (result.passed, result.reason) == (False, "no tests: no test_* functions found")


def test_syntax_errors_in_code_and_in_tests_are_told_apart():
    bad_code = run_python(
        "def add(a, b)\n    return a + b\n", "assert add(1, 2) == 3", limits=QUICK
    )
    assert not bad_code.passed
    assert bad_code.reason.startswith("syntax error: ")
    assert "solution.py line 1" in bad_code.reason
    assert bad_code.tests_total is None
    bad_tests = run_python(ADD, "assert add(1, 2) ==\n", limits=QUICK)
    assert bad_tests.reason.startswith("syntax error in tests: ")


def test_an_exception_in_the_code_is_an_error_with_its_type():
    result = run_python("x = undefined_name + 1\n", "assert True", limits=QUICK)
    assert result.reason == "error: NameError: name 'undefined_name' is not defined"
    assert result.tests_passed is None


def test_the_first_failure_traceback_goes_to_stderr_from_the_code_s_own_frames():
    code = "def div(a, b):\n    return a / b\n"
    result = run_python(code, "def test_div():\n    assert div(1, 0) == 1\n", limits=QUICK)
    assert (
        result.reason
        == "test failed: test_div: assert div(1, 0) == 1: ZeroDivisionError: division by zero"
    )
    assert 'File "tests.py", line 2, in test_div' in result.stderr
    assert 'File "solution.py", line 2, in div' in result.stderr
    assert "_child.py" not in result.stderr


def test_output_and_tests_importing_the_solution_module():
    code = ADD + "print('hello from the solution')\n"
    tests = "from solution import add as plus\nassert plus(2, 2) == 4\nprint('tests done')\n"
    result = run_python(code, tests, limits=QUICK)
    assert result.passed, result.reason
    assert result.stdout.splitlines() == ["hello from the solution", "tests done"]


def test_the_code_can_write_inside_its_own_folder():
    code = (
        "import os, tempfile\n"
        "open('notes.txt', 'w').write('x' * 100)\n"
        "os.makedirs('sub/dir')\nos.rename('notes.txt', 'sub/dir/n.txt')\n"
        "fd, path = tempfile.mkstemp()\nos.close(fd)\nos.remove(path)\n"
        "home = os.path.expanduser('~')\n"
    )
    tests = "assert open('sub/dir/n.txt').read() == 'x' * 100\nassert os.getcwd() == home\n"
    result = run_python(code, tests, limits=QUICK)
    assert result.passed, result.reason


def test_bad_arguments_raise_value_error_before_running():
    with pytest.raises(ValueError, match="wall_seconds"):
        Limits(wall_seconds=0)
    with pytest.raises(ValueError, match="memory_mb"):
        Limits(memory_mb=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="style"):
        run_python(ADD, "assert True", style="unittest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="str"):
        run_python(b"x = 1", "assert True")  # type: ignore[arg-type]


def test_sandbox_info_reports_booleans_that_match_what_the_code_sees():
    info = sandbox_info()
    keys = {"network_namespace", "rlimits", "process_limit", "privileges_dropped"}
    keys |= {"reads_restricted", "read_only_root", "no_new_privs", "audit_hooks", "subreaper"}
    assert set(info) == keys and all(isinstance(v, bool) for v in info.values())
    assert info["rlimits"] and info["audit_hooks"]
    code = "import os, resource\nprint(f'uid={os.getuid()}')\n"
    code += "print(f'core={resource.getrlimit(resource.RLIMIT_CORE)[1]}')\n"
    result = run_python(code, "assert True", limits=QUICK)
    assert _printed_ints(result, "core") == [0]
    (uid,) = _printed_ints(result, "uid")
    assert (uid != os.getuid()) == info["privileges_dropped"]


# ------------------------------------------------------------------ early exits


@pytest.mark.timeout(60)
def test_sys_exit_before_the_tests_is_not_a_pass():
    result = run_python("import sys\nsys.exit(0)\n", "assert False", limits=QUICK)
    assert not result.passed
    assert result.reason == "error: SystemExit: 0 (the program exited before the tests ran)"


@pytest.mark.timeout(60)
def test_os_exit_before_or_during_the_tests_is_not_a_pass():
    early = run_python("import os\nos._exit(0)\n", "assert False", limits=QUICK)
    assert (early.passed, early.reason) == (False, "crashed: exit code 0 before the tests finished")
    during = run_python(
        ADD, "def test_add():\n    import os\n    os._exit(0)\n", limits=QUICK, style="pytest"
    )
    assert (during.passed, during.reason) == (
        False,
        "crashed: exit code 0 before the tests finished",
    )


@pytest.mark.timeout(60)
def test_sys_exit_inside_the_tests_fails_that_test():
    result = run_python(ADD, "import sys\nassert add(1, 1) == 2\nsys.exit(0)\n", limits=QUICK)
    assert (result.passed, result.reason) == (False, "test failed: sys.exit(0): SystemExit: 0")


@pytest.mark.timeout(60)
def test_printing_a_fake_pass_record_does_not_pass():
    code = 'print(\'ok\'); print(\'{"kind": "result", "passed": true, "reason": "ok"}\')\n'
    code += "import os\nos._exit(0)\n"
    result = run_python(code, "assert False", limits=QUICK)
    assert not result.passed


# ------------------------------------------------------------------ hostile catalogue


@pytest.mark.timeout(60)
def test_writing_outside_the_folder_is_blocked_and_nothing_is_created(tmp_path: Path):
    in_tmp = Path("/tmp") / f"datamill-sandbox-escape-{uuid.uuid4().hex}"
    in_test_dir = tmp_path / "escaped.txt"
    try:
        for target in (in_tmp, in_test_dir):
            result = run_python(f"open({str(target)!r}, 'w').write('x')\n", "assert True")
            assert not result.passed
            assert result.reason == f"write blocked: {target}"
            assert not target.exists()
        # catching the refusal does not turn the run into a pass
        sneaky = f"try:\n    open({str(in_tmp)!r}, 'a')\nexcept PermissionError:\n    pass\n"
        result = run_python(sneaky, "assert True")
        assert (result.passed, result.reason) == (False, f"write blocked: {in_tmp}")
        assert not in_tmp.exists()
    finally:
        in_tmp.unlink(missing_ok=True)


@pytest.mark.timeout(60)
def test_removing_renaming_or_linking_outside_the_folder_is_blocked(tmp_path: Path):
    victim = Path("/tmp") / f"datamill-sandbox-victim-{uuid.uuid4().hex}"
    victim.write_text("keep me")
    victim.chmod(0o666)
    try:
        for code in (
            f"import os\nos.remove({str(victim)!r})\n",
            f"import shutil\nshutil.rmtree({str(victim)!r})\n",
            f"import os\nos.rename({str(victim)!r}, 'mine.txt')\n",
            f"import os\nos.link({str(victim)!r}, 'alias.txt')\n",
            f"import os\nos.symlink({str(victim)!r}, 'link.txt')\nopen('link.txt', 'w')\n",
            f"import os\nfd = os.open({str(victim)!r}, os.O_WRONLY | os.O_TRUNC)\n",
        ):
            result = run_python(code, "assert True", limits=QUICK)
            assert not result.passed, code
            assert result.reason.startswith("write blocked: "), (code, result.reason)
            assert victim.read_text() == "keep me"
    finally:
        victim.unlink(missing_ok=True)


@pytest.mark.timeout(60)
def test_the_read_only_root_stops_writes_the_audit_hook_cannot_see():
    if not sandbox_info()["read_only_root"]:
        pytest.skip("no read-only mount namespace here: /tmp writes via dir_fd are not blocked")
    name = f"datamill-sandbox-dirfd-{uuid.uuid4().hex}"
    code = (
        "import os\nfd = os.open('/tmp', os.O_RDONLY)\n"
        f"os.close(os.open({name!r}, os.O_WRONLY | os.O_CREAT, dir_fd=fd))\n"
    )
    try:
        result = run_python(code, "assert True", limits=QUICK)
        assert not result.passed
        assert result.reason == f"error: OSError: [Errno 30] Read-only file system: {name!r}"
        assert not (Path("/tmp") / name).exists()
    finally:
        (Path("/tmp") / name).unlink(missing_ok=True)


@pytest.mark.timeout(60)
def test_files_of_other_users_cannot_be_read_when_reads_are_restricted():
    if not sandbox_info()["reads_restricted"]:
        pytest.skip("the sandbox's uid can read every file here (see sandbox_info docs)")
    secret = Path("/tmp") / f"datamill-sandbox-secret-{uuid.uuid4().hex}"
    secret.write_text("do not read")
    secret.chmod(0o600)
    try:
        result = run_python(f"print(open({str(secret)!r}).read())\n", "assert True", limits=QUICK)
        assert (
            result.reason
            == f"error: PermissionError: [Errno 13] Permission denied: {str(secret)!r}"
        )
        assert "do not read" not in result.stdout
    finally:
        secret.unlink()


@pytest.mark.timeout(60)
def test_a_socket_to_localhost_is_blocked_and_never_connects():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        for code in (
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n",
            f"import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))\n",
            "import urllib.request\nurllib.request.urlopen('http://example.com', timeout=2)\n",
        ):
            result = run_python(code, "assert True", limits=QUICK)
            assert (result.passed, result.reason) == (False, "network blocked"), code
        with pytest.raises(BlockingIOError):
            listener.accept()


@pytest.mark.timeout(60)
def test_network_true_allows_a_local_connection():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        code = (
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5).close()\n"
        )
        result = run_python(code, "assert True", limits=Limits(wall_seconds=20, network=True))
        assert result.passed, result.reason
        listener.settimeout(5)
        conn, _ = listener.accept()
        conn.close()


@pytest.mark.timeout(60)
def test_the_network_namespace_has_no_interface_but_loopback():
    if not sandbox_info()["network_namespace"]:
        pytest.skip("no network namespace on this machine: only the audit hook blocks sockets")
    code = "names = [line.split(':')[0].strip() for line in open('/proc/self/net/dev')][2:]\n"
    result = run_python(code, "assert names == ['lo'], names", limits=QUICK)
    assert result.passed, result.reason


@pytest.mark.timeout(60)
def test_native_calls_and_new_programs_are_blocked():
    native = run_python("import ctypes\nctypes.CDLL(None).getpid()\n", "assert True", limits=QUICK)
    assert (native.passed, native.reason) == (False, "native call blocked")
    for code in (
        "import subprocess\nsubprocess.run(['true'])\n",
        "import os\nos.system('true')\n",
        "import os\nos.execv('/bin/true', ['true'])\n",
    ):
        result = run_python(code, "assert True", limits=QUICK)
        assert (result.passed, result.reason) == (False, "subprocess blocked"), code


@pytest.mark.timeout(60)
def test_allocating_ten_gigabytes_is_the_memory_limit():
    for code in (
        "data = bytearray(10 * 1024 ** 3)\n",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 1024 ** 2))\n",
    ):
        result = run_python(code, "assert True", limits=Limits(wall_seconds=30, memory_mb=256))
        assert (result.passed, result.reason) == (False, "memory limit"), code


@pytest.mark.timeout(60)
def test_memory_limit_inside_a_test_function_is_the_memory_limit():
    tests = "def test_big():\n    x = b'x' * (10 * 1024 ** 3)\n"
    result = run_python(ADD, tests, limits=Limits(wall_seconds=30, memory_mb=256))
    assert (result.passed, result.reason) == (False, "memory limit")


@pytest.mark.timeout(90)
def test_a_fork_bomb_fails_and_leaves_no_process_behind():
    code = (
        "import os\nprint(f'pgid={os.getpgid(0)} uid={os.getuid()}', flush=True)\n"
        "while True:\n    os.fork()\n"
    )
    result = run_python(code, "assert True", limits=Limits(wall_seconds=20, processes=16))
    assert not result.passed
    info = sandbox_info()
    if info["process_limit"]:
        assert result.reason == "process limit"
    else:
        assert result.reason.startswith(("timeout after", "process limit", "crashed"))
    (pgid,) = _printed_ints(result, "pgid")
    (uid,) = _printed_ints(result, "uid")
    assert _leftovers(pgid, uid) == []


@pytest.mark.timeout(90)
def test_a_subprocess_bomb_is_blocked_and_leaves_no_process_behind():
    code = (
        "import os, subprocess, sys\nprint(f'pgid={os.getpgid(0)} uid={os.getuid()}', flush=True)\n"
        "while True:\n    subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(100)'])\n"
    )
    result = run_python(code, "assert True", limits=QUICK)
    assert (result.passed, result.reason) == (False, "subprocess blocked")
    (pgid,) = _printed_ints(result, "pgid")
    (uid,) = _printed_ints(result, "uid")
    assert _leftovers(pgid, uid) == []


@pytest.mark.timeout(90)
def test_background_children_are_killed_even_after_setsid():
    code = (
        "import os, time\n"
        "for _ in range(3):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        os.setsid()\n"
        "        time.sleep(1000)\n"
        "        os._exit(0)\n"
        "    print(f'child={pid}', flush=True)\n"
    )
    result = run_python(code, "assert True", limits=QUICK)
    assert result.passed, result.reason
    children = _printed_ints(result, "child")
    assert len(children) == 3
    assert [pid for pid in children if _alive(pid)] == []


@pytest.mark.timeout(60)
def test_a_busy_loop_hits_the_cpu_or_wall_limit():
    result = run_python("while True:\n    pass\n", "assert True", limits=Limits(15, cpu_seconds=1))
    assert not result.passed
    assert result.reason in ("cpu time limit", "timeout after 15 s")


@pytest.mark.timeout(60)
def test_a_busy_loop_that_ignores_sigxcpu_still_hits_the_cpu_limit():
    code = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass\n"
    result = run_python(code, "assert True", limits=Limits(20, cpu_seconds=1))
    assert result.reason in ("cpu time limit", "timeout after 20 s")


@pytest.mark.timeout(60)
def test_sleeping_forever_is_a_timeout():
    result = run_python("import time\ntime.sleep(1000)\n", "assert True", limits=Limits(1))
    assert (result.passed, result.reason) == (False, "timeout after 1 s")
    assert result.tests_passed is None


@pytest.mark.timeout(60)
def test_a_one_gigabyte_file_is_the_file_size_limit():
    code = "with open('big.bin', 'wb') as f:\n    for _ in range(1024):\n        f.write(b'0' * 1024 ** 2)\n"
    result = run_python(code, "assert True", limits=Limits(wall_seconds=30, file_size_mb=4))
    assert (result.passed, result.reason) == (False, "file size limit")


@pytest.mark.timeout(60)
def test_huge_output_is_truncated_and_the_run_still_counts():
    code = "for i in range(50_000):\n    print(str(i).rjust(999, '.'))\n"
    tests = "import sys\nprint('E' * 10_000_000, file=sys.stderr)\nassert True\n"
    result = run_python(code, tests, limits=Limits(wall_seconds=60, cpu_seconds=30))
    assert result.passed, result.reason
    assert len(result.stdout) < 8192 and len(result.stderr) < 8192
    assert "output cut: 50000000 bytes in all" in result.stdout
    assert result.stdout.startswith("." * 998 + "0\n")
    assert result.stdout.rstrip().endswith("49999")


# ------------------------------------------------------------------ asyncio


@pytest.mark.timeout(60)
def test_arun_python_does_not_block_the_event_loop():
    async def main():
        ticks = 0
        done = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        slow = arun_python("import time\ntime.sleep(0.5)\n", "assert True", limits=QUICK)
        good = arun_python(ADD, "assert add(2, 2) == 4", limits=QUICK)
        bad = arun_python(ADD, "assert add(2, 2) == 5", limits=QUICK)
        results = await asyncio.gather(slow, good, bad)
        done.set()
        await task
        return results, ticks

    (slow, good, bad), ticks = asyncio.run(main())
    assert slow.passed and good.passed and not bad.passed
    assert bad.reason == "test failed: assert add(2, 2) == 5"
    assert ticks > 1


@pytest.mark.timeout(60)
def test_arun_python_times_out_and_cleans_up():
    code = "import os, time\nprint(f'pgid={os.getpgid(0)} uid={os.getuid()}', flush=True)\n"
    code += "os.fork()\ntime.sleep(1000)\n"
    result = asyncio.run(arun_python(code, "assert True", limits=Limits(3)))
    assert (result.passed, result.reason) == (False, "timeout after 3 s")
    (pgid,) = _printed_ints(result, "pgid")
    (uid,) = _printed_ints(result, "uid")
    assert _leftovers(pgid, uid) == []


@pytest.fixture
def sandbox_parent(monkeypatch: pytest.MonkeyPatch):
    """A folder of this test's own where the sandbox makes its temporary folders (reachable by
    the sandbox's uid, unlike pytest's tmp_path when run as root)."""
    parent = Path(tempfile.mkdtemp(prefix="datamill-sandbox-test-"))
    parent.chmod(0o755)
    monkeypatch.setattr("tempfile.tempdir", str(parent))
    yield parent
    shutil.rmtree(parent, ignore_errors=True)


def _running_under(folder: Path) -> list[int]:
    """Live processes whose command line names ``folder`` (the sandbox's, and what it forked)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(folder) in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc.info["pid"])
    return found


def test_temporary_folders_are_removed(sandbox_parent: Path):
    result = run_python("open('x.txt', 'w').write('x')\n", "assert True", limits=QUICK)
    assert result.passed, result.reason
    assert list(sandbox_parent.iterdir()) == []


@pytest.mark.timeout(60)
def test_cancelling_arun_python_leaves_no_process_behind(sandbox_parent: Path):
    code = "import os, time\nif os.fork() == 0:\n    os.setsid()\ntime.sleep(1000)\n"

    async def main():
        task = asyncio.create_task(arun_python(code, "assert True", limits=Limits(50)))
        while len(_running_under(sandbox_parent)) < 3:  # supervisor, worker, forked child
            assert not task.done(), task
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert _running_under(sandbox_parent) == []
    assert list(sandbox_parent.iterdir()) == []
