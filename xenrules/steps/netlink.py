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
    # SIOCGIFINDEX on a socket of the current network namespace: a few
    # microseconds, where pyroute2's link_lookup decodes a whole link dump
    # (about 1 ms); a missing device (a vif netback already removed) is
    # reported without paying for the netlink library at all.
    import _socket as socket   # socket.py costs 3 ms of enum building
    try:
        return socket.if_nametoindex(checked_name(name))
    except OSError:
        raise StepError(f"device {name} does not exist") from None


def live_index(idx):
    """idx if a device still has that ifindex (a journal's undo), else None."""
    import _socket as socket
    try:
        socket.if_indextoname(idx)
        return idx
    except OSError:
        return None


def call(what, fn, *args, **kwargs):
    """Run a netlink request; a kernel refusal becomes a StepError saying what failed."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        # pyroute2 0.7's NetlinkError derives from Exception, not OSError (the
        # raw requests of xenrules.rtnl raise OSErrors); ask pyroute2 only if
        # it is loaded already: an error must not cost its import.
        import sys
        if not isinstance(e, OSError):
            if "pyroute2.netlink.exceptions" not in sys.modules:
                raise
            from pyroute2.netlink.exceptions import NetlinkError
            if not isinstance(e, NetlinkError):
                raise
        code = getattr(e, "code", None) or (e.args[0] if e.args and isinstance(e.args[0], int) else None)
        reason = e.args[1] if len(e.args) > 1 else os.strerror(code) if code else str(e)
        raise StepError(f"{what} failed: {reason}") from e


# ioctls of netdevice(7): one small request instead of a decoded link dump
SIOCGIFFLAGS, SIOCGIFMTU, SIOCGIFHWADDR = 0x8913, 0x8921, 0x8927
ARPHRD_ETHER = 1


def _ifreq(idx, request):
    """The ifreq union answered for device idx (bytes after the name), or None."""
    import fcntl
    import _socket as socket
    import struct
    try:
        name = socket.if_indextoname(idx).encode()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # this netns
        try:
            return fcntl.ioctl(sock, request, struct.pack("16s24x", name))[16:]
        finally:
            sock.close()
    except OSError:
        return None


def link_attr(runtime, idx, attr):
    if attr == "IFLA_MTU":
        data = _ifreq(idx, SIOCGIFMTU)
        if data is not None:
            return int.from_bytes(data[:4], "little", signed=True)
    elif attr == "IFLA_ADDRESS":
        data = _ifreq(idx, SIOCGIFHWADDR)   # sockaddr: family (2 bytes), then the address
        if data is not None and int.from_bytes(data[:2], "little") == ARPHRD_ETHER:
            return ":".join(f"{b:02x}" for b in data[2:8])
    msg = runtime.netlink().link("get", index=idx)[0]
    return msg.get_attr(attr)


def is_up(runtime, idx):
    data = _ifreq(idx, SIOCGIFFLAGS)
    if data is not None:
        return bool(int.from_bytes(data[:2], "little") & 1)   # IFF_UP
    msg = runtime.netlink().link("get", index=idx)[0]
    return bool(msg["flags"] & 1)
