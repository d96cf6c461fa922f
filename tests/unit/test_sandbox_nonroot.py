"""The sandbox suites again, as uid 65534: the Lambda case, where the runner, the fork server and every script
share one uid, so nothing but the sandbox (seccomp, non-dumpable processes, RLIMIT_NPROC, the keeper's kill,
the unlistable directories) keeps a script from the runner and from other scripts.

As root this starts pytest on test_sandbox.py and test_sandbox_escapes.py with `setpriv`, which drops to uid
and gid 65534 with no supplementary groups (and no capability left once the interpreter is exec'd). Where
it can, it does so in a mount namespace of its own with fresh /tmp, /var/tmp and /dev/shm, as a Lambda
container has: the sandbox sweeps the files of the scripts' uid there, and uid 65534 is also the uid of
the scripts that other test processes run as root meanwhile. Run as any other user, those suites already
ran unprivileged, so this one is skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SUITES = ("tests/unit/test_sandbox.py", "tests/unit/test_sandbox_escapes.py")
FRESH_TEMP_DIRS = (
    "for d in /tmp /var/tmp /dev/shm; do"
    ' [ -d "$d" ] && mount -t tmpfs -o mode=1777 tmpfs "$d"; done; exec "$@"'
)


def own_temp_dirs() -> list[str]:
    """A command prefix that runs the rest in a mount namespace with empty temp dirs; [] without unshare."""
    unshare = shutil.which("unshare")
    return (
        [unshare, "--mount", "--propagation", "private", "sh", "-c", FRESH_TEMP_DIRS, "sh"] if unshare else []
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="not root: the sandbox suites of this run ran unprivileged")
def test_the_sandbox_suites_pass_as_uid_65534() -> None:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed: the suites cannot be started as uid 65534")
    drop = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/", "LANG": "C.UTF-8"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"

    def probe(prefix: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prefix, *drop, sys.executable, "-c", "import os, pytest, flowgate; print(os.getuid())"],
            cwd=ROOT,
            env={**env, "PYTHONPATH": str(ROOT / "shared")},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    prefix = own_temp_dirs()
    if prefix and probe(prefix).stdout.strip() != "65534":
        prefix = []  # no mount namespace here: the suites share this machine's temp dirs
    checked = probe(prefix)
    if checked.returncode != 0 or checked.stdout.strip() != "65534":
        pytest.skip(f"uid 65534 cannot run this interpreter with pytest: {checked.stderr.strip()[-300:]}")
    tests = subprocess.run(
        [*prefix, *drop, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUITES],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = tests.stdout + tests.stderr
    assert tests.returncode == 0, output[-6000:]
    summary = re.search(r"(\d+) passed", output)
    assert summary is not None, output[-2000:]
    assert int(summary.group(1)) >= 40, output[-2000:]
    assert "failed" not in output.splitlines()[-1], output[-2000:]
