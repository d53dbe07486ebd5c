"""antispoof.vif with real packets: the shipped vif-bridge and vif-route rules with
XENRULES_ANTISPOOF=on, a guest namespace behind the vif sending (scapy-built
frames through an AF_PACKET socket) each spoof and each legitimate packet,
and a sniffer on the far side of the bridge / the router saying what got
through. Every test also proves it could fail: after offline (no element left)
or without the switch, the very spoofs it saw dropped get through.
"""
import json
import subprocess

import pytest

from packets import Sniffer, send
from test_vif_route_differential import add_uplink

pytestmark = pytest.mark.netns
scapy = pytest.importorskip("scapy.all")
from scapy.all import (ARP, BOOTP, DHCP, Dot1Q, Ether, ICMPv6ND_NA, ICMPv6ND_NS,  # noqa: E402
                       ICMPv6ND_RA, ICMPv6NDOptDstLLAddr, ICMPv6NDOptSrcLLAddr, IP, IPv6, UDP)
from scapy.layers.dhcp6 import DHCP6_Reply  # noqa: E402

MAC = "00:16:3e:00:01:00"          # the sandbox's MAC for guest 1's vif 0
LL = "fe80::216:3eff:fe00:100"     # and its link-local
OTHER_MAC = "00:16:3e:00:99:99"
IP4, IP6 = "192.0.2.10", "2001:db8::10"
BACK = "/local/domain/0/backend/vif/1/0"
ON = {"XENRULES_ANTISPOOF": "on"}


class Case:
    """A frame the guest sends; `marker`, the bytes that say it arrived (its
    L3 payload: forwarding by a router changes the headers, never those)."""

    def __init__(self, name, frame):
        self.name, self.frame = name, frame
        for layer in (UDP, ICMPv6ND_NS, ICMPv6ND_NA, ICMPv6ND_RA, ARP):
            if frame.haslayer(layer):
                self.marker = bytes(frame[layer])
                break

    def arrived(self, frames):
        return any(self.marker in f for f in frames)


def udp(name, src, dst, sport=40000, dport=9, mac=MAC, dmac="ff:ff:ff:ff:ff:ff"):
    l3 = IP(src=src, dst=dst) if ":" not in src else IPv6(src=src, dst=dst)
    return Case(name, Ether(src=mac, dst=dmac) / l3 / UDP(sport=sport, dport=dport)
                / name.encode())


def icmp6(name, l4, src=IP6, dst="ff02::1", mac=MAC, dmac="33:33:00:00:00:01"):
    return Case(name, Ether(src=mac, dst=dmac) / IPv6(src=src, dst=dst, hlim=255) / l4)


def arp(name, hwsrc=MAC, psrc=IP4, pdst="192.0.2.99", op=1, mac=MAC):
    return Case(name, Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
                / ARP(op=op, hwsrc=hwsrc, psrc=psrc, pdst=pdst))


def dhcp(name, src, op, kind, sport, dport):
    return Case(name, Ether(src=MAC, dst="ff:ff:ff:ff:ff:ff")
                / IP(src=src, dst="255.255.255.255") / UDP(sport=sport, dport=dport)
                / BOOTP(op=op, chaddr=bytes.fromhex(MAC.replace(":", "")), xid=len(name))
                / DHCP(options=[("message-type", kind), "end"]))


def bridged_legit():
    return [
        udp("own-ipv4", IP4, "192.0.2.99"),
        udp("own-ipv6", IP6, "ff02::1", dmac="33:33:00:00:00:01"),
        udp("own-link-local", LL, "ff02::1", dmac="33:33:00:00:00:01"),
        dhcp("dhcp-discover", "0.0.0.0", 1, "discover", 68, 67),
        arp("arp-own"),
        icmp6("ns-own", ICMPv6ND_NS(tgt="2001:db8::99") / ICMPv6NDOptSrcLLAddr(lladdr=MAC)),
        icmp6("na-own", ICMPv6ND_NA(tgt=IP6, R=0, S=0) / ICMPv6NDOptDstLLAddr(lladdr=MAC)),
        icmp6("dad-ns", ICMPv6ND_NS(tgt=IP6), src="::", dst="ff02::1:ff00:10"),
    ]


def mac_spoofs():
    """Spoofs dropped even with no `ip`."""
    return [
        udp("other-mac", IP4, "192.0.2.99", mac=OTHER_MAC),
        arp("arp-other-sender-mac", hwsrc=OTHER_MAC),
        icmp6("ra", ICMPv6ND_RA() / ICMPv6NDOptSrcLLAddr(lladdr=MAC), src=LL),
        dhcp("dhcp-offer", IP4, 2, "offer", 67, 68),
        Case("dhcpv6-reply", Ether(src=MAC, dst="33:33:00:01:00:02")
             / IPv6(src=LL, dst="ff02::1:2") / UDP(sport=547, dport=546) / DHCP6_Reply()),
        icmp6("ns-other-lla", ICMPv6ND_NS(tgt="2001:db8::99")
              / ICMPv6NDOptSrcLLAddr(lladdr=OTHER_MAC)),
        Case("vlan-tagged", Ether(src=MAC, dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=5)
             / IP(src="192.0.2.77", dst="192.0.2.99") / UDP(sport=1, dport=9) / b"vlan"),
    ]


def ip_spoofs():
    """Spoofs dropped when the vif has addresses."""
    return [
        udp("other-ipv4", "192.0.2.66", "192.0.2.99"),
        udp("other-ipv6", "2001:db8::66", "ff02::1", dmac="33:33:00:00:00:01"),
        arp("gratuitous-arp-other-ip", psrc="192.0.2.66", pdst="192.0.2.66", op=2),
        icmp6("na-other-address", ICMPv6ND_NA(tgt="2001:db8::66", R=0, S=0)
              / ICMPv6NDOptDstLLAddr(lladdr=MAC)),
    ]


# -- the sandbox: dom0 with a bridge, a guest namespace, a far end ---------------------

@pytest.fixture
def world(dom0_factory, tmp_path):
    dom0 = dom0_factory()
    guest = dom0.netns + "-guest"
    subprocess.run(["ip", "netns", "add", guest], check=True)
    try:
        yield World(dom0, guest, tmp_path)
    finally:
        subprocess.run(["ip", "netns", "del", guest], check=False)


class World:
    def __init__(self, dom0, guest, tmp_path):
        self.dom0, self.guest, self.tmp = dom0, guest, tmp_path
        self.far = "far"

    def gip(self, *args):
        subprocess.run(["ip", "-n", self.guest] + list(args), check=True)

    def plug_guest(self, ip, script="vif-bridge", **kw):
        """The vif in dom0, its peer (the guest's eth0) in the guest namespace."""
        self.script = script
        self.dom0.add_vif(1, 0, ip=ip, script=script, **kw)
        self.dom0.ip("link", "set", "g1.0", "netns", self.guest)
        self.gip("link", "set", "g1.0", "address", MAC)
        self.gip("link", "set", "g1.0", "up")

    def far_end_on_bridge(self):
        self.dom0.ip("link", "add", "far", "type", "veth", "peer", "name", "farp")
        self.dom0.ip("link", "set", "farp", "master", "xenbr0")
        for dev in ("far", "farp", "xenbr0"):
            self.dom0.ip("link", "set", dev, "up")

    def event(self, action, **env):
        full = self.dom0.hotplug_env(1, 0, script=self.script)
        full["XENRULES_ANTISPOOF_RECORDS"] = str(self.tmp / "antispoof")
        full.update(env)
        proc = self.dom0.run_xenrules(self.script, [action, "type_if=vif"], full)
        assert proc.returncode == 0, (proc.stderr, proc.hotplug_log)
        return proc

    def passed(self, cases, wire="g1.0"):
        """The names of the cases that arrived at the far end."""
        with Sniffer(self.dom0.netns, self.far) as sniffer:
            send(self.guest, wire, [c.frame for c in cases])
        return {c.name for c in cases if c.arrived(sniffer.frames)}

    def elements_of(self, dev, family="bridge"):
        out = subprocess.run(["ip", "netns", "exec", self.dom0.netns, "nft", "-j", "list",
                              "table", family, "xenrules_antispoof"],
                             capture_output=True, text=True)
        if out.returncode != 0:
            return []
        return [e for o in json.loads(out.stdout)["nftables"] if "set" in o
                for e in o["set"].get("elem", []) if dev in json.dumps(e)]


def names(cases):
    return {c.name for c in cases}


# -- bridged ---------------------------------------------------------------------------

def test_bridged_guest_sends_only_its_own_traffic(world):
    world.plug_guest(f"{IP4} {IP6}")
    world.far_end_on_bridge()
    world.event("online", **ON)
    spoofs = mac_spoofs() + ip_spoofs()
    assert world.passed(bridged_legit() + spoofs) == names(bridged_legit())
    world.event("offline", **ON)
    # the test can fail: with the vif's elements gone, every spoof gets
    # through (the vif back on the bridge, which offline took it off)
    assert world.elements_of("vif1.0") == []
    world.dom0.ip("link", "set", "vif1.0", "master", "xenbr0", "up")
    assert world.passed(spoofs) == names(spoofs)


def test_bridged_guest_without_ip_keeps_mac_arp_and_server_guards(world):
    world.plug_guest(None)
    world.far_end_on_bridge()
    world.event("online", **ON)
    others = ip_spoofs() + bridged_legit()
    assert world.passed(mac_spoofs() + others) == names(others)


def test_shipped_default_filters_nothing(world):
    world.plug_guest(f"{IP4} {IP6}")
    world.far_end_on_bridge()
    world.event("online")
    spoofs = mac_spoofs() + ip_spoofs()
    assert world.passed(spoofs) == names(spoofs)
    assert world.elements_of("vif1.0") == []


def test_per_guest_backend_key_switches_it_on(world):
    world.plug_guest(IP4, antispoof="on")
    world.far_end_on_bridge()
    world.event("online")
    assert world.passed([udp("other-ipv4", "192.0.2.66", "192.0.2.99")]) == set()


def test_the_settings_file_switches_it_on_for_the_host(world):
    # /etc/xen/xenrules.conf's `antispoof = on` (here the sandbox's own file)
    conf = world.tmp / "xenrules.conf"
    conf.write_text("# host-wide\nantispoof = on\n")
    world.plug_guest(IP4)
    world.far_end_on_bridge()
    world.event("online", XENRULES_CONF=str(conf))
    own = udp("own-ipv4", IP4, "192.0.2.99")
    assert world.passed([udp("other-ipv4", "192.0.2.66", "192.0.2.99"), own]) == {"own-ipv4"}


def test_a_left_behind_element_of_another_address_is_removed_at_the_next_online(world):
    # a record lost (crash) while the kernel kept the vif's old elements:
    # the next online must not keep the old address allowed
    world.plug_guest("192.0.2.66")
    world.far_end_on_bridge()
    world.event("online", **ON)
    (world.tmp / "antispoof" / "bridge-vif1.0.json").unlink()
    world.dom0.xs_write(BACK + "/ip", IP4)
    world.event("online", **ON)
    assert world.passed([udp("old-ipv4", "192.0.2.66", "192.0.2.99"),
                         udp("own-ipv4", IP4, "192.0.2.99")]) == {"own-ipv4"}
    world.event("offline", **ON)
    assert world.elements_of("vif1.0") == []


# -- routed ----------------------------------------------------------------------------

R_IP4, R_IP6 = "10.0.0.5", "2001:db8:1::5"
FAR4, FAR6 = "192.0.2.99", "2001:db8:f::99"
VIF_MAC = "02:58:52:00:01:00"       # the sandbox's MAC of dom0's vif1.0


def _route_to_uplink(world):
    dom0 = world.dom0
    add_uplink(dom0)                    # eth0 192.0.2.1/24, peer eth0p
    dom0.ip("address", "add", "2001:db8:f::1/64", "dev", "eth0", "nodad")
    for nb in ((FAR4,), ("-6", FAR6)):
        dom0.ip(*nb[:-1], "neigh", "add", nb[-1], "lladdr", "02:58:99:00:01:02", "dev", "eth0")
    subprocess.run(["ip", "netns", "exec", dom0.netns, "sysctl", "-q", "-w",
                    "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
                    "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"],
                   check=True)
    world.far = "eth0p"


@pytest.fixture
def routed(world):
    _route_to_uplink(world)
    world.plug_guest(f"{R_IP4} {R_IP6}", script="vif-route", bridge=None)
    return world


def routed_cases():
    to_dom0 = dict(dmac=VIF_MAC)
    legit = [udp("own-ipv4", R_IP4, FAR4, **to_dom0), udp("own-ipv6", R_IP6, FAR6, **to_dom0)]
    spoofs = [udp("other-mac", R_IP4, FAR4, mac=OTHER_MAC, **to_dom0),
              udp("other-ipv4", "10.0.0.66", FAR4, **to_dom0),
              udp("other-ipv6", "2001:db8:1::66", FAR6, **to_dom0),
              udp("dhcp-server-reply", R_IP4, FAR4, sport=67, dport=68, **to_dom0),
              # a router forwards an RA sent to a unicast address: the witness
              # that it passed. (It does not forward an NA: the NA rules are
              # the bridge table's, tested above.)
              icmp6("ra", ICMPv6ND_RA(), src=R_IP6, dst=FAR6, dmac=VIF_MAC)]
    return legit, spoofs


def neighbours(world):
    out = world.dom0._ip("-j", "neigh", "show", "dev", "vif1.0")
    return {n["dst"] for n in json.loads(out or "[]")}


def test_routed_guest_sends_only_its_own_traffic(routed):
    routed.event("online", **ON)
    legit, spoofs = routed_cases()
    assert routed.passed(legit + spoofs) == names(legit)
    # ARP goes to dom0: a spoofed sender address must not reach its neighbour table
    send(routed.guest, "g1.0", [arp("a", psrc="10.0.0.66", pdst="192.0.2.1").frame,
                                arp("b", psrc=R_IP4, pdst="192.0.2.1").frame])
    assert "10.0.0.66" not in neighbours(routed) and R_IP4 in neighbours(routed)
    routed.event("offline", **ON)
    assert routed.elements_of("vif1.0", "inet") == routed.elements_of("vif1.0", "arp") == []
    assert routed.passed(spoofs) == names(spoofs)
    send(routed.guest, "g1.0", [arp("a", psrc="10.0.0.66", pdst="192.0.2.1").frame])
    assert "10.0.0.66" in neighbours(routed)


def test_nat_guest_may_send_only_from_its_derived_address(world):
    # vif-nat without `ip`: the guest's address is derived from its domid
    # and vif number (10.0.1.1 for vif1.0), and that is what the filter allows
    _route_to_uplink(world)
    world.plug_guest(None, script="vif-nat", bridge=None)
    world.event("online", **ON)
    to_dom0 = dict(dmac=VIF_MAC)
    own = udp("own-ipv4", "10.0.1.1", FAR4, **to_dom0)
    spoofs = [udp("other-ipv4", "10.0.1.66", FAR4, **to_dom0),
              udp("other-mac", "10.0.1.1", FAR4, mac=OTHER_MAC, **to_dom0)]
    assert world.passed([own] + spoofs) == {"own-ipv4"}
    world.event("offline", **ON)
    assert world.elements_of("vif1.0", "inet") == world.elements_of("vif1.0", "arp") == []


def test_networks_in_ip_allow_their_whole_range(world):
    world.plug_guest("192.0.2.128/25 2001:db8:5::/64")
    world.far_end_on_bridge()
    world.event("online", **ON)
    inside = [udp("in-net-ipv4", "192.0.2.200", "192.0.2.99"),
              udp("in-net-ipv6", "2001:db8:5::77", "ff02::1", dmac="33:33:00:00:00:01"),
              icmp6("na-in-net", ICMPv6ND_NA(tgt="2001:db8:5::77", R=0, S=0)
                    / ICMPv6NDOptDstLLAddr(lladdr=MAC), src="2001:db8:5::77")]
    outside = [udp("out-net-ipv4", "192.0.2.66", "192.0.2.99"),
               udp("out-net-ipv6", "2001:db8:6::77", "ff02::1", dmac="33:33:00:00:00:01")]
    assert world.passed(inside + outside) == names(inside)
    world.event("offline", **ON)
    assert world.elements_of("vif1.0") == []
