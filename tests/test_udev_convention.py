"""The udev convention of Xen 4.1 (Debian Wheezy): `vif-setup` dispatches to $script.

Xen 4.1's xen-backend.rules ran `/etc/xen/scripts/vif-setup online|offline
type_if=vif` for a netback vif, with the uevent's environment (XENBUS_TYPE,
XENBUS_PATH relative, XENBUS_BASE_PATH, and netback's `script` and `vif`;
udev adds ACTION), and `vif-setup add type_if=tap` for a qemu tap (INTERFACE
=tapD.N, no `script`). vif-setup execs $script, or vif-bridge without one.

For every vif rule set shipped in rules.d (whatever exists when the tests
run; vif-bridge at least), each test builds two identical sandboxes, runs
the same event through xenrules once as the libxl call of the script itself
and once through vif-setup in udev's environment, and requires the same
rule to run and the same end state (links, addresses, routes, sysctls,
firewall, xenstore, exit codes). Whether that end state equals the original
script's is the business of each family's differential tests.

Each run sees a private copy of the family's own rule file (plus
50-vif-bridge.yaml, vif-setup's default): one family's broken file must not
make another family's test fall back to the originals.
"""
import dataclasses
import os
import re
import shutil

import pytest

from differential import Event, comparable, explain, normalize, run_events
from xenrules.sandbox.dom0 import REPO_ROOT, SCRIPT_DIR

pytestmark = pytest.mark.netns

RULES_DIR = os.path.join(REPO_ROOT, "rules.d")
BACK = "/local/domain/0/backend/vif/1/0"


def vif_families():
    """The vif scripts that have a shipped rule file: 50-vif-<name>.yaml."""
    found = (re.fullmatch(r"50-(vif-[a-z0-9]+)\.yaml", name) for name in os.listdir(RULES_DIR))
    return sorted(m.group(1) for m in found if m)


FAMILIES = vif_families()


OVS = "vif-openvswitch"


def dom0_for(family):
    """A dom0 every vif family can work in: bridge xenbr0 (an Open vSwitch
    bridge for vif-openvswitch), an uplink eth0 with an address (vif-route's
    dom0 address), and vif1.0 whose backend names the family's script and
    gives the guest an address."""
    def setup(d):
        if family != OVS:
            d.add_bridge("xenbr0")
        d.ip("link", "add", "name", "eth0", "address", "02:58:99:00:01:01", "type", "veth",
             "peer", "name", "eth0p", "address", "02:58:99:00:01:02")
        d.ip("address", "add", "192.0.2.1/24", "dev", "eth0")
        d.ip("link", "set", "dev", "eth0", "up")
        d.ip("link", "set", "dev", "eth0p", "up")
        d.add_vif(1, 0, ip="10.0.0.5", script=family)
        # qemu's tap as Xen 4.1's udev saw it: tap<domid>.<devid>
        d.ip("tuntap", "add", "dev", "tap1.0", "mode", "tap")
        d.ip("link", "set", "dev", "tap1.0", "address", "02:58:54:00:01:00")
    return setup


@dataclasses.dataclass
class UdevEvent(Event):
    """vif-setup as Xen 4.1's xen-backend.rules runs it, in udev's environment."""
    script: str = "vif-setup"
    target: str = ""            # $script from netback's uevent ("" for a tap: none)

    def environment(self, dom0):
        if self.type_if == "tap":
            env = {"INTERFACE": "tap%d.%d" % (self.domid, self.devid), "SUBSYSTEM": "net"}
        else:
            env = {"XENBUS_TYPE": "vif", "XENBUS_PATH": "backend/vif/%d/%d" % (self.domid, self.devid),
                   "XENBUS_BASE_PATH": "backend", "vif": "vif%d.%d" % (self.domid, self.devid),
                   "SUBSYSTEM": "xen-backend"}
        if self.target:
            env["script"] = os.path.join(SCRIPT_DIR, self.target)
        if hasattr(dom0, "ovs"):
            env.update(dom0.ovs.env())     # where its private ovsdb is (OVS_RUNDIR)
        env.update({"ACTION": self.args[0], "XENSTORED_PATH": dom0.xenstore_socket})
        env.update(self.env)
        return env


def direct(family, *args, type_if="vif", env=None):
    """The libxl call of the script itself (libxl_linux.c's environment)."""
    return Event(tuple(args), script=family, type_if=type_if, env=dict(env or {}))


def udev(family, *args, type_if="vif"):
    return UdevEvent(tuple(args), type_if=type_if, target=family)


class _Scenario:
    def __init__(self, events):
        self.events = events


@pytest.fixture
def new_dom0(dom0_factory, xs_servers):
    """Callable(family) -> a fresh dom0 for that family: with its own Open
    vSwitch (ovsdb-server and a userspace ovs-vswitchd) for vif-openvswitch.
    Everything made is destroyed after the test."""
    made = []

    def make(family):
        if family == OVS:
            from xenrules.sandbox.ovs import ovs_dom0
            dom0 = ovs_dom0(xs_servers.new().socket_path)
            made.append(dom0)
        else:
            dom0 = dom0_factory(bridges=())
        dom0_for(family)(dom0)
        return dom0
    yield make
    for dom0 in made:
        dom0.destroy()


def run_both(new_dom0, tmp_path, family, direct_events, udev_events):
    """Two identical sandboxes; the direct events through xenrules in one,
    the udev events in the other. Returns (direct, udev) states, each with
    "rules": the rule that ran for each event, from the xenrules log."""
    rules = tmp_path / "rules.d"
    rules.mkdir()
    for name in {"vif-bridge", family}:
        shutil.copy(os.path.join(RULES_DIR, "50-%s.yaml" % name), rules)
    states = []
    for name, events in (("direct", direct_events), ("udev", udev_events)):
        dom0 = new_dom0(family)
        log_file = tmp_path / ("%s.log" % name)
        ovs_rundir = tmp_path / "no-ovs"     # no ovsdb there: never touch the host's
        ovs_rundir.mkdir(exist_ok=True)
        for ev in events:
            ev.env["XENRULES_LOG_FILE"] = str(log_file)
            if not hasattr(dom0, "ovs"):
                ev.env["OVS_RUNDIR"] = str(ovs_rundir)
        start = without_operstate(normalize(dom0.state(), dom0))
        if states:
            assert start == states[0]["start"], "the two sandboxes differ before any event"

        def runner(script, args, env, dom0=dom0):
            return dom0.run_xenrules(script, args, env, rules_path=str(rules))

        outcomes, results = run_events(dom0, _Scenario(events), runner)
        state = without_operstate(normalize(dom0.state(), dom0))
        state["outcomes"] = [{"exit": o["exit"], "timed_out": o["timed_out"]} for o in outcomes]
        state["start"] = start
        text = log_file.read_text() if log_file.exists() else ""
        state["rules"] = re.findall(r": rule (\S+) \(\S*?/?([^/\s:]+):\d+\):", text)
        state["output"] = [{"stdout": r.stdout, "stderr": r.stderr, "log": text} for r in results]
        states.append(state)
    return states


def without_operstate(state):
    # A vif brought up while its peer is down goes UNKNOWN -> LOWERLAYERDOWN
    # when the kernel's linkwatch gets to it (up to a second later): which
    # one a snapshot sees is timing, not what the event did.
    for link in state["links"].values():
        link.pop("operstate", None)
    return state


def assert_same(a, b):
    a, b = comparable(a), comparable(b)
    assert a == b, explain(a, b)


def test_the_vif_bridge_rules_are_among_those_covered():
    assert "vif-bridge" in FAMILIES, FAMILIES


@pytest.mark.parametrize("family", FAMILIES)
def test_online_then_offline_through_vif_setup_runs_the_script_rule(new_dom0, tmp_path, family):
    a, b = run_both(new_dom0, tmp_path, family,
                    [direct(family, "online", "type_if=vif"), direct(family, "offline", "type_if=vif")],
                    [udev(family, "online", "type_if=vif"), udev(family, "offline", "type_if=vif")])
    rule_file = "50-%s.yaml" % family
    assert a["rules"] == [(family, rule_file)] * 2, a["output"]
    assert b["rules"] == a["rules"], b["output"]
    assert_same(a, b)
    # the shipped families all succeed in this dom0: the comparison is not
    # between two identical failures
    assert [o["exit"] for o in a["outcomes"]] == [0, 0], a["output"]
    assert a["xenstore"][BACK + "/hotplug-status"] == "connected"


@pytest.mark.parametrize("family", FAMILIES)
def test_online_through_vif_setup_leaves_the_same_state_as_the_direct_call(new_dom0, tmp_path, family):
    a, b = run_both(new_dom0, tmp_path, family,
                    [direct(family, "online", "type_if=vif")], [udev(family, "online", "type_if=vif")])
    assert a["rules"] == [(family, "50-%s.yaml" % family)], a["output"]
    assert b["rules"] == a["rules"], b["output"]
    assert_same(a, b)
    if family == "vif-bridge":
        assert a["links"]["vif1.0"]["master"] == "xenbr0"
        assert a["links"]["vif1.0"]["mac"] == "fe:ff:ff:ff:ff:ff"


@pytest.mark.parametrize("family", FAMILIES)
def test_wheezy_tap_add_through_vif_setup_runs_the_tap_rule_of_script(new_dom0, tmp_path, family):
    # a tap whose uevent environment names a script (a site's own udev rule)
    tap = {"INTERFACE": "tap1.0"}
    a, b = run_both(new_dom0, tmp_path, family,
                    [direct(family, "add", "type_if=tap", type_if="tap", env=tap)],
                    [udev(family, "add", "type_if=tap", type_if="tap")])
    assert a["rules"] == [(family + "-tap", "50-%s.yaml" % family)], a["output"]
    assert b["rules"] == a["rules"], b["output"]
    assert_same(a, b)


def test_wheezy_tap_add_without_script_goes_to_vif_bridge(new_dom0, tmp_path):
    # Xen 4.1's rule for qemu's taps: `vif-setup add type_if=tap`, INTERFACE=tap1.0,
    # and nothing names a script: vif-setup execs vif-bridge
    tap = {"INTERFACE": "tap1.0"}
    a, b = run_both(new_dom0, tmp_path, "vif-bridge",
                    [direct("vif-bridge", "add", "type_if=tap", type_if="tap", env=tap)],
                    [udev("", "add", "type_if=tap", type_if="tap")])
    assert a["rules"] == [("vif-bridge-tap", "50-vif-bridge.yaml")], a["output"]
    assert b["rules"] == a["rules"], b["output"]
    assert a["outcomes"][0]["exit"] == 0
    assert a["links"]["tap1.0"]["master"] == "xenbr0"
    assert_same(a, b)


def test_vif_setup_without_script_runs_the_vif_bridge_rules(new_dom0, tmp_path):
    # netback's uevent always carries `script`; without one vif-setup falls
    # back to vif-bridge
    a, b = run_both(new_dom0, tmp_path, "vif-bridge",
                    [direct("vif-bridge", "online", "type_if=vif")],
                    [udev("", "online", "type_if=vif")])
    assert b["rules"] == [("vif-bridge", "50-vif-bridge.yaml")], b["output"]
    assert_same(a, b)
