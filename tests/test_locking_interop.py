"""xenrules.locking.HotplugLock and Debian's original locking.sh exclude each other.

Both sides take /var/run/xen-hotplug/<name> with flock plus the
"is the open file still the linked one" check, and release by unlinking.
Here the lock directory is a temporary one: locking.sh hardcodes
LOCK_BASEDIR, so the bash side sets it after sourcing the library.
"""

import os
import signal
import subprocess
import threading
import time
import uuid

import pytest

from events import wait_for
from xenrules.locking import HotplugLock

TIMEOUT = 20.0


def unique(prefix="xr-interop"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


class Bash:
    """bash sourcing the original locking.sh, run as its own process group."""

    def __init__(self, originals, lock_dir, body, *args):
        script = '. "$LOCKING_SH" || exit 97\nLOCK_BASEDIR="$XR_LOCK_DIR"\n' + body
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
               "LOCKING_SH": os.path.join(originals, "locking.sh"),
               "XR_LOCK_DIR": str(lock_dir)}
        self.proc = subprocess.Popen(["bash", "-c", script, "bash"] + [str(a) for a in args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, text=True,
                                     start_new_session=True)

    def running(self):
        return self.proc.poll() is None

    def wait(self, timeout=TIMEOUT):
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)   # our own group only
            except ProcessLookupError:
                pass
        self.proc.communicate()


@pytest.fixture
def lock_dir(tmp_path):
    d = tmp_path / "xen-hotplug"
    d.mkdir()
    return d


CLAIM_ONCE = """
claim_lock "$1" || exit 98
echo claimed > "$2"
release_lock "$1"
"""


def test_bash_claim_lock_waits_while_python_holds_the_lock(originals, lock_dir, tmp_path):
    name = unique()
    marker = tmp_path / "bash-claimed"
    lock = HotplugLock(str(lock_dir), name)
    lock.acquire()
    bash = None
    try:
        assert (lock_dir / name).exists()
        bash = Bash(originals, lock_dir, CLAIM_ONCE, name, marker)
        time.sleep(1.5)
        assert bash.running(), "bash claimed the lock although Python held it: %r" % (bash.wait(),)
        assert not marker.exists()
        lock.release()
        code, out, err = bash.wait()
        assert code == 0, err
        assert marker.read_text() == "claimed\n"
        assert not (lock_dir / name).exists()       # bash's release_lock unlinked it
    finally:
        lock.release()
        if bash:
            bash.kill()


HOLD_UNTIL_GO = """
claim_lock "$1" || exit 98
echo held > "$2"
i=0
while [ ! -e "$3" ]; do
    i=$((i + 1)); [ $i -gt 600 ] && exit 99          # 30 s, never forever
    sleep 0.05
done
release_lock "$1"
"""


def test_python_acquire_waits_while_bash_holds_the_lock(originals, lock_dir, tmp_path):
    name = unique()
    held, go = tmp_path / "bash-holds", tmp_path / "go"
    lock = HotplugLock(str(lock_dir), name)
    got = threading.Event()

    def take():
        lock.acquire()
        got.set()

    bash = Bash(originals, lock_dir, HOLD_UNTIL_GO, name, held, go)
    thread = None
    try:
        assert wait_for(held.exists), "bash never claimed the lock: %r" % (bash.wait(),)
        thread = threading.Thread(target=take, daemon=True)
        thread.start()
        assert not got.wait(1.5), "Python took the lock although bash held it"
        assert not lock.held
        go.touch()
        assert got.wait(TIMEOUT), "Python never got the lock after bash released it"
        code, out, err = bash.wait()
        assert code == 0, err
        # Python holds the file that is linked now, not the one bash unlinked
        st_fd, st_path = os.fstat(lock.fd), os.stat(lock_dir / name)
        assert (st_fd.st_dev, st_fd.st_ino) == (st_path.st_dev, st_path.st_ino)
        lock.release()
        assert not (lock_dir / name).exists()
    finally:
        go.touch()
        bash.kill()          # closing its fds frees the lock, so take() returns
        if thread:
            thread.join(TIMEOUT)
        lock.release()


COUNT_LOOP = """
for i in $(seq "$4"); do
    claim_lock "$1" || exit 98
    [ -e "$3" ] && { echo "overlap at bash $i" >&2; exit 96; }
    echo bash > "$3"
    n=$(cat "$2")
    sleep 0.005
    echo $((n + 1)) > "$2"
    rm -f "$3"
    release_lock "$1"
done
"""


def test_bash_and_python_never_hold_the_lock_together(originals, lock_dir, tmp_path):
    """Both sides increment a counter file under the lock, racing: every
    increment survives and no side ever finds the other inside."""
    name, rounds = unique(), 40
    counter, inside = tmp_path / "counter", tmp_path / "inside"
    counter.write_text("0\n")
    overlaps = []
    bash = Bash(originals, lock_dir, COUNT_LOOP, name, counter, inside, rounds)
    try:
        for i in range(rounds):
            lock = HotplugLock(str(lock_dir), name)
            lock.acquire()
            try:
                if inside.exists():
                    overlaps.append(i)
                inside.write_text("python\n")
                n = int(counter.read_text())
                time.sleep(0.005)
                counter.write_text("%d\n" % (n + 1))
                inside.unlink()
            finally:
                lock.release()
        code, out, err = bash.wait(60)
        assert code == 0, err
    finally:
        bash.kill()
    assert overlaps == []
    assert int(counter.read_text()) == 2 * rounds
    assert not (lock_dir / name).exists()


def test_release_by_either_side_removes_the_lock_file(originals, lock_dir, tmp_path):
    name = unique()
    marker = tmp_path / "bash-claimed"
    bash = Bash(originals, lock_dir, CLAIM_ONCE, name, marker)
    try:
        code, out, err = bash.wait()
    finally:
        bash.kill()
    assert code == 0, err
    assert marker.exists() and not (lock_dir / name).exists()
    lock = HotplugLock(str(lock_dir), name)
    lock.acquire()
    try:
        assert (lock_dir / name).exists()
    finally:
        lock.release()
    assert not (lock_dir / name).exists()
    assert os.listdir(lock_dir) == []
