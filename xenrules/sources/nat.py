"""Variable sources of vif-nat: the guest's and the router's addresses.

Each one computes exactly what Debian's 4.17 vif-nat computes with bash
arithmetic, `echo` and `awk`, so that the rules stay declarative:

  nat.vifid: HANDLE               HANDLE + 1                   ($(( vifid + 1 )))
  nat.guest_address: "DOMID VIFID"
                                  10.<DOMID/256>.<DOMID%256>.<VIFID>/16   (ip_from_dom)
  nat.router_address: IP          the last octet of IP + 127, like
                                  awk -F. '{print $1"."$2"."$3"."$4 + 127}'
  nat.host_address: IP            IP without its /bits, like awk -F/ '{print $1}'
  nat.first_file: "-f|-x PATH..." the first PATH that is a file (-f) or an
                                  executable file (-x): first_file of
                                  xen-network-common.sh
  nat.routes_via: DEV             "yes" when the main IPv4 routing table has a
                                  route through DEV (vif-nat's "already up" check)

Numbers are decimal without leading zeros (what libxl writes); anything else
gives an empty value, so the rule's `require:` reports it.
"""
import math
import os
import re

from . import VarSource

_DECIMAL = re.compile(r"0|[1-9][0-9]*")
# The prefix of an awk field that C's strtod (mawk) reads as a number. The
# field never holds a '.', the separator, so no fractions.
_STRTOD = re.compile(r"[+-]?(?:0x[0-9a-f]+(?:p[+-]?[0-9]+)?|[0-9]+(?:e[+-]?[0-9]+)?|infinity|inf|nan)",
                     re.IGNORECASE)
_INT_MAX = 2 ** 31 - 1
# The main IPv4 routing table of this network namespace, the one `ip route` lists.
ROUTE_TABLE = "/proc/net/route"


def _decimal(text):
    text = text.strip()
    return int(text) if _DECIMAL.fullmatch(text) else None


def _echo(text):
    """What unquoted `echo $x` prints: the words, one space between them."""
    return " ".join(text.split())


def awk_number(text):
    """The number awk makes of a string: its longest numeric prefix (strtod), else 0."""
    found = _STRTOD.match(text.lstrip(" \t\n\v\f\r"))
    if not found:
        return 0.0
    word = found.group(0)
    if "x" in word.lower():
        sign = -1.0 if word.startswith("-") else 1.0
        try:
            return sign * float.fromhex(word.lstrip("+-"))
        except OverflowError:
            return sign * math.inf
    return float(word)


def awk_format(number):
    """How mawk prints a number: an integer when it is one and fits an int, else %.6g."""
    if math.isnan(number):
        return "-nan" if math.copysign(1.0, number) < 0 else "nan"
    if math.isfinite(number) and number == int(number) and -_INT_MAX <= number <= _INT_MAX:
        return "%d" % number
    return "%.6g" % number


def router_address(ip):
    """vif-nat's routing_ip: awk -F. '{print $1"."$2"."$3"."$4 + 127}' of `echo $ip`."""
    fields = _echo(ip).split(".")
    fields += [""] * (4 - len(fields))
    return _echo(".".join(fields[:3]) + "." + awk_format(awk_number(fields[3]) + 127))


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
