"""vif-bridge: xenrules against Debian's original script, event for event.

Each test builds two identical sandboxes, sends the same libxl events to the
original (in one) and to xenrules (in the other), checks the oracle did what
the original is known to do, then requires the same end state: links, bridge
ports, MTU, MAC, xenstore, exit codes. Intended differences are spelt out.
"""

import os

import pytest

from differential import (assert_same, compare_scenario, Event, exits, offline, online, Scenario,
                          tap_add, tap_remove)

pytestmark = pytest.mark.netns

BACK = "/local/domain/0/backend/vif/1/0"
FRONT = "/local/domain/1/device/vif/0"


def test_online(dom0_factory, originals):
    orig, xr = compare_scenario(dom0_factory, Scenario("online", [online()]))
    assert exits(orig) == [0]
    assert orig["links"]["vif1.0"]["master"] == "xenbr0"
    assert orig["links"]["vif1.0"]["mac"] == "fe:ff:ff:ff:ff:ff"
    assert orig["xenstore"][BACK + "/hotplug-status"] == "connected"
    assert orig["xenstore"][FRONT + "/mtu"] == "1500"
    assert_same(orig, xr)


def test_online_then_offline(dom0_factory, originals):
    orig, xr = compare_scenario(dom0_factory, Scenario("online-offline", [online(), offline()]))
    assert exits(orig) == [0, 0]
    assert orig["links"]["vif1.0"]["master"] is None
    assert orig["links"]["vif1.0"]["up"] is False
    assert orig["bridges"]["xenbr0"]["ports"] == []
    assert_same(orig, xr)


def test_xenstore_mtu(dom0_factory, originals):
    scenario = Scenario("mtu-1400", [online()], setup=lambda d: d.add_vif(1, 0, mtu=1400))
    orig, xr = compare_scenario(dom0_factory, scenario)
    assert exits(orig) == [0]
    assert orig["links"]["vif1.0"]["mtu"] == 1400
    assert orig["xenstore"][FRONT + "/mtu"] == "1400"
    assert_same(orig, xr)


def test_bridge_mtu_is_inherited(dom0_factory, originals):
    def setup(d):
        d.add_bridge("xenbr0", mtu=9000)
        d.add_vif(1, 0)
    scenario = Scenario("bridge-mtu", [online(), offline()], setup=setup, bridges=())
    orig, xr = compare_scenario(dom0_factory, scenario)
    assert exits(orig) == [0, 0]
    assert orig["links"]["vif1.0"]["mtu"] == 9000
    assert orig["xenstore"][FRONT + "/mtu"] == "9000"
    assert_same(orig, xr)


def test_stale_address_is_flushed(dom0_factory, originals):
    def setup(d):
        d.add_vif(1, 0)
        d.ip("address", "add", "192.0.2.1/24", "dev", "vif1.0")
    orig, xr = compare_scenario(dom0_factory, Scenario("flush", [online()], setup=setup))
    assert exits(orig) == [0]
    assert orig["links"]["vif1.0"]["addresses"] == []
    assert_same(orig, xr)


# With vifname the original computes the frontend path from the *new* name:
# dev=web0 -> ${dev#vif}=web0 -> domid=devid=web0, so it writes
# /local/domain/web0/device/vif/web0/mtu and leaves the real frontend's mtu
# at libxl's default. xenrules writes the right path. Intended difference.
VIFNAME = "web0"
WRONG = "/local/domain/%s/device/vif/%s/mtu" % (VIFNAME, VIFNAME)


def _vifname_setup(d):
    d.add_bridge("xenbr0", mtu=1400)   # != libxl's 1500, so the write is visible
    d.add_vif(1, 0, vifname=VIFNAME)


@pytest.mark.parametrize("events", [[online()], [online(), offline()]],
                         ids=["online", "online-offline"])
def test_vifname(dom0_factory, originals, events):
    scenario = Scenario("vifname", events, setup=_vifname_setup, bridges=())
    orig, xr = compare_scenario(dom0_factory, scenario)
    assert exits(orig) == [0] * len(events)
    assert "vif1.0" not in orig["links"] and VIFNAME in orig["links"]
    assert orig["links"][VIFNAME]["mtu"] == 1400
    # the original's bug, and xenrules' fix
    assert orig["xenstore"][WRONG] == "1400"
    assert orig["xenstore"][FRONT + "/mtu"] == "1500"
    assert WRONG not in xr["xenstore"]
    assert not any(p.startswith("/local/domain/%s" % VIFNAME) for p in xr["xenstore"])
    assert xr["xenstore"][FRONT + "/mtu"] == "1400"
    # everything else is the same
    assert_same(orig, xr, drop_xenstore=("/local/domain/%s/" % VIFNAME, FRONT + "/mtu"))


def test_vifname_taken_fails(dom0_factory, originals):
    def setup(d):
        d.add_vif(1, 0, vifname="vif2.0")
        d.add_vif(2, 0)                    # another guest already has that name
    scenario = Scenario("vifname-taken", [online()], setup=setup)
    orig, xr = compare_scenario(dom0_factory, scenario)
    assert exits(orig) == [1]
    assert orig["xenstore"][BACK + "/hotplug-status"] == "error"
    assert orig["links"]["vif2.0"]["master"] is None   # the other guest is untouched
    assert_same(orig, xr, mask_xenstore=(BACK + "/hotplug-error",))


def test_bridge_missing(dom0_factory, originals):
    scenario = Scenario("no-bridge", [online()], bridges=())
    orig, xr = compare_scenario(dom0_factory, scenario)
    assert exits(orig) == [1]
    assert exits(xr) == [1]
    for st in (orig, xr):
        assert st["xenstore"][BACK + "/hotplug-status"] == "error"
        assert st["xenstore"].get(BACK + "/hotplug-error"), "no hotplug-error message"
    # messages may differ; the rest (vif untouched) may not
    assert_same(orig, xr, mask_xenstore=(BACK + "/hotplug-error",))


def test_tap_add_remove(dom0_factory, originals):
    def setup(d):
        d.add_vif(1, 0)
        d.add_tap(1, 0)
    for events in ([tap_add()], [tap_add(), tap_remove()]):
        scenario = Scenario("tap", events, setup=setup)
        orig, xr = compare_scenario(dom0_factory, scenario)
        assert exits(orig) == [0] * len(events)
        tap = orig["links"]["vif1.0-emu"]
        if len(events) == 1:
            assert tap["master"] == "xenbr0" and tap["up"] is True
            assert tap["mac"] == "fe:ff:ff:ff:ff:ff"
        else:
            assert tap["master"] is None and tap["up"] is False
        # the emulated NIC's run neither reports success nor touches the vif
        assert orig["xenstore"][BACK + "/hotplug-status"] == ""
        assert orig["links"]["vif1.0"]["master"] is None
        assert_same(orig, xr)


@pytest.mark.parametrize("events", [[online()], [online(), offline()]],
                         ids=["online", "online-offline"])
def test_legacy_xenbr_to_eth_translation(dom0_factory, originals, events):
    # asks for xenbr1, which does not exist, but eth1 is a bridge: use eth1
    scenario = Scenario("xenbr1->eth1", events, bridges=("eth1",),
                        setup=lambda d: d.add_vif(1, 0, bridge="xenbr1"))
    orig, xr = compare_scenario(dom0_factory, scenario)
    assert exits(orig) == [0] * len(events)
    assert orig["links"]["vif1.0"]["master"] == ("eth1" if len(events) == 1 else None)
    assert orig["xenstore"][BACK + "/bridge"] == "xenbr1"   # not rewritten
    assert_same(orig, xr)


def test_no_bridge_key_takes_first_bridge(dom0_factory, originals):
    scenario = Scenario("first-bridge", [online()], bridges=("br9", "xenbr0"),
                        setup=lambda d: d.add_vif(1, 0, bridge=None))
    orig, xr = compare_scenario(dom0_factory, scenario)
    assert exits(orig) == [0]
    assert orig["links"]["vif1.0"]["master"] == "br9"
    assert_same(orig, xr)


def test_offline_after_netback_removed_the_vif(dom0_factory, originals):
    # libxl may run offline once the backend device is already gone
    def setup(d):
        d.add_vif(1, 0)
        d.del_link("vif1.0")
    orig, xr = compare_scenario(dom0_factory, Scenario("vif-gone", [offline()], setup=setup))
    assert exits(orig) == [0]
    assert "vif1.0" not in orig["links"]
    assert_same(orig, xr)


def test_udev_convention_of_xen_4_1_through_vif_setup(dom0_factory, originals):
    # Wheezy's xen-backend.rules run `vif-setup online type_if=vif`, which
    # execs $script; xenrules picks the rules of $script's basename.
    def via_vif_setup(action):
        return Event((action, "type_if=vif"), script="vif-setup",
                     env={"script": os.path.join(originals, "vif-bridge"), "ACTION": action})
    scenario = Scenario("udev", [via_vif_setup("online"), via_vif_setup("offline")])
    orig, xr = compare_scenario(dom0_factory, scenario)
    assert exits(orig) == [0, 0]
    assert orig["xenstore"][BACK + "/hotplug-status"] == "connected"
    assert orig["links"]["vif1.0"]["mac"] == "fe:ff:ff:ff:ff:ff"
    assert_same(orig, xr)


def test_tap_named_by_xen_4_1_udev(dom0_factory, originals):
    # Wheezy's udev: `vif-bridge add type_if=tap` with INTERFACE=tap1.0; bash
    # derives domid "tap1" from it, finds no backend keys, takes the first bridge
    def setup(d):
        d.add_vif(1, 0)
        d.ip("tuntap", "add", "dev", "tap1.0", "mode", "tap")
        d.ip("link", "set", "dev", "tap1.0", "address", "02:58:54:00:01:00")   # same in both
    for events in ([tap_add(env={"INTERFACE": "tap1.0"})],
                   [tap_add(env={"INTERFACE": "tap1.0"}), tap_remove(env={"INTERFACE": "tap1.0"})]):
        orig, xr = compare_scenario(dom0_factory, Scenario("udev-tap", events, setup=setup))
        assert exits(orig) == [0] * len(events)
        assert orig["links"]["tap1.0"]["master"] == ("xenbr0" if len(events) == 1 else None)
        assert_same(orig, xr)


def test_online_for_a_tap_without_interface_does_nothing(dom0_factory, originals):
    event = Event(("online", "type_if=tap"), env={"INTERFACE": ""})
    orig, xr = compare_scenario(dom0_factory, Scenario("tap-online", [event]))
    assert exits(orig) == [0]
    assert_same(orig, xr)


@pytest.mark.parametrize("mtu", ["0", "-5", "abc"])
def test_xenstore_mtu_that_is_not_a_positive_number_is_not_applied(dom0_factory, originals, mtu):
    def setup(d):
        d.add_vif(1, 0)
        d.xs_write(BACK + "/mtu", mtu)
    orig, xr = compare_scenario(dom0_factory, Scenario("bad-mtu", [online()], setup=setup))
    assert exits(orig) == [0]
    assert orig["xenstore"][FRONT + "/mtu"] == "1500"      # libxl's, untouched
    assert orig["links"]["vif1.0"]["mtu"] == 1500
    assert_same(orig, xr)


def test_guest_addresses_add_no_firewall_rule_as_in_debian(dom0_factory, originals):
    # Debian's handle_iptable is a no-op (bug #894013) and the shipped rules
    # keep their firewall off: an `ip` key changes nothing in the ruleset.
    # (tests/test_firewall.py: the firewall switched on; tests/test_hooks.py:
    # the vif-post.d hooks.)
    scenario = Scenario("ip-no-firewall", [online(), offline()],
                        setup=lambda d: d.add_vif(1, 0, ip="192.0.2.10 192.0.2.11"))
    orig, xr = compare_scenario(dom0_factory, scenario)
    assert exits(orig) == [0, 0]
    assert not [l for l in orig["firewall"] if "FORWARD -m physdev" in l or "-A FORWARD" in l]
    assert_same(orig, xr)
