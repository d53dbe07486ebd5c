"""vif-route: xenrules against Debian's original script, event for event.

Each test builds two identical sandboxes with a dom0 uplink (eth0, or the
`netdev` asked for) carrying an address, sends the same events to the
original vif-route (in one) and to xenrules (in the other), checks that the
oracle did what the original is known to do, then requires the same end
state: links, addresses, routes, sysctls (proxy_arp), xenstore, exit codes.
Intended differences are spelt out where they show.
"""

import os

import pytest

from events import wait_for
from differential import (assert_same, compare_scenario, Event, exits, offline, online, Scenario,
                          tap_add, tap_remove)
from test_firewall import upstream_originals  # noqa: F401 (fixture)

pytestmark = pytest.mark.netns

SCRIPT = "vif-route"
BACK = "/local/domain/0/backend/vif/1/0"
DOM0_IP = "192.0.2.1"
PROXY_ARP = "net.ipv4.conf.%s.proxy_arp"


def add_uplink(dom0, name="eth0", cidr=DOM0_IP + "/24", n=1):
    """dom0's uplink: a veth pair `name` / `name`p, both up, fixed MACs (so two
    sandboxes are alike), `name` with the address `cidr` (None: none)."""
    dom0.ip("link", "add", "name", name, "address", "02:58:99:00:%02x:01" % n, "type", "veth",
            "peer", "name", name + "p", "address", "02:58:99:00:%02x:02" % n)
    if cidr:
        dom0.ip("address", "add", cidr, "dev", name)
    dom0.ip("link", "set", "dev", name, "up")
    dom0.ip("link", "set", "dev", name + "p", "up")
    # the kernel reports carrier asynchronously (linkwatch): wait for it, so
    # that no snapshot catches one sandbox's uplink still coming up
    def operstate():
        return [link["operstate"] for link in dom0.ip_json("link", "show", "dev", name)]
    assert wait_for(lambda: operstate() == ["UP"]), "%s did not come up: %s" % (name, operstate())


def routed_dom0(ip="10.0.0.5", **vif):
    def setup(d):
        add_uplink(d)
        d.add_vif(1, 0, bridge=None, ip=ip, script=SCRIPT, **vif)
    return setup


def scenario(name, events, setup=None):
    return Scenario(name, events, setup=setup or routed_dom0(), bridges=())


def up(**kw):
    return online(script=SCRIPT, **kw)


def down(**kw):
    return offline(script=SCRIPT, **kw)


def vif_routes(state, dev="vif1.0"):
    """{destination: (metric, prefsrc)} of the routes through dev."""
    import json
    out = {}
    for text in state["routes"]:
        r = json.loads(text)
        if r.get("dev") == dev:
            out[r["dst"]] = (r.get("metric"), r.get("prefsrc"))
    return out


def sysctl(state, dev, name="proxy_arp"):
    return state["sysctls"]["net.ipv4.conf.%s.%s" % (dev.replace(".", "/"), name)]


def addr_details(dom0, dev):
    """[(address/prefix, broadcast, scope, label)] of a device: what state() leaves out."""
    return [("%s/%s" % (a["local"], a["prefixlen"]), a.get("broadcast"), a.get("scope"),
             a.get("label"))
            for link in dom0.ip_json("address", "show", "dev", dev) for a in link["addr_info"]]


def last_two(dom0_factory):
    """The (original's, xenrules') sandboxes of the last compare_scenario."""
    return dom0_factory.made[-2], dom0_factory.made[-1]


def test_online(dom0_factory, originals):
    orig, xr = compare_scenario(dom0_factory, scenario("online", [up()]))
    assert exits(orig) == [0]
    o_dom0, x_dom0 = last_two(dom0_factory)
    assert addr_details(o_dom0, "vif1.0") == [(DOM0_IP + "/32", "192.0.2.255", "global", "vif1.0")]
    assert addr_details(x_dom0, "vif1.0") == addr_details(o_dom0, "vif1.0")
    vif = orig["links"]["vif1.0"]
    assert vif["addresses"] == [DOM0_IP + "/32"] and vif["up"] is True
    assert sysctl(orig, "vif1.0") == "1"
    assert vif_routes(orig) == {"10.0.0.5": (2, DOM0_IP)}
    assert orig["xenstore"][BACK + "/hotplug-status"] == "connected"
    assert_same(orig, xr)


def test_online_then_offline_removes_the_routes_only(dom0_factory, originals):
    orig, xr = compare_scenario(dom0_factory, scenario("online-offline", [up(), down()]))
    assert exits(orig) == [0, 0]
    assert vif_routes(orig) == {}
    # the original leaves the /32, the link state and proxy_arp behind
    assert orig["links"]["vif1.0"]["addresses"] == [DOM0_IP + "/32"]
    assert orig["links"]["vif1.0"]["up"] is True
    assert sysctl(orig, "vif1.0") == "1"
    assert_same(orig, xr)


@pytest.mark.parametrize("events", [[up()], [up(), down()]], ids=["online", "online-offline"])
def test_several_addresses_and_networks(dom0_factory, originals, events):
    sc = scenario("several", events, routed_dom0(ip="10.0.0.5 10.0.1.0/24  172.16.9.9"))
    orig, xr = compare_scenario(dom0_factory, sc)
    assert exits(orig) == [0] * len(events)
    expected = {"10.0.0.5": (2, DOM0_IP), "10.0.1.0/24": (2, DOM0_IP),
                "172.16.9.9": (2, DOM0_IP)}
    assert vif_routes(orig) == (expected if len(events) == 1 else {})
    assert_same(orig, xr)


@pytest.mark.parametrize("events", [[up()], [up(), down()]], ids=["online", "online-offline"])
def test_no_ip_gives_the_address_and_proxy_arp_but_no_route(dom0_factory, originals, events):
    orig, xr = compare_scenario(dom0_factory, scenario("no-ip", events, routed_dom0(ip=None)))
    assert exits(orig) == [0] * len(events)
    assert vif_routes(orig) == {}
    assert orig["links"]["vif1.0"]["addresses"] == [DOM0_IP + "/32"]
    assert sysctl(orig, "vif1.0") == "1"
    assert_same(orig, xr)


def test_ip_given_as_an_argument_when_xenstore_has_none(dom0_factory, originals):
    events = [Event(("online", "type_if=vif", "ip=10.0.3.3"), script=SCRIPT)]
    orig, xr = compare_scenario(dom0_factory, scenario("ip-arg", events, routed_dom0(ip=None)))
    assert exits(orig) == [0]
    assert vif_routes(orig) == {"10.0.3.3": (2, DOM0_IP)}
    assert_same(orig, xr)


def test_class_a_dom0_address_keeps_ifconfigs_classful_broadcast(dom0_factory, originals):
    # ifconfig leaves 10.255.255.255 (not the /16's 10.20.255.255) as the
    # /32's broadcast; state() does not show broadcasts, so look ourselves
    def setup(d):
        add_uplink(d, cidr="10.20.30.40/16")
        d.add_vif(1, 0, bridge=None, ip="10.0.0.5", script=SCRIPT)
    orig, xr = compare_scenario(dom0_factory, scenario("class-a", [up()], setup))
    assert exits(orig) == [0]
    assert orig["links"]["vif1.0"]["addresses"] == ["10.20.30.40/32"]
    o_dom0, x_dom0 = last_two(dom0_factory)
    assert addr_details(o_dom0, "vif1.0") == [("10.20.30.40/32", "10.255.255.255", "global", "vif1.0")]
    assert addr_details(x_dom0, "vif1.0") == addr_details(o_dom0, "vif1.0")
    assert_same(orig, xr)


def test_tap_add_and_remove_use_metric_1(dom0_factory, originals):
    def setup(d):
        routed_dom0()(d)
        d.add_tap(1, 0)
    for events in ([tap_add(script=SCRIPT)], [tap_add(script=SCRIPT), tap_remove(script=SCRIPT)]):
        orig, xr = compare_scenario(dom0_factory, scenario("tap", events, setup))
        assert exits(orig) == [0] * len(events)
        tap = orig["links"]["vif1.0-emu"]
        assert tap["addresses"] == [DOM0_IP + "/32"] and tap["up"] is True
        assert sysctl(orig, "vif1.0-emu") == "1"
        assert vif_routes(orig, "vif1.0-emu") == ({"10.0.0.5": (1, DOM0_IP)} if len(events) == 1
                                                  else {})
        # the emulated NIC's run neither reports success nor touches the vif
        assert orig["xenstore"][BACK + "/hotplug-status"] == ""
        assert orig["links"]["vif1.0"]["addresses"] == []
        assert_same(orig, xr)


def test_vif_and_tap_of_one_guest_each_get_their_route(dom0_factory, originals):
    def setup(d):
        routed_dom0()(d)
        d.add_tap(1, 0)
    events = [up(), tap_add(script=SCRIPT), tap_remove(script=SCRIPT), down()]
    orig, xr = compare_scenario(dom0_factory, scenario("vif+tap", events, setup))
    assert exits(orig) == [0, 0, 0, 0]
    assert_same(orig, xr)


@pytest.mark.parametrize("events", [[up()], [up(), down()]], ids=["online", "online-offline"])
def test_vifname_renames_and_routes_through_the_new_name(dom0_factory, originals, events):
    orig, xr = compare_scenario(dom0_factory,
                                scenario("vifname", events, routed_dom0(vifname="web0")))
    assert exits(orig) == [0] * len(events)
    assert "vif1.0" not in orig["links"] and "web0" in orig["links"]
    assert vif_routes(orig, "web0") == ({"10.0.0.5": (2, DOM0_IP)} if len(events) == 1 else {})
    assert sysctl(orig, "web0") == "1"
    assert_same(orig, xr)


def test_tap_with_vifname_is_renamed_with_emu_suffix(dom0_factory, originals):
    def setup(d):
        routed_dom0(vifname="web0")(d)
        d.add_tap(1, 0)
    events = [tap_add(script=SCRIPT), tap_remove(script=SCRIPT)]
    orig, xr = compare_scenario(dom0_factory, scenario("tap-vifname", events, setup))
    assert exits(orig) == [0, 0]
    assert "web0-emu" in orig["links"]
    assert_same(orig, xr)


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_netdev_chooses_the_dom0_address(dom0_factory, originals, how):
    def setup(d):
        add_uplink(d, cidr=None)                           # eth0 without address
        add_uplink(d, "eth1", cidr="198.51.100.7/24", n=2)
        d.add_vif(1, 0, bridge=None, ip="10.0.0.5", script=SCRIPT)
    if how == "argument":
        events = [Event((a, "type_if=vif", "netdev=eth1"), script=SCRIPT)
                  for a in ("online", "offline")]
    else:   # libxl passes the NIC's gatewaydev as $netdev
        events = [Event((a, "type_if=vif"), script=SCRIPT, env={"netdev": "eth1"})
                  for a in ("online", "offline")]
    for evs in (events[:1], events):
        orig, xr = compare_scenario(dom0_factory, scenario("netdev", evs, setup))
        assert exits(orig) == [0] * len(evs)
        assert orig["links"]["vif1.0"]["addresses"] == ["198.51.100.7/32"]
        assert vif_routes(orig) == ({"10.0.0.5": (2, "198.51.100.7")} if len(evs) == 1 else {})
        assert_same(orig, xr)


# The original's fatal in dom0_ip runs inside $(...): bash's ERR trap then
# fails the script with "<path of vif-route> failed; error detected.",
# overwriting the meaningful message in hotplug-error. xenrules keeps the
# meaningful one ("eth0 is not up.  Bring it up or specify another interface
# with netdev=<if> as a parameter to vif-route."). Intended difference: the
# message; status, exit code and end state are the same.
@pytest.mark.parametrize("uplink", ["without-address", "missing"])
@pytest.mark.parametrize("action", ["online", "offline"])
def test_netdev_without_address_fails_the_same_way(dom0_factory, originals, uplink, action):
    def setup(d):
        if uplink == "without-address":
            add_uplink(d, cidr=None)
        d.add_vif(1, 0, bridge=None, ip="10.0.0.5", script=SCRIPT)
    events = [up()] if action == "online" else [down()]
    orig, xr = compare_scenario(dom0_factory, scenario("no-dom0-ip", events, setup))
    assert exits(orig) == [1] and exits(xr) == [1]
    for st in (orig, xr):
        assert st["xenstore"][BACK + "/hotplug-status"] == "error"
    assert orig["xenstore"][BACK + "/hotplug-error"].endswith("vif-route failed; error detected.")
    assert xr["xenstore"][BACK + "/hotplug-error"] == (
        "eth0 is not up.  Bring it up or specify another interface with netdev=<if> "
        "as a parameter to vif-route.")
    assert orig["links"]["vif1.0"]["addresses"] == [] and vif_routes(orig) == {}
    assert_same(orig, xr, mask_xenstore=(BACK + "/hotplug-error",))


def test_udev_convention_of_xen_4_1_through_vif_setup(dom0_factory, originals):
    # Wheezy's xen-backend.rules run `vif-setup online type_if=vif`, which
    # execs $script; xenrules picks the rules of $script's basename.
    def via_vif_setup(action):
        return Event((action, "type_if=vif"), script="vif-setup",
                     env={"script": os.path.join(originals, SCRIPT), "ACTION": action})
    for events in ([via_vif_setup("online")], [via_vif_setup("online"), via_vif_setup("offline")]):
        orig, xr = compare_scenario(dom0_factory, scenario("udev", events))
        assert exits(orig) == [0] * len(events)
        assert orig["xenstore"][BACK + "/hotplug-status"] == "connected"
        assert vif_routes(orig) == ({"10.0.0.5": (2, DOM0_IP)} if len(events) == 1 else {})
        assert_same(orig, xr)


def test_offline_after_netback_removed_the_vif(dom0_factory, originals):
    def setup(d):
        routed_dom0()(d)
        d.del_link("vif1.0")
    orig, xr = compare_scenario(dom0_factory, scenario("vif-gone", [down()], setup))
    assert exits(orig) == [0]
    assert "vif1.0" not in orig["links"]
    assert_same(orig, xr)


def test_ipv6_entry_is_the_ipv6_extension(dom0_factory, originals):
    # Intended difference (the IPv6 extension): the original runs
    # `ip route add 2001:db8:5::5 dev vif1.0 src 192.0.2.1 metric 2`, which
    # fails ("inet6 address is expected rather than 192.0.2.1"), so online
    # fails with the IPv4 route already in place; xenrules routes the IPv6
    # address (without a source: eth0 has no global IPv6 address here).
    sc = scenario("ipv6", [up(), down()], routed_dom0(ip="10.0.0.5 2001:db8:5::5"))
    orig, xr = compare_scenario(dom0_factory, sc)
    assert exits(orig) == [1, 0]
    assert exits(xr) == [0, 0]
    assert "inet6 address is expected" in orig["output"][0]["log"]
    assert orig["xenstore"][BACK + "/hotplug-status"] == "error"
    assert xr["xenstore"][BACK + "/hotplug-status"] == "connected"
    # after offline both are back to the same routes, addresses and sysctls
    for key in ("links", "routes", "sysctls"):
        assert orig[key] == xr[key], key


def test_stale_address_on_the_vif_is_kept_beside_the_32(dom0_factory, originals):
    # Intended difference: `ifconfig vif1.0 192.0.2.1 netmask 255.255.255.255`
    # replaces the vif's first IPv4 address; xenrules adds the /32 beside it.
    # netback and qemu create their devices without addresses, so only a
    # device someone configured by hand shows it.
    def setup(d):
        routed_dom0()(d)
        d.ip("address", "add", "198.51.100.50/24", "dev", "vif1.0")
    orig, xr = compare_scenario(dom0_factory, scenario("stale-address", [up()], setup))
    assert exits(orig) == exits(xr) == [0]
    assert orig["links"]["vif1.0"]["addresses"] == [DOM0_IP + "/32"]
    assert xr["links"]["vif1.0"]["addresses"] == [DOM0_IP + "/32", "198.51.100.50/24"]
    for st in (orig, xr):
        st["links"]["vif1.0"]["addresses"] = [DOM0_IP + "/32"]
        st["routes"] = [r for r in st["routes"] if "198.51.100.0/24" not in r]
    assert_same(orig, xr)


# -- the firewall and the vif-post.d hooks (vif-common.sh, xen-hotplug-common.sh) --

# vif-route's own variables, which its hooks see besides vif-common.sh's
ROUTE_HOOK = ('for __n in main_ip ipcmd cmdprefix metric; do\n'
              '  xenstore-write "$XENBUS_PATH/xr-hook/route-$__n" "$(declare -p $__n 2>/dev/null || echo unset)"\n'
              'done\n')


@pytest.mark.parametrize("events", [[up()], [up(), down()]], ids=["online", "online-offline"])
def test_hooks_see_the_same_variables_as_the_originals(dom0_factory, originals, tmp_path, events):
    from test_hooks import RECORDER, compare_with_hooks, recorded
    orig, xr = compare_with_hooks(dom0_factory, scenario("hooks", events),
                                  {"10-record.hook": RECORDER, "20-route.hook": ROUTE_HOOK},
                                  tmp_path, originals)
    assert exits(orig) == [0] * len(events)
    seen = recorded(orig)
    assert seen["runs"] == str(len(events))
    assert seen["var-dev"] == 'declare -- dev="vif1.0"'
    assert seen["var-ip"] == 'declare -- ip="10.0.0.5"'
    assert seen["args"].endswith("/vif-route vif post")
    assert seen["route-main_ip"] == 'declare -- main_ip="%s"' % DOM0_IP
    assert seen["route-ipcmd"] == 'declare -- ipcmd="%s"' % ("add" if len(events) == 1 else "del")
    assert_same(orig, xr)


def test_hooks_of_a_tap_see_domid_and_devid(dom0_factory, originals, tmp_path):
    from test_hooks import RECORDER, compare_with_hooks, recorded

    def setup(d):
        routed_dom0()(d)
        d.add_tap(1, 0)
    sc = scenario("hooks-tap", [tap_add(script=SCRIPT), tap_remove(script=SCRIPT)], setup)
    orig, xr = compare_with_hooks(dom0_factory, sc,
                                  {"10-record.hook": RECORDER, "20-route.hook": ROUTE_HOOK},
                                  tmp_path, originals)
    assert exits(orig) == [0, 0]
    seen = recorded(orig)
    assert seen["runs"] == "2"
    assert seen["var-dev"] == 'declare -- dev="vif1.0-emu"'
    assert seen["var-domid"] == 'declare -- domid="1"'
    assert seen["route-metric"] == 'declare -- metric="1"'
    assert_same(orig, xr)


def test_a_failing_hook_fails_online_and_xenrules_reverts_it(dom0_factory, originals, tmp_path):
    # Intended difference (docs/rules/hooks-and-firewall.md): xenrules reverts
    # the event; the original leaves the vif configured.
    from test_hooks import compare_with_hooks
    orig, xr = compare_with_hooks(dom0_factory, scenario("hook-fatal", [up()]),
                                  {"10-fail.hook": 'fatal "no routing for $dev"\n'},
                                  tmp_path, originals)
    assert exits(orig) == exits(xr) == [1]
    for st in (orig, xr):
        assert st["xenstore"][BACK + "/hotplug-status"] == "error"
        assert st["xenstore"][BACK + "/hotplug-error"] == "no routing for vif1.0"
    assert vif_routes(orig) == {"10.0.0.5": (2, DOM0_IP)}
    assert vif_routes(xr) == {} and xr["links"]["vif1.0"]["addresses"] == []


@pytest.mark.parametrize("events", [[up(env={"XENRULES_FIREWALL": "on"})],
                                    [up(env={"XENRULES_FIREWALL": "on"}),
                                     down(env={"XENRULES_FIREWALL": "on"})]],
                         ids=["online", "online-offline"])
def test_firewall_switched_on_is_upstreams_handle_iptable(dom0_factory, upstream_originals,
                                                          events):
    orig, xr = compare_scenario(dom0_factory, scenario("firewall", events,
                                                       routed_dom0(ip="10.0.0.5 10.0.1.0/24")))
    assert exits(orig) == [0] * len(events)
    rules = [line for line in orig["firewall"] if "-A FORWARD" in line]
    assert len(rules) == (6 if len(events) == 1 else 0)
    assert all("vif1.0" in line for line in rules)
    assert_same(orig, xr)


def test_firewall_is_off_by_default_like_debian(dom0_factory, originals):
    orig, xr = compare_scenario(dom0_factory, scenario("no-firewall", [up()]))
    assert [line for line in xr["firewall"] if "-A FORWARD" in line] == []
    assert_same(orig, xr)
