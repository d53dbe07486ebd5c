"""The anti-spoofing tables of the antispoof.* steps, as libnftables JSON data.

Per kind of vif, tables the package owns (named TABLE in each family), never
another table:

  bridged vifs  bridge TABLE   hook prerouting: every frame a guest sends
                               into the bridge (forwarded or for dom0)
  routed vifs   inet TABLE     hook prerouting, before conntrack: IPv4/IPv6
                arp TABLE      hook input: ARP (a routed guest talks ARP with dom0 only)

The rules are fixed; what is per vif lives in sets keyed by the interface
name, so a thousand guests cost set elements (hash lookups), not rules:

  vifs      ifname                  the guarded vifs (anything else: accept)
  vifmac    ifname . ether_addr     its MAC: Ethernet source, ARP sender MAC
  ndlla     ifname . 48-bit int     its MAC again, as the ND link-layer option holds it
  ipguard   ifname                  the vifs with addresses (empty `ip`: MAC guards only)
  addr4     ifname . ipv4_addr      its IPv4 sources (ARP sender IP too)
  addr6     ifname . ipv6_addr      its IPv6 sources + the link-local from its MAC
  ndtarget  ifname . 128-bit int    addr6 again, as a Neighbor Advertisement's target
  ...net    the same, with intervals: the networks of `ip` (10.0.1.0/24); single
            addresses stay in the hash sets, where deleting one is O(1)

The tables are created (idempotently: `add`, and flush + add for the rules)
by the first event that finds them missing: the first guest, or the first
after `nft flush ruleset`. Element changes are libnftables JSON, one atomic
transaction per event; the tables are fixed text, no event value in them.
"""
import ipaddress
import re

from .errors import StepError

TABLE = "xenrules_antispoof"
MAC_RE = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")

# -- the tables (fixed text: no value of any event is ever part of it) --------------

# The ND rules read the ICMPv6 header raw (nft 1.0.6 has no field for an
# NA's target or an option): @th,64,128 the target address, @th,192,8 the
# first option's type, @th,208,48 its link-layer address. libnftables' JSON
# cannot declare sets of such raw keys (`typeof`), hence text for the tables.
_SETS = """
  set vifs { type ifname; }
  set vifmac { type ifname . ether_addr; }
  set ipguard { type ifname; }
  set addr4 { type ifname . ipv4_addr; }
  set addr4net { type ifname . ipv4_addr; flags interval; }
"""
_SETS6 = """
  set ndlla { typeof iifname . @th,208,48; }
  set addr6 { type ifname . ipv6_addr; }
  set addr6net { type ifname . ipv6_addr; flags interval; }
  set ndtarget { typeof iifname . @th,64,128; }
  set ndtargetnet { typeof iifname . @th,64,128; flags interval; }
"""
_MAC = "iifname . ether saddr != @vifmac drop"
_ARP = """
    iifname . arp saddr ether != @vifmac drop
    iifname @ipguard iifname . arp saddr ip != @addr4 iifname . arp saddr ip != @addr4net drop
"""
_IP = """
    udp sport 67 drop
    icmpv6 type { nd-router-advert, nd-redirect } drop
    udp sport 547 drop
    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 nexthdr != ipv6-icmp drop
    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 length != { 24, 32 } drop
    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 length 32 @th,192,8 != { 1, 2 } drop
    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 length 32 iifname . @th,208,48 != @ndlla drop
    icmpv6 type nd-neighbor-advert iifname @ipguard iifname . @th,64,128 != @ndtarget iifname . @th,64,128 != @ndtargetnet drop
    iifname @ipguard ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept
    iifname @ipguard iifname . ip saddr != @addr4 iifname . ip saddr != @addr4net drop
    iifname @ipguard ip6 saddr :: icmpv6 type { nd-neighbor-solicit, mld-listener-report, mld2-listener-report } accept
    iifname @ipguard iifname . ip6 saddr != @addr6 iifname . ip6 saddr != @addr6net drop
"""
# family -> (hook and priority, sets, the guest chain's rules)
_LAYOUTS = {
    # every frame a guest sends into the bridge, forwarded or for dom0; a
    # VLAN tag would hide the frame from the rules below
    "bridge": ("prerouting priority -200", _SETS + _SETS6,
               _MAC + "\n    ether type { 8021q, 8021ad } drop" + _ARP + _IP),
    # routed/nat vifs: before conntrack sees the packet
    "inet": ("prerouting priority -300", _SETS + _SETS6, _MAC + _IP),
    # a routed guest's ARP goes to dom0 only
    "arp": ("input priority 0", _SETS, _ARP),
}
# the tables one kind of vif uses
FAMILIES = {"bridge": ["bridge"], "route": ["inet", "arp"]}
SETS_OF = {family: re.findall(r"set (\w+) ", layout[1]) for family, layout in _LAYOUTS.items()}


def skeleton(family):
    """nft text that (re)declares one table idempotently: add is a no-op for
    what exists, flush + add replaces the rules (a new package's rules win)."""
    hook, sets, rules = _LAYOUTS[family]
    return (f"add table {family} {TABLE}\n"
            f"table {family} {TABLE} {{{sets}"
            "  chain guest { }\n"
            f"  chain from_guests {{ type filter hook {hook}; policy accept; }}\n"
            "}\n"
            f"flush chain {family} {TABLE} guest\n"
            f"flush chain {family} {TABLE} from_guests\n"
            f"table {family} {TABLE} {{\n"
            "  chain from_guests { iifname @vifs jump guest; }\n"
            f"  chain guest {{{rules}  }}\n"
            "}\n")


# -- the values of one vif -----------------------------------------------------------


def checked_mac(text):
    """A guest's MAC (backend `mac`): six hex pairs, unicast, not zero."""
    if not isinstance(text, str) or not MAC_RE.fullmatch(text):
        raise StepError(f"antispoof: MAC {text!r} is not six colon-separated hex bytes")
    octets = bytes.fromhex(text.replace(":", ""))
    if octets[0] & 1 or not any(octets):
        raise StepError(f"antispoof: MAC {text} is not a unicast address")
    return text.lower()


def checked_networks(text):
    """The `ip` list: IPv4/IPv6 addresses or networks, space-separated; a
    StepError naming the first word that is not one (a host name, a zone, an
    option, a multicast or unspecified address, a /0)."""
    nets = []
    for word in (text or "").split():
        try:
            if not word.isascii() or "%" in word:
                raise ValueError
            net = ipaddress.ip_network(word, strict=False)
        except ValueError:
            raise StepError(f"antispoof: {word!r} in ip is not an IPv4 or IPv6 address "
                            "or network") from None
        if net.prefixlen == 0 or net.is_multicast or net.network_address.is_unspecified:
            raise StepError(f"antispoof: {word!r} in ip cannot be a guest's source address")
        nets.append(net)
    return nets


def link_local(mac):
    """The EUI-64 link-local address of a MAC (RFC 4291 appendix A)."""
    b = bytearray(bytes.fromhex(mac.replace(":", "")))
    b[0] ^= 0x02
    iid = bytes(b[:3]) + b"\xff\xfe" + bytes(b[3:])
    return ipaddress.IPv6Network((b"\xfe\x80" + bytes(6) + iid, 128))


def _cat(*items):
    return {"concat": list(items)}


def _host(net):
    return net.prefixlen == net.max_prefixlen


def _net_value(net):
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _int_range(net):
    first, last = int(net.network_address), int(net.broadcast_address)
    return hex(first) if first == last else {"range": [hex(first), hex(last)]}


def elements(dev, mac, nets):
    """{set name: [element]} of one vif (dev already a valid interface name)."""
    elems = {"vifs": [dev], "vifmac": [_cat(dev, mac)],
             "ndlla": [_cat(dev, "0x" + mac.replace(":", ""))]}
    if nets:
        # overlapping or repeated entries would make nft refuse the
        # transaction (conflicting intervals): merge them first
        v4 = list(ipaddress.collapse_addresses(n for n in nets if n.version == 4))
        v6 = list(ipaddress.collapse_addresses([link_local(mac)]
                                               + [n for n in nets if n.version == 6]))
        elems["ipguard"] = [dev]
        # single addresses in hash sets, networks in interval sets: deleting
        # from an interval set makes nft read the whole set (40 ms at 1000
        # guests), a hash set element goes in O(1)
        for name, mine in (("addr4", v4), ("addr6", v6)):
            elems[name] = [_cat(dev, str(n.network_address)) for n in mine if _host(n)]
            elems[name + "net"] = [_cat(dev, _net_value(n)) for n in mine if not _host(n)]
        elems["ndtarget"] = [_cat(dev, _int_range(n)) for n in v6 if _host(n)]
        elems["ndtargetnet"] = [_cat(dev, _int_range(n)) for n in v6 if not _host(n)]
    return {name: values for name, values in elems.items() if values}


def element_commands(verb, family, elems):
    """`add`/`create`/`delete` commands for the elements a table has sets for."""
    return [{verb: {"element": {"family": family, "table": TABLE, "name": name, "elem": values}}}
            for name, values in elems.items() if name in SETS_OF[family]]


def elements_of_dev(listing, dev):
    """{set name: [element]} of dev in a table listing (nft list table, JSON):
    what a vif left behind, whatever addresses it had."""
    found = {}
    for obj in listing or []:
        s = obj.get("set")
        if not s or s.get("name") not in SETS_OF["bridge"]:
            continue
        mine = [e for e in s.get("elem", []) if _key_dev(e) == dev]
        if mine:
            found[s["name"]] = [_as_input(e) for e in mine]
    return found


def _key_dev(elem):
    if isinstance(elem, dict) and "elem" in elem:       # an element with options
        elem = elem["elem"]["val"]
    if isinstance(elem, dict) and "concat" in elem:
        return elem["concat"][0]
    return elem


def _as_input(elem):
    # the listing spells integers as numbers; give them back as hex strings,
    # which libnftables reads at any width (its JSON integers are 64-bit)
    if isinstance(elem, dict) and "elem" in elem:
        elem = elem["elem"]["val"]
    if isinstance(elem, dict) and "concat" in elem:
        return _cat(*(_as_input(p) for p in elem["concat"]))
    if isinstance(elem, dict) and "range" in elem:
        return {"range": [_as_input(p) for p in elem["range"]]}
    if isinstance(elem, int):
        return hex(elem)
    return elem
