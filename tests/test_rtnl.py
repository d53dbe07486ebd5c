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
