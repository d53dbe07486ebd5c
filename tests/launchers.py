"""The two launchers every launcher/helper test runs against (issue 10).

`python`: bin/xenrules-launcher, the interpreted one. `c`: the compiled
launcher/xenrules-launcher.c, built once per session by `make launcher`
(Debian's hardening flags, -Wall -Wextra -Werror) into build/launcher/;
its fallback execs this checkout's launcher/xenrules-inprocess.
"""
import fcntl
import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON_LAUNCHER = os.path.join(REPO, "bin", "xenrules-launcher")
C_SOURCE = os.path.join(REPO, "launcher", "xenrules-launcher.c")
C_LAUNCHER = os.path.join(REPO, "build", "launcher", "xenrules-launcher")
KINDS = ["python", "c"]


def build_c(force=False):
    """make launcher; returns (path, make's output). One build at a time (a lock file)."""
    os.makedirs(os.path.dirname(C_LAUNCHER), exist_ok=True)
    with open(os.path.join(REPO, "build", ".launcher.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if force and os.path.exists(C_LAUNCHER):
            os.unlink(C_LAUNCHER)
        proc = subprocess.run(["make", "-C", REPO, "launcher"], capture_output=True, text=True,
                              timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return C_LAUNCHER, proc.stdout + proc.stderr


def launcher_path(kind):
    return PYTHON_LAUNCHER if kind == "python" else build_c()[0]


@pytest.fixture(params=KINDS)
def launcher(request):
    """The path of one launcher: each test using it runs once per launcher."""
    return launcher_path(request.param)
