"""The XenStore client the engine uses: xenstored's wire protocol, directly.

xs_wire.h's framing is a 16-byte header and a payload; the four requests
the engine makes (read, write, rm, directory) take a few lines. pyxs is not
used on the event path: importing it (its Client, threading, enum, re,
platform) cost 10-30 ms per event, more than the requests. Unlike pyxs's
`Client`:
- every request runs synchronously under a deadline: a hotplug script must
  never hang on a read that nothing interrupts; the deadline is `timeout`,
  or sooner when the event's budget (deadline.py) ends first;
- values may be any bytes (xenstored stores them; `hotplug-error` messages
  may hold newlines or UTF-8), not only printable 7-bit ASCII; but `read`
  refuses a value holding NUL or bytes that are not UTF-8 (XenstoreError
  naming the key) rather than guess what it means.

Not thread-safe: one per thread.
"""

import itertools
import os
import stat
import struct
import time

from xenrules import deadline as _deadline
from xenrules.errors import XenstoreError

DEFAULT_RUNDIR = "/var/run/xenstored"
XENBUS_DEVICES = ("/dev/xen/xenbus", "/proc/xen/xenbus")
PAYLOAD_MAX = 4096  # XENSTORE_PAYLOAD_MAX: xenstored drops longer requests

_req_ids = itertools.count(1)
# xs_wire.h: the header (type, req_id, tx_id, len) and the operations used
_HEADER = struct.Struct("=IIII")
OPS = {"DIRECTORY": 1, "READ": 2, "WRITE": 11, "RM": 13}
OP_WATCH_EVENT, OP_ERROR = 15, 16
_PATH_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-/_@")
PATH_MAX = 3072


def valid_path(raw):
    """A XenStore path xenstored accepts: [A-Za-z0-9-/_@]+, at most 3072 bytes,
    no "//", no trailing "/" (but "/" itself)."""
    return (0 < len(raw) <= PATH_MAX and _PATH_BYTES.issuperset(raw)
            and b"//" not in raw and (raw == b"/" or not raw.endswith(b"/")))


def _text(path, raw):
    """A value as text, or XenstoreError naming the key: a NUL would be cut by
    the C tools and bash (so xenrules would act on another value than they),
    and undecodable bytes have no faithful text, so both are refused."""
    if b"\0" in raw:
        raise XenstoreError(f"xenstore read {path!r}: value holds a NUL byte; refused")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise XenstoreError(f"xenstore read {path!r}: value is not UTF-8 "
                            f"(byte {e.start}); refused") from None


def default_path():
    """The socket libxenstore and pyxs use: $XENSTORED_PATH, else the rundir's."""
    return os.environ.get("XENSTORED_PATH") or os.path.join(
        os.environ.get("XENSTORED_RUNDIR", DEFAULT_RUNDIR), "socket")


class _Timeout(Exception):
    pass


class _Bounded:
    """A transport whose waits end at `deadline` (set before each request)."""

    deadline = 0.0

    def _left(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _Timeout()
        return left


class _SocketTransport(_Bounded):
    """The transport over xenstored's unix socket."""

    def __init__(self, path, deadline):
        import _socket  # not socket.py (3 ms of enum building): what a transport needs

        self.deadline = deadline
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        try:
            self.sock.settimeout(self._left())  # connect blocks while the backlog is full
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise

    def recv(self, size):
        data = bytearray()
        while len(data) < size:
            self.sock.settimeout(self._left())
            try:
                chunk = self.sock.recv(size - len(data))
            except TimeoutError:  # socket.timeout
                raise _Timeout() from None
            if not chunk:
                raise ConnectionResetError("xenstored closed the connection")
            data += chunk
        return bytes(data)

    def send(self, data):
        self.sock.settimeout(self._left())
        try:
            self.sock.sendall(data)
        except TimeoutError:
            raise _Timeout() from None

    def fileno(self):
        return self.sock.fileno()

    def close(self):
        self.sock.close()


class _DeviceTransport(_Bounded):
    """The transport over the xenbus device (a dom0 without the daemon socket)."""

    def __init__(self, path, deadline):
        self.deadline = deadline
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)

    def recv(self, size):
        import select

        data = bytearray()
        while len(data) < size:
            if not select.select([self.fd], [], [], self._left())[0]:
                raise _Timeout()
            chunk = os.read(self.fd, size - len(data))
            if not chunk:
                raise ConnectionResetError("xenbus closed")
            data += chunk
        return bytes(data)

    def send(self, data):
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def fileno(self):
        return self.fd

    def close(self):
        os.close(self.fd)


class XenStore:
    """Read, write, remove and list XenStore nodes, each request bounded by
    `timeout` seconds. Paths are passed as given: relative ones resolve under
    the caller's domain (/local/domain/0 in dom0). Values are str (UTF-8)."""

    def __init__(self, socket_path=None, timeout=10.0):
        self.timeout = timeout
        self.path = socket_path or default_path()
        # Only the default place may fall back to the xenbus device.
        self._may_fall_back = socket_path is None and "XENSTORED_PATH" not in os.environ
        self.where = self.path  # what the connection opened (or will try)
        self._conn = None

    def __repr__(self):
        return f"XenStore({self.where!r})"

    # -- public API ---------------------------------------------------------

    def read(self, path):
        """The node's value, or None when the node does not exist."""
        try:
            raw = self._request("READ", path)
        except _XsReply as e:
            if e.code == "ENOENT":
                return None
            raise e.error from None
        return _text(path, raw)

    def write(self, path, value):
        """Write value, creating missing parents with empty values."""
        self._checked("WRITE", path, str(value).encode("utf-8", "surrogateescape"))

    def remove(self, path):
        """Remove the node and its subtree; a missing node is not an error."""
        self._checked("RM", path, ignore="ENOENT")

    def list(self, path):
        """The names of the node's children; [] when the node does not exist."""
        listing = self._checked("DIRECTORY", path, ignore="ENOENT")
        return [n.decode("utf-8", "replace") for n in listing.split(b"\0") if n]

    def close(self):
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- wire ---------------------------------------------------------------

    def _checked(self, op, path, value=None, ignore=None):
        try:
            return self._request(op, path, value)
        except _XsReply as e:
            if e.code == ignore:
                return b""
            raise e.error from None

    def _request(self, op_name, path, value=None):
        """Send one request, return the reply payload (trailing NULs stripped).
        An error reply raises _XsReply; anything else raises XenstoreError."""
        what = f"xenstore {op_name.lower()} {path!r}"
        raw = path.encode("utf-8", "surrogateescape")
        op = OPS[op_name]
        if not valid_path(raw):
            raise XenstoreError(f"{what}: invalid path (allowed: A-Z a-z 0-9 - / _ @, "
                                "no // and no trailing /)")
        payload = raw + b"\0" + (value if value is not None else b"")
        if len(payload) > PAYLOAD_MAX:
            raise XenstoreError(f"{what}: request of {len(payload)} bytes, "
                                f"xenstored takes at most {PAYLOAD_MAX}")
        rq_id = next(_req_ids) & 0xFFFFFFFF

        # our own timeout, or less when the event's budget ends first (deadline.py)
        deadline, cut = _deadline.wait_until(time.monotonic() + self.timeout)
        conn = self._connect(deadline, cut)
        what += f" via {self.where}"
        conn.deadline = deadline
        try:
            conn.send(_HEADER.pack(op, rq_id, 0, len(payload)) + payload)
            while True:
                r_op, r_id, _tx, size = _HEADER.unpack(conn.recv(_HEADER.size))
                if size > PAYLOAD_MAX:
                    raise OSError(f"reply of {size} bytes")
                body = conn.recv(size) if size else b""
                if r_op != OP_WATCH_EVENT:  # we set no watch; skip strays
                    break
        except OSError as e:
            self.close()
            raise XenstoreError(f"{what}: {e}") from None
        except _Timeout:
            self.close()
            raise XenstoreError(f"{what}: no reply " + (
                f"({_deadline.why()})" if cut else f"within {self.timeout:g}s")) from None

        if r_op == OP_ERROR:
            code = body.rstrip(b"\0").decode("ascii", "replace")
            raise _XsReply(code, XenstoreError(f"{what}: {code}"))
        if r_op != op or r_id != rq_id:
            self.close()  # the stream is out of step: start afresh next time
            raise XenstoreError(f"{what}: unexpected reply (op {r_op})")
        return body.rstrip(b"\0") if op != OPS["READ"] else body

    def _target(self):
        """(path, is_device), like libxenstore's xs_open: a path that is not a
        socket is a device; with no daemon socket at the default place, use
        the xenbus device."""
        try:
            return self.path, not stat.S_ISSOCK(os.stat(self.path).st_mode)
        except OSError:
            pass
        if self._may_fall_back:
            for device in XENBUS_DEVICES:
                if os.path.exists(device):
                    return device, True
        return self.path, False

    def _connect(self, deadline, cut=False):
        if self._conn is not None:
            return self._conn
        self.where, is_device = self._target()
        try:
            if is_device:
                conn = _DeviceTransport(self.where, deadline)
            else:
                conn = _SocketTransport(self.where, deadline)
        except (TimeoutError, _Timeout):
            raise XenstoreError(f"cannot connect to xenstored at {self.where}: no answer " + (
                f"({_deadline.why()})" if cut else f"within {self.timeout:g}s")) from None
        except OSError as e:
            raise XenstoreError(f"cannot connect to xenstored at {self.where}: "
                                f"{e.strerror or e}") from None
        self._conn = conn
        return conn


class _XsReply(Exception):
    """xenstored answered with an error (code is its errno name)."""

    def __init__(self, code, error):
        super().__init__(code)
        self.code, self.error = code, error
