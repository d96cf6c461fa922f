"""What a flow script must not do even where it runs with the runner's uid (Lambda): signal or trace the
runner or another script, leave its process group, outlive its run, fork without limit, or leave files for
the next execution. Each test is a script that tries the escape and fails.

As root (the local stack) scripts run as uid 65534, so some of these would fail for the uid alone; the same
tests run again as uid 65534 by test_sandbox_nonroot.py, where the runner, the fork server and every script
share one uid, as on Lambda, and only the sandbox stands between them. The victims here always share the
script's uid, so even the root run shows the filter, not the uid, refusing.
"""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowgate import sandbox

IS_ROOT = os.geteuid() == 0
EPERM = errno.EPERM
LIBC = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
SYSCALLS = "import seccomp\nNR = seccomp.ARCHES[seccomp.MACHINE][1]\n"


def no_calls(op: str, args: dict[str, Any]) -> Any:
    raise AssertionError(f"unexpected call {op} {args}")


def run(script: str, inputs: dict[str, Any] | None = None, on_call: Any = no_calls, **kw: Any) -> Any:
    result = sandbox.run_script(textwrap.dedent(script), inputs or {}, on_call, **kw)
    assert result.status == "success", (result.message, result.log)
    return result.outputs


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (not a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.fixture
def victim() -> Iterator[int]:
    """A process of the scripts' uid outside the sandbox (dumpable: only the filter protects it)."""
    proc = subprocess.Popen(
        [sandbox.interpreter(), "-I", "-S", "-c", "import sys; print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        user=sandbox.SANDBOX_UID if IS_ROOT else None,
        group=sandbox.SANDBOX_GID if IS_ROOT else None,
        extra_groups=[] if IS_ROOT else None,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    yield proc.pid
    proc.kill()
    proc.communicate()


@pytest.fixture
def sibling() -> Iterator[dict[str, Any]]:
    """Another script, running meanwhile in its own sandbox, that tells its pid and working directory and
    waits until the test is done with it."""
    seen: dict[str, Any] = {}
    ready, release = threading.Event(), threading.Event()

    def on_call(op: str, args: dict[str, Any]) -> Any:
        seen.update(args["id"])
        ready.set()
        release.wait(30)
        return {}

    script = """
        import os
        def handler(system, this):
            system.execution({'pid': os.getpid(), 'cwd': os.getcwd()})
    """
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(run(script, on_call=on_call)))
    thread.start()
    assert ready.wait(30)
    try:
        yield seen
    finally:
        release.set()
        thread.join(30)
    assert alive(seen["pid"]) is False  # it ended with its run


@pytest.fixture
def non_dumpable_runner() -> Iterator[None]:
    """This process as harden_current_process() leaves the runner."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(4, 0, 0, 0, 0)
    yield
    libc.prctl(4, 1, 0, 0, 0)


# ---- signals ----
def test_a_script_cannot_signal_the_runner_or_any_process_outside_its_group(victim: int) -> None:
    runner = os.getpid()
    script = (
        LIBC
        + SYSCALLS
        + """
import fcntl, signal, socket
def attempt(action):
    try:
        result = action()
        return 'ok' if result in (None, 0) else f'errno {ctypes.get_errno()}'
    except OSError as exc:
        return f'errno {exc.errno}'

def handler(system, this, inputs):
    runner, victim = inputs['runner'], inputs['victim']
    info = ctypes.create_string_buffer(128)
    a, b = socket.socketpair()
    return {
        'kill runner': attempt(lambda: os.kill(runner, signal.SIGKILL)),
        'stop runner': attempt(lambda: os.kill(runner, signal.SIGSTOP)),
        'probe runner': attempt(lambda: os.kill(runner, 0)),
        'kill victim': attempt(lambda: os.kill(victim, signal.SIGKILL)),
        'kill victim group': attempt(lambda: os.killpg(victim, signal.SIGKILL)),
        'kill every process': attempt(lambda: os.kill(-1, signal.SIGKILL)),
        'tgkill': attempt(lambda: libc.syscall(NR['tgkill'], runner, runner, 0)),
        'tkill': attempt(lambda: libc.syscall(NR['tkill'], victim, 0)),
        'sigqueue': attempt(lambda: libc.syscall(NR['rt_sigqueueinfo'], victim, 0, info)),
        'tgsigqueue': attempt(lambda: libc.syscall(NR['rt_tgsigqueueinfo'], victim, victim, 0, info)),
        'pidfd': attempt(lambda: signal.pidfd_send_signal(os.pidfd_open(victim), signal.SIGKILL)),
        'F_SETOWN': attempt(lambda: fcntl.fcntl(a, fcntl.F_SETOWN, victim)),
        'F_SETOWN_EX': attempt(lambda: libc.fcntl(a.fileno(), 15, info)),
        'FIOSETOWN': attempt(lambda: fcntl.ioctl(a, 0x8901, victim.to_bytes(4, 'little'))),
        'SIOCSPGRP': attempt(lambda: fcntl.ioctl(a, 0x8902, victim.to_bytes(4, 'little'))),
        'itself': attempt(lambda: os.kill(os.getpid(), 0)),
        'its group': attempt(lambda: os.kill(0, 0)),
        'its group by id': attempt(lambda: os.killpg(os.getpgid(0), 0)),
        'its own thread': attempt(lambda: signal.pthread_kill(__import__('threading').get_ident(), 0)),
    }
"""
    )
    outputs = run(script, {"runner": runner, "victim": victim})
    allowed = {"itself", "its group", "its group by id", "its own thread"}
    assert {k: v for k, v in outputs.items() if k in allowed} == dict.fromkeys(allowed, "ok")
    assert {k: v for k, v in outputs.items() if k not in allowed} == {
        k: f"errno {EPERM}" for k in outputs if k not in allowed
    }
    assert alive(victim)


def test_a_forked_process_of_the_script_cannot_signal_outside_the_group_either(victim: int) -> None:
    script = """
        import os, signal
        def handler(system, this, inputs):
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    os.kill(inputs['victim'], signal.SIGKILL)
                    os.write(write, b'killed')
                except OSError as exc:
                    os.write(write, str(exc.errno).encode())
                os._exit(0)
            os.waitpid(pid, 0)
            return {'child': os.read(read, 100).decode()}
    """
    assert run(script, {"victim": victim}) == {"child": str(EPERM)}
    assert alive(victim)


# ---- other processes' memory ----
@pytest.mark.usefixtures("non_dumpable_runner")
def test_a_script_cannot_trace_or_read_the_runner_a_sibling_script_or_another_process(
    victim: int, sibling: dict[str, Any]
) -> None:
    script = (
        LIBC
        + SYSCALLS
        + """
class IoVec(ctypes.Structure):
    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]

def attempt(action):
    try:
        result = action()
        if result in (None, 0) or isinstance(result, (bytes, str)):
            return 'ok'
        return f'errno {ctypes.get_errno()}'
    except OSError as exc:
        return f'errno {exc.errno}'

def read_file(path):
    with open(path, 'rb') as f:
        return f.read(64)

def handler(system, this, inputs):
    out = {}
    buffer = ctypes.create_string_buffer(64)
    local = IoVec(ctypes.addressof(buffer), 64)
    for who in ('runner', 'sibling', 'victim'):
        pid = inputs[who]
        remote = IoVec(0x400000, 64)
        out[f'{who} ptrace attach'] = attempt(lambda: libc.ptrace(16, pid, 0, 0))
        out[f'{who} ptrace seize'] = attempt(lambda: libc.ptrace(0x4206, pid, 0, 0))
        out[f'{who} process_vm_readv'] = attempt(
            lambda: libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0))
        out[f'{who} process_vm_writev'] = attempt(
            lambda: libc.process_vm_writev(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0))
        out[f'{who} kcmp'] = attempt(lambda: libc.syscall(NR['kcmp'], os.getpid(), pid, 0, 0, 0))
        out[f'{who} pidfd_getfd'] = attempt(lambda: libc.syscall(NR['pidfd_getfd'], os.pidfd_open(pid), 0, 0))
        if who != 'victim':  # a process of the platform: non-dumpable, so its /proc files are closed
            for name in ('mem', 'environ', 'maps'):
                out[f'{who} /proc {name}'] = attempt(lambda: read_file(f'/proc/{pid}/{name}'))
            out[f'{who} /proc cwd'] = attempt(lambda: os.readlink(f'/proc/{pid}/cwd'))
    return out
"""
    )
    inputs = {"runner": os.getpid(), "sibling": sibling["pid"], "victim": victim}
    outputs = run(script, inputs)
    expected = {k: f"errno {EPERM}" for k in outputs if "/proc" not in k}
    expected |= {k: f"errno {errno.EACCES}" for k in outputs if "/proc" in k}
    assert outputs == expected


def test_the_scripts_processes_are_not_dumpable_and_run_no_other_program() -> None:
    script = """
        import os, subprocess
        def handler(system, this):
            status = dict(line.split(':', 1) for line in open('/proc/self/status').read().splitlines())
            out = {'dumpable': __import__('ctypes').CDLL(None).prctl(3, 0, 0, 0, 0)}
            for name, action in {
                'execv': lambda: os.execv('/bin/true', ['true']),
                'subprocess': lambda: subprocess.run(['/bin/true'], check=False),
                'spawn': lambda: os.posix_spawn('/bin/true', ['true'], {}),
            }.items():
                try:
                    action()
                    out[name] = 'ran'
                except OSError as exc:
                    out[name] = exc.errno
            return out
    """
    assert run(script) == {"dumpable": 0, "execv": EPERM, "subprocess": EPERM, "spawn": EPERM}


# ---- the process group ----
def test_a_script_cannot_leave_its_process_group_or_make_namespaces() -> None:
    script = (
        LIBC
        + """
def handler(system, this):
    out = {}
    for name, action in {
        'setsid': os.setsid,
        'setpgid': lambda: os.setpgid(0, 0),
        'setpgid of a child': lambda: os.setpgid(os.getpid(), os.getppid()),
        'unshare user+pid': lambda: libc.unshare(0x10000000 | 0x20000000) and OSError(ctypes.get_errno(), ''),
        'unshare mount': lambda: libc.unshare(0x00020000) and OSError(ctypes.get_errno(), ''),
    }.items():
        try:
            failure = action()
            out[name] = failure.errno if isinstance(failure, OSError) else 'done'
        except OSError as exc:
            out[name] = exc.errno
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            os.write(write, b'left')
        except OSError as exc:
            os.write(write, str(exc.errno).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    out['setsid in a child'] = int(os.read(read, 10))
    out['leader'] = os.getpgid(0) == os.getpid() == os.getsid(0)
    return out
"""
    )
    assert run(script) == {
        "setsid": EPERM,
        "setpgid": EPERM,
        "setpgid of a child": EPERM,
        "unshare user+pid": EPERM,
        "unshare mount": EPERM,
        "setsid in a child": EPERM,
        "leader": True,
    }


DAEMONS = """
import os, time
def spawn_daemon(write):
    '''A double fork: the grandchild's parent exits, so it is an orphan (re-parented to the keeper).'''
    read_pid, write_pid = os.pipe()
    child = os.fork()
    if child == 0:
        grandchild = os.fork()
        if grandchild == 0:
            try:
                os.setsid()
            except OSError:
                pass
            time.sleep(120)
            os._exit(0)
        os.write(write_pid, str(grandchild).encode())
        os._exit(0)
    os.waitpid(child, 0)
    return int(os.read(read_pid, 20))

def spawn_children():
    pids = [spawn_daemon(None) for _ in range(3)]
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            time.sleep(120)
            os._exit(0)
        pids.append(pid)
    return pids
"""


def test_every_process_a_script_started_dies_with_its_run() -> None:
    started = time.monotonic()
    pids = run(DAEMONS + "def handler(system, this):\n    return {'pids': spawn_children()}\n")["pids"]
    assert len(pids) == 6
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]  # dead and reaped, not zombies
    assert time.monotonic() - started < 10


def test_every_process_dies_with_a_run_that_is_stopped() -> None:
    """The wall limit (and a cancel alike) ends the run while the script and its daemons still run."""
    seen: list[int] = []

    def on_call(op: str, args: dict[str, Any]) -> Any:
        seen.extend(args["id"])
        return {}

    script = DAEMONS + (
        "def handler(system, this):\n    system.execution(spawn_children())\n    while True:\n        pass\n"
    )
    result = sandbox.run_script(script, {}, on_call, sandbox.Limits(wall_seconds=2))
    assert (result.status, result.message) == ("error", "time limit of 2s exceeded")
    assert len(seen) == 6
    assert not [pid for pid in seen if Path(f"/proc/{pid}").exists()]


# ---- how many processes ----
OTHERS_ENDING = 16
FORK_BOMB = """
import os, threading, time
def handler(system, this, inputs):
    pids = []
    try:
        while len(pids) < 10_000:
            pid = os.fork()
            if pid == 0:
                time.sleep(120)
                os._exit(0)
            pids.append(pid)
    except OSError as exc:
        refused = exc.errno
    threads = 0
    try:
        while threads < 10_000:
            threading.Thread(target=time.sleep, args=(120,), daemon=True).start()
            threads += 1
    except RuntimeError:
        pass
    answer = system.secret_names()  # the runner starts a thread to answer, while the script is at its limit
    return {'forks': len(pids), 'refused': refused, 'threads': threads, 'answer': answer, 'pids': pids}
"""


@pytest.mark.parametrize("tasks", [sandbox.DEFAULT_LIMITS.tasks, 5])
def test_a_fork_bomb_stops_at_the_scripts_allowance_and_the_runner_can_still_start_threads(
    tasks: int,
) -> None:
    def on_call(op: str, args: dict[str, Any]) -> Any:
        answered: list[str] = []
        thread = threading.Thread(target=answered.append, args=("answered from a new runner thread",))
        thread.start()
        thread.join()
        return answered

    limits = sandbox.Limits(tasks=tasks, wall_seconds=30)
    outputs = run(FORK_BOMB, on_call=on_call, limits=limits)
    # RLIMIT_NPROC is per uid: processes of the uid that end meanwhile (other tests' scripts, in other
    # workers) give a little room back, so the bound is checked with some slack.
    assert outputs["forks"] + outputs["threads"] <= tasks + OTHERS_ENDING
    assert outputs["refused"] == errno.EAGAIN
    assert outputs["answer"] == ["answered from a new runner thread"]
    assert not [pid for pid in outputs["pids"] if Path(f"/proc/{pid}").exists()]


def test_threads_work_within_the_allowance() -> None:
    script = """
        import threading
        def handler(system, this):
            results = []
            threads = [threading.Thread(target=results.append, args=(n,)) for n in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return {'results': sorted(results)}
    """
    assert run(script) == {"results": list(range(8))}


# ---- files ----
def test_nothing_a_script_writes_is_left_for_the_next_execution() -> None:
    marker = f"flowgate-test-leftover-{uuid.uuid4().hex}"
    script = f"""
        import os, tempfile
        def handler(system, this):
            written = []
            for directory in ('/tmp', '/var/tmp', '/dev/shm'):
                if os.access(directory, os.W_OK):
                    path = os.path.join(directory, '{marker}')
                    with open(path, 'w') as f:
                        f.write('for the next execution')
                    os.mkdir(path + '.d')
                    os.mkdir(path + '.d/locked', 0)
                    written += [path, path + '.d']
            fd, path = tempfile.mkstemp()
            os.close(fd)
            written += [path, 'here.txt']
            open('here.txt', 'w').write('x')
            return {{'written': written, 'cwd': os.getcwd(), 'tmpdir': tempfile.gettempdir()}}
    """
    outputs = run(script)
    assert outputs["tmpdir"] == outputs["cwd"]
    assert len(outputs["written"]) >= 4
    assert not [path for path in outputs["written"][:-1] if os.path.lexists(path)]
    assert not Path(outputs["cwd"]).exists()
    next_one = """
        import os
        def handler(system, this, inputs):
            return {'found': [d for d in ('/tmp', '/var/tmp', '/dev/shm')
                              if os.path.isdir(d) and any(inputs['marker'] in n for n in os.listdir(d))]}
    """
    assert run(next_one, {"marker": marker}) == {"found": []}


def test_a_script_cannot_find_another_runs_directory_or_open_the_platforms(sibling: dict[str, Any]) -> None:
    script = """
        import os
        def handler(system, this, inputs):
            out = {}
            here = os.getcwd()
            private, base = os.path.dirname(here), os.path.dirname(os.path.dirname(here))
            for name, action in {
                'list private': lambda: os.listdir(private),
                'list base': lambda: os.listdir(base),
                'chmod private': lambda: os.chmod(private, 0o700),
                'chmod base': lambda: os.chmod(base, 0o700),
                'chmod own directory': lambda: os.chmod(here, 0o777),
                'create in base': lambda: open(os.path.join(base, 'x'), 'w'),
            }.items():
                try:
                    action()
                    out[name] = 'done'
                except OSError as exc:
                    out[name] = exc.errno
            out['same base'] = os.path.dirname(os.path.dirname(inputs['sibling'])) == base
            out['mode'] = oct(os.stat(here).st_mode & 0o777)
            try:  # possible where scripts share our uid: removed after the run
                open(os.path.join(private, 'planted'), 'w').write('for the next execution')
                os.mkdir(os.path.join(private, 'planted.d'), 0)
                out['planted'] = os.path.join(private, 'planted')
            except OSError as exc:
                out['planted'] = exc.errno
            return out
    """
    outputs = run(script, {"sibling": sibling["cwd"]})
    planted = outputs.pop("planted")
    if IS_ROOT:
        assert planted == errno.EACCES
    else:
        assert not os.path.lexists(planted)
        assert not os.path.lexists(planted + ".d")
    assert outputs == {
        "list private": errno.EACCES,
        "list base": errno.EACCES,
        "chmod private": EPERM,
        "chmod base": EPERM,
        "chmod own directory": EPERM,
        "create in base": errno.EACCES,
        "same base": True,
        "mode": "0o700",
    }


def test_state_that_outlives_a_process_is_refused() -> None:
    """System V IPC, POSIX message queues and keyrings belong to the uid and outlast the script."""
    script = (
        LIBC
        + SYSCALLS
        + """
def handler(system, this):
    out = {}
    for name, call in {
        'shmget': lambda: libc.shmget(0, 4096, 0o1600),
        'msgget': lambda: libc.msgget(0, 0o1600),
        'semget': lambda: libc.semget(0, 1, 0o1600),
        'mq_open': lambda: libc.syscall(NR['mq_open'], b'leftover', 0o102, 0o600, None),
        'add_key': lambda: libc.syscall(NR['add_key'], b'user', b'leftover', b'data', 4, -4),
        'keyctl': lambda: libc.syscall(NR['keyctl'], 0, -4, 0),
        'bpf': lambda: libc.syscall(NR['bpf'], 0, None, 0),
        'userfaultfd': lambda: libc.syscall(NR['userfaultfd'], 0),
        'perf_event_open': lambda: libc.syscall(NR['perf_event_open'], None, 0, -1, -1, 0),
    }.items():
        out[name] = 'created' if call() >= 0 else ctypes.get_errno()
    return out
"""
    )
    outputs = run(script)
    assert outputs == dict.fromkeys(outputs, EPERM)
    assert len(outputs) == 9


def test_a_script_cannot_change_other_processes_limits_or_priority() -> None:
    script = """
        import os, resource
        def handler(system, this, inputs):
            runner, out = inputs['runner'], {}
            for name, action in {
                'prlimit runner': lambda: resource.prlimit(runner, resource.RLIMIT_NOFILE, (1, 1)),
                'renice runner': lambda: os.setpriority(os.PRIO_PROCESS, runner, 19),
                'renice the uid': lambda: os.setpriority(os.PRIO_USER, 0, 19),
                'renice the group': lambda: os.setpriority(os.PRIO_PGRP, 0, 19),
                'pin runner': lambda: os.sched_setaffinity(runner, {0}),
                'idle runner': lambda: os.sched_setscheduler(runner, os.SCHED_IDLE, os.sched_param(0)),
                'own prlimit': lambda: resource.prlimit(0, resource.RLIMIT_NOFILE, (64, 64)),
                'own setrlimit': lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32)),
                'own nice': lambda: os.setpriority(os.PRIO_PROCESS, 0, 5),
                'own affinity': lambda: os.sched_setaffinity(0, os.sched_getaffinity(0)),
            }.items():
                try:
                    action()
                    out[name] = 'done'
                except OSError as exc:
                    out[name] = exc.errno
            return out
    """
    outputs = run(script, {"runner": os.getpid()})
    own = {k for k in outputs if k.startswith("own")}
    assert {k: v for k, v in outputs.items() if k in own} == dict.fromkeys(own, "done")
    assert {k: v for k, v in outputs.items() if k not in own} == {k: EPERM for k in outputs if k not in own}
