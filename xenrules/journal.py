"""The per-device journal: what an event is about to change, so a killed event can be undone.

Before a step changes state, the engine appends a record holding the step's
type, its expanded arguments and its undo data (what the step read before
changing anything: the previous master, the old name, the previous MTU...),
and fsyncs it. A step that learns something while it works (the loop device
it got) appends a note. Revert reads these records, so one code path serves
the in-process failure, a killed event (replayed by the next event for the
same device, the warm helper at start, `xenrules recover`) and a dry run.

Files: XENRULES_JOURNAL_DIR (/run/xenrules/journal), a directory owned by
root, mode 0700, checked with lstat (never through a symlink); one file per
device, 0600, named <netns inode>-<device key escaped>.journal. The device
key is the backend path (absolute), with "#tap" for an emulated NIC (which
shares its vif's backend). The network namespace is part of the name:
links of a journal only make sense in the namespace that made them.

A record: 4-byte length, 4-byte CRC-32, then a marshal-encoded dict. Kinds:
  {"k": "event", "v": 1, "event", "pid", "key", "xenstore", "lock_dir"}  first record
  {"k": "step", "n", "type", "args", "undo", "where"}   step n is about to apply
  {"k": "note", "n", "more"}                            merged into step n's undo
  {"k": "undone", "n"}                                  step n is reverted
A torn tail (length or CRC that does not check out, a short read) ends the
journal there: what follows was never fsync'd, so the step it announced never
began.

Who holds it: the event flocks the file for its whole run (the flock dies
with its holder), so a second event for the device waits, and finds either
nothing (the first one completed and unlinked it; the inode check of
locking.sh tells) or a dead event's journal, which it replays first. A
completed event -- success, or failure reverted in-process -- leaves nothing.
"""
import fcntl
import marshal
import os
import stat
import time
from zlib import crc32

from . import deadline as _deadline
from .errors import JournalError

DEFAULT_DIR = "/run/xenrules/journal"
SUFFIX = ".journal"
HEAD = 8                              # length, crc32 of the payload: 4 bytes each, little-endian
MAX_RECORD = 1 << 20                  # a record is a few hundred bytes; more is garbage
_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")
MAX_NAME = 240                        # NAME_MAX is 255
WAIT = 30.0                           # seconds a second event waits for a live first one


def device_key(event):
    """The device an event is for, or '' when it names none."""
    backend = event.builtins["backend"][0]
    if not backend:
        name = event.builtins["vif"][0] or event.builtins["interface"][0]
        return f"{event.script}:{name}" if name else ""
    if not backend.startswith("/"):
        backend = "/local/domain/0/" + backend       # relative paths are dom0's
    return backend + ("#tap" if event.builtins["type_if"][0] == "tap" else "")


def netns_id():
    try:
        return os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return 0


def file_name(key, netns=None):
    """<netns>-<key with every byte outside [A-Za-z0-9._-] as %XX>.journal."""
    raw = os.fsencode(key)
    escaped = "".join(chr(b) if b in _SAFE else "%%%02X" % b for b in raw)
    name = f"{netns_id() if netns is None else netns}-{escaped}{SUFFIX}"
    if len(name) > MAX_NAME:
        raise JournalError(f"device key too long to journal: {key[:80]!r}...")
    return name


def key_of(name):
    """(netns, key) back from a file name; None when it is not one of ours."""
    if not name.endswith(SUFFIX) or "-" not in name:
        return None
    netns, _, escaped = name[:-len(SUFFIX)].partition("-")
    if not netns.isdigit():
        return None
    out, i = bytearray(), 0
    while i < len(escaped):
        if escaped[i] == "%":
            try:
                out.append(int(escaped[i + 1:i + 3], 16))
            except ValueError:
                return None
            i += 3
        else:
            out.append(ord(escaped[i]))
            i += 1
    return int(netns), os.fsdecode(bytes(out))


def check_dir(directory, create=True):
    """The journal directory, made if missing: a real directory (lstat), ours, mode 0700."""
    if create:
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as e:
            raise JournalError(f"cannot create the journal directory {directory}: {e.strerror}") from e
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise JournalError(f"journal directory {directory}: {e.strerror}") from e
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise JournalError(f"journal directory {directory} must be a directory (not a symlink) "
                           f"owned by uid {os.geteuid()} with mode 0700 (is uid {st.st_uid}, "
                           f"mode {stat.filemode(st.st_mode)})")
    return True


def encode(record):
    payload = marshal.dumps(record)
    return len(payload).to_bytes(4, "little") + crc32(payload).to_bytes(4, "little") + payload


def decode(data):
    """(records, torn): every whole record, and whether a torn tail was dropped."""
    records, end = _decode(data)
    return records, end < len(data)


def _decode(data):
    """(every whole record, where the last one ends)."""
    records, pos = [], 0
    while pos < len(data):
        if len(data) - pos < HEAD:
            return records, pos
        length = int.from_bytes(data[pos:pos + 4], "little")
        crc = int.from_bytes(data[pos + 4:pos + HEAD], "little")
        payload = data[pos + HEAD:pos + HEAD + length]
        if length > MAX_RECORD or len(payload) != length or crc32(payload) != crc:
            return records, pos
        try:
            record = marshal.loads(payload)
        except (ValueError, EOFError, TypeError):
            return records, pos
        if not isinstance(record, dict) or not isinstance(record.get("k"), str):
            return records, pos
        records.append(record)
        pos += HEAD + length
    return records, pos


class Journal:
    """The journal file of one device, held (flocked) by the event that owns it."""

    def __init__(self, directory, key, netns=None):
        self.directory = directory
        self.key = key
        self.path = os.path.join(directory, file_name(key, netns))
        self.fd = None
        self.started = False      # the event record is written

    @classmethod
    def for_event(cls, config, event):
        key = device_key(event)
        return cls(config.journal_dir, key) if key else None

    def exists(self):
        return os.path.exists(self.path)

    def acquire(self, wait=WAIT, create=True):
        """Open and flock the file (locking.sh's inode check: a file its last
        holder unlinked is not the journal any more). Returns False when
        create is off and there is no journal."""
        if self.fd is not None:
            return True
        check_dir(self.directory, create=create)
        deadline = time.monotonic() + wait
        flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_CREAT if create else 0)
        while True:
            try:
                fd = os.open(self.path, flags, 0o600)
            except FileNotFoundError:
                return False
            except OSError as e:
                raise JournalError(f"cannot open the journal {self.path}: {e.strerror}") from e
            try:
                self._flock(fd, deadline, wait)
                held = os.fstat(fd)
                try:
                    linked = os.stat(self.path, follow_symlinks=False)
                except FileNotFoundError:
                    linked = None
            except BaseException:
                os.close(fd)
                raise
            if linked and (held.st_dev, held.st_ino) == (linked.st_dev, linked.st_ino):
                if not stat.S_ISREG(held.st_mode) or held.st_uid != os.geteuid() or \
                        held.st_mode & 0o077:
                    os.close(fd)
                    raise JournalError(f"journal {self.path} is not a private regular file")
                self.fd = fd
                return True
            os.close(fd)   # its holder completed and unlinked it: try again

    def _flock(self, fd, deadline, wait):
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                budget = _deadline.current()   # the event's budget may end first
                if time.monotonic() >= deadline or (budget is not None and budget.expired()):
                    from .locking import holder_of
                    holder = holder_of(fd)
                    raise JournalError(
                        f"another event for {self.key} holds its journal {self.path}"
                        + (f" (pid {holder})" if holder else "")
                        + (f"; {budget.why()}" if budget is not None and budget.expired()
                           else f" (waited {wait:g} s)")) from None
                time.sleep(0.01)

    def size(self):
        return os.fstat(self.fd).st_size

    def read(self):
        """(records, torn): the records in the file now (no other writer while
        flocked). A torn tail is cut off, so that what the replay appends
        (its undone marks) is read back by the next one."""
        size = os.fstat(self.fd).st_size
        records, end = _decode(os.pread(self.fd, size, 0))
        if end < size:
            os.ftruncate(self.fd, end)
        return records, end < size

    def append(self, record, sync=True):
        try:
            data = encode(record)
        except ValueError as e:   # marshal: a value that is no plain data
            raise JournalError(f"cannot journal {record.get('type', record['k'])}: {e}") from e
        try:
            # pwrite at the end, not O_APPEND: a torn tail left by a dead event
            # is cut off by the truncate that precedes the first record
            end = os.fstat(self.fd).st_size
            os.pwrite(self.fd, data, end)
            if sync:
                os.fsync(self.fd)
        except OSError as e:
            raise JournalError(f"cannot write the journal {self.path}: {e.strerror}") from e

    def start(self, header):
        """Begin this event's journal (after any dead event's was replayed).
        Not fsync'd on its own: the first step record's fsync covers it."""
        os.ftruncate(self.fd, 0)
        self.append(dict(header, k="event"), sync=False)
        self.started = True

    def clear(self):
        """A dead event's journal was replayed: nothing left in it."""
        os.ftruncate(self.fd, 0)
        os.fsync(self.fd)
        self.started = False

    def step(self, n, type_name, args, undo, where):
        self.append({"k": "step", "n": n, "type": type_name, "args": args, "undo": undo,
                     "where": where})

    def note(self, n, more):
        self.append({"k": "note", "n": n, "more": more})

    def undone(self, n):
        if self.started:
            self.append({"k": "undone", "n": n})

    def finish(self):
        """The event completed: nothing to replay any more. Unlink, then unlock."""
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError:
            os.ftruncate(self.fd, 0)   # cannot unlink: an empty journal replays nothing
        os.close(self.fd)
        self.fd = None
        self.started = False

    def release(self):
        """Close without removing (a journal left for recovery)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def pending_steps(records):
    """The header and the steps still to undo, newest first: [(n, type, args, undo, where)]."""
    header = records[0] if records and records[0].get("k") == "event" else {}
    steps, order, undone = {}, [], set()
    for r in records:
        kind, n = r.get("k"), r.get("n")
        if kind == "step" and isinstance(n, int):
            if n not in steps:
                order.append(n)
            undo = r.get("undo")
            steps[n] = [r.get("type", ""), r.get("args") or {},
                        dict(undo) if isinstance(undo, dict) else undo, r.get("where", "")]
        elif kind == "note" and n in steps and isinstance(r.get("more"), dict):
            if isinstance(steps[n][2], dict):
                steps[n][2].update(r["more"])
        elif kind == "undone":
            undone.add(n)
    return header, [(n, *steps[n]) for n in reversed(order) if n not in undone]
