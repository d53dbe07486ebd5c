"""Variable sources of vif-nat: the guest's and the router's addresses.

Each one computes what Debian's 4.17/4.20 vif-nat computes with bash
arithmetic, `echo` and `awk` for well-formed input, so that the rules stay
declarative:

  nat.vifid: HANDLE               HANDLE + 1                   ($(( vifid + 1 )))
  nat.guest_address: "DOMID VIFID"
                                  10.<DOMID/256>.<DOMID%256>.<VIFID>/16   (ip_from_dom)
  nat.router_address: IP          the last octet of IP + 127, like
                                  awk -F. '{print $1"."$2"."$3"."$4 + 127}';
                                  only for an IPv4 address (the first word) whose
                                  last octet + 127 is an octet: anything else is
                                  refused, never computed the way awk would (mawk
                                  prints such sums differently from release to
                                  release: 2.14748e+09, inf, nan on trixie)
  nat.host_address: IP            IP without its /bits, like awk -F/ '{print $1}'
  nat.first_file: "-f|-x PATH..." the first PATH that is a file (-f) or an
                                  executable file (-x): first_file of
                                  xen-network-common.sh
  nat.routes_via: DEV             "yes" when the main IPv4 routing table has a
                                  route through DEV (vif-nat's "already up" check)

Numbers are decimal without leading zeros (what libxl writes); anything else
gives an empty value, so the rule's `require:` reports it.
"""
import os
import re

from ..errors import StepError
from . import VarSource

_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_IPV4 = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
                   r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?:/(?:3[0-2]|[12]?[0-9]))?")
ROUTER_OFFSET = 127   # vif-nat's routing_ip: the guest's last octet + 127
# The main IPv4 routing table of this network namespace, the one `ip route` lists.
ROUTE_TABLE = "/proc/net/route"


def _decimal(text):
    text = text.strip()
    return int(text) if _DECIMAL.fullmatch(text) else None


def _echo(text):
    """What unquoted `echo $x` prints: the words, one space between them."""
    return " ".join(text.split())


def router_address(ip):
    """vif-nat's routing_ip of the first word of ip: its last octet + 127.
    Raises StepError for anything but an IPv4 address (optionally /bits) whose
    sum is still an octet: the original's awk would print a non-address."""
    words = ip.split()
    found = _IPV4.fullmatch(words[0]) if words else None
    if not found:
        raise StepError(f"nat.router_address: {_shown(ip)} is not an IPv4 address "
                        f"(a.b.c.d or a.b.c.d/bits); vif-nat needs one to derive the router address")
    last = int(found.group(1)) + ROUTER_OFFSET
    if last > 255:
        raise StepError(f"nat.router_address: the last octet of {words[0]} + {ROUTER_OFFSET} "
                        f"is {last}, not an octet: give the guest an address whose last "
                        f"octet is at most {255 - ROUTER_OFFSET}")
    return words[0].split("/", 1)[0].rsplit(".", 1)[0] + f".{last}"


def _shown(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...'"


def routes_via(dev, table=ROUTE_TABLE):
    """True when a route of the main IPv4 table goes through dev."""
    with open(table) as fh:
        next(fh, None)   # the header
        return any(line.split("\t", 1)[0].strip() == dev for line in fh)


def host_address(ip):
    """`echo ${ip} | awk -F/ '{print $1}'`: the address without its /bits."""
    return _echo(ip).split("/", 1)[0]


class VifId(VarSource):
    kind = "nat.vifid"
    summary = "the vif's handle + 1 (vif-nat's vifid; 1 for the first vif)"

    @staticmethod
    def resolve(context, arg):
        handle = _decimal(arg)
        if handle is None:
            return "", f"handle {arg!r} is not a number"
        return str(handle + 1), f"handle {handle} + 1"


class GuestAddress(VarSource):
    kind = "nat.guest_address"
    summary = "'DOMID VIFID' -> 10.<DOMID/256>.<DOMID%256>.<VIFID>/16 (vif-nat's default ip)"

    @staticmethod
    def resolve(context, arg):
        words = arg.split()
        numbers = [_decimal(w) for w in words]
        if len(numbers) != 2 or None in numbers:
            return "", f"{arg!r} is not 'DOMID VIFID'"
        domid, vifid = numbers
        return f"10.{domid // 256}.{domid % 256}.{vifid}/16", f"default from domid {domid}, vifid {vifid}"


class RouterAddress(VarSource):
    kind = "nat.router_address"
    summary = "the guest address's last octet + 127, without /bits (vif-nat's routing_ip)"

    @staticmethod
    def resolve(context, arg):
        if not arg.strip():
            return "", "no guest address"
        return router_address(arg), f"last octet of {arg!r} + 127"


class HostAddress(VarSource):
    kind = "nat.host_address"
    summary = "the guest address without /bits (vif-nat's vif_ip)"

    @staticmethod
    def resolve(context, arg):
        return host_address(arg), f"{arg!r} without /bits"


class FirstFile(VarSource):
    kind = "nat.first_file"
    schema = {"type": "string", "pattern": r"^\s*-[fx]\s"}
    summary = "'-f PATH...' or '-x PATH...': the first PATH that is a file (-f) or an executable file (-x)"

    @staticmethod
    def resolve(context, arg):
        test, *paths = arg.split() or [""]
        if test not in ("-f", "-x"):
            return "", f"{arg!r} does not start with -f or -x"
        for path in paths:
            if os.path.isfile(path) and (test == "-f" or os.access(path, os.X_OK)):
                return path, f"first of {' '.join(paths)} that passes test {test}"
        return "", f"none of {' '.join(paths)} passes test {test}"


class RoutesVia(VarSource):
    kind = "nat.routes_via"
    summary = "'yes' when the main IPv4 routing table has a route through the device (/proc/net/route)"

    @staticmethod
    def resolve(context, arg):
        dev = arg.strip()
        # /proc/net/route costs no netlink library
        if dev and routes_via(dev):
            return "yes", f"a route goes through {dev}"
        return "", f"no route goes through {dev}"
