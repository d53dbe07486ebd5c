"""Address steps: put an IP address on a device, take one off.

`address.add` is what vif-route's `ifconfig DEV ADDR netmask 255.255.255.255`
and vif-nat's `ip addr add ADDR dev DEV` do; `address.remove` is the
`ip addr del ... 2>/dev/null` of a teardown. IPv4 and IPv6 alike.
"""
import ipaddress
import os

from ..errors import StepError
from .base import Step
from .netlink import IFNAME, checked_name, index, live_index

EEXIST, EADDRNOTAVAIL = 17, 99

CIDR = {"type": "string", "minLength": 1,
        "description": "ADDRESS or ADDRESS/PREFIXLEN (IPv4 or IPv6); no prefix means a host "
                       "address (/32, /128)"}


def netlink_errors():
    """The exception types a kernel refusal arrives as through pyroute2.

    pyroute2 0.7's NetlinkError derives from Exception, not OSError."""
    from pyroute2.netlink.exceptions import NetlinkError
    return (NetlinkError, OSError)


def error_code(exc):
    code = getattr(exc, "code", None)
    if code is None and exc.args and isinstance(exc.args[0], int):
        code = exc.args[0]
    return code


def kernel_call(what, fn, *args, **kwargs):
    """Run a netlink request; a refusal becomes a StepError saying what failed."""
    try:
        return fn(*args, **kwargs)
    except netlink_errors() as e:
        code = error_code(e)
        reason = e.args[1] if len(e.args) > 1 else os.strerror(code) if code else str(e)
        raise StepError(f"{what} failed: {reason}") from e


def is_decimal(text):
    """ASCII digits only: str.isdigit() also takes '²' or '٣', which int() refuses."""
    return text.isascii() and text.isdigit()


def parse_cidr(text, what="address"):
    """'ADDR[/LEN]' -> (ipaddress address, prefixlen). Host bits may be set
    (an interface address), the prefix must fit the family."""
    text = text.strip()
    addr_text, slash, plen_text = text.partition("/")
    try:
        addr = ipaddress.ip_address(addr_text)
    except ValueError:
        raise StepError(f"invalid {what} {text!r}") from None
    if getattr(addr, "scope_id", None):
        # fe80::1%eth0: Python takes the zone, netlink and iproute2 do not
        raise StepError(f"invalid {what} {text!r}")
    if not slash:
        return addr, addr.max_prefixlen
    if not is_decimal(plen_text) or int(plen_text) > addr.max_prefixlen:
        raise StepError(f"invalid prefix length in {what} {text!r}")
    return addr, int(plen_text)


def family(addr):
    return 2 if addr.version == 4 else 10     # AF_INET, AF_INET6


def addresses_of(runtime, idx, fam):
    """{(address, prefixlen): broadcast or None} on the device, of one family."""
    out = {}
    for msg in runtime.netlink().get_addr(family=fam, index=idx):
        local = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        out[(ipaddress.ip_address(local), msg["prefixlen"])] = msg.get_attr("IFA_BROADCAST")
    return out


class Add(Step):
    type_name = "address.add"
    summary = "put an IPv4/IPv6 address on a device (nothing if it is already there); revert removes it"
    properties = {
        "dev": dict(IFNAME, description="the device"),
        "address": CIDR,
        "broadcast": {"type": "string",
                      "description": "IPv4 broadcast address; empty or absent: none (like `ip addr add`)"},
        "exists": {"enum": ["ok", "fail"],
                   "description": "the address is already on the device: ok (default: leave it, "
                                  "like ifconfig) or fail (like `ip addr add`)"},
    }
    required = ("dev", "address")

    def checked(self):
        """(address, prefixlen, broadcast text), every value checked."""
        addr, plen = parse_cidr(self.args["address"])
        broadcast = str(self.args.get("broadcast") or "").strip()
        if broadcast:
            try:
                brd = ipaddress.ip_address(broadcast)
            except ValueError:
                raise StepError(f"invalid broadcast address {broadcast!r}") from None
            if addr.version != 4 or brd.version != 4:
                raise StepError(f"a broadcast address needs IPv4: {addr} brd {brd}")
        return addr, plen, broadcast

    def undo_record(self, runtime):
        dev = checked_name(self.args["dev"])
        addr, plen, _ = self.checked()
        idx = index(runtime, dev)
        if (addr, plen) in addresses_of(runtime, idx, family(addr)):
            if self.args.get("exists", "ok") == "fail":
                raise StepError(f"ip address add {addr}/{plen} dev {dev} failed: File exists")
            runtime.log("debug", f"{dev} already has {addr}/{plen}")
            return None
        return {"ifindex": idx, "family": family(addr), "address": str(addr), "prefixlen": plen}

    def apply(self, runtime):
        if self.record is None:
            return
        addr, plen, broadcast = self.checked()
        extra = {"broadcast": broadcast} if broadcast else {}
        kernel_call(f"ip address add {addr}/{plen} dev {self.args['dev']}", runtime.netlink().addr,
                    "add", index=self.record["ifindex"], family=family(addr), address=str(addr),
                    prefixlen=plen, **extra)

    @classmethod
    def undo(cls, runtime, args, record):
        # the address was not there before the step (else no record)
        idx = live_index(record["ifindex"])
        if idx is None:
            return
        try:
            runtime.netlink().addr("del", index=idx, family=record["family"],
                                   address=record["address"], prefixlen=record["prefixlen"])
        except netlink_errors() as e:
            if error_code(e) != EADDRNOTAVAIL:   # never added, or removed already
                raise

    @classmethod
    def describe_undo(cls, args, record):
        return f"{args['dev']}: remove address {record['address']}/{record['prefixlen']}"

    def describe(self):
        brd = self.args.get("broadcast")
        return f"{self.args['dev']}: add address {self.args['address']}" + (f" brd {brd}" if brd else "")


class Remove(Step):
    type_name = "address.remove"
    summary = "take an address off a device; an absent address or device is not an error"
    properties = {"dev": dict(IFNAME, description="the device"), "address": CIDR}
    required = ("dev", "address")

    def undo_record(self, runtime):
        from .. import netinfo
        dev = checked_name(self.args["dev"])
        addr, plen = parse_cidr(self.args["address"])
        if not netinfo.exists(dev):
            runtime.log("debug", f"{dev} does not exist: no address to remove")
            return None
        idx = index(runtime, dev)
        present = addresses_of(runtime, idx, family(addr))
        if (addr, plen) not in present:
            runtime.log("debug", f"{dev} has no address {addr}/{plen}")
            return None
        return {"ifindex": idx, "family": family(addr), "address": str(addr), "prefixlen": plen,
                "broadcast": present[(addr, plen)]}

    def apply(self, runtime):
        r = self.record
        if r is None:
            return
        kernel_call(f"ip address del {r['address']}/{r['prefixlen']} dev {self.args['dev']}",
                    runtime.netlink().addr, "del", index=r["ifindex"], family=r["family"],
                    address=r["address"], prefixlen=r["prefixlen"])

    @classmethod
    def undo(cls, runtime, args, record):
        idx = live_index(record["ifindex"])
        if idx is None:
            return
        extra = {"broadcast": record["broadcast"]} if record["broadcast"] else {}
        try:
            runtime.netlink().addr("add", index=idx, family=record["family"],
                                   address=record["address"], prefixlen=record["prefixlen"], **extra)
        except netlink_errors() as e:
            if error_code(e) != EEXIST:   # never removed, or put back already
                raise

    @classmethod
    def describe_undo(cls, args, record):
        return f"{args['dev']}: add address {record['address']}/{record['prefixlen']} again"

    def describe(self):
        return f"{self.args['dev']}: remove address {self.args['address']} (if there)"
