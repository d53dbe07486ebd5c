"""The hotplug lock protocol of Xen's locking.sh, so bash and xenrules exclude each other.

lock NAME: open /var/run/xen-hotplug/NAME (O_CREAT), flock -x it, then check
that the open file is still the one linked at the path (a releasing holder
unlinks it); if not, start again. release: unlink the path, then close.

locking.sh waits for ever; here the wait ends with the event's budget
(deadline.py), and the error names the pid holding the lock (/proc/locks).
"""
import fcntl
import os
import time

from . import deadline
from .errors import LockError

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def valid_lock_name(name):
    return bool(name) and name not in (".", "..") and set(name) <= _NAME_CHARS


class HotplugLock:
    def __init__(self, lock_dir, name):
        if not valid_lock_name(name):
            raise LockError(f"invalid lock name {name!r}")
        self.name = name
        self.path = os.path.join(lock_dir, name)
        self.fd = None

    def acquire(self):
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    self._flock(fd)
                except BaseException:
                    os.close(fd)
                    raise
                held = os.fstat(fd)
                try:
                    linked = os.stat(self.path)
                except FileNotFoundError:
                    linked = None
                if linked and (held.st_dev, held.st_ino) == (linked.st_dev, linked.st_ino):
                    self.fd = fd
                    return
                os.close(fd)  # the previous holder unlinked it: try the new file
        except OSError as e:
            raise LockError(f"cannot lock {self.path}: {e.strerror}") from e

    def _flock(self, fd):
        """flock -x, blocking as locking.sh's flock does (a waiter in /proc/locks,
        first come first served); inside an event the wait ends with its budget,
        by a SIGALRM timer (threads other than the main one poll instead)."""
        budget = deadline.current()
        if budget is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        import signal   # only an event that waits pays for it
        left = budget.left()
        try:
            if left > 0:
                old = signal.signal(signal.SIGALRM, _on_alarm)
                try:
                    signal.setitimer(signal.ITIMER_REAL, left)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    return
                except _Expired:
                    pass
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                    signal.signal(signal.SIGALRM, old)
        except ValueError:   # signal.signal outside the main thread
            self._poll(fd, budget)
            return
        raise self._held_error(fd, budget)

    def _poll(self, fd, budget):
        pause = 0.001
        while not budget.expired():
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                time.sleep(pause)
                pause = min(pause * 2, 0.02)   # quick when the holder is quick, cheap otherwise
        raise self._held_error(fd, budget)

    def _held_error(self, fd, budget):
        holder = holder_of(fd)
        return LockError(f"lock {self.path} held by "
                         + (f"pid {holder}" if holder else "another process")
                         + f"; {budget.why()}")

    def release(self):
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    @property
    def held(self):
        return self.fd is not None


class _Expired(Exception):
    """The event's budget ended a blocking flock."""


def _on_alarm(signum, frame):
    raise _Expired


def holder_of(fd):
    """The pid holding a flock on fd's file, from /proc/locks, or None."""
    st = os.fstat(fd)
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as f:
            for line in f:
                words = line.split()
                # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; "->" marks waiters
                if "->" in words or len(words) < 6 or words[1] != "FLOCK":
                    continue
                if words[5] == inode and words[4].isdigit() and int(words[4]) != os.getpid():
                    return int(words[4])
    except OSError:
        pass
    return None
