"""A XenStore server speaking the real xenstored wire protocol on a unix socket.

The real xenstored cannot run without a hypervisor, so tests and the demo use
this one. Debian's xenstore-* tools (libxenstore), pyxs and xenrules all reach
it through XENSTORED_PATH=<socket>.

Wire format (xen/include/public/io/xs_wire.h): a header of four native-endian
uint32 (type, req_id, tx_id, len), then `len` <= 4096 bytes of NUL-separated
strings. Errors are replied as XS_ERROR with the errno name, e.g. "ENOENT\\0".

Every connection is dom0: relative paths resolve under /local/domain/0 and
permissions are stored and returned but never enforced. Transactions work on
a copy of the tree and replay their changes on commit (last writer wins, never
EAGAIN); that is enough isolation for hotplug scripts.

One thread runs a selectors loop over all connections, so hundreds of
short-lived clients cost no thread each and need no locking between them.
"""

import argparse
import collections
import os
import re
import selectors
import signal
import socket
import stat
import struct
import sys
import threading
import time

HEADER = struct.Struct("=IIII")
PAYLOAD_MAX = 4096
DOM0_PATH = "/local/domain/0"

(CONTROL, DIRECTORY, READ, GET_PERMS, WATCH, UNWATCH, TRANSACTION_START,
 TRANSACTION_END, INTRODUCE, RELEASE, GET_DOMAIN_PATH, WRITE, MKDIR, RM,
 SET_PERMS, WATCH_EVENT, ERROR, IS_DOMAIN_INTRODUCED, RESUME,
 SET_TARGET) = range(20)
RESET_WATCHES, DIRECTORY_PART = 21, 22

_PATH_RE = re.compile(r"[A-Za-z0-9_@/-]+")
_PERM_RE = re.compile(rb"[wrbn][0-9]+")

# Nodes are immutable, so a transaction's copy of the tree is a shallow dict
# copy. gen changes whenever the node or its list of children does
# (DIRECTORY_PART uses it to detect a listing that changed between parts).
Node = collections.namedtuple("Node", "value perms children gen")


class XsError(Exception):
    """A request failed; args[0] is the errno name sent back to the client."""


def _parent(path):
    return path.rsplit("/", 1)[0] or "/"


def _is_under(path, top):
    return path == top or top == "/" or path.startswith(top + "/")


class Tree:
    """The store: {absolute path: Node}. Every method works on absolute paths."""

    def __init__(self, nodes=None):
        self.nodes = nodes or {"/": Node(b"", (b"n0",), (), 0)}
        self.gen = 0

    def copy(self):
        tree = Tree(dict(self.nodes))
        tree.gen = self.gen
        return tree

    def get(self, path):
        try:
            return self.nodes[path]
        except KeyError:
            raise XsError("ENOENT") from None

    def _put(self, path, node, **changes):
        self.gen += 1
        self.nodes[path] = node._replace(gen=self.gen, **changes)

    def _ensure(self, path):
        """Create path and its missing parents with empty values (like xenstored)."""
        if path in self.nodes:
            return False
        parent = _parent(path)
        self._ensure(parent)
        pnode = self.nodes[parent]
        self._put(parent, pnode, children=pnode.children + (path.rsplit("/", 1)[1],))
        # A new node inherits its parent's permissions, as xenstored does for dom0.
        self._put(path, Node(b"", pnode.perms, (), 0))
        return True

    # Each change returns whether it changed anything (and so fires watches).

    def write(self, path, value):
        self._ensure(path)
        self._put(path, self.nodes[path], value=value)
        return True

    def mkdir(self, path):
        return self._ensure(path)

    def rm(self, path):
        if path == "/":
            raise XsError("EINVAL")
        if path not in self.nodes:
            self.get(_parent(path))  # ENOENT only when the parent is missing too
            return False
        stack = [path]
        while stack:
            top = stack.pop()
            stack.extend(f"{top}/{c}" for c in self.nodes.pop(top).children)
        parent, name = _parent(path), path.rsplit("/", 1)[1]
        pnode = self.nodes[parent]
        self._put(parent, pnode, children=tuple(c for c in pnode.children if c != name))
        return True

    def set_perms(self, path, perms):
        self._put(path, self.get(path), perms=perms)
        return True


class _Conn:
    """One client connection and what it owns."""

    def __init__(self, sock):
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.events = selectors.EVENT_READ  # what the selector waits for
        self.transactions = {}  # tx_id -> (private Tree copy, [(method, path, args)])


class XenstoreServer:
    """Serve a XenStore on `socket_path` from a background thread."""

    def __init__(self, socket_path):
        self.socket_path = socket_path
        self.tree = Tree()
        self._lock = threading.Lock()  # between the serving thread and snapshot/load
        self._watches = []  # (conn, absolute wpath, wpath as given, token)
        self._pending = []  # watch events to send once the current reply is queued
        self._dirty = set()  # connections with output to flush
        self._introduced = set()
        self._last_tx = 0
        self._thread = None
        self._stopping = False
        self._stall_until = 0.0  # monotonic time before which nothing is answered
        self._handlers = {
            READ: self._read, WRITE: self._write, MKDIR: self._mkdir, RM: self._rm,
            DIRECTORY: self._directory, DIRECTORY_PART: self._directory_part,
            GET_PERMS: self._get_perms, SET_PERMS: self._set_perms,
            WATCH: self._watch, UNWATCH: self._unwatch,
            TRANSACTION_START: self._tx_start, TRANSACTION_END: self._tx_end,
            GET_DOMAIN_PATH: self._domain_path, INTRODUCE: self._introduce,
            RELEASE: self._release, IS_DOMAIN_INTRODUCED: self._is_introduced,
            RESUME: self._ok, SET_TARGET: self._ok,
            RESET_WATCHES: self._reset_watches, CONTROL: self._control,
        }

    # -- public API ---------------------------------------------------------

    def start(self):
        _claim_socket_path(self.socket_path)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.socket_path)
        self._listener.listen(1024)  # hotplug bursts connect by the hundred
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)  # a full pipe already means "woken"
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ)
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._serve, name="xsserver", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._thread is None:
            return
        self._stopping = True
        self._wake()
        self._thread.join()
        self._thread = None
        for key in list(self._sel.get_map().values()):
            key.fileobj.close()
        self._sel.close()
        self._wake_w.close()
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass

    def stall(self, seconds):
        """Answer nothing for ``seconds`` (a fault for the torture run): requests
        wait in the socket buffers, as with a xenstored that hangs, then are served.
        stall(0) ends a stall early."""
        self._stall_until = time.monotonic() + max(0.0, float(seconds))
        self._wake()

    def snapshot(self):
        with self._lock:
            return {path: node.value.decode("utf-8", "surrogateescape")
                    for path, node in self.tree.nodes.items() if path != "/"}

    def load(self, entries):
        with self._lock:
            for path, value in entries.items():
                try:
                    path = _resolve(path.encode())
                except XsError:
                    raise ValueError(f"invalid xenstore path {path!r}") from None
                self.tree.write(path, value.encode("utf-8", "surrogateescape"))
                self._fire(path)
            self._deliver_pending()
        self._wake()  # the serving thread flushes the watch events

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- connections --------------------------------------------------------

    def _wake(self):
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass  # already woken, or stopped

    def _serve(self):
        while not self._stopping:
            ready = self._sel.select()
            # a stall (stall()): serve what came only after it; stall(0) or stop() ends it
            while self._stall_until > time.monotonic() and not self._stopping:
                time.sleep(min(0.05, self._stall_until - time.monotonic()))
            with self._lock:
                for key, mask in ready:
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        self._wake_r.recv(4096)
                    elif mask & selectors.EVENT_READ:
                        self._receive(key.data)
                    if mask & selectors.EVENT_WRITE:
                        self._dirty.add(key.data)
                self._flush()

    def _accept(self):
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:  # nothing left to accept (or out of fds: retry later)
                return
            sock.setblocking(False)
            conn = _Conn(sock)
            self._sel.register(sock, selectors.EVENT_READ, conn)

    def _drop(self, conn):
        if conn.sock is None:
            return
        self._sel.unregister(conn.sock)
        conn.sock.close()
        conn.sock = None
        conn.transactions.clear()
        self._watches = [w for w in self._watches if w[0] is not conn]

    def _receive(self, conn):
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        conn.inbuf += data
        while len(conn.inbuf) >= HEADER.size and conn.sock is not None:
            op, req_id, tx_id, size = HEADER.unpack_from(conn.inbuf)
            if size > PAYLOAD_MAX:  # xenstored kills such connections
                self._drop(conn)
                return
            if len(conn.inbuf) < HEADER.size + size:
                return
            payload = bytes(conn.inbuf[HEADER.size:HEADER.size + size])
            del conn.inbuf[:HEADER.size + size]
            self._handle(conn, op, req_id, tx_id, payload)

    def _handle(self, conn, op, req_id, tx_id, payload):
        try:
            handler = self._handlers.get(op)
            if handler is None:
                raise XsError("ENOSYS")
            reply = handler(conn, tx_id, payload)
        except XsError as e:
            op, reply = ERROR, e.args[0].encode() + b"\0"
            self._pending.clear()
        self._send(conn, op, req_id, tx_id, reply)
        self._deliver_pending()

    def _send(self, conn, op, req_id, tx_id, payload):
        conn.outbuf += HEADER.pack(op, req_id, tx_id, len(payload)) + payload
        self._dirty.add(conn)

    def _flush(self):
        for conn in self._dirty:
            if conn.sock is None:
                continue
            try:
                del conn.outbuf[:conn.sock.send(conn.outbuf)]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._drop(conn)
                continue
            # Wait for writability only while output is left over (slow reader).
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbuf else 0)
            if events != conn.events:
                self._sel.modify(conn.sock, events, conn)
                conn.events = events
        self._dirty.clear()

    # -- watches ------------------------------------------------------------

    def _fire(self, path, removed=False):
        """Queue an event for every watch on path, on a parent of it, or
        (when a subtree was removed) on a node inside it."""
        for conn, wabs, given, token in self._watches:
            if path.startswith("@") or wabs.startswith("@"):
                hit = path if path == wabs else None  # special events match exactly
            elif _is_under(path, wabs):
                hit = path
            elif removed and _is_under(wabs, path):
                hit = wabs  # the watched node went away with its parent
            else:
                hit = None
            if hit is not None:
                self._pending.append((conn, _as_given(hit, given), token))

    def _deliver_pending(self):
        for conn, path, token in self._pending:
            if conn.sock is not None:
                self._send(conn, WATCH_EVENT, 0, 0, path.encode() + b"\0" + token + b"\0")
        self._pending.clear()

    # -- requests: each returns the reply payload or raises XsError ----------

    def _tree(self, conn, tx_id):
        if not tx_id:
            return self.tree
        try:
            return conn.transactions[tx_id][0]
        except KeyError:
            raise XsError("ENOENT") from None

    def _change(self, conn, tx_id, method, path, *args):
        """Change the live tree (firing watches) or the transaction's copy
        (logged, replayed on commit)."""
        tree = self._tree(conn, tx_id)
        changed = getattr(tree, method)(path, *args)
        if tx_id:
            conn.transactions[tx_id][1].append((method, path, args))
        elif changed:
            self._fire(path, removed=(method == "rm"))
        return b"OK\0"

    def _read(self, conn, tx_id, payload):
        return self._tree(conn, tx_id).get(_resolve(payload)).value

    def _write(self, conn, tx_id, payload):
        path, _, value = payload.partition(b"\0")
        return self._change(conn, tx_id, "write", _resolve(path), value)

    def _mkdir(self, conn, tx_id, payload):
        return self._change(conn, tx_id, "mkdir", _resolve(payload))

    def _rm(self, conn, tx_id, payload):
        return self._change(conn, tx_id, "rm", _resolve(payload))

    def _children(self, conn, tx_id, path):
        node = self._tree(conn, tx_id).get(_resolve(path))
        return node, b"".join(c.encode() + b"\0" for c in node.children)

    def _directory(self, conn, tx_id, payload):
        _, listing = self._children(conn, tx_id, payload)
        if len(listing) > PAYLOAD_MAX:
            raise XsError("E2BIG")  # libxenstore then pages with DIRECTORY_PART
        return listing

    def _directory_part(self, conn, tx_id, payload):
        path, offset = _strings(payload, 2)
        node, listing = self._children(conn, tx_id, path)
        if not offset.isdigit():
            raise XsError("EINVAL")
        rest = listing[int(offset):]
        gen = str(node.gen).encode() + b"\0"
        room = PAYLOAD_MAX - len(gen)
        if len(rest) + 1 <= room:
            return gen + rest + b"\0"  # the extra NUL says "this is the end"
        return gen + rest[:rest.rfind(b"\0", 0, room) + 1]  # whole names only

    def _get_perms(self, conn, tx_id, payload):
        node = self._tree(conn, tx_id).get(_resolve(payload))
        return b"".join(p + b"\0" for p in node.perms)

    def _set_perms(self, conn, tx_id, payload):
        path, *perms = _strings(payload)
        perms = tuple(p for p in perms if p)
        if not perms or not all(_PERM_RE.fullmatch(p) for p in perms):
            raise XsError("EINVAL")
        return self._change(conn, tx_id, "set_perms", _resolve(path), perms)

    def _watch(self, conn, tx_id, payload):
        wpath, token = _strings(payload, 2)
        wabs = _resolve(wpath, watch=True)
        if any(w[0] is conn and w[1] == wabs and w[3] == token for w in self._watches):
            raise XsError("EEXIST")
        given = wpath.decode()
        self._watches.append((conn, wabs, given, token))
        self._pending.append((conn, given, token))  # a new watch fires once at once
        return b"OK\0"

    def _unwatch(self, conn, tx_id, payload):
        wpath, token = _strings(payload, 2)
        wabs = _resolve(wpath, watch=True)
        for w in self._watches:
            if w[0] is conn and w[1] == wabs and w[3] == token:
                self._watches.remove(w)
                return b"OK\0"
        raise XsError("ENOENT")

    def _reset_watches(self, conn, tx_id, payload):
        self._watches = [w for w in self._watches if w[0] is not conn]
        conn.transactions.clear()
        return b"OK\0"

    def _tx_start(self, conn, tx_id, payload):
        if tx_id:
            raise XsError("EINVAL")
        self._last_tx = self._last_tx % 0xFFFFFFFF + 1  # never 0: 0 means "none"
        conn.transactions[self._last_tx] = (self.tree.copy(), [])
        return b"%d\0" % self._last_tx

    def _tx_end(self, conn, tx_id, payload):
        (verdict,) = _strings(payload, 1)
        if verdict not in (b"T", b"F"):
            raise XsError("EINVAL")
        if tx_id not in conn.transactions:
            raise XsError("ENOENT")
        _, log = conn.transactions.pop(tx_id)
        if verdict == b"T":
            for method, path, args in log:
                try:
                    changed = getattr(self.tree, method)(path, *args)
                except XsError:
                    continue  # e.g. a parent someone else removed meanwhile
                if changed:
                    self._fire(path, removed=(method == "rm"))
        return b"OK\0"

    def _domain_path(self, conn, tx_id, payload):
        return b"/local/domain/%d\0" % _domid(payload)

    def _introduce(self, conn, tx_id, payload):
        self._introduced.add(_domid(payload))
        self._fire("@introduceDomain")
        return b"OK\0"

    def _release(self, conn, tx_id, payload):
        self._introduced.discard(_domid(payload))
        self._fire("@releaseDomain")
        return b"OK\0"

    def _is_introduced(self, conn, tx_id, payload):
        domid = _domid(payload)
        return b"T\0" if domid == 0 or domid in self._introduced else b"F\0"

    def _ok(self, conn, tx_id, payload):
        return b"OK\0"

    def _control(self, conn, tx_id, payload):
        command = _strings(payload)[0]
        if command == b"help":
            return b"check\nhelp\nlog\nprint\n\0"
        if command in (b"check", b"log", b"print"):
            return b"OK\0"
        raise XsError("EINVAL")


def _strings(payload, count=None):
    """The NUL-terminated strings of a payload; the first `count` if given."""
    strings = payload.split(b"\0")
    if strings and strings[-1] == b"":
        strings.pop()
    if count is not None:
        if len(strings) < count:
            raise XsError("EINVAL")
        return strings[:count]  # ignore the protocol's reserved trailing fields
    return strings or [b""]


def _resolve(raw, watch=False):
    """Validate a path from a request and make it absolute (every client is dom0)."""
    raw = raw.split(b"\0", 1)[0]
    try:
        path = raw.decode("ascii")
    except UnicodeDecodeError:
        raise XsError("EINVAL") from None
    if watch and path.startswith("@"):
        return path
    if (not _PATH_RE.fullmatch(path) or "//" in path
            or (path.endswith("/") and path != "/")
            or len(path) > (3072 if path.startswith("/") else 2048)):
        raise XsError("EINVAL")
    return path if path.startswith("/") else f"{DOM0_PATH}/{path}"


def _as_given(path, given):
    """An event path as the watcher wrote its watch: relative if it was."""
    if given.startswith(("/", "@")):
        return path
    return path[len(DOM0_PATH) + 1:]


def _domid(payload):
    try:
        return int(_strings(payload)[0])
    except ValueError:
        raise XsError("EINVAL") from None


def _claim_socket_path(path):
    """Remove a stale socket left by a killed server; refuse a live one."""
    if not os.path.exists(path) or not stat.S_ISSOCK(os.stat(path).st_mode):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise OSError(f"a XenStore server already listens on {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python3 -m xenrules.sandbox.xsserver",
        description="Serve a simulated XenStore (the real xenstored wire protocol) "
                    "on a unix socket until SIGTERM or SIGINT. Point clients at it "
                    "with XENSTORED_PATH=<socket>.")
    parser.add_argument("--socket", required=True, help="unix socket path to listen on")
    parser.add_argument("--pidfile", help="write the server's pid to this file")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        server = XenstoreServer(args.socket).start()
    except OSError as e:
        print(f"xsserver: {e}", file=sys.stderr)
        return 1
    try:
        if args.pidfile:
            with open(args.pidfile, "w") as f:
                f.write(f"{os.getpid()}\n")
        print(f"xsserver: listening on {args.socket}", file=sys.stderr, flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
        if args.pidfile:
            try:
                os.unlink(args.pidfile)
            except FileNotFoundError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
