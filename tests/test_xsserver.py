"""The simulated XenStore server against real clients: Debian's xenstore-*
tools (libxenstore through XENSTORED_PATH), pyxs, and a raw wire socket."""

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from xenrules.sandbox.xsserver import XenstoreServer

pyxs = pytest.importorskip("pyxs")
needs_tools = pytest.mark.skipif(shutil.which("xenstore-read") is None,
                                 reason="xenstore-utils not installed")

HEADER = struct.Struct("=IIII")
READ, WRITE, DIRECTORY, ERROR = 2, 11, 1, 16
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def server(tmp_path):
    with XenstoreServer(str(tmp_path / "xs.sock")) as srv:
        yield srv


def tool(server, *argv):
    """Run a Debian xenstore-* tool against the server."""
    env = dict(os.environ, XENSTORED_PATH=server.socket_path)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=10)


def client(server):
    return pyxs.Client(unix_socket_path=server.socket_path)


class Raw:
    """A bare wire-protocol client, for what the real clients refuse to send."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(path)

    def request(self, op, payload, tx_id=0, req_id=42):
        self.sock.sendall(HEADER.pack(op, req_id, tx_id, len(payload)) + payload)
        return self.receive()

    def receive(self):
        op, req_id, tx_id, size = HEADER.unpack(self._exactly(HEADER.size))
        return op, req_id, tx_id, self._exactly(size)

    def _exactly(self, size):
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data


# -- Debian's xenstore-utils (libxenstore) ----------------------------------

@needs_tools
def test_xenstore_write_then_read_round_trips(server):
    assert tool(server, "xenstore-write", "/vm/name", "guest1", "/vm/id", "7").returncode == 0
    out = tool(server, "xenstore-read", "/vm/name", "/vm/id")
    assert out.returncode == 0
    assert out.stdout == "guest1\n7\n"


@needs_tools
def test_relative_paths_resolve_under_dom0(server):
    assert tool(server, "xenstore-write", "backend/vif/1/0/bridge", "xenbr0").returncode == 0
    assert server.snapshot()["/local/domain/0/backend/vif/1/0/bridge"] == "xenbr0"
    out = tool(server, "xenstore-read", "/local/domain/0/backend/vif/1/0/bridge")
    assert out.stdout == "xenbr0\n"


@needs_tools
def test_write_creates_missing_parents_with_empty_values(server):
    tool(server, "xenstore-write", "/a/b/c", "v")
    snap = server.snapshot()
    assert snap["/a"] == "" and snap["/a/b"] == "" and snap["/a/b/c"] == "v"


@needs_tools
def test_read_of_missing_node_fails(server):
    out = tool(server, "xenstore-read", "/nope")
    assert out.returncode == 1
    assert "couldn't read path /nope" in out.stderr


@needs_tools
def test_xenstore_exists_reports_presence(server):
    server.load({"/here": "1"})
    assert tool(server, "xenstore-exists", "/here").returncode == 0
    assert tool(server, "xenstore-exists", "/not-here").returncode == 1


@needs_tools
def test_xenstore_ls_shows_the_tree(server):
    server.load({"/backend/vbd/3/51712/params": "/dev/vg/disk", "/backend/vbd/3/51712/mode": "w"})
    out = tool(server, "xenstore-ls", "/backend")
    assert out.returncode == 0
    assert out.stdout.splitlines() == [
        'vbd = ""', ' 3 = ""', '  51712 = ""',
        '   params = "/dev/vg/disk"', '   mode = "w"']


@needs_tools
def test_xenstore_list_pages_a_directory_larger_than_one_message(server):
    # 700 names do not fit in 4096 bytes: DIRECTORY answers E2BIG and
    # libxenstore falls back to DIRECTORY_PART.
    names = [f"node-number-{i}" for i in range(700)]
    server.load({f"/big/{n}": "" for n in names})
    out = tool(server, "xenstore-list", "/big")
    assert out.returncode == 0
    assert out.stdout.split() == names


@needs_tools
def test_rm_removes_the_subtree(server):
    server.load({"/a/b/c": "1", "/a/d": "2", "/keep": "3"})
    assert tool(server, "xenstore-rm", "/a").returncode == 0
    assert server.snapshot() == {"/keep": "3"}


@needs_tools
def test_rm_of_missing_node_succeeds_when_its_parent_exists(server):
    server.load({"/a": ""})
    assert tool(server, "xenstore-rm", "/a/missing").returncode == 0


@needs_tools
def test_rm_fails_when_the_parent_is_missing_too(server):
    assert tool(server, "xenstore-rm", "/missing/child").returncode == 1


@needs_tools
def test_chmod_stores_permissions_and_children_inherit_them(server):
    server.load({"/dir": ""})
    assert tool(server, "xenstore-chmod", "/dir", "n0", "r5").returncode == 0
    tool(server, "xenstore-write", "/dir/child", "x")
    with client(server) as c:
        assert c.get_perms(b"/dir") == [b"n0", b"r5"]
        assert c.get_perms(b"/dir/child") == [b"n0", b"r5"]
        assert c.get_perms(b"/") == [b"n0"]


@needs_tools
def test_xenstore_watch_sees_initial_and_later_events(server):
    env = dict(os.environ, XENSTORED_PATH=server.socket_path)
    proc = subprocess.Popen(["xenstore-watch", "-n", "2", "/w"], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "/w\n"  # fired once when set up
        server.load({"/w/x": "1"})
        assert proc.stdout.readline() == "/w/x\n"
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        proc.wait()


@needs_tools
def test_hundreds_of_concurrent_tool_processes_all_succeed(server):
    env = dict(os.environ, XENSTORED_PATH=server.socket_path)
    procs = [subprocess.Popen(["xenstore-write", f"backend/vif/{i}/0/hotplug-status", "connected"],
                              env=env) for i in range(200)]
    assert [p.wait(timeout=30) for p in procs] == [0] * 200
    snap = server.snapshot()
    assert all(snap[f"/local/domain/0/backend/vif/{i}/0/hotplug-status"] == "connected"
               for i in range(200))


# -- pyxs ---------------------------------------------------------------------

def test_pyxs_reads_writes_lists_and_removes(server):
    with client(server) as c:
        c.write(b"/vm/1/name", b"guest")
        assert c.read(b"/vm/1/name") == b"guest"
        assert c.list(b"/vm/1") == [b"name"]
        assert c.exists(b"/vm") and not c.exists(b"/nothing")
        c.delete(b"/vm")
        assert not c.exists(b"/vm")
        with pytest.raises(pyxs.PyXSError) as err:
            c.read(b"/vm/1/name")
        assert err.value.args[0] == 2  # ENOENT


def test_pyxs_relative_paths_resolve_under_dom0(server):
    with client(server) as c:
        c.write(b"device/vif/0/mtu", b"1500")
        assert c.read(b"/local/domain/0/device/vif/0/mtu") == b"1500"


def test_mkdir_creates_path_and_keeps_existing_values(server):
    server.load({"/a": "keep"})
    with client(server) as c:
        c.mkdir(b"/a/b/c")
    assert server.snapshot() == {"/a": "keep", "/a/b": "", "/a/b/c": ""}


def test_transaction_commit_applies_its_writes_and_removes(server):
    server.load({"/t/old": "1"})
    with client(server) as c, client(server) as other:
        c.transaction()
        c.write(b"/t/new", b"2")
        c.delete(b"/t/old")
        assert c.read(b"/t/new") == b"2"  # the transaction sees its own writes
        assert other.read(b"/t/old") == b"1"  # nobody else does before commit
        assert not other.exists(b"/t/new")
        assert c.commit() is True
    assert server.snapshot() == {"/t": "", "/t/new": "2"}


def test_transaction_abort_discards_its_changes(server):
    server.load({"/t/old": "1"})
    with client(server) as c:
        c.transaction()
        c.write(b"/t/new", b"2")
        c.delete(b"/t/old")
        c.rollback()
    assert server.snapshot() == {"/t": "", "/t/old": "1"}


def test_watch_fires_at_once_then_for_changes_below_only(server):
    with client(server) as c, client(server) as writer:
        with c.monitor() as m:
            m.watch(b"/backend", b"tok")
            events = m.wait()
            assert next(events) == (b"/backend", b"tok")
            writer.write(b"/elsewhere", b"x")
            writer.write(b"/backend/vif/1/0/state", b"4")
            assert next(events) == (b"/backend/vif/1/0/state", b"tok")


def test_watch_on_relative_path_reports_relative_paths(server):
    with client(server) as c, client(server) as writer:
        with c.monitor() as m:
            m.watch(b"backend", b"rel")
            events = m.wait()
            assert next(events) == (b"backend", b"rel")
            writer.write(b"/local/domain/0/backend/x", b"1")
            assert next(events) == (b"backend/x", b"rel")


def test_watch_fires_when_a_parent_is_removed(server):
    server.load({"/a/b/c": "1"})
    with client(server) as c, client(server) as writer:
        with c.monitor() as m:
            m.watch(b"/a/b/c", b"t")
            events = m.wait()
            next(events)
            writer.delete(b"/a")
            assert next(events) == (b"/a/b/c", b"t")


def test_committed_transaction_fires_watches(server):
    with client(server) as c, client(server) as writer:
        with c.monitor() as m:
            m.watch(b"/t", b"t")
            events = m.wait()
            next(events)
            writer.transaction()
            writer.write(b"/t/x", b"1")
            writer.commit()
            assert next(events) == (b"/t/x", b"t")


def test_domain_requests_get_sensible_answers(server):
    with client(server) as c:
        assert c.get_domain_path(3) == b"/local/domain/3"
        assert c.is_domain_introduced(0) is True
        assert c.is_domain_introduced(5) is False
        c.introduce_domain(5, 1234, 7)
        assert c.is_domain_introduced(5) is True


# -- raw wire -------------------------------------------------------------------

def test_reply_echoes_request_and_transaction_ids(server):
    raw = Raw(server.socket_path)
    server.load({"/x": "v"})
    assert raw.request(READ, b"/x\0", req_id=99) == (READ, 99, 0, b"v")


def test_errors_are_sent_as_errno_names(server):
    raw = Raw(server.socket_path)
    assert raw.request(READ, b"/missing\0") == (ERROR, 42, 0, b"ENOENT\0")
    assert raw.request(READ, b"/bad path\0")[3] == b"EINVAL\0"
    assert raw.request(READ, b"/trailing/\0")[3] == b"EINVAL\0"
    assert raw.request(READ, b"/x\0", tx_id=12345)[3] == b"ENOENT\0"  # unknown transaction
    assert raw.request(999, b"")[3] == b"ENOSYS\0"


def test_values_are_binary_safe(server):
    raw = Raw(server.socket_path)
    assert raw.request(WRITE, b"/v\0line1\nl\xc3\xadne2")[3] == b"OK\0"
    assert raw.request(READ, b"/v\0")[3] == b"line1\nl\xc3\xadne2"


def test_oversized_request_drops_the_connection(server):
    raw = Raw(server.socket_path)
    raw.sock.sendall(HEADER.pack(WRITE, 1, 0, 5000) + b"x" * 5000)
    with pytest.raises(ConnectionError):
        raw.receive()
    assert Raw(server.socket_path).request(DIRECTORY, b"/\0")[0] == DIRECTORY


def test_many_concurrent_connections_are_served(server):
    errors = []

    def work(i):
        try:
            with client(server) as c:
                for j in range(20):
                    c.write(b"/load/%d/%d" % (i, j), b"%d" % j)
                    assert c.read(b"/load/%d/%d" % (i, j)) == b"%d" % j
        except Exception as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert len([p for p in server.snapshot() if p.count("/") == 3]) == 50 * 20


# -- lifecycle ------------------------------------------------------------------

def test_snapshot_is_a_copy_and_load_accepts_relative_paths(server):
    server.load({"backend/x": "1", "/y": "2"})
    snap = server.snapshot()
    snap["/z"] = "3"
    assert server.snapshot() == {"/local": "", "/local/domain": "", "/local/domain/0": "",
                                 "/local/domain/0/backend": "",
                                 "/local/domain/0/backend/x": "1", "/y": "2"}


def test_stop_removes_the_socket_file(tmp_path):
    path = str(tmp_path / "xs.sock")
    server = XenstoreServer(path).start()
    assert os.path.exists(path)
    server.stop()
    assert not os.path.exists(path)


def test_a_stale_socket_file_is_replaced(tmp_path):
    path = str(tmp_path / "xs.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens: a killed server's leftover
    with XenstoreServer(path) as server:
        server.load({"/ok": "1"})
        assert Raw(path).request(READ, b"/ok\0")[3] == b"1"


def test_a_live_server_socket_is_not_taken_over(server):
    with pytest.raises(OSError):
        XenstoreServer(server.socket_path).start()


@needs_tools
def test_command_line_serves_until_sigterm(tmp_path):
    sock, pidfile = str(tmp_path / "xs.sock"), str(tmp_path / "xs.pid")
    proc = subprocess.Popen([sys.executable, "-m", "xenrules.sandbox.xsserver",
                             "--socket", sock, "--pidfile", pidfile],
                            cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        assert "listening" in proc.stderr.readline()
        with open(pidfile) as f:
            assert int(f.read()) == proc.pid
        env = dict(os.environ, XENSTORED_PATH=sock)
        assert subprocess.run(["xenstore-write", "/a", "1"], env=env, timeout=10).returncode == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not os.path.exists(sock) and not os.path.exists(pidfile)
    finally:
        proc.kill()
        proc.wait()


def test_command_line_help_exits_zero():
    out = subprocess.run([sys.executable, "-m", "xenrules.sandbox.xsserver", "--help"],
                         cwd=REPO, capture_output=True, text=True, timeout=10)
    assert out.returncode == 0
    assert "--socket" in out.stdout


def test_stopped_server_closes_client_connections(tmp_path):
    path = str(tmp_path / "xs.sock")
    server = XenstoreServer(path).start()
    raw = Raw(path)
    raw.request(DIRECTORY, b"/\0")
    started = time.monotonic()
    server.stop()
    with pytest.raises((ConnectionError, OSError)):
        raw.request(READ, b"/\0")
    assert time.monotonic() - started < 5


def test_stall_answers_nothing_until_it_ends_then_serves_the_waiting_request(server):
    server.load({"/vm/name": "guest1"})
    raw = Raw(server.socket_path)
    server.stall(60)
    raw.sock.sendall(HEADER.pack(READ, 7, 0, len(b"/vm/name\0")) + b"/vm/name\0")
    raw.sock.settimeout(0.5)
    with pytest.raises(socket.timeout):
        raw.receive()
    server.stall(0)
    raw.sock.settimeout(5)
    assert raw.receive() == (READ, 7, 0, b"guest1")
