"""Shared helpers of the link and bridge steps: names, indexes, errors."""
import os

from .. import netinfo
from ..errors import StepError

IFNAME = {"type": "string", "minLength": 1}


def checked_name(name):
    if not netinfo.valid_ifname(name):
        raise StepError(f"invalid interface name {name!r}")
    return name


def index(runtime, name):
    """The ifindex of a device, or StepError naming it."""
    # sysfs first: a missing device (a vif netback already removed) is then
    # reported without paying for the netlink library at all.
    found = netinfo.exists(checked_name(name)) and runtime.netlink().link_lookup(ifname=name)
    if not found:
        raise StepError(f"device {name} does not exist")
    return found[0]


def call(what, fn, *args, **kwargs):
    """Run a netlink request; a kernel refusal becomes a StepError saying what failed."""
    try:
        return fn(*args, **kwargs)
    except OSError as e:   # pyroute2's NetlinkError is an OSError
        reason = e.args[1] if len(e.args) > 1 else os.strerror(e.args[0]) if e.args else str(e)
        raise StepError(f"{what} failed: {reason}") from e


def link_attr(runtime, idx, attr):
    msg = runtime.netlink().link("get", index=idx)[0]
    return msg.get_attr(attr)


def is_up(runtime, idx):
    msg = runtime.netlink().link("get", index=idx)[0]
    return bool(msg["flags"] & 1)   # IFF_UP
