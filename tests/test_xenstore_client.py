"""The engine's XenStore adapter (xenrules.xenstore) against the simulated
server, against servers that misbehave, and with no server at all."""

import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from xenrules.errors import XenstoreError
from xenrules.sandbox.xsserver import XenstoreServer
from xenrules.xenstore import XenStore

pytest.importorskip("pyxs")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def server(tmp_path):
    with XenstoreServer(str(tmp_path / "xs.sock")) as srv:
        yield srv


@pytest.fixture
def xs(server):
    store = XenStore(server.socket_path, timeout=5)
    yield store
    store.close()


class FakeServer:
    """A listening socket that accepts and then stays silent (or hangs up)."""

    def __init__(self, path, hang_up=False):
        self.path, self.hang_up = path, hang_up
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.accepted = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.hang_up:
                conn.recv(4096)
                conn.close()
            else:
                self.accepted.append(conn)  # keep it open, never answer

    def close(self):
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def test_read_returns_the_value_and_none_when_missing(server, xs):
    server.load({"/vm/name": "guest1"})
    assert xs.read("/vm/name") == "guest1"
    assert xs.read("/vm/missing") is None
    assert xs.read("/no/parent/either") is None


def test_write_is_seen_by_the_server_and_creates_parents(server, xs):
    xs.write("/backend/vif/1/0/hotplug-status", "connected")
    snap = server.snapshot()
    assert snap["/backend/vif/1/0/hotplug-status"] == "connected"
    assert snap["/backend/vif/1"] == ""


def test_relative_paths_resolve_under_dom0(server, xs):
    xs.write("backend/vif/1/0/hotplug-status", "connected")
    assert server.snapshot()["/local/domain/0/backend/vif/1/0/hotplug-status"] == "connected"
    assert xs.read("/local/domain/0/backend/vif/1/0/hotplug-status") == "connected"
    assert xs.list("backend/vif/1") == ["0"]


def test_remove_deletes_the_subtree(server, xs):
    server.load({"/a/b/c": "1", "/a/d": "2", "/keep": "3"})
    xs.remove("/a")
    assert server.snapshot() == {"/keep": "3"}


def test_remove_of_a_missing_node_is_not_an_error(server, xs):
    server.load({"/a": ""})
    xs.remove("/a/missing")
    xs.remove("/missing/and/parent/too")


def test_list_returns_children_in_creation_order_and_empty_when_missing(server, xs):
    server.load({"/d/zeta": "", "/d/alpha": "", "/d/mid": ""})
    assert xs.list("/d") == ["zeta", "alpha", "mid"]
    assert xs.list("/d/zeta") == []
    assert xs.list("/missing") == []


def test_values_round_trip_utf8_and_newlines(server, xs):
    # pyxs.Client would refuse these; hotplug-error messages can hold them.
    message = "losetup failed:\nfichier « disk.img » introuvable"
    xs.write("/backend/vbd/3/51712/hotplug-error", message)
    assert xs.read("/backend/vbd/3/51712/hotplug-error") == message
    assert server.snapshot()["/backend/vbd/3/51712/hotplug-error"] == message


def test_empty_value_is_an_empty_string_not_none(server, xs):
    xs.write("/hotplug-status", "")
    assert xs.read("/hotplug-status") == ""


@pytest.mark.skipif(shutil.which("xenstore-read") is None, reason="xenstore-utils not installed")
def test_writes_are_visible_to_debian_xenstore_read(server, xs):
    xs.write("backend/vif/2/0/hotplug-status", "connected")
    env = dict(os.environ, XENSTORED_PATH=server.socket_path)
    out = subprocess.run(["xenstore-read", "backend/vif/2/0/hotplug-status"],
                         env=env, capture_output=True, text=True, timeout=10)
    assert out.stdout == "connected\n"


def test_the_socket_defaults_to_xenstored_path(server, monkeypatch):
    monkeypatch.setenv("XENSTORED_PATH", server.socket_path)
    with XenStore() as store:
        assert store.path == server.socket_path
        store.write("/from-env", "1")
    assert server.snapshot()["/from-env"] == "1"


def test_the_socket_defaults_to_the_xenstored_rundir(monkeypatch):
    monkeypatch.delenv("XENSTORED_PATH", raising=False)
    monkeypatch.setenv("XENSTORED_RUNDIR", "/run/somewhere")
    assert XenStore().path == "/run/somewhere/socket"


def test_missing_socket_raises_xenstore_error_naming_it(tmp_path):
    path = str(tmp_path / "absent.sock")
    with pytest.raises(XenstoreError, match="absent.sock"):
        XenStore(path, timeout=2).read("/x")


def test_connection_refused_raises_xenstore_error(tmp_path):
    path = str(tmp_path / "dead.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)  # the file exists, nobody listens
    try:
        with pytest.raises(XenstoreError, match="dead.sock.*refused"):
            XenStore(path, timeout=2).write("/x", "1")
    finally:
        dead.close()


def test_silent_server_raises_xenstore_error_within_the_timeout(tmp_path):
    fake = FakeServer(str(tmp_path / "silent.sock"))
    try:
        store = XenStore(fake.path, timeout=0.5)
        started = time.monotonic()
        with pytest.raises(XenstoreError, match="silent.sock.*no reply within 0.5s"):
            store.read("/x")
        assert time.monotonic() - started < 2
    finally:
        fake.close()


def test_server_hanging_up_raises_xenstore_error(tmp_path):
    fake = FakeServer(str(tmp_path / "rude.sock"), hang_up=True)
    try:
        with pytest.raises(XenstoreError, match="rude.sock"):
            XenStore(fake.path, timeout=2).list("/x")
    finally:
        fake.close()


def test_invalid_path_raises_xenstore_error_before_sending(tmp_path):
    store = XenStore(str(tmp_path / "never-used.sock"))
    with pytest.raises(XenstoreError, match="invalid path"):
        store.write("/bad path", "x")
    with pytest.raises(XenstoreError, match="invalid path"):
        store.read("/trailing/")


def test_oversized_value_raises_xenstore_error(server, xs):
    with pytest.raises(XenstoreError, match="at most 4096"):
        xs.write("/big", "x" * 5000)
    assert xs.read("/big") is None  # and the connection is still usable


def test_reconnects_after_the_server_restarts(tmp_path):
    path = str(tmp_path / "xs.sock")
    store = XenStore(path, timeout=2)
    with XenstoreServer(path):
        store.write("/a", "1")
    with pytest.raises(XenstoreError):
        store.read("/a")
    with XenstoreServer(path) as again:
        again.load({"/a": "2"})
        assert store.read("/a") == "2"
    store.close()


def test_requests_import_neither_pyxs_nor_socket_py(server):
    # the wire protocol is spoken directly: an event pays for neither import
    server.load({"/x": "v"})
    code = ("import sys; from xenrules.xenstore import XenStore; "
            f"s = XenStore({server.socket_path!r}); print(s.read('/x')); "
            "print('pyxs' in sys.modules, 'socket' in sys.modules)")
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=REPO,
                         capture_output=True, text=True, timeout=10)
    assert out.stdout.split() == ["v", "False", "False"], out.stderr
