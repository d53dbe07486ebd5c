"""Cheap read-only facts about network devices, from /sys/class/net.

Reading sysfs costs microseconds and needs no netlink library, so variable
sources and checks use it; changes go through pyroute2 in the steps.
"""
import os

SYS_NET = "/sys/class/net"


def exists(name):
    return bool(name) and "/" not in name and os.path.exists(f"{SYS_NET}/{name}")


def is_bridge(name):
    return exists(name) and os.path.isdir(f"{SYS_NET}/{name}/bridge")


def bridges():
    """Names of every bridge, sorted like `brctl show` lists them."""
    try:
        names = os.listdir(SYS_NET)
    except OSError:
        return []
    return sorted(n for n in names if os.path.isdir(f"{SYS_NET}/{n}/bridge"))


def master(name):
    """The bridge a device is enslaved to, or ''."""
    try:
        return os.path.basename(os.readlink(f"{SYS_NET}/{name}/master"))
    except OSError:
        return ""


def mtu(name):
    try:
        with open(f"{SYS_NET}/{name}/mtu") as f:
            return f.read().strip()
    except OSError:
        return ""


def is_up(name):
    """IFF_UP from sysfs; None if the device does not exist."""
    try:
        with open(f"{SYS_NET}/{name}/flags") as f:
            return bool(int(f.read(), 16) & 1)
    except (OSError, ValueError):
        return None


def valid_ifname(name):
    """The kernel's rule for an interface name (dev_valid_name).

    IFNAMSIZ counts bytes, not characters, and a NUL would truncate the name
    the kernel sees, so both are checked on the UTF-8 bytes."""
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from non-UTF-8 input
        return False
    return (0 < len(raw) < 16 and name not in (".", "..")
            and not any(c in name for c in "/: \t\n\r\v\f\0"))
