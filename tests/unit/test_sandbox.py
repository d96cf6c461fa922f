"""The sandbox that runs flow scripts: what a script can do (log, fail, be stopped) and what it cannot (see
credentials or the parent's environment, import site-packages, outrun its limits, break the parent)."""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
import subprocess
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from flowgate import sandbox
from flowgate.errors import BadRequest, FlowgateError

FAKE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYFAKEFAKEKEY"
IS_ROOT = os.geteuid() == 0


def no_calls(op: str, args: dict[str, Any]) -> Any:
    raise AssertionError(f"unexpected call {op} {args}")


def run(script: str, on_call: Any = no_calls, **kw: Any) -> sandbox.ScriptResult:
    return sandbox.run_script(textwrap.dedent(script), {}, on_call, **kw)


def wait_until(condition: Any, seconds: float = 5.0) -> bool:
    """Poll `condition` until it holds or `seconds` pass (no fixed sleeps)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# ---- what a script can do ----
def test_print_and_stderr_become_log_lines_and_raw_fds_cannot_corrupt_the_channel() -> None:
    script = """
        import os, sys
        def handler(system, this):
            print('hello', 42)
            print('to stderr', file=sys.stderr)
            print('no newline', end='')
            os.write(1, b'{"op": "result", "status": "success"}\\n')
            sys.__stdout__.write('garbage\\n')
            this.log('last')
            return this.success('ok')
    """
    result = run(script)
    assert (result.status, result.message) == ("success", "ok")
    assert result.log == ["hello 42", "to stderr", "no newline", "last"]


def test_an_exception_ends_in_error_with_the_scripts_line_and_frames() -> None:
    script = """
        def helper(rows):
            return rows[3]

        def handler(system, this):
            this.log('start')
            helper([1])
    """
    result = run(script)
    assert (result.status, result.message, result.error_line) == (
        "error",
        "IndexError: list index out of range",
        3,
    )
    assert result.log == [
        "start",
        "Traceback (most recent call last, flow script frames only):",
        "  line 7, in handler",
        "    helper([1])",
        "  line 3, in helper",
        "    return rows[3]",
        "IndexError: list index out of range",
    ]


def test_a_syntax_error_at_load_is_an_error_with_its_line() -> None:
    result = run("def handler(system, this):\n    return this.success(\n")
    assert (result.status, result.message) == ("error", "SyntaxError: '(' was never closed (line 2)")
    assert result.error_line == 2


@pytest.mark.parametrize(
    ("script", "message"),
    [
        (
            "def handler(system, this):\n    pass\n\0",
            "SyntaxError: source code string cannot contain null bytes",
        ),
        (
            "x = " + "+".join(["1"] * 100_000) + "\ndef handler(system, this):\n    pass\n",
            "nested too deeply",
        ),
    ],
    ids=["nul-byte", "too-deep"],
)
def test_a_script_the_compiler_refuses_is_an_error_not_a_crash(script: str, message: str) -> None:
    result = run(script)
    assert result.status == "error"
    assert result.message is not None
    assert message in result.message
    assert result.log == []


def test_a_script_without_handler_ends_in_error() -> None:
    result = run("x = 1\n")
    assert (result.status, result.message) == (
        "error",
        "the flow script defines no handler(system, this) function",
    )


def test_check_syntax_names_the_line_and_wants_a_handler() -> None:
    with pytest.raises(BadRequest) as err:
        sandbox.check_syntax("import flow_api\ndef handler(system, this):\n    return this.success('x'\n")
    assert err.value.code == "script_syntax_error"
    assert err.value.message.startswith("syntax error at line 3: ")
    with pytest.raises(BadRequest, match="handler"):
        sandbox.check_syntax("def main(system, this):\n    pass\n")
    with pytest.raises(BadRequest, match="handler"):  # nested is not top-level
        sandbox.check_syntax("class X:\n    def handler(self):\n        pass\n")
    with pytest.raises(BadRequest, match="cannot be parsed"):
        sandbox.check_syntax("def handler(system, this):\n    pass\n\0")
    with pytest.raises(BadRequest, match="nested too deeply"):
        sandbox.check_syntax("x = " + "-" * 200_000 + "1\ndef handler(system, this):\n    pass\n")
    sandbox.check_syntax("import flow_api\ndef handler(system, this, inputs):\n    return this.success()\n")


# ---- what a script cannot see ----
def test_the_script_sees_none_of_the_parents_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    monkeypatch.setenv("FLOWGATE_PARENT_ONLY", "parent-value")
    script = """
        import os
        def handler(system, this):
            this.set_output('env', dict(os.environ))
            this.set_output('cwd', os.getcwd())
    """
    result = run(script)
    env = result.outputs["env"]
    assert set(env) <= {"PATH", "LANG", "HOME", "TMPDIR", "LC_CTYPE"}
    assert FAKE_SECRET not in str(env)
    assert env["HOME"] == env["TMPDIR"] == result.outputs["cwd"]
    assert not Path(result.outputs["cwd"]).exists()  # the run directory is removed afterwards


def test_the_script_cannot_read_the_parents_proc_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    script = """
        import os
        def handler(system, this):
            for name in ('environ', 'mem', 'maps'):
                try:
                    with open(f'/proc/{os.getppid()}/{name}', 'rb') as f:
                        this.set_output(name, f.read(1 << 20).decode('latin-1'))
                except OSError as exc:
                    this.set_output(name, type(exc).__name__)
    """
    outputs = run(script).outputs
    assert FAKE_SECRET not in str(outputs)
    if IS_ROOT:  # the child runs as uid 65534: the parent's /proc files are closed to it
        assert outputs == {"environ": "PermissionError", "mem": "PermissionError", "maps": "PermissionError"}


@pytest.mark.parametrize("dumpable", [True, False])
def test_a_same_uid_script_cannot_read_a_non_dumpable_process_environ(dumpable: bool) -> None:
    """The Lambda case: the script runs with the uid of the process holding credentials, which
    harden_current_process() made non-dumpable. A helper of the script's uid stands in for that process."""
    victim_code = (
        "import ctypes, sys\n"
        f"{'' if dumpable else 'ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)'}\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    victim = subprocess.Popen(
        [sandbox.interpreter(), "-I", "-S", "-c", victim_code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={"AWS_SECRET_ACCESS_KEY": FAKE_SECRET},
        user=sandbox.SANDBOX_UID if IS_ROOT else None,
        group=sandbox.SANDBOX_GID if IS_ROOT else None,
        extra_groups=[] if IS_ROOT else None,
    )
    try:
        assert victim.stdout is not None
        assert victim.stdout.readline() == b"ready\n"
        script = f"""
            def handler(system, this):
                try:
                    with open('/proc/{victim.pid}/environ', 'rb') as f:
                        this.set_output('environ', f.read().decode())
                except OSError as exc:
                    this.set_output('environ', type(exc).__name__)
        """
        seen = run(script).outputs["environ"]
    finally:
        victim.kill()
        victim.communicate()
    if dumpable:
        assert FAKE_SECRET in seen  # the control: same uid, so only dumpability protects it
    else:
        assert seen == "PermissionError"


def test_harden_current_process_makes_this_process_non_dumpable_and_starts_the_fork_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    pr_get_dumpable, pr_set_dumpable = 3, 4
    monkeypatch.setattr(tempfile, "tempdir", tempfile.tempdir)
    try:
        sandbox.harden_current_process()
        assert libc.prctl(pr_get_dumpable, 0, 0, 0, 0) == 0
        assert sandbox._servers.warming is not None
        sandbox._servers.warming.join(30)
        assert sandbox._servers._warm is not None
        assert sandbox._servers._warm.alive()
        # this process's own temporary files live where no script can list them
        assert Path(tempfile.gettempdir()).parent == sandbox._platform().private
    finally:
        libc.prctl(pr_set_dumpable, 1, 0, 0, 0)


def server_pid() -> int | None:
    warm = sandbox._servers._warm
    return None if warm is None else warm._proc.pid


def test_the_fork_server_holds_no_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    sandbox._servers.warm_up()
    pid = server_pid()
    assert pid is not None
    status = Path(f"/proc/{pid}/status").read_text()
    uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    assert uid == sandbox.script_uid()
    if not IS_ROOT:  # same uid, but non-dumpable: closed even to us
        with pytest.raises(PermissionError):
            Path(f"/proc/{pid}/environ").read_bytes()
        return
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert FAKE_SECRET.encode() not in environ
    assert {item.split(b"=", 1)[0] for item in environ.split(b"\0") if item} == {
        b"PATH",
        b"LANG",
        b"HOME",
        b"TMPDIR",
    }
    assert "\nTracerPid:\t0\n" in status


def test_a_run_after_the_fork_server_died_starts_a_new_one() -> None:
    sandbox._servers.warm_up()
    old = server_pid()
    assert old is not None
    os.kill(old, signal.SIGKILL)
    assert wait_until(lambda: not sandbox._servers._warm.alive())  # type: ignore[union-attr]
    result = run("def handler(system, this):\n    return this.success('after')\n")
    assert (result.status, result.message) == ("success", "after")
    assert server_pid() not in (None, old)


def test_while_scripts_run_a_dead_fork_server_is_not_restarted_but_runs_go_on() -> None:
    """A new server is dumpable for a moment: it starts only while no script of this process runs."""
    sandbox._servers.warm_up()
    old = server_pid()
    assert old is not None
    waiting, release = threading.Event(), threading.Event()

    def on_call(op: str, args: dict[str, Any]) -> Any:
        waiting.set()
        release.wait(30)
        return []

    first: list[sandbox.ScriptResult] = []
    thread = threading.Thread(
        target=lambda: first.append(run("def handler(system, this):\n    system.secret_names()\n", on_call))
    )
    thread.start()
    try:
        assert waiting.wait(30)
        os.kill(old, signal.SIGKILL)
        assert wait_until(lambda: not sandbox._servers._warm.alive())  # type: ignore[union-attr]
        second = run("def handler(system, this):\n    return this.success('one-shot')\n")
        assert (second.status, second.message) == ("success", "one-shot")
        assert server_pid() is None  # served by a server of its own, closed at once
    finally:
        release.set()
        thread.join(30)
    assert first[0].status == "success"
    assert run("def handler(system, this):\n    pass\n").status == "success"
    assert server_pid() not in (None, old)


def test_a_keeper_killed_early_still_takes_the_whole_run_with_it() -> None:
    """Only the kernel's OOM killer could end a keeper early; the fork server then kills what it left."""
    pids: dict[str, int] = {}

    def on_call(op: str, args: dict[str, Any]) -> Any:
        pids.update(args["id"])
        keeper = int(Path(f"/proc/{pids['script']}/stat").read_text().rsplit(")", 1)[1].split()[1])
        os.kill(keeper, signal.SIGKILL)
        return {}

    script = """
        import os, time
        def handler(system, this):
            child = os.fork()
            if child == 0:
                time.sleep(120)
                os._exit(0)
            system.execution({'script': os.getpid(), 'child': child})
            time.sleep(120)
    """
    result = run(script, on_call, limits=sandbox.Limits(wall_seconds=20))
    assert (result.status, result.message) == ("error", "the flow runtime's keeper ended unexpectedly")
    assert wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids.values()))


def test_the_script_cannot_import_site_packages_or_the_platform() -> None:
    script = """
        import importlib
        def handler(system, this):
            for name in ('boto3', 'botocore', 'pydantic', 'flowgate'):
                try:
                    importlib.import_module(name)
                    this.set_output(name, 'imported')
                except ImportError as exc:
                    this.set_output(name, type(exc).__name__)
    """
    assert run(script).outputs == dict.fromkeys(
        ("boto3", "botocore", "pydantic", "flowgate"), "ModuleNotFoundError"
    )


def test_the_script_cannot_open_sockets_but_may_use_socketpair() -> None:
    """Loopback services (the local stack's moto, Lambda's Runtime API) are out of reach like the Internet."""
    with socket.create_server(("127.0.0.1", 0)) as listening:
        port = listening.getsockname()[1]
        script = f"""
            import socket
            def handler(system, this):
                for family in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX, socket.AF_NETLINK):
                    try:
                        socket.socket(family, socket.SOCK_DGRAM)
                        this.log(family.name, 'opened')
                    except OSError as exc:
                        this.log(family.name, exc.errno)
                try:
                    socket.create_connection(('127.0.0.1', {port}), timeout=1)
                    this.log('connected')
                except OSError as exc:
                    this.log('connect', type(exc).__name__)
                a, b = socket.socketpair()
                a.sendall(b'ping')
                this.log(b.recv(4).decode())
        """
        result = run(script)
    assert result.status == "success"
    denied = errno.EACCES
    assert result.log == [
        f"AF_INET {denied}",
        f"AF_INET6 {denied}",
        f"AF_UNIX {denied}",
        f"AF_NETLINK {denied}",
        "connect PermissionError",
        "ping",
    ]


def test_the_script_runs_the_sandbox_interpreter_without_site_packages_or_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As root the script runs as uid 65534; otherwise (Lambda, and this file run by test_sandbox_nonroot.py)
    with our own uid, and our own interpreter where that uid can run it."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    script = """
        import os, sys
        def handler(system, this):
            try:
                import boto3
            except ImportError as exc:
                this.log(type(exc).__name__)
            return {'executable': sys.executable, 'uid': os.getuid(), 'env': dict(os.environ)}
    """
    result = run(script)
    assert result.log == ["ModuleNotFoundError"]
    assert result.outputs["executable"] == sandbox.interpreter()
    assert result.outputs["uid"] == sandbox.script_uid() == (65534 if IS_ROOT else os.getuid())
    assert FAKE_SECRET not in str(result.outputs["env"])


def test_the_script_runs_confined() -> None:
    script = """
        import os, resource
        def handler(system, this):
            status = dict(line.split(':', 1) for line in open('/proc/self/status').read().splitlines())
            return {
                'uid': os.getuid(), 'gid': os.getgid(), 'groups': os.getgroups(),
                'no_new_privs': status['NoNewPrivs'].strip(),
                'seccomp': status['Seccomp'].strip(),
                'as': resource.getrlimit(resource.RLIMIT_AS)[0],
                'cpu': resource.getrlimit(resource.RLIMIT_CPU)[0],
                'core': resource.getrlimit(resource.RLIMIT_CORE)[1],
                'fsize': resource.getrlimit(resource.RLIMIT_FSIZE)[0],
                'nproc': resource.getrlimit(resource.RLIMIT_NPROC),
                'session_leader': os.getsid(0) == os.getpid() == os.getpgid(0),
                'dumpable': __import__('ctypes').CDLL(None).prctl(3, 0, 0, 0, 0),
            }
    """
    outputs = run(script, limits=sandbox.Limits(cpu_seconds=7, memory_bytes=200 * 2**20)).outputs
    assert (outputs["no_new_privs"], outputs["seccomp"]) == ("1", "2")  # 2: a filter is installed
    assert (outputs["as"], outputs["cpu"], outputs["core"]) == (200 * 2**20, 7, 0)
    assert outputs["fsize"] == sandbox.FILE_BYTES
    soft, hard = outputs["nproc"]
    assert soft == hard
    assert sandbox.DEFAULT_LIMITS.tasks < soft < 100_000  # the uid's tasks now, plus the allowance
    assert outputs["session_leader"]
    assert outputs["dumpable"] == 0
    if IS_ROOT:
        assert (outputs["uid"], outputs["gid"], outputs["groups"]) == (65534, 65534, [])


# ---- limits ----
def test_an_endless_loop_is_stopped_by_the_wall_limit() -> None:
    started = time.monotonic()
    result = run(
        "def handler(system, this):\n    while True:\n        pass\n", limits=sandbox.Limits(wall_seconds=1)
    )
    assert (result.status, result.message) == ("error", "time limit of 1s exceeded")
    assert time.monotonic() - started < 5


def test_the_cpu_limit_ends_a_busy_script() -> None:
    result = run(
        "def handler(system, this):\n    while True:\n        pass\n",
        limits=sandbox.Limits(cpu_seconds=1, wall_seconds=20),
    )
    assert (result.status, result.message) == ("error", "cpu time limit of 1s exceeded")


@pytest.mark.parametrize(
    "body",
    ["x = bytearray(10**9)", "x = []\n    while True:\n        x.append(bytearray(2**20))"],
    ids=["one-block", "growing-list"],
)
def test_a_memory_hog_ends_with_the_memory_message(body: str) -> None:
    script = f"def handler(system, this):\n    this.log('before')\n    {body}\n"
    result = run(script, limits=sandbox.Limits(memory_bytes=128 * 2**20))
    assert (result.status, result.message) == ("error", "memory limit of 128 MiB exceeded")
    assert result.log == ["before"]


def test_megabytes_of_log_are_capped_while_the_script_finishes() -> None:
    script = """
        def handler(system, this):
            for i in range(20000):
                print('x' * 99)
            print('y' * 5_000_000)
            return this.success('finished')
    """
    result = run(script, limits=sandbox.Limits(log_bytes=10_000))
    assert (result.status, result.message) == ("success", "finished")
    assert result.log_truncated
    assert sum(len(line.encode()) for line in result.log) == 10_000
    assert result.log[0] == "x" * 99


def test_should_cancel_kills_a_running_script() -> None:
    started: list[str] = []

    def on_call(op: str, args: dict[str, Any]) -> Any:
        started.append(op)
        return []

    script = "def handler(system, this):\n    system.secret_names()\n    while True:\n        pass\n"
    result = run(script, on_call, should_cancel=lambda: bool(started))
    assert (result.status, result.message, result.outputs) == ("cancelled", None, {})


def test_a_run_cancelled_before_it_started_ends_at_once() -> None:
    for _ in range(5):  # the release may reach the keeper before or after the script process leads its group
        result = run("def handler(system, this):\n    pass\n", should_cancel=lambda: True)
        assert (result.status, result.message) == ("cancelled", None)


def test_cancellation_is_checked_before_each_request() -> None:
    calls: list[str] = []

    def on_call(op: str, args: dict[str, Any]) -> Any:
        calls.append(op)
        return []

    script = "def handler(system, this):\n    while True:\n        system.secret_names()\n"
    result = run(script, on_call, should_cancel=lambda: len(calls) >= 3)
    assert result.status == "cancelled"
    assert len(calls) == 3


def test_scripts_run_concurrently_from_threads() -> None:
    """The runner runs child flows in threads, each in its own sandbox."""
    script = "def handler(system, this, inputs):\n    return {'n': inputs['n'] * 2}\n"
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda n: sandbox.run_script(script, {"n": n}, no_calls), range(8)))
    assert [r.outputs for r in results] == [{"n": n * 2} for n in range(8)]


def test_the_whole_process_group_is_killed() -> None:
    script = """
        import os, time
        def handler(system, this):
            pid = os.fork()
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            return {'grandchild': pid}
    """
    pid = run(script).outputs["grandchild"]

    def gone() -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    assert wait_until(gone)


# ---- the parent is the boundary: a script that reaches the channel itself ----
CHANNEL = "import gc\nchannel = next(o for o in gc.get_objects() if type(o).__name__ == 'Channel')\n"


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (
            "channel._writer.write(b'x' * (2 * 2**20))",
            f"a message from the flow script exceeded {sandbox.MAX_MESSAGE_BYTES} bytes",
        ),
        (
            "channel._writer.write(b'not json\\n')",
            "the flow runtime broke the protocol: a message is not JSON",
        ),
        (
            'channel._writer.write(b\'{"op": "result", "status": "cancelled", "outputs": {}}\\n\')',
            "the flow runtime broke the protocol: the result is not well-formed",
        ),
        (
            'channel._writer.write(b\'{"op": "log", "text": NaN}\\n\')',
            "the flow runtime broke the protocol: a message is not JSON",
        ),
        (
            'channel._writer.write(b\'{"id": 1, "op": "delete_workspace", "args": {}}\\n\')',
            "the flow runtime broke the protocol: unknown message 'delete_workspace'",
        ),
    ],
    ids=["oversized", "not-json", "forged-status", "nan", "unknown-op"],
)
def test_a_script_writing_to_the_channel_itself_ends_in_error(write: str, message: str) -> None:
    script = (
        CHANNEL + f"def handler(system, this):\n    {write}\n    channel._writer.flush()\n    while 1: pass\n"
    )
    result = run(script, limits=sandbox.Limits(wall_seconds=10))
    assert (result.status, result.message) == ("error", message)


def test_a_script_flooding_the_channel_is_still_stopped_by_the_wall_limit() -> None:
    flood = 'channel._writer.write(b\'{"op": "log", "text": ""}\\n\' * 1000)'
    script = CHANNEL + f"def handler(system, this):\n    while True:\n        {flood}\n"
    result = run(script, limits=sandbox.Limits(wall_seconds=1))
    assert (result.status, result.message) == ("error", "time limit of 1s exceeded")


def test_a_script_that_stops_reading_answers_cannot_fill_the_parents_memory() -> None:
    def on_call(op: str, args: dict[str, Any]) -> Any:
        return "x" * 2**20

    request = "channel.send({'id': 1, 'op': 'system_get', 'args': {'kind': 'secret_names'}})"
    script = CHANNEL + f"def handler(system, this):\n    while True:\n        {request}\n"
    result = run(script, on_call, limits=sandbox.Limits(wall_seconds=20))
    assert (result.status, result.message) == (
        "error",
        "the flow runtime broke the protocol: it does not read the answers to its requests",
    )


def test_outputs_too_large_to_send_end_in_error() -> None:
    result = run("def handler(system, this):\n    this.set_output('big', 'x' * (2 * 2**20))\n")
    assert result.status == "error"
    assert result.message is not None
    assert result.message.startswith("the outputs cannot be returned: message exceeds the limit")


def test_a_crash_of_the_runtime_is_reported_with_its_stderr() -> None:
    script = "import os\ndef handler(system, this):\n    os.write(2, b'dying\\n')\n    os._exit(7)\n"
    result = run(script)
    assert (result.status, result.message) == (
        "error",
        "the flow runtime exited without a result (exit code 7)",
    )
    assert result.log == ["dying"]


def test_an_answer_the_parent_cannot_encode_is_an_internal_error_for_the_script() -> None:
    def on_call(op: str, args: dict[str, Any]) -> Any:
        return {"value": float("nan")}

    result = run("def handler(system, this):\n    system.secret_names()\n", on_call)
    assert (result.status, result.message) == ("error", "FlowApiError: internal error")


def test_a_flowgate_error_keeps_its_message_for_the_script() -> None:
    def on_call(op: str, args: dict[str, Any]) -> Any:
        raise FlowgateError("an execution may start at most 100 children", code="conflict")

    result = run("def handler(system, this):\n    this.connect('x')\n", on_call)
    assert result.message == "FlowApiError: an execution may start at most 100 children"


def test_the_run_directory_is_removed_even_when_the_script_locks_it() -> None:
    """A script cannot chmod (seccomp), but it can create directories without permissions."""
    script = """
        import os
        def handler(system, this):
            os.makedirs('a/b')
            open('a/b/file', 'w').write('data')
            os.mkdir('a/b/locked', 0)
            os.mkdir('a/closed', 0)
            try:
                os.chmod('a', 0)
            except PermissionError:
                this.log('chmod refused')
            return {'cwd': os.getcwd()}
    """
    result = run(script)
    assert (result.status, result.log) == ("success", ["chmod refused"])
    assert not Path(result.outputs["cwd"]).exists()
