"""xenrules.rtnl: each raw request against a real link in a network
namespace of its own, compared with what `ip -j` shows; the fallback to
pyroute2 for requests it does not implement."""
import json
import os
import subprocess
import sys
import uuid

import pytest

from xenrules import rtnl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.netns


@pytest.fixture
def ns():
    name = f"xr-w10p-rtnl-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        def ip(*args):
            return subprocess.run(["ip", "-n", name, *args], check=True,
                                  capture_output=True, text=True).stdout
        ip("link", "add", "xrv0", "type", "veth", "peer", "name", "xrv1")
        ip("link", "add", "xrbr0", "type", "bridge")
        ip("address", "add", "192.0.2.7/24", "dev", "xrv0")
        ip("address", "add", "2001:db8::7/64", "dev", "xrv0", "nodad")
        ns.ip, ns.name = ip, name
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def raw(ns, code):
    """Run code with `r` a RawRoute (fallback: a class that fails) inside the namespace."""
    prog = ("import json, socket, sys; sys.path.insert(0, %r)\n"
            "from xenrules.rtnl import RawRoute, NetlinkError\n"
            "def no(): raise AssertionError('pyroute2 asked for')\n"
            "r = RawRoute(no); idx = socket.if_nametoindex\n" % REPO) + code + \
           "\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith('pyroute2'))))"
    proc = subprocess.run(["ip", "netns", "exec", ns.name, sys.executable, "-c", prog],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    *out, mods = proc.stdout.splitlines()
    assert json.loads(mods) == []        # pyroute2 never imported
    return out


def link(ns, dev):
    return json.loads(ns.ip("-j", "link", "show", "dev", dev))[0]


def test_set_up_and_down_change_the_link_flags_ip_shows(ns):
    raw(ns, "r.link('set', index=idx('xrv0'), state='up')")
    assert "UP" in link(ns, "xrv0")["flags"]
    raw(ns, "r.link('set', index=idx('xrv0'), state='down')")
    assert "UP" not in link(ns, "xrv0")["flags"]


def test_set_mtu_master_address_and_name(ns):
    raw(ns, "r.link('set', index=idx('xrv0'), mtu=1400)\n"
            "r.link('set', index=idx('xrv0'), master=idx('xrbr0'))\n"
            "r.link('set', index=idx('xrv0'), address='fe:ff:ff:ff:ff:ff')")
    got = link(ns, "xrv0")
    assert (got["mtu"], got["master"], got["address"]) == (1400, "xrbr0", "fe:ff:ff:ff:ff:ff")
    raw(ns, "r.link('set', index=idx('xrv0'), master=0)\n"
            "r.link('set', index=idx('xrv0'), ifname='xrvX')")
    got = link(ns, "xrvX")
    assert "master" not in got


def test_get_addr_lists_what_ip_address_shows(ns):
    out = raw(ns, "for m in r.get_addr(index=idx('xrv0')):\n"
                  "    print(m['family'], m.get_attr('IFA_ADDRESS'), m['prefixlen'])")
    shown = json.loads(ns.ip("-j", "address", "show", "dev", "xrv0"))[0]["addr_info"]
    want = {f"{10 if a['family'] == 'inet6' else 2} {a['local']} {a['prefixlen']}" for a in shown}
    assert set(out) == want and "2 192.0.2.7 24" in want


def test_get_addr_filters_by_family(ns):
    out = raw(ns, "print([m.get_attr('IFA_ADDRESS') for m in r.get_addr(family=2, index=idx('xrv0'))])")
    assert out == ["['192.0.2.7']"]


def test_flush_addr_removes_every_address(ns):
    raw(ns, "r.flush_addr(index=idx('xrv0'))")
    shown = json.loads(ns.ip("-j", "address", "show", "dev", "xrv0"))[0]["addr_info"]
    assert shown == []


def test_kernel_refusal_is_an_oserror_with_the_errno(ns):
    out = raw(ns, "try:\n    r.link('set', index=idx('xrv0'), mtu=10**6)\n"
                  "except NetlinkError as e:\n    print(e.code, isinstance(e, OSError))")
    assert out == ["22 True"]      # EINVAL


def test_unknown_request_goes_to_the_fallback():
    calls = []

    class Fake:
        def link(self, *a, **k):
            calls.append(("link", a, k))
            return "fb"

        def route(self, *a, **k):
            calls.append(("route", a, k))
            return "fb"

        def close(self):
            calls.append("close")

    r = rtnl.RawRoute(lambda: Fake)
    assert r.link("add", ifname="x", kind="bridge") == "fb"
    assert r.link("set", index=3, txqlen=5) == "fb"
    assert r.route("add", dst="10.0.0.0/8") == "fb"
    r.close()
    assert [c[0] for c in calls[:3]] == ["link", "link", "route"] and calls[-1] == "close"


def test_attribute_parser_reads_padded_attributes():
    data = rtnl._attr(3, b"eth0\0") + rtnl._attr(4, b"\x00\x05\x00\x00")
    assert list(rtnl._attrs(data)) == [(3, b"eth0\0"), (4, b"\x00\x05\x00\x00")]


def test_bad_mac_is_refused():
    with pytest.raises(ValueError):
        rtnl._mac("fe:ff")


def addresses(ns, dev):
    return {(a["local"], a["prefixlen"]) for i in json.loads(ns.ip("-j", "address", "show", "dev", dev))
            for a in i["addr_info"]}


def test_addr_add_and_del_are_what_ip_address_shows(ns):
    raw(ns, "r.addr('add', index=idx('xrv1'), family=2, address='10.9.8.7', prefixlen=32,"
            " broadcast='10.9.8.255')\n"
            "r.addr('add', index=idx('xrv1'), family=10, address='2001:db8:9::1', prefixlen=128)")
    shown = json.loads(ns.ip("-j", "address", "show", "dev", "xrv1"))[0]["addr_info"]
    v4 = [a for a in shown if a["family"] == "inet"]
    assert [(a["local"], a["prefixlen"], a.get("broadcast")) for a in v4] == [("10.9.8.7", 32, "10.9.8.255")]
    assert ("2001:db8:9::1", 128) in addresses(ns, "xrv1")
    # add again: EEXIST, as `ip address add` says "File exists"
    out = raw(ns, "try:\n    r.addr('add', index=idx('xrv1'), family=2, address='10.9.8.7', prefixlen=32)\n"
                  "except NetlinkError as e:\n    print(e.code)")
    assert out == ["17"]
    raw(ns, "r.addr('del', index=idx('xrv1'), family=2, address='10.9.8.7', prefixlen=32)")
    assert ("10.9.8.7", 32) not in addresses(ns, "xrv1")


def routes(ns, *family):
    return json.loads(ns.ip("-j", *family, "route", "show", "table", "main"))


def test_route_add_list_and_del_match_ip_route(ns):
    ns.ip("link", "set", "xrv0", "up")
    ns.ip("link", "set", "xrv1", "up")
    raw(ns, "r.route('add', oif=idx('xrv0'), family=2, dst='198.51.100.9', dst_len=32, table=254,"
            " prefsrc='192.0.2.7', priority=2, proto=3, scope=253, type=1)")
    [route] = [r for r in routes(ns) if r["dst"] == "198.51.100.9"]
    # ip -j leaves out protocol boot, `ip route add`'s own
    assert (route["dev"], route["prefsrc"], route["metric"], route.get("protocol", "boot"),
            route["scope"]) == ("xrv0", "192.0.2.7", 2, "boot", "link")
    out = raw(ns, "print(json.dumps([(m['dst_len'], m.get_attr('RTA_DST'), m.get_attr('RTA_OIF'),"
                  " m.get_attr('RTA_PREFSRC'), m.get_attr('RTA_PRIORITY'))"
                  " for m in r.get_routes(family=2, table=254) if m.get_attr('RTA_DST')]))")
    ifindex = link(ns, "xrv0")["ifindex"]
    assert [32, "198.51.100.9", ifindex, "192.0.2.7", 2] in json.loads(out[0])
    # del as route.remove asks: any scope and protocol, dst/dev/src/metric must match
    raw(ns, "r.route('del', oif=idx('xrv0'), family=2, dst='198.51.100.9', dst_len=32, table=254,"
            " prefsrc='192.0.2.7', priority=2, proto=0, scope=255, type=1)")
    assert not [r for r in routes(ns) if r["dst"] == "198.51.100.9"]


def test_ipv6_route_of_the_local_table_is_not_listed_as_main(ns):
    ns.ip("link", "set", "xrv0", "up")
    out = raw(ns, "print(json.dumps(sorted({m['table'] for m in r.get_routes(family=10, table=254)})))")
    # the kernel's local-table routes (ff00::/8, the address itself) are left out
    assert json.loads(out[0]) == [254]
