"""The shipped vif-route rules (rules.d/50-vif-route.yaml), run by xenrules
alone in a simulated dom0: every action, the error paths, and the IPv6
extension the original does not have (it fails on an IPv6 entry of `ip`:
`ip route add 2001:db8::5 ... src 192.0.2.1` says "inet6 address is expected").
"""

import json

import pytest

from test_vif_route_differential import add_uplink

pytestmark = pytest.mark.netns

SCRIPT = "vif-route"
BACK = "/local/domain/0/backend/vif/1/0"
DOM0_IP = "192.0.2.1"
DOM0_IP6 = "2001:db8:f::1"
NOT_UP = ("eth0 is not up.  Bring it up or specify another interface with netdev=<if> "
          "as a parameter to vif-route.")


@pytest.fixture
def routed(dom0_factory):
    """A dom0 with eth0 (192.0.2.1/24) and no bridge; returns the dom0."""
    dom0 = dom0_factory(bridges=())
    add_uplink(dom0)
    return dom0


def vif(dom0, ip="10.0.0.5", tap=False, **kw):
    dom0.add_vif(1, 0, bridge=None, ip=ip, script=SCRIPT, **kw)
    if tap:
        dom0.add_tap(1, 0)


def run(dom0, *words, type_if="vif", **env):
    words = words or ("online",)
    full_env = dom0.hotplug_env(1, 0, type_if=type_if, script=SCRIPT)
    full_env.update(env)
    return dom0.run_xenrules(SCRIPT, list(words) + ["type_if=" + type_if], full_env)


def ok(proc):
    assert proc.returncode == 0, "exit %d\nstderr: %s\nlog: %s" % (
        proc.returncode, proc.stderr, proc.hotplug_log)


def failed(dom0, proc):
    assert proc.returncode == 1, "exit %d\nstderr: %s\nlog: %s" % (
        proc.returncode, proc.stderr, proc.hotplug_log)
    assert dom0.xs_read(BACK + "/hotplug-status") == "error"
    return dom0.xs_read(BACK + "/hotplug-error")


def routes(dom0, dev="vif1.0"):
    """{dst: (metric, prefsrc)} through dev, IPv4 and IPv6."""
    out = {}
    for fam in ("-4", "-6"):
        for r in dom0.ip_json(fam, "route", "show", "dev", dev):
            out[r["dst"]] = (r.get("metric"), r.get("prefsrc"))
    return out


def addrs(dom0, dev="vif1.0"):
    """{address/prefix: broadcast} of dev."""
    return {"%s/%s" % (a["local"], a["prefixlen"]): a.get("broadcast")
            for link in dom0.ip_json("address", "show", "dev", dev) for a in link["addr_info"]}


def proxy_arp(dom0, dev="vif1.0"):
    return dom0.sysctls()["net.ipv4.conf.%s.proxy_arp" % dev.replace(".", "/")]


def is_up(dom0, dev="vif1.0"):
    return dom0.state(xenstore=False)["links"][dev]["up"]


# -- online / offline -------------------------------------------------------------

def test_online_gives_the_vif_dom0s_address_proxy_arp_and_a_route_per_address(routed):
    vif(routed, ip="10.0.0.5 10.0.1.0/24")
    ok(run(routed, "online"))
    assert addrs(routed) == {DOM0_IP + "/32": "192.0.2.255"}
    assert is_up(routed) and proxy_arp(routed) == "1"
    assert routes(routed) == {"10.0.0.5": (2, DOM0_IP), "10.0.1.0/24": (2, DOM0_IP)}
    assert routed.xs_read(BACK + "/hotplug-status") == "connected"


def test_offline_removes_the_routes_and_leaves_the_rest(routed):
    vif(routed, ip="10.0.0.5 10.0.1.0/24")
    ok(run(routed, "online"))
    routed.ip("route", "add", "10.0.0.99", "dev", "vif1.0", "metric", "7")   # not ours
    ok(run(routed, "offline"))
    assert routes(routed) == {"10.0.0.99": (7, None)}
    assert addrs(routed) == {DOM0_IP + "/32": "192.0.2.255"}
    assert is_up(routed) and proxy_arp(routed) == "1"
    assert routed.xs_read(BACK + "/hotplug-status") == "connected"   # not rewritten


def test_offline_without_online_and_offline_of_a_vanished_vif_succeed(routed):
    vif(routed)
    ok(run(routed, "offline"))
    routed.del_link("vif1.0")
    ok(run(routed, "offline"))
    assert routed.xs_read(BACK + "/hotplug-status") == ""


def test_online_without_ip_sets_up_the_vif_without_routes(routed):
    vif(routed, ip=None)
    ok(run(routed, "online"))
    assert routes(routed) == {} and addrs(routed) == {DOM0_IP + "/32": "192.0.2.255"}
    assert routed.xs_read(BACK + "/hotplug-status") == "connected"


def test_xenstore_ip_wins_over_the_ip_argument(routed):
    vif(routed, ip="10.0.0.5")
    ok(run(routed, "online", "ip=10.9.9.9"))
    assert routes(routed) == {"10.0.0.5": (2, DOM0_IP)}


def test_vifname_renames_on_online_and_offline_finds_the_renamed_device(routed):
    vif(routed, vifname="web0")
    ok(run(routed, "online"))
    assert routes(routed, "web0") == {"10.0.0.5": (2, DOM0_IP)}
    assert proxy_arp(routed, "web0") == "1"
    ok(run(routed, "offline"))
    assert routes(routed, "web0") == {}


@pytest.mark.parametrize("action", ["add", "remove"])
def test_add_and_remove_for_a_vif_do_nothing(routed, action):
    vif(routed)
    before = routed.state()
    ok(run(routed, action))
    assert routed.state() == before


# -- tap --------------------------------------------------------------------------

def test_tap_add_uses_metric_1_and_remove_takes_the_routes_away(routed):
    vif(routed, tap=True)
    ok(run(routed, "add", type_if="tap"))
    assert addrs(routed, "vif1.0-emu") == {DOM0_IP + "/32": "192.0.2.255"}
    assert proxy_arp(routed, "vif1.0-emu") == "1" and is_up(routed, "vif1.0-emu")
    assert routes(routed, "vif1.0-emu") == {"10.0.0.5": (1, DOM0_IP)}
    assert routed.xs_read(BACK + "/hotplug-status") == ""   # only online reports success
    ok(run(routed, "remove", type_if="tap"))
    assert routes(routed, "vif1.0-emu") == {}


@pytest.mark.parametrize("action", ["online", "offline"])
def test_online_and_offline_for_a_tap_do_nothing(routed, action):
    vif(routed, tap=True)
    before = routed.state()
    ok(run(routed, action, type_if="tap"))
    assert routed.state() == before


def test_tap_without_interface_is_refused(routed):
    vif(routed, tap=True)
    proc = run(routed, "add", type_if="tap", INTERFACE="")
    assert proc.returncode == 1
    assert "required variable(s) not set: interface" in proc.hotplug_log
    assert routes(routed, "vif1.0-emu") == {}


# -- netdev -----------------------------------------------------------------------

def test_netdev_argument_chooses_another_uplink_and_its_first_primary_address(routed):
    add_uplink(routed, "eth1", cidr="198.51.100.7/24", n=2)
    routed.ip("address", "add", "198.51.100.8/24", "dev", "eth1")      # secondary
    routed.ip("address", "add", "203.0.113.1/24", "dev", "eth1")       # second primary
    vif(routed)
    ok(run(routed, "online", "netdev=eth1"))
    assert addrs(routed) == {"198.51.100.7/32": "198.51.100.255"}
    assert routes(routed) == {"10.0.0.5": (2, "198.51.100.7")}
    ok(run(routed, "offline", "netdev=eth1"))
    assert routes(routed) == {}


@pytest.mark.parametrize("action", ["online", "offline"])
@pytest.mark.parametrize("netdev", ["missing", "without-address"])
def test_netdev_without_an_ipv4_address_fails_before_touching_anything(dom0_factory, action, netdev):
    dom0 = dom0_factory(bridges=())
    if netdev == "without-address":
        add_uplink(dom0, cidr=None)
    vif(dom0, vifname="web0")
    before = dom0.state(xenstore=False)
    message = failed(dom0, run(dom0, action))
    assert message == NOT_UP
    assert dom0.state(xenstore=False) == before     # not even renamed


def test_netdev_named_in_the_message(routed):
    vif(routed)
    assert failed(routed, run(routed, "online", "netdev=eth7")) == NOT_UP.replace("eth0", "eth7")


# -- failures of online -------------------------------------------------------------

def test_online_of_a_missing_vif_fails_and_leaves_nothing(routed):
    vif(routed)
    routed.del_link("vif1.0")
    before = routed.state(xenstore=False)
    assert failed(routed, run(routed, "online")) == "device vif1.0 does not exist"
    assert routed.state(xenstore=False) == before


@pytest.mark.parametrize("ip, message", [
    ("10.0.0.5 not-an-address", "invalid route destination 'not-an-address'"),
    ("10.0.0.5 10.0.1.5/24", "ip route add 10.0.1.5/24 dev vif1.0 src 192.0.2.1 metric 2 "
                             "failed: Invalid argument"),
    ("10.0.0.5 10.0.0.5", "File exists"),
], ids=["not-an-address", "host-bits-under-prefix", "twice"])
def test_online_with_a_bad_ip_fails_and_reverts_everything(routed, ip, message):
    vif(routed, ip=ip)
    before = routed.state(xenstore=False)
    assert message in failed(routed, run(routed, "online"))
    # the original leaves the /32, the link up, proxy_arp and the first
    # route behind; xenrules reverts them (intended difference)
    assert routed.state(xenstore=False) == before


def test_second_online_fails_on_the_existing_routes_and_keeps_the_first_ones(routed):
    vif(routed)
    ok(run(routed, "online"))
    before = routed.state(xenstore=False)
    assert "File exists" in failed(routed, run(routed, "online"))
    assert routed.state(xenstore=False) == before


def test_offline_with_a_bad_ip_still_removes_the_good_routes(routed):
    vif(routed, ip="10.0.0.5")
    ok(run(routed, "online"))
    routed.xs_write(BACK + "/ip", "bogus 10.0.0.5")
    ok(run(routed, "offline"))
    assert routes(routed) == {}


# -- the IPv6 extension ---------------------------------------------------------------

def add_ipv6(dom0, dev="eth0", cidr=DOM0_IP6 + "/64"):
    dom0.ip("address", "add", cidr, "dev", dev, "nodad")


def test_ipv6_addresses_are_routed_with_dom0s_ipv6_source(routed):
    add_ipv6(routed)
    vif(routed, ip="10.0.0.5 2001:db8:5::5 2001:db8:6::/64")
    ok(run(routed, "online"))
    assert routes(routed) == {"10.0.0.5": (2, DOM0_IP), "2001:db8:5::5": (2, DOM0_IP6),
                              "2001:db8:6::/64": (2, DOM0_IP6)}
    assert addrs(routed) == {DOM0_IP + "/32": "192.0.2.255"}   # no IPv6 address on the vif
    ok(run(routed, "offline"))
    assert routes(routed) == {}


def test_ipv6_route_has_no_source_when_netdev_has_no_global_ipv6(routed):
    add_ipv6(routed, cidr="fe80::1/64")              # link-local only
    vif(routed, ip="2001:db8:5::5")
    ok(run(routed, "online"))
    assert routes(routed) == {"2001:db8:5::5": (2, None)}
    ok(run(routed, "offline"))
    assert routes(routed) == {}


def test_ipv6_on_a_tap_uses_metric_1(routed):
    add_ipv6(routed)
    vif(routed, ip="2001:db8:5::5", tap=True)
    ok(run(routed, "add", type_if="tap"))
    assert routes(routed, "vif1.0-emu") == {"2001:db8:5::5": (1, DOM0_IP6)}
    ok(run(routed, "remove", type_if="tap"))
    assert routes(routed, "vif1.0-emu") == {}


def test_bad_ipv6_entry_fails_and_reverts(routed):
    vif(routed, ip="10.0.0.5 2001:db8::zz")
    before = routed.state(xenstore=False)
    assert "invalid route destination '2001:db8::zz'" in failed(routed, run(routed, "online"))
    assert routed.state(xenstore=False) == before


def test_ipv6_only_still_needs_an_ipv4_dom0_address(dom0_factory):
    # the rule keeps the original's requirement: the vif gets dom0's IPv4 /32
    dom0 = dom0_factory(bridges=())
    add_uplink(dom0, cidr=None)
    add_ipv6(dom0)
    vif(dom0, ip="2001:db8:5::5")
    assert failed(dom0, run(dom0, "online")) == NOT_UP


def test_explain_shows_the_steps_with_expanded_values(routed, repo_root):
    vif(routed, ip="10.0.0.5 2001:db8:5::5")
    env = routed.hotplug_env(1, 0, script=SCRIPT)
    env.update(routed.xenrules_env())
    proc = routed.run(["/usr/bin/python3", "-m", "xenrules", "explain", SCRIPT, "online",
                       "type_if=vif"], env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "vif1.0: add address 192.0.2.1/32 brd 192.0.2.255" in out
    assert "add a route to each of [10.0.0.5] src 192.0.2.1 metric 2" in out
    assert "add a route to each of [2001:db8:5::5] metric 2" in out
    assert json.dumps(routes(routed)) == "{}"     # explain changed nothing
