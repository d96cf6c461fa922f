"""The seccomp filter of a flow script's process: which system calls it may make, and with what arguments.

On Lambda a script runs with the uid of the runner that holds the AWS credentials, and of every other
script of the container, so the kernel's same-uid checks protect nothing. This filter, installed by the
script's process on itself before the script is compiled (and inherited by everything it forks), closes
what a same-uid process could otherwise do to another:

* signals: `kill` only to its own process group (pid 0 or minus its group id) or to the script's first
  process itself; `tkill`, `tgkill`, `rt_(tg)sigqueueinfo` only to that process; `pidfd_send_signal`,
  `F_SETOWN`/`F_SETOWN_EX` (a SIGIO to any pid) and the `FIOSETOWN`/`SIOCSPGRP` ioctls are refused. The
  filter cannot read a process's group at run time, so the numbers are fixed when it is built: the
  script's first process is the leader of a fresh group (pid == pgid), and the group cannot be left;
* leaving the group: `setsid`, `setpgid` are refused, so the kill of the group reaches every descendant;
* other processes' memory: `ptrace`, `process_vm_readv`/`writev`, `kcmp`, `pidfd_getfd`, `process_madvise`,
  `process_mrelease`, `get_robust_list`, `perf_event_open` are refused (a script's processes are also
  non-dumpable, which closes `/proc/<pid>/mem` to the others);
* running other programs: `execve`, `execveat` are refused, so every process of the script stays a
  non-dumpable Python process under this filter (a new program would be dumpable again);
* other processes' limits and scheduling: `prlimit64`, `sched_set*`, `migrate_pages`, `move_pages` only on
  itself (pid 0 or its own pid), `setpriority` and `ioprio_set` only for the calling process;
* state that outlives the script: System V IPC, POSIX message queues and keyrings are refused (they are
  per uid, not per process, and would carry data to the next execution); `chmod` of every kind is
  refused, so a script cannot open the platform's unlistable directories (sandbox.py);
* new namespaces and kernel attack surface: `unshare`, `setns`, `clone` with a CLONE_NEW* flag, `bpf`,
  `userfaultfd` are refused; `clone3` answers ENOSYS (its flags are in memory the filter cannot read), so
  the C library falls back to `clone`, whose flags it can;
* the network: `socket()` and `io_uring_setup()` fail with EACCES (socketpair stays allowed).

Syscalls of a foreign ABI (i386 or x32 on x86_64) would bypass these numbers, so they kill the process.
Argument checks compare the low 32 bits, which is what the kernel reads of a pid_t or an int.

Standard library only, like the rest of the runtime.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from typing import Any

PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
MACHINE = os.uname().machine
_LOAD, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, .., BPF_RET|K
ALLOW, KILL_PROCESS = 0x7FFF0000, 0x80000000
_OFFSET_NR, _OFFSET_ARCH = 0, 4


def errno_action(code: int) -> int:
    return 0x00050000 | code


EPERM, EACCES, ENOSYS = errno_action(errno.EPERM), errno_action(errno.EACCES), errno_action(errno.ENOSYS)

F_SETOWN, F_SETOWN_EX = 8, 15
FIOSETOWN, SIOCSPGRP = 0x8901, 0x8902
PRIO_PROCESS, IOPRIO_WHO_PROCESS = 0, 1
CLONE_NEW_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000

# Per machine: the audit arch, and the numbers of the calls the policy names ("name number" pairs). Lambda
# runs x86_64 and arm64 (arm64 has the generic table, without fork, vfork or chmod); fchmodat2 is 452 on both.
_X86_64 = """
kill 62 tkill 200 tgkill 234 rt_sigqueueinfo 129 rt_tgsigqueueinfo 297 pidfd_send_signal 424
pidfd_getfd 438 ptrace 101 process_vm_readv 310 process_vm_writev 311 kcmp 312 process_madvise 440
process_mrelease 448 get_robust_list 274 perf_event_open 298 setsid 112 setpgid 109 prlimit64 302
setpriority 141 sched_setaffinity 203 sched_setscheduler 144 sched_setparam 142 sched_setattr 314
ioprio_set 251 migrate_pages 256 move_pages 279 bpf 321 userfaultfd 323 add_key 248 request_key 249
keyctl 250 shmget 29 shmat 30 shmctl 31 shmdt 67 semget 64 semop 65 semctl 66 semtimedop 220
msgget 68 msgsnd 69 msgrcv 70 msgctl 71 mq_open 240 mq_unlink 241 unshare 272 setns 308 clone 56
clone3 435 execve 59 execveat 322 fcntl 72 ioctl 16 chmod 90 fchmod 91 fchmodat 268 fchmodat2 452
socket 41 io_uring_setup 425
"""
_AARCH64 = """
kill 129 tkill 130 tgkill 131 rt_sigqueueinfo 138 rt_tgsigqueueinfo 240 pidfd_send_signal 424
pidfd_getfd 438 ptrace 117 process_vm_readv 270 process_vm_writev 271 kcmp 272 process_madvise 440
process_mrelease 448 get_robust_list 100 perf_event_open 241 setsid 157 setpgid 154 prlimit64 261
setpriority 140 sched_setaffinity 122 sched_setscheduler 119 sched_setparam 118 sched_setattr 274
ioprio_set 30 migrate_pages 238 move_pages 239 bpf 280 userfaultfd 282 add_key 217 request_key 218
keyctl 219 shmget 194 shmat 196 shmctl 195 shmdt 197 semget 190 semop 193 semctl 191 semtimedop 192
msgget 186 msgsnd 189 msgrcv 188 msgctl 187 mq_open 180 mq_unlink 181 unshare 97 setns 268 clone 220
clone3 435 execve 221 execveat 281 fcntl 25 ioctl 29 fchmod 52 fchmodat 53 fchmodat2 452 socket 198
io_uring_setup 425
"""


def _numbers(table: str) -> dict[str, int]:
    words = table.split()
    return {name: int(number) for name, number in zip(words[::2], words[1::2], strict=True)}


ARCHES: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (0xC000003E, _numbers(_X86_64)),
    "aarch64": (0xC00000B7, _numbers(_AARCH64)),
}

REFUSED = """
ptrace process_vm_readv process_vm_writev kcmp pidfd_getfd pidfd_send_signal process_madvise
process_mrelease get_robust_list perf_event_open setsid setpgid unshare setns bpf userfaultfd add_key
request_key keyctl shmget shmat shmctl shmdt semget semop semctl semtimedop msgget msgsnd msgrcv msgctl
mq_open mq_unlink execve execveat chmod fchmod fchmodat fchmodat2
""".split()  # noqa: SIM905 - a table, not a list to read
# Calls allowed only on the calling process (pid 0 or its own pid as the first argument).
ON_ITSELF = """
prlimit64 sched_setaffinity sched_setscheduler sched_setparam sched_setattr migrate_pages move_pages
""".split()  # noqa: SIM905

Instruction = tuple[int, int, int, int]


def _arg(index: int) -> int:
    """Offset of the low 32 bits of argument `index` in struct seccomp_data (little-endian machines)."""
    return 16 + 8 * index


def _u32(value: int) -> int:
    return value & 0xFFFFFFFF


def _allow_if(*conditions: tuple[int, tuple[int, ...]]) -> list[Instruction]:
    """Allow when every (argument, values) condition holds (the argument is one of the values), else EPERM."""
    block: list[Instruction] = []
    for index, values in conditions:
        block.append((_LOAD, 0, 0, _arg(index)))
        for j, value in enumerate(values):
            block.append((_JEQ, len(values) - j, 0, _u32(value)))  # to the next condition
        block.append((_RET, 0, 0, EPERM))
    block.append((_RET, 0, 0, ALLOW))
    return block


def _deny_if(index: int, values: tuple[int, ...]) -> list[Instruction]:
    """EPERM when the argument is one of the values, else allow."""
    block: list[Instruction] = [(_LOAD, 0, 0, _arg(index))]
    for j, value in enumerate(values):
        block.append((_JEQ, len(values) - j, 0, _u32(value)))  # to the EPERM
    return [*block, (_RET, 0, 0, ALLOW), (_RET, 0, 0, EPERM)]


def _deny_if_flags(index: int, mask: int) -> list[Instruction]:
    return [(_LOAD, 0, 0, _arg(index)), (_JSET, 1, 0, mask), (_RET, 0, 0, ALLOW), (_RET, 0, 0, EPERM)]


def policy(pid: int) -> dict[str, list[Instruction]]:
    """What each named call is checked against, for the process `pid` (the leader of the script's group)."""
    own = (0, pid)  # "this process" as calls take it: 0 or its pid
    rules: dict[str, list[Instruction]] = {name: [(_RET, 0, 0, EPERM)] for name in REFUSED}
    rules |= {
        "socket": [(_RET, 0, 0, EACCES)],
        "io_uring_setup": [(_RET, 0, 0, EACCES)],
        "clone3": [(_RET, 0, 0, ENOSYS)],
        "clone": _deny_if_flags(0, CLONE_NEW_FLAGS),
        "kill": _allow_if((0, (0, pid, -pid))),
        "tkill": _allow_if((0, (pid,))),
        "tgkill": _allow_if((0, (pid,))),
        "rt_sigqueueinfo": _allow_if((0, (pid,))),
        "rt_tgsigqueueinfo": _allow_if((0, (pid,))),
        "fcntl": _deny_if(1, (F_SETOWN, F_SETOWN_EX)),
        "ioctl": _deny_if(1, (FIOSETOWN, SIOCSPGRP)),
        "setpriority": _allow_if((0, (PRIO_PROCESS,)), (1, own)),
        "ioprio_set": _allow_if((0, (IOPRIO_WHO_PROCESS,)), (1, own)),
    }
    for name in ON_ITSELF:
        rules[name] = _allow_if((0, own))
    return rules


def program(machine: str, pid: int) -> list[Instruction]:
    """The BPF program for `machine` (os.uname().machine) and the group leader `pid`."""
    arch, numbers = ARCHES[machine]
    instructions: list[Instruction] = [
        (_LOAD, 0, 0, _OFFSET_ARCH),
        (_JEQ, 1, 0, arch),
        (_RET, 0, 0, KILL_PROCESS),
        (_LOAD, 0, 0, _OFFSET_NR),
        (_JGE, 0, 1, 0x40000000),  # the x32 ABI's numbers
        (_RET, 0, 0, KILL_PROCESS),
    ]
    for name, block in policy(pid).items():
        if name not in numbers:  # a call this machine does not have (chmod on arm64)
            continue
        if len(block) > 255:
            raise ValueError(f"the seccomp rule for {name} is too long to jump over")
        # The accumulator holds the call's number until a rule matches; every rule ends in a return.
        instructions.append((_JEQ, 0, len(block), numbers[name]))
        instructions += block
    instructions.append((_RET, 0, 0, ALLOW))
    return instructions


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(libc: Any, pid: int | None = None) -> None:
    """Install the filter on the calling thread (NO_NEW_PRIVS must be set); later threads inherit it."""
    instructions = program(MACHINE, os.getpid() if pid is None else pid)
    code = struct.pack("=" + "HBBI" * len(instructions), *(word for op in instructions for word in op))
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = _SockFprog(len(instructions), ctypes.addressof(buffer))
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")
