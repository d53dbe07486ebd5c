"""The address, route and sysctl steps and the ip.* variable sources.

Pure functions are tested directly; every step runs through
`python3 -m xenrules.hotplug` in a simulated dom0 (vif1.0, a veth whose peer
is down) with a small rule for `xr-test`, and the real end state is read back
with `ip -j` and the namespace's /proc/sys.
"""


import pytest

from events import BACK, why
from xenrules.errors import StepError
from xenrules.sources.ip import classful_broadcast, split_entries
from xenrules.steps.address import parse_cidr
from xenrules.steps.sysctl import sysctl_path


# -- pure helpers ---------------------------------------------------------------

@pytest.mark.parametrize("addr, brd", [
    ("10.20.30.40", "10.255.255.255"), ("127.0.0.1", "127.255.255.255"),
    ("172.16.1.2", "172.16.255.255"), ("192.0.2.1", "192.0.2.255"),
    ("0.1.2.3", "255.255.255.255"), ("224.0.0.1", ""), ("240.0.0.1", ""),
    ("2001:db8::1", ""), ("", ""), ("junk", ""),
])
def test_classful_broadcast_is_what_ifconfig_leaves(addr, brd):
    assert classful_broadcast(addr) == brd


def test_split_entries_puts_ipv6_on_one_side_and_everything_else_on_the_other():
    assert split_entries(" 10.0.0.1 2001:db8::1  bogus 10.1.0.0/16 2001:db8:1::/64 ") == (
        ["10.0.0.1", "bogus", "10.1.0.0/16"], ["2001:db8::1", "2001:db8:1::/64"])
    assert split_entries("") == ([], [])


@pytest.mark.parametrize("text, expected", [
    ("10.0.0.5", ("10.0.0.5", 32)), ("10.0.1.0/24", ("10.0.1.0", 24)),
    ("10.0.1.5/24", ("10.0.1.5", 24)), ("2001:db8::5", ("2001:db8::5", 128)),
    ("2001:db8::/64", ("2001:db8::", 64)),
])
def test_parse_cidr_accepts_addresses_with_or_without_prefix(text, expected):
    addr, plen = parse_cidr(text)
    assert (str(addr), plen) == expected


@pytest.mark.parametrize("text", ["10.0.0", "10.0.0.5/33", "2001:db8::/129", "10.0.0.5/", "x/24",
                                  "10.0.0.5/-1", "default", "", "10.0.0.5/\u00b2",
                                  "10.0.0.5/\u0663", "fe80::1%eth0"])
def test_parse_cidr_rejects_anything_else(text):
    with pytest.raises(StepError):
        parse_cidr(text)


def test_sysctl_path_matches_dots_against_proc_sys(tmp_path):
    (tmp_path / "net/ipv4/conf/vif1.0").mkdir(parents=True)
    (tmp_path / "net/ipv4/conf/vif1.0/proxy_arp").write_text("0\n")
    (tmp_path / "net/ipv4/conf/vif1").mkdir()
    (tmp_path / "net/ipv4/ip_forward").write_text("0\n")
    want = str(tmp_path / "net/ipv4/conf/vif1.0/proxy_arp")
    assert sysctl_path("net.ipv4.conf.vif1.0.proxy_arp", tmp_path) == want
    assert sysctl_path("net/ipv4/conf/vif1.0/proxy_arp", tmp_path) == want
    assert sysctl_path("net.ipv4.ip_forward", tmp_path) == str(tmp_path / "net/ipv4/ip_forward")
    for bad in ("net.ipv4.conf.vif1.0", "net/ipv4/../ipv4/ip_forward", "/net/ipv4/ip_forward",
                "net.ipv4.conf.vif9.0.proxy_arp", "", "net..ipv4.ip_forward"):
        assert sysctl_path(bad, tmp_path) is None, bad


# -- in a simulated dom0 ------------------------------------------------------------



def addr_info(dom0, dev="vif1.0"):
    """{address/prefix: broadcast} on a device."""
    out = {}
    for link in dom0.ip_json("address", "show", "dev", dev):
        for a in link["addr_info"]:
            out["%s/%s" % (a["local"], a["prefixlen"])] = a.get("broadcast")
    return out


def routes(dom0, dev="vif1.0"):
    """[(dst, metric, prefsrc, protocol, scope)] through a device, both families."""
    out = []
    for fam in ("-4", "-6"):
        for r in dom0.ip_json(fam, "route", "show", "dev", dev):
            out.append((r["dst"], r.get("metric"), r.get("prefsrc"), r.get("protocol", "boot"),
                        r.get("scope")))
    return sorted(out)


def proc_sys(dom0, path):
    proc = dom0.run(["cat", "/proc/sys/" + path])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def failed(proc, ev, xs_server):
    snap = xs_server.snapshot()
    assert proc.returncode == 1, why(proc, ev)
    assert snap[BACK + "/hotplug-status"] == "error"
    return snap[BACK + "/hotplug-error"]


@pytest.fixture
def dom0_ip(dom0):
    """dom0's uplink eth0 (192.0.2.1/24, 2001:db8:f::1/64) for src addresses;
    vif1.0 up (no route goes through a device that is down)."""
    dom0.ip("link", "add", "name", "eth0", "type", "veth", "peer", "name", "eth0p")
    dom0.ip("address", "add", "192.0.2.1/24", "dev", "eth0")
    dom0.ip("address", "add", "2001:db8:f::1/64", "dev", "eth0", "nodad")
    dom0.ip("link", "set", "dev", "eth0", "up")
    dom0.ip("link", "set", "dev", "eth0p", "up")
    dom0.ip("link", "set", "dev", "vif1.0", "up")
    return "192.0.2.1"


# address.add / address.remove

@pytest.mark.netns
def test_address_add_puts_ipv4_and_ipv6_addresses_on_the_device(ev, dom0):
    ev.steps("""
        - address.add: {dev: "{vif}", address: 192.0.2.7/32, broadcast: 192.0.2.255}
        - address.add: {dev: "{vif}", address: 198.51.100.7}
        - address.add: {dev: "{vif}", address: "2001:db8::7/64"}
    """)
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    assert addr_info(dom0) == {"192.0.2.7/32": "192.0.2.255", "198.51.100.7/32": None,
                               "2001:db8::7/64": None}


@pytest.mark.netns
def test_address_add_of_an_address_already_there_is_ok_and_revert_keeps_it(ev, dom0, xs_server):
    dom0.ip("address", "add", "192.0.2.7/32", "dev", "vif1.0")
    ev.steps("""
        - address.add: {dev: "{vif}", address: 192.0.2.7/32}
        - address.add: {dev: "{vif}", address: 192.0.2.8/32}
        - hotplug.error: {message: stop}
    """)
    assert failed(ev.run(), ev, xs_server) == "stop"
    # the one it added is gone again, the one it found stays
    assert addr_info(dom0) == {"192.0.2.7/32": None}


@pytest.mark.netns
def test_address_add_with_exists_fail_refuses_an_address_already_there(ev, dom0, xs_server):
    dom0.ip("address", "add", "192.0.2.7/32", "dev", "vif1.0")
    ev.steps("""
        - address.add: {dev: "{vif}", address: 192.0.2.7/32, exists: fail}
    """)
    assert "File exists" in failed(ev.run(), ev, xs_server)
    assert addr_info(dom0) == {"192.0.2.7/32": None}


@pytest.mark.netns
@pytest.mark.parametrize("args, message", [
    ('dev: "{vif}", address: 192.0.2.300/32', "invalid address"),
    ('dev: "{vif}", address: "2001:db8::1", broadcast: 192.0.2.255', "broadcast address needs IPv4"),
    ('dev: "{vif}", address: 192.0.2.7, broadcast: nonsense', "invalid broadcast address"),
    ("dev: vif9.9, address: 192.0.2.7", "device vif9.9 does not exist"),
])
def test_address_add_with_bad_arguments_fails_and_adds_nothing(ev, dom0, xs_server, args, message):
    ev.steps("- address.add: {%s}\n" % args)
    assert message in failed(ev.run(), ev, xs_server)
    assert addr_info(dom0) == {}


@pytest.mark.netns
def test_address_remove_takes_the_address_off_and_tolerates_absence(ev, dom0, xs_server):
    dom0.ip("address", "add", "192.0.2.7/32", "broadcast", "192.0.2.255", "dev", "vif1.0")
    dom0.ip("address", "add", "192.0.2.8/32", "dev", "vif1.0")
    ev.steps("""
        - address.remove: {dev: "{vif}", address: 192.0.2.7/32}
        - address.remove: {dev: "{vif}", address: 192.0.2.9/32}
        - address.remove: {dev: vif9.9, address: 192.0.2.8/32}
    """)
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    assert addr_info(dom0) == {"192.0.2.8/32": None}


@pytest.mark.netns
def test_address_remove_is_reverted_with_its_broadcast(ev, dom0, xs_server):
    dom0.ip("address", "add", "10.1.2.3/32", "broadcast", "10.255.255.255", "dev", "vif1.0")
    ev.steps("""
        - address.remove: {dev: "{vif}", address: 10.1.2.3/32}
        - hotplug.error: {message: stop}
    """)
    failed(ev.run(), ev, xs_server)
    assert addr_info(dom0) == {"10.1.2.3/32": "10.255.255.255"}


# route.add / route.remove

@pytest.mark.netns
def test_route_add_makes_one_route_per_destination_like_ip_route_add(ev, dom0, dom0_ip):
    ev.steps("""
        - route.add: {dev: "{vif}", to: " 10.0.0.5  10.0.1.0/24", src: 192.0.2.1, metric: 2}
        - route.add: {dev: "{vif}", to: "2001:db8:5::5 2001:db8:6::/64", src: "2001:db8:f::1", metric: 7}
        - route.add: {dev: "{vif}", to: 10.0.9.9}
        - route.add: {dev: "{vif}", to: ""}
    """)
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    assert routes(dom0) == sorted([
        ("10.0.0.5", 2, "192.0.2.1", "boot", "link"),
        ("10.0.1.0/24", 2, "192.0.2.1", "boot", "link"),
        ("10.0.9.9", None, None, "boot", "link"),
        ("2001:db8:5::5", 7, "2001:db8:f::1", "boot", None),
        ("2001:db8:6::/64", 7, "2001:db8:f::1", "boot", None),
    ])
    # and exactly what iproute2 makes of the same request
    dom0.ip("route", "del", "10.0.0.5", "dev", "vif1.0", "src", "192.0.2.1", "metric", "2")
    dom0.ip("route", "add", "10.0.0.5", "dev", "vif1.0", "src", "192.0.2.1", "metric", "2")
    assert routes(dom0)[0] == ("10.0.0.5", 2, "192.0.2.1", "boot", "link")


@pytest.mark.netns
@pytest.mark.parametrize("to, src, metric, message", [
    ("10.0.0.5 bogus", "192.0.2.1", "2", "invalid route destination 'bogus'"),
    ("10.0.0.5 2001:db8::5", "192.0.2.1", "2", "not of the family of 2001:db8::5"),
    ("10.0.0.5", "192.0.2.1/24", "2", "invalid source address"),
    ("10.0.0.5", "192.0.2.1", "two", "invalid metric"),
    ("10.0.0.5", "192.0.2.1", "\u00b2", "invalid metric"),    # isdigit() but not int()
], ids=["bad-destination", "family-mismatch", "bad-src", "bad-metric", "non-ascii-metric"])
def test_route_add_checks_every_argument_before_adding_any_route(ev, dom0, dom0_ip, xs_server,
                                                                 to, src, metric, message):
    ev.steps('- route.add: {dev: "{vif}", to: "%s", src: "%s", metric: "%s"}\n' % (to, src, metric))
    assert message in failed(ev.run(), ev, xs_server)
    assert routes(dom0) == []


@pytest.mark.netns
def test_route_add_refused_by_the_kernel_removes_the_routes_it_already_added(ev, dom0, dom0_ip,
                                                                            xs_server):
    # host bits set under a /24: the kernel says EINVAL, like for `ip route add`
    ev.steps('- route.add: {dev: "{vif}", to: "10.0.0.5 10.0.0.6 10.0.1.5/24", metric: 2}\n')
    message = failed(ev.run(), ev, xs_server)
    assert "ip route add 10.0.1.5/24 dev vif1.0 metric 2 failed: Invalid argument" in message
    assert routes(dom0) == []


@pytest.mark.netns
def test_route_add_of_an_existing_route_fails_and_keeps_it(ev, dom0, dom0_ip, xs_server):
    dom0.ip("route", "add", "10.0.0.5", "dev", "vif1.0", "metric", "2")
    ev.steps('- route.add: {dev: "{vif}", to: "10.0.0.4 10.0.0.5", metric: 2}\n')
    assert "File exists" in failed(ev.run(), ev, xs_server)
    assert routes(dom0) == [("10.0.0.5", 2, None, "boot", "link")]


@pytest.mark.netns
def test_route_add_is_reverted_when_a_later_step_fails(ev, dom0, dom0_ip, xs_server):
    dom0.ip("route", "add", "10.0.0.9", "dev", "vif1.0", "metric", "5")
    ev.steps("""
        - route.add: {dev: "{vif}", to: "10.0.0.5 2001:db8:5::5", metric: 2}
        - hotplug.error: {message: stop}
    """)
    failed(ev.run(), ev, xs_server)
    assert routes(dom0) == [("10.0.0.9", 5, None, "boot", "link")]


@pytest.mark.netns
def test_route_remove_deletes_only_the_matching_routes_and_tolerates_missing_ones(ev, dom0, dom0_ip):
    for dst, metric in (("10.0.0.5", "2"), ("10.0.0.5", "1"), ("10.0.0.6", "2")):
        dom0.ip("route", "add", dst, "dev", "vif1.0", "src", "192.0.2.1", "metric", metric)
    dom0.ip("-6", "route", "add", "2001:db8:5::5", "dev", "vif1.0", "metric", "2")
    ev.steps("""
        - route.remove: {dev: "{vif}", to: "10.0.0.5 10.0.0.7 2001:db8:5::5", src: 192.0.2.1, metric: 2}
    """)
    # the IPv6 destination cannot take an IPv4 src: reported, the rest done
    proc = ev.run()
    assert proc.returncode == 1, why(proc, ev)
    assert routes(dom0) == sorted([("10.0.0.5", 1, "192.0.2.1", "boot", "link"),
                                   ("10.0.0.6", 2, "192.0.2.1", "boot", "link"),
                                   ("2001:db8:5::5", 2, None, "boot", None)])
    ev.steps("""
        - route.remove: {dev: "{vif}", to: "2001:db8:5::5 bogus 10.0.0.6", src: "", metric: 2, on_error: ignore}
        - route.remove: {dev: vif9.9, to: "10.0.0.5", metric: 1}
    """)
    proc = ev.run(XENRULES_LOG_LEVEL="debug")   # an ignored failure is a debug line
    assert proc.returncode == 0, why(proc, ev)
    assert routes(dom0) == [("10.0.0.5", 1, "192.0.2.1", "boot", "link")]
    assert "invalid route destination 'bogus'" in ev.log()


@pytest.mark.netns
def test_route_remove_is_reverted_when_a_later_step_fails(ev, dom0, dom0_ip, xs_server):
    dom0.ip("route", "add", "10.0.0.5", "dev", "vif1.0", "src", "192.0.2.1", "metric", "2")
    before = routes(dom0)
    ev.steps("""
        - route.remove: {dev: "{vif}", to: "10.0.0.5", src: 192.0.2.1, metric: 2}
        - hotplug.error: {message: stop}
    """)
    failed(ev.run(), ev, xs_server)
    assert routes(dom0) == before


# sysctl.set

@pytest.mark.netns
@pytest.mark.parametrize("name", ["net.ipv4.conf.{vif}.proxy_arp", "net/ipv4/conf/{vif}/proxy_arp"])
def test_sysctl_set_writes_proc_sys_for_a_device_name_with_a_dot(ev, dom0, name):
    ev.steps('- sysctl.set: {name: "%s", value: 1}\n' % name)
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    assert proc_sys(dom0, "net/ipv4/conf/vif1.0/proxy_arp") == "1"
    assert dom0.sysctls()["net.ipv4.conf.vif1/0.proxy_arp"] == "1"


@pytest.mark.netns
def test_sysctl_set_is_reverted_to_the_old_value(ev, dom0, xs_server):
    dom0.run(["sysctl", "-q", "-w", "net.ipv4.conf.vif1/0.proxy_arp=1",
              "net.ipv4.conf.vif1/0.forwarding=0"])
    ev.steps("""
        - sysctl.set: {name: "net.ipv4.conf.{vif}.proxy_arp", value: 0}
        - sysctl.set: {name: "net.ipv4.conf.{vif}.forwarding", value: 1}
        - hotplug.error: {message: stop}
    """)
    failed(ev.run(), ev, xs_server)
    assert proc_sys(dom0, "net/ipv4/conf/vif1.0/proxy_arp") == "1"
    assert proc_sys(dom0, "net/ipv4/conf/vif1.0/forwarding") == "0"


@pytest.mark.netns
@pytest.mark.parametrize("name, value, message", [
    ("net.ipv4.conf.vif9.9.proxy_arp", "1", "no sysctl net.ipv4.conf.vif9.9.proxy_arp"),
    ("net/ipv4/../ipv4/ip_forward", "1", "no sysctl"),
    ("net.ipv4.conf.{vif}.proxy_arp", "banana", "Invalid argument"),
])
def test_sysctl_set_failures_are_reported(ev, dom0, xs_server, name, value, message):
    ev.steps('- sysctl.set: {name: "%s", value: "%s"}\n' % (name, value))
    assert message in failed(ev.run(), ev, xs_server)
    assert proc_sys(dom0, "net/ipv4/conf/vif1.0/proxy_arp") == "0"


# ip.* sources

@pytest.mark.netns
def test_ip_sources_read_the_devices_addresses(ev, dom0, dom0_ip, xs_server):
    # a secondary address of the same subnet, another primary, a link-local
    # and a tentative IPv6 address: none of them is chosen
    dom0.ip("address", "add", "192.0.2.9/24", "dev", "eth0")          # secondary
    dom0.ip("address", "add", "fe80::1/64", "dev", "eth0")
    dom0.ip("address", "add", "2001:db8:e::1/64", "dev", "vif1.0")   # tentative (no carrier)
    ev.rules("""
        - rule: xr-ip-sources
          match: {script: xr-test}
          vars:
            v4: {ip.ipv4_of: eth0}
            v6: {ip.ipv6_of: eth0}
            v6_vif: {ip.ipv6_of: "{vif}"}
            none4: {ip.ipv4_of: vif9.9}
            none4b: {ip.ipv4_of: "{vif}"}
            brd: {ip.classful_broadcast: "{v4}"}
            list4: {ip.ipv4_entries: "10.0.0.1 2001:db8::1 x"}
            list6: {ip.ipv6_entries: "10.0.0.1 2001:db8::1 x"}
          actions:
            online:
              - xenstore.write: {path: "{backend}/xr", value: "[{v4}|{v6}|{v6_vif}|{none4}|{none4b}|{brd}|{list4}|{list6}]"}
    """)
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    assert xs_server.snapshot()[BACK + "/xr"] == \
        "[192.0.2.1|2001:db8:f::1||||192.0.2.255|10.0.0.1 x|2001:db8::1]"
