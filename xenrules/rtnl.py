"""Raw rtnetlink for the requests the shipped rules make on every vif event.

Importing pyroute2 costs 150-300 ms, more than a whole bash hotplug script.
The vif and tap events need only a handful of requests: set a link up or
down, its MTU, its master, its MAC, its name; list and flush its addresses.
RawRoute sends those itself over one NETLINK_ROUTE socket (struct, socket:
already loaded) and answers with objects shaped like pyroute2's messages
(msg["prefixlen"], msg.get_attr("IFA_ADDRESS")). Any other request, or an
argument it does not know, goes to pyroute2's IPRoute, imported then.

A kernel refusal raises NetlinkError, an OSError whose .code is the errno,
like pyroute2's.
"""
import os
import struct

import _socket as socket   # socket.py costs 3 ms of enum building

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 16, 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
IFF_UP = 0x1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFA_NAMES = {1: "IFA_ADDRESS", 2: "IFA_LOCAL", 3: "IFA_LABEL", 4: "IFA_BROADCAST"}

_HDR = struct.Struct("=IHHII")          # nlmsghdr
_IFINFO = struct.Struct("=BxHiII")      # ifinfomsg
_IFADDR = struct.Struct("=BBBBi")       # ifaddrmsg
_RTMSG = struct.Struct("=BBBBBBBBI")   # rtmsg
_RTA = struct.Struct("=HH")
# route attributes the route steps read or write: name, number, int or address
RTA_NAMES = {1: ("RTA_DST", "addr"), 4: ("RTA_OIF", "u32"), 6: ("RTA_PRIORITY", "u32"),
             7: ("RTA_PREFSRC", "addr"), 15: ("RTA_TABLE", "u32")}
RTA_DST, RTA_OIF, RTA_PRIORITY, RTA_PREFSRC, RTA_TABLE = 1, 4, 6, 7, 15


class NetlinkError(OSError):
    def __init__(self, code, msg=None):
        super().__init__(code, msg or os.strerror(code))
        self.code = code


def _attr(kind, data):
    length = _RTA.size + len(data)
    return _RTA.pack(length, kind) + data + b"\0" * (-length % 4)


def _attrs(data):
    """(kind, payload) of each rtattr in data."""
    at = 0
    while at + _RTA.size <= len(data):
        length, kind = _RTA.unpack_from(data, at)
        if length < _RTA.size:
            break
        yield kind & 0x3FFF, data[at + _RTA.size:at + length]
        at += (length + 3) & ~3


def _mac(text):
    parts = text.split(":")
    if len(parts) != 6:
        raise ValueError(f"not a MAC address: {text!r}")
    return bytes(int(p, 16) for p in parts)


class AddrMsg(dict):
    """One address, as pyroute2's ifaddrmsg reads: ["family"], get_attr(NAME)."""

    def __init__(self, family, prefixlen, flags, scope, index, attrs):
        super().__init__(family=family, prefixlen=prefixlen, flags=flags, scope=scope, index=index)
        self.attrs = attrs

    def get_attr(self, name, default=None):
        return self.attrs.get(name, default)


class RawRoute:
    """The subset of pyroute2's IPRoute the vif rules use; the rest is delegated."""

    def __init__(self, fallback_class):
        self._fallback_class = fallback_class   # () -> IPRoute class
        self._fallback = None
        self._sock = None
        self._seq = 0

    # -- delegation --------------------------------------------------------

    def _ipr(self):
        if self._fallback is None:
            self._fallback = self._fallback_class()()
        return self._fallback

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._ipr(), name)

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._fallback is not None:
            self._fallback.close()
            self._fallback = None

    # -- wire --------------------------------------------------------------

    def _socket(self):
        if self._sock is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                 NETLINK_ROUTE)
            sock.bind((0, 0))
            self._sock = sock
        return self._sock

    def _request(self, kind, flags, body):
        """Send one request; return the payloads of its replies (a dump's parts)."""
        sock = self._socket()
        self._seq += 1
        seq = self._seq
        sock.send(_HDR.pack(_HDR.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body)
        out = []
        while True:
            data = sock.recv(65536)
            at = 0
            while at + _HDR.size <= len(data):
                length, mtype, _flags, mseq, _pid = _HDR.unpack_from(data, at)
                if length < _HDR.size:
                    raise NetlinkError(71, "malformed netlink reply")   # EPROTO
                payload = data[at + _HDR.size:at + length]
                at += (length + 3) & ~3
                if mseq != seq:
                    continue
                if mtype == NLMSG_DONE:
                    return out
                if mtype == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code:
                        raise NetlinkError(code)
                    return out       # the ACK
                out.append((mtype, payload))

    # -- links -------------------------------------------------------------

    def link(self, command, **kwargs):
        known = {"index", "state", "mtu", "master", "address", "ifname"}
        idx = kwargs.get("index")
        if command != "set" or not isinstance(idx, int) or idx <= 0 or set(kwargs) - known:
            return self._ipr().link(command, **kwargs)
        flags = change = 0
        if "state" in kwargs:
            if kwargs["state"] not in ("up", "down"):
                return self._ipr().link(command, **kwargs)
            change = IFF_UP
            flags = IFF_UP if kwargs["state"] == "up" else 0
        attrs = b""
        if "mtu" in kwargs:
            attrs += _attr(IFLA_MTU, struct.pack("=I", int(kwargs["mtu"])))
        if "master" in kwargs:
            attrs += _attr(IFLA_MASTER, struct.pack("=I", int(kwargs["master"])))
        if "address" in kwargs:
            attrs += _attr(IFLA_ADDRESS, _mac(kwargs["address"]))
        if "ifname" in kwargs:
            attrs += _attr(IFLA_IFNAME, kwargs["ifname"].encode() + b"\0")
        self._request(RTM_NEWLINK, NLM_F_ACK, _IFINFO.pack(0, 0, idx, flags, change) + attrs)
        return ()

    # -- addresses ---------------------------------------------------------

    def get_addr(self, family=None, index=None, **more):
        if more:
            return self._ipr().get_addr(family=family, index=index, **more)
        fam = family or 0
        found = []
        for _mtype, payload in self._request(RTM_GETADDR, NLM_F_DUMP,
                                             _IFADDR.pack(fam, 0, 0, 0, 0)):
            f, plen, flags, scope, idx = _IFADDR.unpack_from(payload)
            if (family and f != family) or (index is not None and idx != index):
                continue
            attrs = {}
            for kind, data in _attrs(payload[_IFADDR.size:]):
                name = IFA_NAMES.get(kind)
                if name == "IFA_LABEL":
                    attrs[name] = data.rstrip(b"\0").decode("utf-8", "replace")
                elif name and f in (socket.AF_INET, socket.AF_INET6):
                    attrs[name] = socket.inet_ntop(f, data)
            found.append(AddrMsg(f, plen, flags, scope, idx, attrs))
        return tuple(found)

    def flush_addr(self, index=None, **more):
        if more or not isinstance(index, int):
            return self._ipr().flush_addr(index=index, **more)
        gone = []
        for msg in self.get_addr(index=index):
            addr = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            body = _IFADDR.pack(msg["family"], msg["prefixlen"], 0, msg["scope"], index)
            body += _attr(2 if msg.get_attr("IFA_LOCAL") else 1,
                          socket.inet_pton(msg["family"], addr))
            try:
                self._request(RTM_DELADDR, NLM_F_ACK, body)
            except NetlinkError as e:
                if e.code != 99:     # EADDRNOTAVAIL: gone already (IPv6 went with IPv4)
                    raise
            gone.append(msg)
        return tuple(gone)

    def addr(self, command, index=None, family=None, address=None, prefixlen=None, **more):
        """`ip address add|del ADDRESS/PREFIXLEN [broadcast B] dev INDEX`."""
        broadcast = more.pop("broadcast", None)
        if command not in ("add", "del") or more or not isinstance(index, int) \
                or family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(prefixlen, int):
            args = dict(more, index=index, family=family, address=address, prefixlen=prefixlen)
            if broadcast is not None:
                args["broadcast"] = broadcast
            return self._ipr().addr(command, **args)
        packed = socket.inet_pton(family, address)
        body = _IFADDR.pack(family, prefixlen, 0, 0, index)
        if family == socket.AF_INET:    # as `ip`: local and peer address both
            body += _attr(2, packed) + _attr(1, packed)
        else:
            body += _attr(1, packed)
        if broadcast is not None:
            body += _attr(4, socket.inet_pton(family, broadcast))
        flags = NLM_F_ACK | (NLM_F_CREATE | NLM_F_EXCL if command == "add" else 0)
        self._request(RTM_NEWADDR if command == "add" else RTM_DELADDR, flags, body)
        return ()

    # -- routes ------------------------------------------------------------

    def get_routes(self, family=None, table=None, **more):
        if more or family not in (socket.AF_INET, socket.AF_INET6):
            return self._ipr().get_routes(family=family, table=table, **more)
        found = []
        for _mtype, payload in self._request(RTM_GETROUTE, NLM_F_DUMP,
                                             _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)):
            f, dst_len, src_len, tos, rtable, proto, scope, rtype, flags = _RTMSG.unpack_from(payload)
            attrs = {}
            for kind, data in _attrs(payload[_RTMSG.size:]):
                name, form = RTA_NAMES.get(kind, (None, None))
                if form == "u32" and len(data) >= 4:
                    attrs[name] = struct.unpack_from("=I", data)[0]
                elif form == "addr":
                    attrs[name] = socket.inet_ntop(f, data)
            if f != family or (table is not None and attrs.get("RTA_TABLE", rtable) != table):
                continue
            found.append(RouteMsg(dict(family=f, dst_len=dst_len, src_len=src_len, tos=tos,
                                       table=rtable, proto=proto, scope=scope, type=rtype,
                                       flags=flags), attrs))
        return tuple(found)

    def route(self, command, oif=None, family=None, dst=None, dst_len=None, table=None,
              prefsrc=None, priority=None, proto=0, scope=0, type=1, **more):
        """`ip route add|del DST/LEN dev OIF [src PREFSRC] [metric PRIORITY]`."""
        if command not in ("add", "del") or more or not isinstance(oif, int) \
                or family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(dst_len, int):
            args = dict(more, oif=oif, family=family, dst=dst, dst_len=dst_len, table=table,
                        prefsrc=prefsrc, priority=priority, proto=proto, scope=scope, type=type)
            return self._ipr().route(command, **{k: v for k, v in args.items() if v is not None})
        tab = 254 if table is None else table
        body = _RTMSG.pack(family, dst_len, 0, 0, tab if tab < 256 else 252, proto, scope, type, 0)
        body += _attr(RTA_TABLE, struct.pack("=I", tab))
        body += _attr(RTA_DST, socket.inet_pton(family, dst))
        body += _attr(RTA_OIF, struct.pack("=I", oif))
        if prefsrc is not None:
            body += _attr(RTA_PREFSRC, socket.inet_pton(family, prefsrc))
        if priority is not None:
            body += _attr(RTA_PRIORITY, struct.pack("=I", priority))
        flags = NLM_F_ACK | (NLM_F_CREATE | NLM_F_EXCL if command == "add" else 0)
        self._request(RTM_NEWROUTE if command == "add" else RTM_DELROUTE, flags, body)
        return ()


class RouteMsg(dict):
    """One route, as pyroute2's rtmsg reads: ["dst_len"], get_attr("RTA_OIF")."""

    def __init__(self, fields, attrs):
        super().__init__(fields)
        self.attrs = attrs

    def get_attr(self, name, default=None):
        return self.attrs.get(name, default)
