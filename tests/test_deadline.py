"""The event-wide deadline (deadline.py): whatever hangs, an event ends within it.

Each test makes one thing hang for real -- a XenStore that stops answering
(a proxy in front of the sandbox's server that swallows one request), a
server that accepts and never answers, a hook that sleeps, a restart
command that sleeps, a lock held by another process -- runs an event with a
small XENRULES_DEADLINE, and checks that the event ended within the deadline
plus a generous margin (a sanity bound, not a timing measurement), that the
error names what hung, and that what the event did was reverted.
"""

import os
import socket
import struct
import subprocess
import textwrap
import threading
import time

import pytest

from events import BACK, wait_for, why
from xenrules import config, deadline
from xenrules.sandbox.dom0 import PYTHON, REPO_ROOT

pytestmark = pytest.mark.netns

DEADLINE = 3
MARGIN = 5              # generous: the machine is shared; the old code took 10 to 30 s more
STALL = "xr-w9d-stall"  # the node whose read the proxy never answers
HEADER = struct.Struct("=IIII")
REL = BACK.replace("/local/domain/0/", "", 1)   # the backend as the event names it (XENBUS_PATH)


def _recv(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError
        data += chunk
    return data


class StallingProxy:
    """A XenStore socket that forwards each request to the real server, except
    one naming STALL: that connection then hears nothing, ever."""

    def __init__(self, path, upstream):
        self.path, self.upstream = path, upstream
        self.stalled = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            up.connect(self.upstream)
            while True:
                head = _recv(conn, HEADER.size)
                body = _recv(conn, HEADER.unpack(head)[3])
                path = body.split(b"\0")[0]
                if path.endswith(b"/" + STALL.encode()):
                    self.stalled.append(path.decode())
                    conn.recv(1)   # until the client gives up and closes
                    return
                up.sendall(head + body)
                reply = _recv(up, HEADER.size)
                conn.sendall(reply + _recv(up, HEADER.unpack(reply)[3]))
        except OSError:
            pass
        finally:
            up.close()
            conn.close()

    def close(self):
        self.sock.close()
        for conn in self.conns:
            try:
                conn.close()
            except OSError:
                pass
        os.unlink(self.path)


class SilentServer:
    """Accepts connections and never answers a request."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        self.accepted = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.accepted:
            conn.close()
        os.unlink(self.path)


@pytest.fixture
def sockdir(xs_server):
    # beside the sandbox's socket: short enough for sun_path, removed with it
    return os.path.dirname(xs_server.socket_path)


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def marked_and_bridged(ev, dom0):
    """The rule's first two steps: a xenstore node written, vif1.0 on xenbr0."""
    return ('- xenstore.write: {path: "{backend}/xr-mark", value: "set"}\n'
            '- bridge.add_port: {bridge: xenbr0, dev: "{vif}"}\n')


def assert_reverted(ev, dom0):
    assert dom0.xs_read(BACK + "/xr-mark") is None, "the xenstore write was not reverted"
    assert dom0.links()["vif1.0"].get("master") is None, "vif1.0 was left on the bridge"


def run(ev, dom0, **env):
    env.setdefault("XENRULES_DEADLINE", str(DEADLINE))
    started = time.monotonic()
    proc = ev.dom0.run([PYTHON, "-m", "xenrules.hotplug", "xr-test", "online", "type_if=vif"],
                       ev.env(**env), timeout=60)
    return proc, time.monotonic() - started


def test_a_xenstore_that_stops_answering_mid_event_is_reverted_and_reported_in_time(
        ev, dom0, sockdir, xs_server):
    proxy = StallingProxy(os.path.join(sockdir, "proxy.sock"), xs_server.socket_path)
    try:
        ev.steps(marked_and_bridged(ev, dom0) + '- xenstore.read: {path: "{backend}/%s"}\n' % STALL)
        proc, took = run(ev, dom0, XENSTORED_PATH=proxy.path)
    finally:
        proxy.close()
    assert proc.returncode == 1, why(proc, ev)
    assert took < DEADLINE + MARGIN, f"the event took {took:.1f} s\n{why(proc, ev)}"
    assert proxy.stalled == [REL + "/" + STALL], why(proc, ev)
    error = dom0.xs_read(BACK + "/hotplug-error") or ""
    # named: the request, the node, and that the deadline ended it
    assert f"xenstore read '{REL}/{STALL}'" in error and "event deadline of 3 s" in error, error
    assert dom0.xs_read(BACK + "/hotplug-status") == "error"
    assert_reverted(ev, dom0)


def test_a_xenstore_that_accepts_but_never_answers_ends_the_event_in_time(ev, dom0, sockdir):
    silent = SilentServer(os.path.join(sockdir, "silent.sock"))
    try:
        # each of these requests waited 10 s on its own: 5 writes, then the report's 2
        ev.steps("".join('- xenstore.write: {path: "{backend}/xr-%d", value: "1"}\n' % i
                         for i in range(5)))
        proc, took = run(ev, dom0, XENSTORED_PATH=silent.path)
    finally:
        silent.close()
    assert proc.returncode == 1, why(proc, ev)
    assert took < DEADLINE + MARGIN, f"the event took {took:.1f} s\n{why(proc, ev)}"
    assert f"xenstore read '{REL}/xr-0' via {silent.path}: no reply (the event deadline " \
        "of 3 s passed)" in ev.log(), ev.log()


def test_a_missing_xenstore_socket_fails_at_once_naming_it(ev, dom0, sockdir):
    ev.steps('- xenstore.write: {path: "{backend}/xr-0", value: "1"}\n')
    missing = os.path.join(sockdir, "missing.sock")
    proc, took = run(ev, dom0, XENSTORED_PATH=missing)
    assert proc.returncode == 1, why(proc, ev)
    assert took < DEADLINE + MARGIN, f"the event took {took:.1f} s\n{why(proc, ev)}"
    assert f"cannot connect to xenstored at {missing}" in ev.log()


def test_a_hook_that_sleeps_is_killed_at_the_deadline_with_what_it_started(ev, dom0, tmp_path):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    pidfile = tmp_path / "sleep.pid"
    hook = hooks / "10-xr-w9d-sleep.hook"
    hook.write_text("sleep 600 & echo $! > %s; wait\n" % pidfile)
    hook.chmod(0o755)
    # the hook's own timeout (20 s) is more than the event has
    ev.steps(marked_and_bridged(ev, dom0) + '- hooks.run: {dir: "%s"}\n' % hooks)
    proc, took = run(ev, dom0)
    assert proc.returncode == 1, why(proc, ev)
    assert took < DEADLINE + MARGIN, f"the event took {took:.1f} s\n{why(proc, ev)}"
    error = dom0.xs_read(BACK + "/hotplug-error") or ""
    assert f"hook {hook} still running after" in error and "killed" in error \
        and "event deadline of 3 s passed" in error, error
    assert wait_for(lambda: not alive(int(pidfile.read_text()))), "the hook's sleep survived"
    assert_reverted(ev, dom0)


def test_a_restart_command_that_hangs_is_killed_as_a_group_at_the_deadline(ev, dom0, tmp_path):
    pidfile = tmp_path / "child.pid"
    command = "/bin/sh -c 'sleep 600 & echo $! > %s; wait'" % pidfile
    ev.steps(marked_and_bridged(ev, dom0) + '- dhcpd.restart: {command: "%s"}\n' % command)
    proc, took = run(ev, dom0)
    assert proc.returncode == 1, why(proc, ev)
    assert took < DEADLINE + MARGIN, f"the event took {took:.1f} s\n{why(proc, ev)}"
    error = dom0.xs_read(BACK + "/hotplug-error") or ""
    assert error.startswith("/bin/sh -c sleep 600") and "still running after" in error \
        and "killed; the event deadline of 3 s passed" in error, error
    assert wait_for(lambda: not alive(int(pidfile.read_text()))), "the command's child survived"
    assert_reverted(ev, dom0)


def test_a_lock_held_by_another_process_ends_the_event_naming_the_holder(ev, dom0):
    ev.lock_dir.mkdir()
    path = ev.lock_dir / "xr-w9d-lock"
    holder = subprocess.Popen(
        [PYTHON, "-c", "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(600)\n",
         str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        ev.steps(marked_and_bridged(ev, dom0) + "- lock.acquire: {name: xr-w9d-lock}\n")
        proc, took = run(ev, dom0)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 1, why(proc, ev)
    assert took < DEADLINE + MARGIN, f"the event took {took:.1f} s\n{why(proc, ev)}"
    error = dom0.xs_read(BACK + "/hotplug-error") or ""
    assert error == f"lock {path} held by pid {holder.pid}; the event deadline of 3 s passed", error
    assert_reverted(ev, dom0)


@pytest.mark.parametrize("value", ["abc", "0", "40", "1e3", "-5", "nan", "30\n"])
def test_a_bad_deadline_in_the_environment_is_refused_before_anything_changes(ev, dom0, value):
    ev.steps(marked_and_bridged(ev, dom0))
    proc, _ = run(ev, dom0, XENRULES_DEADLINE=value)
    assert proc.returncode == 1, why(proc, ev)
    error = dom0.xs_read(BACK + "/hotplug-error") or ""
    assert error.startswith("XENRULES_DEADLINE: deadline "), error
    assert_reverted(ev, dom0)


def test_the_settings_file_sets_the_deadline_and_check_warns_about_a_bad_one(tmp_path):
    conf = tmp_path / "xenrules.conf"
    conf.write_text("deadline = 12\n")
    assert deadline.from_env({"XENRULES_CONF": str(conf)}) == 12
    assert deadline.from_env({"XENRULES_CONF": str(conf), "XENRULES_DEADLINE": "5"}) == 5
    bad = tmp_path / "bad.conf"
    bad.write_text("deadline = 45\n")
    assert deadline.from_env({"XENRULES_CONF": str(bad)}) == deadline.DEFAULT
    conf = bad
    assert config.check_conf(str(conf)) == [
        f"{conf}:1: deadline = '45' is not a number of seconds from 1 to 39; using the default '30'"]


def test_the_revert_and_the_report_keep_a_share_of_the_budget():
    now = [100.0]
    budget = deadline.Budget(30, clock=lambda: now[0])
    assert budget.left() == 25            # the steps: all but the reserve (5 s)
    now[0] = 126.0
    assert budget.expired()
    budget.reverting()
    assert budget.left() == pytest.approx(2.75)   # the revert: up to 1.25 s before the end
    budget.reporting()
    assert budget.left() == pytest.approx(4.0)    # the report: up to the end itself
    now[0] = 131.0
    assert budget.left() == 0 and budget.expired()


def test_through_the_warm_helper_a_hanging_hook_is_killed_at_the_deadline(xs_server, tmp_path):
    from test_helper import LAUNCHER, Setup, wait_served
    s = Setup(xs_server, LAUNCHER)
    try:
        hooks = tmp_path / "hooks"
        hooks.mkdir()
        hook = hooks / "10-xr-w9d-sleep.hook"
        hook.write_text("sleep 600\n")
        hook.chmod(0o755)
        with open(os.path.join(s.dir, "rules", "50-test.yaml"), "w") as f:
            f.write("- rule: xr-w9d\n  match: {script: xr-write}\n  actions:\n    online:\n"
                    '      - xenstore.write: {path: "/xr-w9d/mark", value: "set"}\n'
                    '      - hooks.run: {dir: "%s"}\n' % hooks)
        s.start_helper()
        started = time.monotonic()
        pid, code, _out, err = s.run("xr-write", ["online"], XENRULES_DEADLINE=str(DEADLINE),
                                     XENBUS_PATH="/xr-w9d/backend")
        took = time.monotonic() - started
        wait_served(s, pid)
        assert pid in s.served(), f"not served by the helper: {err}\n{s.helper_output()}"
        assert code == 1, err
        assert took < DEADLINE + MARGIN, f"the event took {took:.1f} s"
        with __import__("xenrules.xenstore").xenstore.XenStore(xs_server.socket_path) as xs:
            error = xs.read("/xr-w9d/backend/hotplug-error") or ""
            assert xs.read("/xr-w9d/mark") is None, "the xenstore write was not reverted"
        assert f"hook {hook} still running after" in error \
            and "event deadline of 3 s passed" in error, error
    finally:
        s.close()
