"""The hotplug lock protocol of Xen's locking.sh, so bash and xenrules exclude each other.

lock NAME: open /var/run/xen-hotplug/NAME (O_CREAT), flock -x it, then check
that the open file is still the one linked at the path (a releasing holder
unlinks it); if not, start again. release: unlink the path, then close.
"""
import fcntl
import os

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
                fcntl.flock(fd, fcntl.LOCK_EX)
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
