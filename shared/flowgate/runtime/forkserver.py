"""The warm fork server of the flow sandbox: one per runner process, it forks a confined process per script.

`flowgate.sandbox` starts it as `python -I -S -B forkserver.py` with the sandbox's minimal environment, so
this process never held a credential: it was exec'd fresh, its environment is PATH, LANG and HOME only, and
as root it runs as uid/gid 65534. It makes itself non-dumpable first (its memory and /proc files are then
closed to the scripts' processes, which may share its uid), imports the runtime once, and waits on its
control socket (the fd number in `argv[1]`, a Unix SOCK_SEQPACKET socket to the runner) for requests: a
JSON header (`cwd`, `env`) with five file descriptors (the script's stdin, stdout and stderr, the status
pipe's write end and the release pipe's read end). It ends when the runner closes the socket.

For each request it forks a *keeper*, which forks the *script process*:

* the script process starts a new session (it is the leader of a fresh process group, pid == pgid), takes
  the three pipes as fds 0-2 and closes every other descriptor, moves to its private working directory,
  takes the environment of the request and runs `bootstrap.main()` (which confines it before the script is
  compiled: rlimits, non-dumpable, NO_NEW_PRIVS, seccomp; the filter refuses setsid/setpgid, so nothing
  the script starts can leave the group);
* the keeper is a child subreaper (orphans of the script's processes are re-parented to it, not to init),
  reports the script process's pid on the status pipe (`pid N`), and when the script process exits, or
  when the runner writes to or closes the release pipe, kills the whole group with SIGKILL (`killed`),
  reaps every process of it, reports the script process's exit (`exit CODE STATUS`) and `done`, and exits.
  The script process is reaped with the rest, after the kill, so the group id is never free for reuse
  while it is signalled. The keeper is not in the
  script's group and is non-dumpable: no script can signal, trace or read it.

This server is itself a child subreaper: should a keeper die before it reaped its run (only the kernel's
OOM killer could end it early), the run's processes come here and are killed.

Standard library only, like the rest of the runtime.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import select
import signal
import socket
import sys
import time
import traceback
from typing import TYPE_CHECKING

PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 4, 36, 38
REQUEST_FDS = 5
MAX_HEADER_BYTES = 64 * 1024
EXIT_OUT_OF_MEMORY = 3  # keep in step with bootstrap.py and flowgate/sandbox.py

_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> None:
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}, {value}) failed")


# Before anything else: from here on no process of this uid can read or write this one's memory.
_prctl(PR_SET_DUMPABLE, 0)
_prctl(PR_SET_NO_NEW_PRIVS, 1)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# After the prctl calls on purpose. bootstrap imports flow_api and seccomp; inspect and resource are what it
# imports on each run: all loaded once, here.
import inspect  # noqa: E402, F401
import resource  # noqa: E402, F401

if TYPE_CHECKING:
    from flowgate.runtime import bootstrap
else:
    import bootstrap

gc.freeze()  # what is loaded now stays shared with the forked processes (no collection touches it)


def _script_process(cwd: str, env: dict[str, str], stdin: int, stdout: int, stderr: int) -> None:
    """The forked process that becomes the script's: never returns."""
    code = 1
    try:
        os.setsid()
        os.dup2(stdin, 0)
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
        os.closerange(3, 1 << 20)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        code = bootstrap.main()
    except MemoryError:
        code = EXIT_OUT_OF_MEMORY
    except BaseException:  # a broken runtime: its traceback reaches the parent as the stderr of a crash
        try:
            traceback.print_exc()
        finally:
            code = 1
    finally:
        os._exit(code)


def _write(fd: int, line: str) -> None:
    with contextlib.suppress(OSError):  # the runner is gone: the run is ended all the same
        os.write(fd, line.encode())


def _keeper(cwd: str, env: dict[str, str], fds: list[int]) -> None:
    """The forked process that holds one run: starts the script process, reports, kills, reaps."""
    code = 0
    try:
        stdin, stdout, stderr, status, release = fds
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        pid = os.fork()
        if pid == 0:
            os.close(status)
            os.close(release)
            _script_process(cwd, env, stdin, stdout, stderr)
        for fd in (stdin, stdout, stderr):
            os.close(fd)
        _write(status, f"pid {pid}\n")
        pidfd = os.pidfd_open(pid)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.register(release, select.POLLIN)
        exited = None
        while exited is None:
            ready = {fd for fd, _ in poller.poll()}
            if pidfd in ready:
                exited = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOWAIT)
            elif release in ready:
                break
        # The run ends with the script process (or when the runner says so): its group goes at once, before
        # it is reported, so whatever the script's other processes write after its result never counts. The
        # script process is unreaped (at most a zombie), so its group id cannot have been reused.
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:  # released before it led its group: it has started nothing yet
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _write(status, "killed\n")
        while True:  # every process of the group, orphans included (they come to this subreaper)
            try:
                os.wait()
            except ChildProcessError:
                break
            except InterruptedError:
                continue
        if exited is not None:
            _write(status, f"exit {exited.si_code} {exited.si_status}\n")
        _write(status, "done\n")
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def _children() -> set[int]:
    me, found = str(os.getpid()), set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[1].decode() == me:
                found.add(int(name))
    return found


def _kill_adopted(keepers: set[int]) -> None:
    """Kill what a keeper that died early left (re-parented here), until nothing is left."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        _reap_others(keepers)
        adopted = _children() - keepers
        if not adopted:
            return
        for pid in adopted:  # our own unreaped children: the pids cannot belong to anyone else
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def _reap_others(keepers: set[int]) -> None:
    """Reap ended children that are not keepers (keepers are reaped through their pidfds)."""
    for pid in _children() - keepers:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _request(control: socket.socket) -> tuple[dict[str, object], list[int]] | None:
    """The next request; None when the runner closed the socket."""
    data, fds, _flags, _address = socket.recv_fds(control, MAX_HEADER_BYTES, REQUEST_FDS)
    if not data and not fds:
        return None
    try:
        header = json.loads(data)
        if (
            len(fds) == REQUEST_FDS
            and isinstance(header.get("cwd"), str)
            and isinstance(header.get("env"), dict)
        ):
            return header, fds
    except ValueError:
        pass
    for fd in fds:  # a malformed request: the runner sees its status pipe close without a pid
        os.close(fd)
    return {}, []


def serve(control_fd: int) -> None:
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    control = socket.socket(fileno=control_fd)
    poller = select.poll()
    poller.register(control, select.POLLIN)
    keepers: dict[int, int] = {}  # pidfd -> pid
    while True:
        for fd, _ in poller.poll():
            if fd in keepers:
                pid = keepers.pop(fd)
                poller.unregister(fd)
                try:
                    info = os.waitid(os.P_PIDFD, fd, os.WEXITED)
                except ChildProcessError:
                    info = None
                os.close(fd)
                if info is None or info.si_code != os.CLD_EXITED or info.si_status != 0:
                    _kill_adopted(set(keepers.values()))
                continue
            request = _request(control)
            if request is None:
                return
            header, fds = request
            if not fds:
                continue
            sys.stderr.flush()
            try:
                pid = os.fork()
            except OSError:
                traceback.print_exc()
                for descriptor in fds:
                    os.close(descriptor)
                continue
            if pid == 0:
                control.close()
                for other in keepers:
                    os.close(other)
                env = header["env"]
                assert isinstance(env, dict)
                _keeper(str(header["cwd"]), {str(k): str(v) for k, v in env.items()}, fds)
            for descriptor in fds:
                os.close(descriptor)
            pidfd = os.pidfd_open(pid)
            keepers[pidfd] = pid
            poller.register(pidfd, select.POLLIN)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
