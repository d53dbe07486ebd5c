"""Variable sources about IP addresses: a device's address, lists of addresses.

    vars:
      dom0_ip: {ip.ipv4_of: "{netdev}"}          # vif-common.sh's ip_of
      dom0_ip6: {ip.ipv6_of: "{netdev}"}
      dom0_broadcast: {ip.classful_broadcast: "{dom0_ip}"}
      ip4: {ip.ipv4_entries: "{ip}"}
      ip6: {ip.ipv6_entries: "{ip}"}
"""
import ipaddress

from .. import netinfo
from . import VarSource

IFA_F_SECONDARY = 0x01
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
RT_SCOPE_UNIVERSE = 0


def _addresses(context, dev, family):
    """Netlink address messages of a device, in the kernel's (and `ip addr`'s) order."""
    import _socket   # SIOCGIFINDEX: no link dump, no netlink library for the lookup
    try:
        index = _socket.if_nametoindex(dev)
    except (OSError, ValueError):   # no such device, or a name no device can have
        return []
    return context.runtime.netlink().get_addr(family=family, index=index)


def _flags(msg):
    # IFA_FLAGS holds all 32 bits; the header byte only the low 8
    return msg.get_attr("IFA_FLAGS") or msg["flags"]


class Ipv4Of(VarSource):
    kind = "ip.ipv4_of"
    summary = ("the first primary IPv4 address of a device, without prefix (vif-common.sh's "
               "ip_of); empty if the device is missing or has none")

    @staticmethod
    def resolve(context, dev):
        if not netinfo.valid_ifname(dev) or not netinfo.exists(dev):
            return "", f"device {dev!r} does not exist"
        for msg in _addresses(context, dev, 2):
            if not _flags(msg) & IFA_F_SECONDARY:
                local = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
                return local, f"first IPv4 address of {dev}"
        return "", f"{dev} has no IPv4 address"


class Ipv6Of(VarSource):
    kind = "ip.ipv6_of"
    summary = ("the first global IPv6 address of a device that can be a source address "
               "(not tentative, DAD not failed), without prefix; empty if none")

    @staticmethod
    def resolve(context, dev):
        if not netinfo.valid_ifname(dev) or not netinfo.exists(dev):
            return "", f"device {dev!r} does not exist"
        for msg in _addresses(context, dev, 10):
            if msg["scope"] != RT_SCOPE_UNIVERSE or _flags(msg) & (IFA_F_TENTATIVE | IFA_F_DADFAILED):
                continue
            local = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            return local, f"first global IPv6 address of {dev}"
        return "", f"{dev} has no usable global IPv6 address"


def classful_broadcast(text):
    """The broadcast address the kernel gives an IPv4 address set by
    `ifconfig DEV ADDR` (SIOCSIFADDR: the classful mask, A /8, B /16, C /24),
    and keeps when `netmask 255.255.255.255` follows. '' when there is none."""
    try:
        addr = ipaddress.IPv4Address(text.strip())
    except ValueError:
        return ""
    first = int(addr) >> 24
    if first == 0:
        plen = 0                  # inet_abc_len: the zero network
    elif first < 128:
        plen = 8
    elif first < 192:
        plen = 16
    elif first < 224:
        plen = 24
    else:
        return ""                 # class D/E: no broadcast
    host = (1 << (32 - plen)) - 1
    return str(ipaddress.IPv4Address(int(addr) | host))


class ClassfulBroadcast(VarSource):
    kind = "ip.classful_broadcast"
    summary = ("the broadcast address `ifconfig DEV ADDR netmask 255.255.255.255` leaves on "
               "DEV: ADDR's classful one (A /8, B /16, C /24); empty for other addresses")

    @staticmethod
    def resolve(context, addr):
        value = classful_broadcast(addr)
        return value, f"classful broadcast of {addr!r}"


def split_entries(text):
    """(IPv4-or-other words, IPv6 words) of a space-separated list.

    A word with ':' is IPv6; every other word, valid or not, is on the IPv4
    side, so that a bad entry still reaches the step that rejects it."""
    words = text.split()
    return [w for w in words if ":" not in w], [w for w in words if ":" in w]


class Ipv4Entries(VarSource):
    kind = "ip.ipv4_entries"
    summary = ("the words of a space-separated address list that are not IPv6 (no ':'), "
               "invalid ones included, space-separated")

    @staticmethod
    def resolve(context, text):
        return " ".join(split_entries(text)[0]), "entries without ':'"


class Ipv6Entries(VarSource):
    kind = "ip.ipv6_entries"
    summary = "the IPv6 words (with ':') of a space-separated address list, space-separated"

    @staticmethod
    def resolve(context, text):
        return " ".join(split_entries(text)[1]), "entries with ':'"
