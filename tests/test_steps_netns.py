"""Every step type, run by xenrules in a simulated dom0.

Each test writes a small rule file for the script `xr-test` into tmp_path,
sends one event through `python3 -m xenrules.hotplug` inside the dom0's
network namespace (with the libxl environment of vif1.0) and checks the real
end state: links with `ip -j`, xenstore with the server's snapshot, lock
files, the log file.
"""

import fcntl
import os
import threading
import time

import pytest

from xenrules.locking import HotplugLock
from events import BACK, SCRIPT, wait_for, why

pytestmark = pytest.mark.netns

PORT_MAC = "fe:ff:ff:ff:ff:ff"


def links(dom0):
    return dom0.state(xenstore=False)["links"]


def sysfs(dom0, path):
    """A file under /sys as the namespace sees it (ip netns exec remounts /sys)."""
    proc = dom0.run(["cat", path])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def assert_failed(proc, ev, xs_server, status="error"):
    snap = xs_server.snapshot()
    assert proc.returncode == 1, why(proc, ev)
    assert snap[BACK + "/hotplug-status"] == status
    return snap[BACK + "/hotplug-error"]


# -- xenstore.read -------------------------------------------------------------

def test_xenstore_read_of_an_existing_node_lets_the_event_go_on(ev, xs_server):
    ev.steps("""
        - xenstore.read: {path: "{backend}/mac"}
        - xenstore.write: {path: "{backend}/xr-after", value: reached}
    """)
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    snap = xs_server.snapshot()
    assert snap[BACK + "/xr-after"] == "reached"
    assert snap[BACK + "/hotplug-status"] == ""


def test_xenstore_read_of_a_missing_node_fails_the_event(ev, xs_server):
    ev.steps("""
        - xenstore.read: {path: "{backend}/xr-missing"}
        - xenstore.write: {path: "{backend}/xr-after", value: reached}
    """)
    proc = ev.run()
    message = assert_failed(proc, ev, xs_server)
    assert "backend/vif/1/0/xr-missing" in message
    assert BACK + "/xr-after" not in xs_server.snapshot()   # later steps never ran


# -- xenstore.write / xenstore.remove --------------------------------------------

def test_xenstore_write_creates_a_node_with_the_expanded_value(ev, xs_server):
    ev.steps("""
        - xenstore.write: {path: "{backend}/xr-key", value: "dom{domid}-dev{devid}-{vif}"}
        - xenstore.write: {path: "/local/domain/1/xr-abs", value: 42}
    """)
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    snap = xs_server.snapshot()
    assert snap[BACK + "/xr-key"] == "dom1-dev0-vif1.0"
    assert snap["/local/domain/1/xr-abs"] == "42"


def test_xenstore_write_overwrites_an_existing_node(ev, xs_server):
    ev.steps("""
        - xenstore.write: {path: "{backend}/bridge", value: xenbr7}
    """)
    assert xs_server.snapshot()[BACK + "/bridge"] == "xenbr0"
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    assert xs_server.snapshot()[BACK + "/bridge"] == "xenbr7"


def test_xenstore_remove_deletes_the_node_and_its_children(ev, xs_server):
    xs_server.load({BACK + "/xr-dir/a": "1", BACK + "/xr-dir/b/c": "2", BACK + "/xr-keep": "k"})
    ev.steps("""
        - xenstore.remove: {path: "{backend}/xr-dir"}
    """)
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    snap = xs_server.snapshot()
    assert not [p for p in snap if p.startswith(BACK + "/xr-dir")]
    assert snap[BACK + "/xr-keep"] == "k"
    assert snap[BACK + "/mac"]            # the rest of the backend is untouched


def test_xenstore_remove_of_a_missing_node_succeeds(ev, xs_server):
    before = xs_server.snapshot()
    ev.steps("""
        - xenstore.remove: {path: "{backend}/xr-never-there"}
        - xenstore.write: {path: "{backend}/xr-after", value: reached}
    """)
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    after = xs_server.snapshot()
    assert after.pop(BACK + "/xr-after") == "reached"
    assert after == before


# -- link.rename -------------------------------------------------------------------

def test_link_rename_renames_the_device(ev, dom0):
    before = dom0.links()["vif1.0"]
    ev.steps("""
        - link.rename: {dev: "{vif}", to: xrweb0}
    """)
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    after = dom0.links()
    assert "vif1.0" not in after
    assert after["xrweb0"]["ifindex"] == before["ifindex"]      # the same device
    assert after["xrweb0"]["address"] == before["address"]


def test_link_rename_onto_an_existing_name_is_fatal_and_leaves_the_other_link(ev, dom0, xs_server):
    dom0.add_vif(2, 0)
    dom0.ip("link", "set", "dev", "vif2.0", "master", "xenbr0")
    dom0.ip("link", "set", "dev", "vif2.0", "up")
    before = links(dom0)
    ev.steps("""
        - link.rename: {dev: "{vif}", to: vif2.0}
    """)
    proc = ev.run()
    message = assert_failed(proc, ev, xs_server)
    assert "already exists" in message
    assert links(dom0) == before          # neither device changed
    assert dom0.links()["vif2.0"]["link"] == "g2.0"


# -- link.prepare_port ---------------------------------------------------------------

def test_link_prepare_port_downs_sets_port_mac_and_flushes_addresses(ev, dom0):
    dom0.ip("link", "set", "dev", "vif1.0", "up")
    dom0.ip("address", "add", "192.0.2.1/24", "dev", "vif1.0")
    dom0.ip("address", "add", "2001:db8::1/64", "dev", "vif1.0")
    before = links(dom0)["vif1.0"]
    assert before["up"] and before["mac"] != PORT_MAC
    assert before["addresses"] == ["192.0.2.1/24", "2001:db8::1/64"]
    ev.steps("""
        - link.prepare_port: {dev: "{vif}"}
    """)
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    after = links(dom0)["vif1.0"]
    assert after["up"] is False
    assert after["mac"] == PORT_MAC
    assert after["addresses"] == []
    assert not [r for r in dom0.state(xenstore=False)["routes"] if "vif1.0" in r]


# -- link.mtu ------------------------------------------------------------------------

def test_link_mtu_sets_the_mtu(ev, dom0):
    assert links(dom0)["vif1.0"]["mtu"] == 1500
    ev.steps("""
        - link.mtu: {dev: "{vif}", mtu: "1400"}
    """)
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    assert links(dom0)["vif1.0"]["mtu"] == 1400


@pytest.mark.parametrize("mtu", ["67", "14x0", "70000", "-1"])
def test_link_mtu_invalid_value_fails_and_keeps_the_mtu(ev, dom0, xs_server, mtu):
    ev.steps("""
        - link.mtu: {dev: "{vif}", mtu: "%s"}
    """ % mtu)
    proc = ev.run()
    message = assert_failed(proc, ev, xs_server)
    assert "MTU" in message and mtu in message
    assert links(dom0)["vif1.0"]["mtu"] == 1500


def test_link_mtu_of_a_missing_device_fails(ev, dom0, xs_server):
    ev.steps("""
        - link.mtu: {dev: vif9.9, mtu: 1400}
    """)
    message = assert_failed(ev.run(), ev, xs_server)
    assert "vif9.9" in message


# -- link.up / link.down -----------------------------------------------------------------

def test_link_up_sets_the_device_up(ev, dom0):
    assert links(dom0)["vif1.0"]["up"] is False
    ev.steps("""
        - link.up: {dev: "{vif}"}
    """)
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    assert links(dom0)["vif1.0"]["up"] is True
    assert links(dom0)["g1.0"]["up"] is False      # the peer is not touched


def test_link_down_sets_the_device_down(ev, dom0):
    dom0.ip("link", "set", "dev", "vif1.0", "up")
    assert links(dom0)["vif1.0"]["up"] is True
    ev.steps("""
        - link.down: {dev: "{vif}"}
    """, action="offline")
    proc = ev.run(["offline", "type_if=vif"])
    assert proc.returncode == 0, why(proc, ev)
    assert links(dom0)["vif1.0"]["up"] is False


# -- bridge.require --------------------------------------------------------------------

def test_bridge_require_of_an_existing_bridge_lets_the_event_go_on(ev, xs_server):
    ev.steps("""
        - bridge.require: {name: xenbr0}
        - xenstore.write: {path: "{backend}/xr-after", value: reached}
    """)
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    assert xs_server.snapshot()[BACK + "/xr-after"] == "reached"


def test_bridge_require_of_a_missing_bridge_fails_with_a_message(ev, dom0, xs_server):
    before = links(dom0)
    ev.steps("""
        - bridge.require: {name: xenbr9}
        - xenstore.write: {path: "{backend}/xr-after", value: reached}
    """)
    proc = ev.run()
    message = assert_failed(proc, ev, xs_server)
    assert message == "Could not find bridge device xenbr9"
    assert "Could not find bridge device xenbr9" in ev.log()
    assert BACK + "/xr-after" not in xs_server.snapshot()
    assert links(dom0) == before


def test_bridge_require_of_a_device_that_is_not_a_bridge_fails(ev, xs_server):
    ev.steps("""
        - bridge.require: {name: "{vif}"}
    """)
    message = assert_failed(ev.run(), ev, xs_server)
    assert "vif1.0" in message and "not a bridge" in message


# -- bridge.create ------------------------------------------------------------------------

def test_bridge_create_makes_a_bridge_with_stp_off_and_no_forward_delay(ev, dom0):
    ev.steps("""
        - bridge.create: {name: xrbr1}
    """)
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    st = dom0.state(xenstore=False)
    assert st["links"]["xrbr1"]["kind"] == "bridge"
    assert st["bridges"]["xrbr1"]["ports"] == []
    assert sysfs(dom0, "/sys/class/net/xrbr1/bridge/stp_state") == "0"
    assert sysfs(dom0, "/sys/class/net/xrbr1/bridge/forward_delay") == "0"


def test_bridge_create_honours_stp_and_forward_delay(ev, dom0):
    ev.steps("""
        - bridge.create: {name: xrbr2, stp: true, forward_delay: 4}
    """)
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    assert sysfs(dom0, "/sys/class/net/xrbr2/bridge/stp_state") != "0"
    assert sysfs(dom0, "/sys/class/net/xrbr2/bridge/forward_delay") == "400"   # centiseconds


def test_bridge_create_leaves_an_existing_bridge_alone(ev, dom0):
    dom0.ip("link", "set", "dev", "xenbr0", "type", "bridge", "forward_delay", "700")
    dom0.ip("link", "set", "dev", "vif1.0", "master", "xenbr0")
    before = dom0.state(xenstore=False)
    ev.steps("""
        - bridge.create: {name: xenbr0}
    """)
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    assert dom0.state(xenstore=False) == before
    assert sysfs(dom0, "/sys/class/net/xenbr0/bridge/forward_delay") == "700"
    assert before["bridges"]["xenbr0"]["ports"] == ["vif1.0"]


def test_bridge_create_over_a_device_that_is_not_a_bridge_fails(ev, dom0, xs_server):
    before = links(dom0)
    ev.steps("""
        - bridge.create: {name: "{vif}"}
    """)
    assert_failed(ev.run(), ev, xs_server)
    assert links(dom0) == before
    assert links(dom0)["vif1.0"]["kind"] == "veth"


# -- bridge.add_port / bridge.del_port --------------------------------------------------

def test_bridge_add_port_enslaves_the_device(ev, dom0):
    ev.steps("""
        - bridge.add_port: {bridge: xenbr0, dev: "{vif}"}
    """)
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    st = dom0.state(xenstore=False)
    assert st["links"]["vif1.0"]["master"] == "xenbr0"
    assert st["bridges"]["xenbr0"]["ports"] == ["vif1.0"]


def test_bridge_add_port_moves_a_device_from_another_bridge(ev, dom0):
    dom0.add_bridge("xenbr1")
    dom0.ip("link", "set", "dev", "vif1.0", "master", "xenbr1")
    ev.steps("""
        - bridge.add_port: {bridge: xenbr0, dev: "{vif}"}
    """)
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    st = dom0.state(xenstore=False)
    assert st["bridges"]["xenbr0"]["ports"] == ["vif1.0"]
    assert st["bridges"]["xenbr1"]["ports"] == []


def test_bridge_add_port_to_a_missing_bridge_fails(ev, dom0, xs_server):
    ev.steps("""
        - bridge.add_port: {bridge: xenbr9, dev: "{vif}"}
    """)
    message = assert_failed(ev.run(), ev, xs_server)
    assert "xenbr9" in message
    assert links(dom0)["vif1.0"]["master"] is None


def test_bridge_del_port_releases_the_device(ev, dom0):
    dom0.ip("link", "set", "dev", "vif1.0", "master", "xenbr0")
    assert links(dom0)["vif1.0"]["master"] == "xenbr0"
    ev.steps("""
        - bridge.del_port: {bridge: xenbr0, dev: "{vif}"}
    """, action="offline")
    proc = ev.run(["offline", "type_if=vif"])
    assert proc.returncode == 0, why(proc, ev)
    st = dom0.state(xenstore=False)
    assert st["links"]["vif1.0"]["master"] is None
    assert st["bridges"]["xenbr0"]["ports"] == []


def test_bridge_del_port_leaves_a_device_on_another_bridge(ev, dom0):
    dom0.add_bridge("xenbr1")
    dom0.ip("link", "set", "dev", "vif1.0", "master", "xenbr1")
    ev.steps("""
        - bridge.del_port: {bridge: xenbr0, dev: "{vif}"}
    """, action="offline")
    proc = ev.run(["offline", "type_if=vif"])
    assert proc.returncode == 0, why(proc, ev)
    assert links(dom0)["vif1.0"]["master"] == "xenbr1"


# -- lock.acquire / lock.release ------------------------------------------------------

def _lock_is_held(path):
    """True when someone holds the flock on the file at path (False if absent)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)     # closing drops a flock we may have got
    return False


class Background:
    """An event run in a thread, so the test can look at it while it runs."""

    def __init__(self, ev, *args, **kw):
        self.result = None
        self.thread = threading.Thread(target=self._run, args=(ev,) + args, kwargs=kw, daemon=True)
        self.thread.start()

    def _run(self, ev, *args, **kw):
        self.result = ev.run(*args, **kw)

    def running(self):
        return self.thread.is_alive()

    def wait(self, timeout=45):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the event did not finish"
        return self.result


def test_lock_is_held_between_acquire_and_release_and_removed_after(ev, xs_server):
    # The test holds two "gate" locks of its own, so the event stops at known
    # points: after taking xr-lock (waiting for gate1), and after releasing
    # it (waiting for gate2).
    lock_dir = str(ev.lock_dir)
    held = os.path.join(lock_dir, "xr-lock")
    gate1, gate2 = HotplugLock(lock_dir, "xr-gate1"), HotplugLock(lock_dir, "xr-gate2")
    gate1.acquire()
    gate2.acquire()
    ev.steps("""
        - lock.acquire: {name: xr-lock}
        - lock.acquire: {name: xr-gate1}
        - lock.release: {name: xr-lock}
        - lock.acquire: {name: xr-gate2}
        - xenstore.write: {path: "{backend}/xr-after", value: reached}
    """)
    try:
        bg = Background(ev)
        # during: the lock file exists and the event holds its flock
        assert wait_for(lambda: _lock_is_held(held)), "xenrules never took xr-lock"
        assert os.path.exists(held) and bg.running()
        gate1.release()
        # after lock.release, while the event still runs: file gone
        assert wait_for(lambda: not os.path.exists(held)), "xr-lock not released"
        time.sleep(0.2)
        assert bg.running(), "the event should still wait for xr-gate2"
        assert BACK + "/xr-after" not in xs_server.snapshot()
        gate2.release()
        proc = bg.wait()
    finally:
        gate1.release()
        gate2.release()
    assert proc.returncode == 0, why(proc, ev)
    assert xs_server.snapshot()[BACK + "/xr-after"] == "reached"
    # every lock file is gone: released by the step or at the end of the event
    assert os.listdir(lock_dir) == []


def test_lock_acquire_waits_while_another_holder_has_the_lock(ev, xs_server):
    lock = HotplugLock(str(ev.lock_dir), "xr-busy")
    lock.acquire()
    ev.steps("""
        - lock.acquire: {name: xr-busy}
        - xenstore.write: {path: "{backend}/xr-after", value: reached}
        - lock.release: {name: xr-busy}
    """)
    try:
        bg = Background(ev)
        time.sleep(1.5)
        assert bg.running(), "the event went on while the lock was held"
        assert BACK + "/xr-after" not in xs_server.snapshot()
        lock.release()
        proc = bg.wait()
    finally:
        lock.release()
    assert proc.returncode == 0, why(proc, ev)
    assert xs_server.snapshot()[BACK + "/xr-after"] == "reached"
    assert not os.path.exists(ev.lock_dir / "xr-busy")


def test_lock_not_released_by_the_rule_is_released_when_the_event_ends(ev):
    ev.steps("""
        - lock.acquire: {name: xr-forgotten}
    """)
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    assert ev.lock_dir.is_dir()               # the step did take it there
    assert not os.path.exists(ev.lock_dir / "xr-forgotten")
    assert not _lock_is_held(ev.lock_dir / "xr-forgotten")


# -- hotplug.success / hotplug.error / hotplug.busy / log -----------------------------

def test_hotplug_success_writes_connected(ev, xs_server):
    assert xs_server.snapshot()[BACK + "/hotplug-status"] == ""
    ev.steps("""
        - hotplug.success:
    """)
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    snap = xs_server.snapshot()
    assert snap[BACK + "/hotplug-status"] == "connected"
    assert BACK + "/hotplug-error" not in snap


def test_hotplug_error_fails_with_the_message(ev, xs_server):
    ev.steps("""
        - hotplug.error: {message: "no way for {vif}"}
        - xenstore.write: {path: "{backend}/xr-after", value: reached}
    """)
    proc = ev.run()
    message = assert_failed(proc, ev, xs_server)
    assert message == "no way for vif1.0"
    assert BACK + "/xr-after" not in xs_server.snapshot()


def test_hotplug_busy_reports_busy(ev, xs_server):
    ev.steps("""
        - hotplug.busy: {message: "device in use by {vif}"}
    """)
    proc = ev.run()
    message = assert_failed(proc, ev, xs_server, status="busy")
    assert message == "device in use by vif1.0"


def test_log_step_writes_its_line_to_the_log_file(ev):
    ev.steps("""
        - log: {message: "hello from {vif} of dom{domid}", level: warning}
        - log: {message: "xr-invisible-debug", level: debug}
    """)
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    lines = ev.log().splitlines()
    mine = [l for l in lines if "hello from vif1.0 of dom1" in l]
    assert len(mine) == 1, lines
    assert " %s[" % SCRIPT in mine[0] and "warning: hello from vif1.0 of dom1" in mine[0]
    assert "xr-invisible-debug" not in ev.log()       # below the default level (info)


def test_log_step_debug_line_appears_at_debug_level(ev):
    ev.steps("""
        - log: {message: "xr-visible-debug", level: debug}
    """)
    proc = ev.run(XENRULES_LOG_LEVEL="debug")
    assert proc.returncode == 0, why(proc, ev)
    assert "debug: xr-visible-debug" in ev.log()


# -- when: and on_error: -----------------------------------------------------------------

def test_when_false_skips_the_step_and_when_true_runs_it(ev, dom0, xs_server):
    ev.steps("""
        - link.up: {dev: "{vif}", when: {equals: {vif: vif9.9}}}
        - xenstore.write: {path: "{backend}/xr-skipped", value: x, when: {unset: vif}}
        - xenstore.write: {path: "{backend}/xr-ran", value: x, when: {set: vif}}
    """)
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    snap = xs_server.snapshot()
    assert BACK + "/xr-skipped" not in snap
    assert snap[BACK + "/xr-ran"] == "x"
    assert links(dom0)["vif1.0"]["up"] is False
    assert "1 steps done, 2 skipped" in ev.log()


def test_on_error_ignore_goes_on_after_a_failing_step(ev, dom0, xs_server):
    ev.steps("""
        - bridge.require: {name: xenbr9, on_error: ignore}
        - link.mtu: {dev: "{vif}", mtu: bogus, on_error: ignore}
        - link.up: {dev: "{vif}"}
        - hotplug.success:
    """)
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    snap = xs_server.snapshot()
    assert snap[BACK + "/hotplug-status"] == "connected"
    assert BACK + "/hotplug-error" not in snap
    assert links(dom0)["vif1.0"]["up"] is True
    assert links(dom0)["vif1.0"]["mtu"] == 1500


def test_on_error_busy_reports_a_failing_step_as_busy(ev, xs_server):
    ev.steps("""
        - bridge.require: {name: xenbr9, on_error: busy}
    """)
    message = assert_failed(ev.run(), ev, xs_server, status="busy")
    assert "xenbr9" in message


def test_a_kernel_refusal_in_a_link_step_is_a_step_error_saying_what_failed():
    from pyroute2.netlink.exceptions import NetlinkError

    from xenrules.errors import StepError
    from xenrules.steps.netlink import call

    def refuse():
        raise NetlinkError(17, "File exists")
    with pytest.raises(StepError, match="ip link add x failed: File exists"):
        call("ip link add x", refuse)
