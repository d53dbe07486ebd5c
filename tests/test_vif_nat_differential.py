"""vif-nat: xenrules against Debian's original script, event for event.

Every scenario builds two identical sandboxes (xenrules.sandbox.dhcp.DhcpDom0:
a network namespace, a XenStore, and a private /etc holding the dhcpd files),
sends the same libxl events to the original vif-nat in one and to xenrules in
the other, checks that the oracle did what the original is known to do, then
requires the same end state: links, addresses, routes, sysctls, firewall,
xenstore, the dhcpd files (content, symlinks, inode kept) and the dhcpd
restarts. Each intended difference is spelt out where it is tested, and in
docs/rules/vif-nat.md.
"""

import json
import subprocess

import pytest

from differential import assert_same, compare_scenario, Event, exits, Scenario
from test_firewall import upstream_originals  # noqa: F401 (fixture)
from xenrules.sandbox.dhcp import (SAMPLE_CONF, SAMPLE_DHCP3_DEFAULTS, SAMPLE_ISC_DEFAULTS,
                                   DhcpDom0)

pytestmark = pytest.mark.netns

BACK = "/local/domain/0/backend/vif/1/0"
CONF = "/etc/dhcp/dhcpd.conf"
ARGS = "/etc/default/dhcp3-server"
INIT = "/etc/init.d/isc-dhcp-server"
DHCP = {"dhcp": "yes"}


def entry(domid, vifid, mac, address, router):
    name = "dom%d" % domid if vifid == 1 else "dom%d-%d" % (domid, vifid)
    return ('host %s { hardware ethernet %s; fixed-address %s; option routers %s; '
            'option host-name "%s"; }\n' % (name, mac, address, router, name))


DOM1 = entry(1, 1, "00:16:3e:00:01:00", "10.0.1.1", "10.0.1.128")
DOM2 = entry(2, 1, "00:16:3e:00:02:00", "10.0.2.1", "10.0.2.128")


@pytest.fixture
def factory(xs_servers):
    """Callable(bridges=...) -> a fresh DhcpDom0 with its own XenStore; all
    destroyed after the test, and none may be left behind."""
    made = []

    def make(bridges=("xenbr0",)):
        dom0 = DhcpDom0(xs_servers.new().socket_path, bridges=bridges)
        made.append(dom0)
        return dom0
    try:
        yield make
    finally:
        for dom0 in made:
            dom0.destroy()
        listed = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE, text=True).stdout
        left = {d.netns for d in made} & {line.split()[0] for line in listed.splitlines() if line}
        assert not left, "network namespaces left behind: %s" % sorted(left)


def ev(action, domid=1, devid=0, **env):
    type_if = "tap" if action in ("add", "remove") else "vif"
    return Event((action, "type_if=" + type_if), domid, devid, script="vif-nat", type_if=type_if,
                 env=env)


def vif(domid=1, devid=0, **kw):
    """setup: netback's vif for a NAT guest (libxl's keys, script vif-nat)."""
    def setup(dom0):
        dom0.add_vif(domid, devid, script="vif-nat", **kw)
    return setup


def dhcp_files(conf=SAMPLE_CONF, args=SAMPLE_DHCP3_DEFAULTS, args_path=ARGS, conf_path=CONF,
               init_exit=0):
    """setup: the dhcpd files the original finds, and the init stub."""
    def setup(dom0):
        if conf is not None:
            dom0.put_file(conf_path, conf)
        if args is not None:
            dom0.put_file(args_path, args)
        dom0.put_init_stub(INIT, exit_code=init_exit)
    return setup


def steps(*setups):
    def setup(dom0):
        for s in setups:
            s(dom0)
    return setup


def run(factory, events, *setups):
    return compare_scenario(factory, Scenario("vif-nat", events, setup=steps(*setups)))


def routes(state):
    return [json.loads(r) for r in state["routes"]]


def content(state, path):
    return state["dhcp"][path]["content"]


# -- dhcp off ------------------------------------------------------------------

def test_online(factory, originals):
    orig, xr = run(factory, [ev("online")], vif())
    assert exits(orig) == [0]
    v = orig["links"]["vif1.0"]
    assert v["up"] and v["addresses"] == ["10.0.1.128/32"]
    assert [(r["dst"], r["dev"], r["prefsrc"]) for r in routes(orig)] == [("10.0.1.1", "vif1.0", "10.0.1.128")]
    assert orig["sysctls"]["net.ipv4.conf.vif1/0.proxy_arp"] == "1"
    assert orig["xenstore"][BACK + "/hotplug-status"] == "connected"
    assert orig["dhcp_restarts"] == [] and orig["dhcp"] == {}
    assert_same(orig, xr)


def test_online_then_offline(factory, originals):
    orig, xr = run(factory, [ev("online"), ev("offline")], vif())
    assert exits(orig) == [0, 0]
    v = orig["links"]["vif1.0"]
    # offline only takes the link down: the route goes with it, the
    # address and proxy_arp stay
    assert not v["up"] and v["addresses"] == ["10.0.1.128/32"]
    assert routes(orig) == []
    assert orig["sysctls"]["net.ipv4.conf.vif1/0.proxy_arp"] == "1"
    assert_same(orig, xr)


def test_ip_from_xenstore(factory, originals):
    orig, xr = run(factory, [ev("online")], vif(ip="192.168.7.5/24"))
    assert exits(orig) == [0]
    assert orig["links"]["vif1.0"]["addresses"] == ["192.168.7.132/32"]
    assert [(r["dst"], r["prefsrc"]) for r in routes(orig)] == [("192.168.7.5", "192.168.7.132")]
    assert_same(orig, xr)


def test_ip_from_an_argument(factory, originals):
    event = Event(("online", "type_if=vif", "ip=172.16.0.9"), script="vif-nat")
    orig, xr = run(factory, [event], vif())
    assert exits(orig) == [0]
    assert orig["links"]["vif1.0"]["addresses"] == ["172.16.0.136/32"]
    assert_same(orig, xr)


def test_xenstore_ip_wins_over_the_argument(factory, originals):
    event = Event(("online", "type_if=vif", "ip=172.16.0.9"), script="vif-nat")
    orig, xr = run(factory, [event], vif(ip="192.168.7.5"))
    assert orig["links"]["vif1.0"]["addresses"] == ["192.168.7.132/32"]
    assert_same(orig, xr)


def test_several_networks_route_only_the_first_address(factory, originals):
    orig, xr = run(factory, [ev("online")], vif(ip="10.5.0.3/24 10.6.0.3/24"))
    assert exits(orig) == [0]
    assert [(r["dst"], r["prefsrc"]) for r in routes(orig)] == [("10.5.0.3", "10.5.0.130")]
    assert_same(orig, xr)


def test_derived_address_of_a_second_vif(factory, originals):
    orig, xr = run(factory, [ev("online", 1, 1), ev("offline", 1, 1)], vif(1, 1))
    assert exits(orig) == [0, 0]
    assert orig["links"]["vif1.1"]["addresses"] == ["10.0.1.129/32"]
    assert_same(orig, xr)


@pytest.mark.parametrize("events", [["online"], ["online", "offline"]], ids=["online", "online-offline"])
def test_domid_above_255(factory, originals, events):
    orig, xr = run(factory, [ev(a, 300, 2) for a in events], vif(300, 2))
    assert exits(orig) == [0] * len(events)
    assert orig["links"]["vif300.2"]["addresses"] == ["10.1.44.130/32"]
    if len(events) == 1:
        assert [(r["dst"], r["prefsrc"]) for r in routes(orig)] == [("10.1.44.3", "10.1.44.130")]
    assert_same(orig, xr)


def test_vifname(factory, originals):
    orig, xr = run(factory, [ev("online"), ev("offline")], vif(vifname="nat0"))
    assert exits(orig) == [0, 0]
    assert "vif1.0" not in orig["links"]
    assert orig["links"]["nat0"]["addresses"] == ["10.0.1.128/32"]
    assert_same(orig, xr)


def test_online_twice_leaves_the_second_run_alone(factory, originals):
    # "already up": the original exits 0 at once, reporting nothing new
    orig, xr = run(factory, [ev("online"), ev("online")], vif())
    assert exits(orig) == [0, 0]
    assert len(routes(orig)) == 1
    assert_same(orig, xr)


def test_already_routed_vif_gets_no_success(factory, originals):
    def route_first(dom0):
        dom0.ip("link", "set", "vif1.0", "up")
        dom0.ip("route", "add", "10.9.9.9", "dev", "vif1.0")
    orig, xr = run(factory, [ev("online")], vif(), route_first)
    assert exits(orig) == [0]
    assert orig["xenstore"][BACK + "/hotplug-status"] == ""
    assert orig["links"]["vif1.0"]["addresses"] == []
    assert_same(orig, xr)


def test_offline_after_netback_removed_the_vif(factory, originals):
    orig, xr = run(factory, [ev("offline")], vif(), lambda d: d.del_link("vif1.0"))
    assert exits(orig) == [0]
    assert_same(orig, xr)


def test_udev_convention_of_xen_4_1_through_vif_setup(factory, originals):
    import os

    def via(action):
        return Event((action, "type_if=vif"), script="vif-setup",
                     env={"script": os.path.join(originals, "vif-nat"), "ACTION": action})
    orig, xr = run(factory, [via("online"), via("offline")], vif())
    assert exits(orig) == [0, 0]
    assert orig["links"]["vif1.0"]["addresses"] == ["10.0.1.128/32"]
    assert_same(orig, xr)


# -- the emulated NIC (type_if=tap) --------------------------------------------

def with_tap(dom0):
    dom0.add_tap(1, 0)


@pytest.mark.parametrize("events", [["add"], ["add", "remove"]], ids=["add", "add-remove"])
def test_tap_add_remove_configure_nothing(factory, originals, events):
    orig, xr = run(factory, [ev(a) for a in events], vif(), with_tap)
    assert exits(orig) == [0] * len(events)
    tap = orig["links"]["vif1.0-emu"]
    assert tap["addresses"] == [] and not tap["up"]
    assert routes(orig) == []
    assert orig["xenstore"][BACK + "/hotplug-status"] == ""
    assert_same(orig, xr)


def test_tap_add_renames_to_the_vifname(factory, originals):
    orig, xr = run(factory, [ev("add"), ev("remove")], vif(vifname="nat0"), with_tap)
    assert exits(orig) == [0, 0]
    assert "nat0-emu" in orig["links"] and "vif1.0-emu" not in orig["links"]
    assert_same(orig, xr)


def test_online_and_offline_of_a_tap_do_nothing(factory, originals):
    events = [Event(("online", "type_if=tap"), script="vif-nat", type_if="tap"),
              Event(("offline", "type_if=tap"), script="vif-nat", type_if="tap")]
    orig, xr = run(factory, events, vif(), with_tap)
    assert exits(orig) == [0, 0]
    assert_same(orig, xr)


def test_tap_with_dhcp_on_touches_no_dhcp_file(factory, originals):
    orig, xr = run(factory, [ev("add", **DHCP), ev("remove", **DHCP)], vif(), with_tap, dhcp_files())
    assert exits(orig) == [0, 0]
    assert content(orig, CONF) == SAMPLE_CONF and orig["dhcp_restarts"] == []
    assert_same(orig, xr)


# -- errors (dhcp off) -----------------------------------------------------------

def test_missing_frontend_id_fails(factory, originals):
    orig, xr = run(factory, [ev("online")], vif(), lambda d: d.xs_rm(BACK + "/frontend-id"))
    assert exits(orig) == [1] and exits(xr) == [1]
    assert orig["xenstore"][BACK + "/hotplug-status"] == "error"
    assert not orig["links"]["vif1.0"]["up"]
    assert_same(orig, xr, mask_xenstore=(BACK + "/hotplug-error",))


def test_missing_handle_fails_for_offline_too(factory, originals):
    orig, xr = run(factory, [ev("offline")], vif(), lambda d: d.xs_rm(BACK + "/handle"))
    assert exits(orig) == [1]
    assert orig["xenstore"][BACK + "/hotplug-status"] == "error"
    assert_same(orig, xr, mask_xenstore=(BACK + "/hotplug-error",))


def test_missing_device_fails(factory, originals):
    orig, xr = run(factory, [ev("online")], vif(), lambda d: d.del_link("vif1.0"))
    assert exits(orig) == [1]
    assert orig["xenstore"][BACK + "/hotplug-status"] == "error"
    assert_same(orig, xr, mask_xenstore=(BACK + "/hotplug-error",))


def test_vifname_taken_fails(factory, originals):
    orig, xr = run(factory, [ev("online")], vif(vifname="vif2.0"), vif(2, 0))
    assert exits(orig) == [1]
    assert orig["links"]["vif2.0"]["addresses"] == []
    assert_same(orig, xr, mask_xenstore=(BACK + "/hotplug-error",))


# Intended difference: a failure reverts what the event did. The original's
# `ip route add "192.168.1.5 192.168.1.6"` fails after the link went up and
# got the router address, and leaves both; xenrules takes them back.
def test_two_addresses_without_prefix_fail_and_xenrules_reverts(factory, originals):
    orig, xr = run(factory, [ev("online")], vif(ip="192.168.1.5 192.168.1.6"))
    assert exits(orig) == [1] and exits(xr) == [1]
    assert orig["links"]["vif1.0"]["up"] and orig["links"]["vif1.0"]["addresses"] == ["192.168.1.132/32"]
    assert not xr["links"]["vif1.0"]["up"] and xr["links"]["vif1.0"]["addresses"] == []
    for st in (orig, xr):
        assert st["xenstore"][BACK + "/hotplug-status"] == "error"
        st["links"]["vif1.0"].update(up=None, operstate=None, addresses=None)
    assert_same(orig, xr, mask_xenstore=(BACK + "/hotplug-error",))


# Intended difference: online after offline (the router address is still on
# the vif) fails in the original on `ip addr add` ("File exists") and leaves
# the link up; xenrules keeps the address and completes the online.
def test_online_again_after_offline_works(factory, originals):
    orig, xr = run(factory, [ev("online"), ev("offline"), ev("online")], vif())
    assert exits(orig) == [0, 0, 1]
    assert exits(xr) == [0, 0, 0]
    assert orig["xenstore"][BACK + "/hotplug-status"] == "error"
    assert xr["xenstore"][BACK + "/hotplug-status"] == "connected"
    assert routes(orig) == []
    assert [(r["dst"], r["prefsrc"]) for r in routes(xr)] == [("10.0.1.1", "10.0.1.128")]
    for st in (orig, xr):
        st["outcomes"], st["routes"] = None, None
    assert_same(orig, xr, drop_xenstore=(BACK + "/hotplug-error", BACK + "/hotplug-status"))


# Intended difference: the original's "already up" test is
# `ip route | grep -q "dev vif1.1"`, a substring: a route through vif1.10 makes
# it skip vif1.1 entirely (no address, no route, no success). xenrules looks
# for routes through exactly vif1.1.
def test_route_through_a_longer_name_does_not_skip_the_vif(factory, originals):
    def other_guest(dom0):
        dom0.add_vif(1, 10, script="vif-nat")
        dom0.ip("link", "set", "vif1.10", "up")
        dom0.ip("route", "add", "10.0.1.11", "dev", "vif1.10")
    orig, xr = run(factory, [ev("online", 1, 1)], vif(1, 1), other_guest)
    back = "/local/domain/0/backend/vif/1/1"
    assert exits(orig) == [0] and exits(xr) == [0]
    assert orig["links"]["vif1.1"]["addresses"] == []
    assert orig["xenstore"][back + "/hotplug-status"] == ""
    assert xr["links"]["vif1.1"]["addresses"] == ["10.0.1.129/32"]
    assert xr["xenstore"][back + "/hotplug-status"] == "connected"


# -- dhcp on -------------------------------------------------------------------

def test_dhcp_online(factory, originals):
    orig, xr = run(factory, [ev("online", **DHCP)], vif(), dhcp_files())
    assert exits(orig) == [0]
    assert content(orig, CONF) == SAMPLE_CONF + DOM1
    assert 'INTERFACES="vif1.0 "' in content(orig, ARGS)
    assert orig["dhcp_restarts"] == [INIT + " restart"]
    assert orig["dhcp"][CONF]["same_inode"] and orig["dhcp"][ARGS]["same_inode"]
    assert orig["links"]["vif1.0"]["addresses"] == ["10.0.1.128/32"]
    assert_same(orig, xr)


def test_dhcp_online_offline_gives_back_the_files_byte_for_byte(factory, originals):
    orig, xr = run(factory, [ev("online", **DHCP), ev("offline", **DHCP)], vif(), dhcp_files())
    assert exits(orig) == [0, 0]
    assert content(orig, CONF) == SAMPLE_CONF
    assert content(orig, ARGS) == SAMPLE_DHCP3_DEFAULTS
    assert orig["dhcp_restarts"] == [INIT + " restart"] * 2
    assert_same(orig, xr)


@pytest.mark.parametrize("target", ["dhcpd-xen.conf", "/etc/dhcp/dhcpd-xen.conf"],
                         ids=["relative", "absolute"])
def test_dhcpd_conf_that_is_a_symlink_stays_one(factory, originals, target):
    def link(dom0):
        dom0.put_file("/etc/dhcp/dhcpd-xen.conf", SAMPLE_CONF)
        dom0.put_symlink(CONF, target)
    orig, xr = run(factory, [ev("online", **DHCP)], vif(), dhcp_files(conf=None), link)
    assert exits(orig) == [0]
    assert orig["dhcp"][CONF]["symlink"] == target
    assert orig["dhcp"]["/etc/dhcp/dhcpd-xen.conf"]["content"] == SAMPLE_CONF + DOM1
    assert orig["dhcp"]["/etc/dhcp/dhcpd-xen.conf"]["same_inode"]
    assert_same(orig, xr)


def test_other_host_entries_are_untouched(factory, originals):
    conf = SAMPLE_CONF + DOM2 + "# end of the admin's part\n"
    orig, xr = run(factory, [ev("online", **DHCP), ev("offline", **DHCP)], vif(),
                   dhcp_files(conf=conf, args='INTERFACES="vif2.0 "\n'))
    assert exits(orig) == [0, 0]
    assert content(orig, CONF) == conf
    assert content(orig, ARGS) == 'INTERFACES="vif2.0 "\n'
    assert_same(orig, xr)


def test_a_stale_entry_of_the_guest_is_replaced(factory, originals):
    stale = 'host dom1 { hardware ethernet 00:16:3e:99:99:99; fixed-address 10.9.9.9; }\n'
    orig, xr = run(factory, [ev("online", **DHCP)], vif(),
                   dhcp_files(conf=stale + SAMPLE_CONF, args='INTERFACES="vif1.0 "\n'))
    assert content(orig, CONF) == SAMPLE_CONF + DOM1
    assert content(orig, ARGS) == 'INTERFACES="vif1.0 "\n'
    assert_same(orig, xr)


def test_two_guests(factory, originals):
    events = [ev("online", 1, 0, **DHCP), ev("online", 2, 0, **DHCP), ev("offline", 1, 0, **DHCP)]
    orig, xr = run(factory, events, vif(1, 0), vif(2, 0), dhcp_files())
    assert exits(orig) == [0, 0, 0]
    assert content(orig, CONF) == SAMPLE_CONF + DOM2
    assert 'INTERFACES="vif2.0 "' in content(orig, ARGS)
    assert len(orig["dhcp_restarts"]) == 3
    assert_same(orig, xr)


def test_second_vif_of_a_guest_has_its_own_host_name(factory, originals):
    events = [ev("online", 1, 0, **DHCP), ev("online", 1, 1, **DHCP)]
    orig, xr = run(factory, events, vif(1, 0), vif(1, 1), dhcp_files())
    assert exits(orig) == [0, 0]
    assert content(orig, CONF) == SAMPLE_CONF + DOM1 + entry(1, 2, "00:16:3e:00:01:01", "10.0.1.2",
                                                             "10.0.1.129")
    assert_same(orig, xr)


def test_legacy_etc_dhcpd_conf_turns_dhcp_on(factory, originals):
    # no dhcp= at all: /etc/dhcpd.conf existing is the original's default
    orig, xr = run(factory, [ev("online"), ev("offline")], vif(),
                   dhcp_files(conf_path="/etc/dhcpd.conf"))
    assert exits(orig) == [0, 0]
    assert content(orig, "/etc/dhcpd.conf") == SAMPLE_CONF
    assert len(orig["dhcp_restarts"]) == 2
    assert_same(orig, xr)


def test_dhcp_no_wins_over_the_legacy_default(factory, originals):
    orig, xr = run(factory, [ev("online", dhcp="no")], vif(), dhcp_files(conf_path="/etc/dhcpd.conf"))
    assert exits(orig) == [0]
    assert orig["dhcp_restarts"] == []
    assert_same(orig, xr)


def test_dhcpd_conf_wins_over_the_legacy_path(factory, originals):
    def legacy(dom0):
        dom0.put_file("/etc/dhcpd.conf", "# legacy\n")
    orig, xr = run(factory, [ev("online")], vif(), dhcp_files(), legacy)
    assert content(orig, CONF) == SAMPLE_CONF + DOM1
    assert content(orig, "/etc/dhcpd.conf") == "# legacy\n"
    assert_same(orig, xr)


def test_a_failing_restart_is_ignored(factory, originals):
    orig, xr = run(factory, [ev("online", **DHCP), ev("offline", **DHCP)], vif(), dhcp_files(init_exit=1))
    assert exits(orig) == [0, 0]
    assert len(orig["dhcp_restarts"]) == 2
    assert_same(orig, xr)


def test_sysconfig_style_dhcpdargs(factory, originals):
    orig, xr = run(factory, [ev("online", **DHCP)], vif(),
                   dhcp_files(args='DHCPDARGS=""\n', args_path="/etc/sysconfig/dhcpd"))
    assert 'DHCPDARGS="vif1.0 "' in content(orig, "/etc/sysconfig/dhcpd")
    assert_same(orig, xr)


# Intended difference: with all dhcpd files missing the original exits 1
# without a word to xenstore (a plain `exit 1`); xenrules also writes
# hotplug-error and hotplug-status=error, as for any failure.
def test_dhcp_on_without_dhcpd_files_fails(factory, originals):
    orig, xr = run(factory, [ev("online", **DHCP)], vif())
    assert exits(orig) == [1] and exits(xr) == [1]
    assert orig["xenstore"][BACK + "/hotplug-status"] == ""
    assert BACK + "/hotplug-error" not in orig["xenstore"]
    assert xr["xenstore"][BACK + "/hotplug-status"] == "error"
    assert xr["xenstore"][BACK + "/hotplug-error"] == \
        "Failed to find dhcpd configuration or init or args file."
    assert_same(orig, xr, drop_xenstore=(BACK + "/hotplug-error", BACK + "/hotplug-status"))


# Intended difference (extension): Debian's isc-dhcp-server keeps its
# interfaces in /etc/default/isc-dhcp-server (INTERFACESv4), a file the
# original never looks for: it fails "Failed to find dhcpd ... args file".
# xenrules takes it as the last candidate and edits INTERFACESv4.
def test_isc_dhcp_server_defaults_file_is_an_extension(factory, originals):
    isc = "/etc/default/isc-dhcp-server"
    orig, xr = run(factory, [ev("online", **DHCP), ev("offline", **DHCP)], vif(),
                   dhcp_files(args=SAMPLE_ISC_DEFAULTS, args_path=isc))
    assert exits(orig) == [1, 1]
    assert exits(xr) == [0, 0]
    assert xr["dhcp_restarts"] == [INIT + " restart"] * 2
    assert content(xr, isc) == SAMPLE_ISC_DEFAULTS
    assert content(xr, CONF) == SAMPLE_CONF


def test_isc_dhcp_server_defaults_file_gets_the_vif_in_interfacesv4(factory, originals):
    isc = "/etc/default/isc-dhcp-server"
    orig, xr = run(factory, [ev("online", **DHCP)], vif(), dhcp_files(args=SAMPLE_ISC_DEFAULTS, args_path=isc))
    assert exits(xr) == [0]
    assert 'INTERFACESv4="vif1.0 "\nINTERFACESv6=""\n' in content(xr, isc)
    assert content(xr, CONF) == SAMPLE_CONF + DOM1


# Intended difference: the original removes with grep -v "host dom1", which
# also takes dom10's and dom1-2's entries; xenrules takes dom1's only.
def test_removing_dom1_keeps_dom10s_entry(factory, originals):
    dom10 = entry(10, 1, "00:16:3e:00:0a:00", "10.0.10.1", "10.0.10.128")
    orig, xr = run(factory, [ev("online", **DHCP)], vif(), dhcp_files(conf=SAMPLE_CONF + dom10))
    assert exits(orig) == [0] and exits(xr) == [0]
    assert content(orig, CONF) == SAMPLE_CONF + DOM1          # dom10 lost
    assert content(xr, CONF) == SAMPLE_CONF + dom10 + DOM1
    for st in (orig, xr):
        st["dhcp"][CONF] = None
    assert_same(orig, xr)


# Intended difference: the original's `sed "s/vif1.0 //"` edits every line of
# the defaults file, comments included; xenrules edits only the KEY= lines.
def test_only_the_interface_list_lines_are_edited(factory, originals):
    args = '# vif1.0 and vif2.0 are guests\nINTERFACES=""\n'
    orig, xr = run(factory, [ev("online", **DHCP), ev("offline", **DHCP)], vif(),
                   dhcp_files(args=args))
    assert exits(orig) == exits(xr) == [0, 0]
    assert content(orig, ARGS) == '# and vif2.0 are guests\nINTERFACES=""\n'
    assert content(xr, ARGS) == args
    for st in (orig, xr):
        st["dhcp"][ARGS] = None
    assert_same(orig, xr)


# Not a difference: a host declared over several lines loses only its first
# line (`host dom1 {`), in the original and in xenrules alike.
def test_host_declared_over_several_lines_loses_its_first_line_only(factory, originals):
    conf = SAMPLE_CONF + "host dom1 {\n  hardware ethernet 00:16:3e:00:01:00;\n}\n"
    orig, xr = run(factory, [ev("online", **DHCP), ev("offline", **DHCP)], vif(),
                   dhcp_files(conf=conf))
    assert exits(orig) == [0, 0]
    assert content(orig, CONF) == SAMPLE_CONF + "  hardware ethernet 00:16:3e:00:01:00;\n}\n"
    assert_same(orig, xr)


# Intended difference: `INTERFACES="eth0"` becomes "eth0vif1.0 " in the
# original (no separator); xenrules writes "eth0 vif1.0" and offline gives
# back "eth0".
def test_interface_list_without_trailing_space(factory, originals):
    orig, xr = run(factory, [ev("online", **DHCP)], vif(), dhcp_files(args='INTERFACES="eth0"\n'))
    assert content(orig, ARGS) == 'INTERFACES="eth0vif1.0 "\n'
    assert content(xr, ARGS) == 'INTERFACES="eth0 vif1.0"\n'
    for st in (orig, xr):
        st["dhcp"][ARGS] = None
    assert_same(orig, xr)


# Intended difference: an empty dhcpd.conf makes the original's
# `grep -v` exit 1, which its ERR trap turns into a fatal error after the
# vif was configured; xenrules writes the entry.
def test_empty_dhcpd_conf(factory, originals):
    orig, xr = run(factory, [ev("online", **DHCP)], vif(), dhcp_files(conf=""))
    assert exits(orig) == [1] and exits(xr) == [0]
    assert content(orig, CONF) == ""
    assert content(xr, CONF) == DOM1
    assert xr["xenstore"][BACK + "/hotplug-status"] == "connected"


# Intended difference: the guest's MAC missing, the original fails inside
# dhcp_up (xenstore_read) and leaves the vif configured; xenrules fails at the
# same point and reverts the vif. The dhcpd files are untouched in both.
def test_missing_mac_with_dhcp_fails(factory, originals):
    orig, xr = run(factory, [ev("online", **DHCP)], vif(), dhcp_files(),
                   lambda d: d.xs_rm(BACK + "/mac"))
    assert exits(orig) == [1] and exits(xr) == [1]
    assert orig["links"]["vif1.0"]["addresses"] == ["10.0.1.128/32"]
    assert xr["links"]["vif1.0"]["addresses"] == [] and routes(xr) == []
    assert xr["sysctls"]["net.ipv4.conf.vif1/0.proxy_arp"] == "0"
    assert content(xr, CONF) == content(orig, CONF) == SAMPLE_CONF
    assert xr["dhcp_restarts"] == orig["dhcp_restarts"] == []
    for st in (orig, xr):
        st["links"]["vif1.0"].update(up=None, operstate=None, addresses=None)
        st["routes"] = st["sysctls"] = None
    assert_same(orig, xr, mask_xenstore=(BACK + "/hotplug-error",))


# Intended difference: failures are reverted. 10.0.0.200 gives the router
# address 10.0.0.327: the original's `ip addr add` fails after the link went
# up (and stays up); xenrules takes the link down again.
def test_router_address_that_is_no_address_fails(factory, originals):
    orig, xr = run(factory, [ev("online")], vif(ip="10.0.0.200"))
    assert exits(orig) == [1] and exits(xr) == [1]
    assert orig["links"]["vif1.0"]["up"] and not xr["links"]["vif1.0"]["up"]
    for st in (orig, xr):
        assert st["links"]["vif1.0"]["addresses"] == []
        st["links"]["vif1.0"].update(up=None, operstate=None)
    assert_same(orig, xr, mask_xenstore=(BACK + "/hotplug-error",))


# -- the firewall and the vif-post.d hooks (vif-common.sh, xen-hotplug-common.sh) --

# vif-nat's own variables, which its hooks see besides vif-common.sh's
NAT_HOOK = ('for __n in vifid router_ip vif_ip hostname dhcp dhcpd_conf_file dhcpd_init_file '
            'dhcpd_arg_file; do\n'
            '  xenstore-write "$XENBUS_PATH/xr-hook/nat-$__n" "$(declare -p $__n 2>/dev/null || echo unset)"\n'
            'done\n')


# Intended difference: with dhcp off the original leaves its dhcpd_*_file
# variables unset; xenrules' hooks see them set and empty (hooks.run sets
# every variable it is given).
DHCP_OFF_HOOK_VARS = tuple(BACK + "/xr-hook/nat-dhcpd_%s_file" % n for n in ("conf", "init", "arg"))


def with_hooks(factory, events, tmp_path, originals, *setups, hooks=None):
    from test_hooks import RECORDER, compare_with_hooks
    hooks = hooks or {"10-record.hook": RECORDER, "20-nat.hook": NAT_HOOK}
    return compare_with_hooks(factory, Scenario("vif-nat-hooks", events, setup=steps(*setups)),
                              hooks, tmp_path, originals)


@pytest.mark.parametrize("actions", [["online"], ["online", "offline"]], ids=["online", "online-offline"])
def test_hooks_see_the_same_variables_as_the_originals(factory, originals, tmp_path, actions):
    from test_hooks import recorded
    orig, xr = with_hooks(factory, [ev(a, **DHCP) for a in actions], tmp_path, originals,
                          vif(), dhcp_files())
    assert exits(orig) == [0] * len(actions)
    seen = recorded(orig)
    assert seen["runs"] == str(len(actions))
    assert seen["var-ip"] == 'declare -- ip="10.0.1.1/16"'       # the derived address
    assert seen["var-domid"] == 'declare -- domid="1"'
    assert seen["nat-router_ip"] == 'declare -- router_ip="10.0.1.128"'
    assert seen["nat-dhcpd_conf_file"] == 'declare -- dhcpd_conf_file="%s"' % CONF
    assert seen["args"].endswith("/vif-nat vif post")
    assert_same(orig, xr)


def test_hooks_with_dhcp_off(factory, originals, tmp_path):
    from test_hooks import recorded
    orig, xr = with_hooks(factory, [ev("online")], tmp_path, originals, vif())
    assert exits(orig) == [0]
    o, x = recorded(orig), recorded(xr)
    for name in ("dhcpd_conf_file", "dhcpd_init_file", "dhcpd_arg_file"):
        assert o["nat-" + name] == "unset"
        assert x["nat-" + name] == 'declare -- %s=""' % name
    assert o["nat-dhcp"] == x["nat-dhcp"] == 'declare -- dhcp="no"'
    assert_same(orig, xr, drop_xenstore=DHCP_OFF_HOOK_VARS)


def test_no_hooks_for_an_already_routed_vif(factory, originals, tmp_path):
    from test_hooks import recorded
    orig, xr = with_hooks(factory, [ev("online"), ev("online")], tmp_path, originals, vif())
    assert exits(orig) == [0, 0]
    assert recorded(orig)["runs"] == "1"
    assert_same(orig, xr, drop_xenstore=DHCP_OFF_HOOK_VARS)


def test_hooks_of_a_tap(factory, originals, tmp_path):
    from test_hooks import recorded
    orig, xr = with_hooks(factory, [ev("add"), ev("remove")], tmp_path, originals, vif(), with_tap)
    assert exits(orig) == [0, 0]
    seen = recorded(orig)
    assert seen["runs"] == "2"
    assert seen["var-dev"] == 'declare -- dev="vif1.0-emu"'
    assert seen["var-devid"] == 'declare -- devid="0"'
    assert_same(orig, xr, drop_xenstore=DHCP_OFF_HOOK_VARS)


@pytest.mark.parametrize("actions", [["online"], ["online", "offline"], ["add", "remove"]],
                         ids=["online", "online-offline", "tap"])
def test_firewall_switched_on_is_upstreams_handle_iptable(factory, upstream_originals, actions):
    on = {"XENRULES_FIREWALL": "on"}
    orig, xr = run(factory, [ev(a, **on) for a in actions], vif(), with_tap)
    assert exits(orig) == [0] * len(actions)
    rules = [line for line in orig["firewall"] if "-A FORWARD" in line]
    assert len(rules) == (4 if len(actions) == 1 else 0)
    assert_same(orig, xr)
