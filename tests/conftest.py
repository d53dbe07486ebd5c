"""Shared fixtures: a XenStore server, a simulated dom0, the original scripts.

Nothing here skips: a test that needs root, network namespaces or the
original scripts fails loudly when they are missing, so a broken machine can
never pass as green.
"""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

from xenrules.sandbox.dom0 import SimulatedDom0  # noqa: E402
from xenrules.sandbox.originals import originals_dir  # noqa: E402


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT


@pytest.fixture(scope="session")
def originals():
    """Directory of Debian's original hotplug scripts (fetched on first use).
    Raises, hence errors the test, when they cannot be had."""
    return originals_dir()


def _netns_list():
    proc = subprocess.run(["ip", "netns", "list"], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}


class _XsServers:
    """Starts XenstoreServers on short socket paths (sun_path is 108 bytes,
    pytest's tmp_path can be longer) and stops them all at the end."""

    def __init__(self):
        from xenrules.sandbox.xsserver import XenstoreServer
        self._cls = XenstoreServer
        self.dir = tempfile.mkdtemp(prefix="xr-xs-", dir="/tmp")
        self.servers = []

    def new(self):
        path = os.path.join(self.dir, "xs%d.sock" % len(self.servers))
        server = self._cls(path)
        server.start()
        self.servers.append(server)
        return server

    def close(self):
        try:
            for server in self.servers:
                server.stop()
            for server in self.servers:
                assert not os.path.exists(server.socket_path), \
                    "xenstore socket left behind: %s" % server.socket_path
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def xs_servers():
    servers = _XsServers()
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture
def xs_server(xs_servers):
    """A XenStore server on a fresh unix socket (server.socket_path)."""
    return xs_servers.new()


class _Dom0Factory:
    """Builds SimulatedDom0s, each with its own XenStore; destroys them all."""

    def __init__(self, xs_servers):
        self.xs_servers = xs_servers
        self.made = []

    def __call__(self, bridges=("xenbr0",), server=None):
        server = server or self.xs_servers.new()
        dom0 = SimulatedDom0(server.socket_path, bridges=bridges)
        dom0.xs_server = server
        self.made.append(dom0)
        return dom0

    def close(self):
        for dom0 in self.made:
            dom0.destroy()
        left = {d.netns for d in self.made} & _netns_list()
        assert not left, "network namespaces left behind: %s" % sorted(left)


@pytest.fixture
def dom0_factory(xs_servers):
    """Callable(bridges=("xenbr0",)) -> a fresh SimulatedDom0 with its own
    XenStore. Everything made is destroyed after the test, even on failure."""
    factory = _Dom0Factory(xs_servers)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def dom0(dom0_factory, xs_server):
    """A SimulatedDom0 (bridge xenbr0) talking to the ``xs_server`` fixture."""
    return dom0_factory(server=xs_server)


@pytest.fixture
def ev(dom0, tmp_path):
    """Rule files and xenrules events for vif1.0 in a simulated dom0 (tests/events.py)."""
    from events import Events
    dom0.add_vif(1, 0)
    return Events(dom0, tmp_path)
