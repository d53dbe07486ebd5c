"""Link steps: rename, prepare a bridge port, MTU, up, down."""
from .. import netinfo
from ..errors import StepError
from .base import Step
from .netlink import IFNAME, call, checked_name, index, is_up, link_attr, live_index

EEXIST, EBUSY = 17, 16

# The numerically largest non-broadcast address, so the bridge never takes a
# vif's address as its own for STP (xen-network-common.sh).
PORT_MAC = "fe:ff:ff:ff:ff:ff"


class Rename(Step):
    type_name = "link.rename"
    summary = "rename a device; fails if the new name is taken (Debian bug #658305)"
    properties = {"dev": IFNAME, "to": IFNAME}
    required = ("dev", "to")

    def undo_record(self, runtime):
        dev, to = checked_name(self.args["dev"]), checked_name(self.args["to"])
        if dev == to:
            return None
        if netinfo.exists(to):
            raise StepError(f"Cannot rename interface {dev}. An interface with name {to} already exists.")
        # the device by its ifindex, which a rename keeps: undo renames that one only
        return {"ifindex": index(runtime, dev)}

    def apply(self, runtime):
        dev, to = self.args["dev"], self.args["to"]
        if self.record is None:
            return
        ipr = runtime.netlink()
        call(f"ip link set {dev} name {to}", ipr.link, "set", index=self.record["ifindex"], ifname=to)

    @classmethod
    def undo(cls, runtime, args, record):
        import _socket as socket
        try:
            current = socket.if_indextoname(record["ifindex"])
        except OSError:
            return   # the device is gone (netback removed it): nothing to rename
        if current != args["to"]:
            return   # never renamed, or renamed back already
        ipr, idx = runtime.netlink(), record["ifindex"]
        try:
            ipr.link("set", index=idx, ifname=args["dev"])
        except Exception as e:
            # kernels before 6.2 rename only a device that is down (EBUSY)
            if getattr(e, "code", None) != EBUSY:
                raise
            ipr.link("set", index=idx, state="down")
            ipr.link("set", index=idx, ifname=args["dev"])
            ipr.link("set", index=idx, state="up")

    @classmethod
    def describe_undo(cls, args, record):
        return f"rename {args['to']} (ifindex {record['ifindex']}) back to {args['dev']}"

    def describe(self):
        return f"rename {self.args['dev']} to {self.args['to']} (fail if {self.args['to']} exists)"


class PreparePort(Step):
    type_name = "link.prepare_port"
    summary = f"link down, MAC {PORT_MAC}, flush addresses (a virtual bridge port)"
    properties = {"dev": IFNAME}
    required = ("dev",)

    def undo_record(self, runtime):
        idx = index(runtime, self.args["dev"])
        return {"ifindex": idx, "was_up": is_up(runtime, idx),
                "mac": link_attr(runtime, idx, "IFLA_ADDRESS"),
                "addrs": [[a["family"], a.get_attr("IFA_ADDRESS"), a["prefixlen"]]
                          for a in runtime.netlink().get_addr(index=idx)]}

    def apply(self, runtime):
        dev = self.args["dev"]
        ipr = runtime.netlink()
        idx = self.record["ifindex"]
        call(f"ip link set dev {dev} down", ipr.link, "set", index=idx, state="down")
        runtime.test_point("link.prepare_port.down")
        try:
            ipr.link("set", index=idx, address=PORT_MAC)
        except OSError:
            runtime.log("debug", f"ip link set dev {dev} address {PORT_MAC} failed (ignored, as bash did)")
        call(f"ip address flush dev {dev}", ipr.flush_addr, index=idx)

    @classmethod
    def undo(cls, runtime, args, record):
        from .address import netlink_errors
        idx = live_index(record["ifindex"])
        if idx is None:
            return
        ipr = runtime.netlink()
        if record["mac"]:
            ipr.link("set", index=idx, address=record["mac"])
        for family, address, prefixlen in record["addrs"]:
            try:
                ipr.addr("add", index=idx, family=family, address=address, prefixlen=prefixlen)
            except netlink_errors() as e:
                if getattr(e, "code", None) != EEXIST:   # never flushed, or put back already
                    raise
        if record["was_up"]:
            ipr.link("set", index=idx, state="up")

    @classmethod
    def describe_undo(cls, args, record):
        addrs = " ".join(f"{a}/{p}" for _f, a, p in record["addrs"]) or "none"
        return (f"{args['dev']}: address {record['mac']}, addresses {addrs}"
                + (", up" if record["was_up"] else ""))

    def describe(self):
        return f"{self.args['dev']}: link down, address {PORT_MAC}, flush addresses"


class Mtu(Step):
    type_name = "link.mtu"
    summary = "set a device's MTU"
    properties = {"dev": IFNAME, "mtu": {"type": ["string", "integer"]}}
    required = ("dev", "mtu")

    def mtu(self):
        text = str(self.args["mtu"]).strip()
        if not text.isdigit() or not 68 <= int(text) <= 65535:
            raise StepError(f"invalid MTU {text!r} for {self.args['dev']}")
        return int(text)

    def undo_record(self, runtime):
        self.mtu()   # an invalid MTU fails before anything is journaled
        idx = index(runtime, self.args["dev"])
        return {"ifindex": idx, "previous": link_attr(runtime, idx, "IFLA_MTU")}

    def apply(self, runtime):
        call(f"ip link set dev {self.args['dev']} mtu {self.mtu()}", runtime.netlink().link,
             "set", index=self.record["ifindex"], mtu=self.mtu())

    @classmethod
    def undo(cls, runtime, args, record):
        idx = live_index(record["ifindex"])
        if idx is not None:
            runtime.netlink().link("set", index=idx, mtu=record["previous"])

    @classmethod
    def describe_undo(cls, args, record):
        return f"{args['dev']}: mtu {record['previous']} again"

    def describe(self):
        return f"{self.args['dev']}: mtu {self.args['mtu']}"


class _State(Step):
    properties = {"dev": IFNAME}
    required = ("dev",)
    state = ""

    def undo_record(self, runtime):
        dev = checked_name(self.args["dev"])
        was_up = netinfo.is_up(dev)
        if was_up is None:
            raise StepError(f"device {dev} does not exist")
        if was_up == (self.state == "up"):
            return None   # already so: nothing to do, nothing to undo
        return {"ifindex": index(runtime, dev)}

    def apply(self, runtime):
        if self.record is not None:
            call(f"ip link set dev {self.args['dev']} {self.state}", runtime.netlink().link, "set",
                 index=self.record["ifindex"], state=self.state)

    @classmethod
    def undo(cls, runtime, args, record):
        idx = live_index(record["ifindex"])
        if idx is not None:
            runtime.netlink().link("set", index=idx, state="down" if cls.state == "up" else "up")

    @classmethod
    def describe_undo(cls, args, record):
        return f"{args['dev']}: link {'down' if cls.state == 'up' else 'up'} again"

    def describe(self):
        return f"{self.args['dev']}: link {self.state}"


class Up(_State):
    type_name = "link.up"
    summary = "set a device up"
    state = "up"


RTPROT_KERNEL = 2   # a device's address routes: the kernel puts them back with the link


def static_routes(runtime, idx):
    """The main-table routes through device idx that are not the kernel's own
    (those of its addresses) nor through a gateway, as route() arguments: what
    the kernel drops when the device goes down and never brings back."""
    found = []
    for fam in (2, 10):
        for msg in runtime.netlink().get_routes(family=fam, table=254):
            if msg.get_attr("RTA_OIF") != idx or msg.get_attr("RTA_DST") is None \
                    or msg.get_attr("RTA_GATEWAY") is not None or msg["proto"] == RTPROT_KERNEL:
                continue
            spec = {"family": fam, "dst": msg.get_attr("RTA_DST"), "dst_len": msg["dst_len"],
                    "table": 254, "proto": msg["proto"], "scope": msg["scope"], "type": msg["type"]}
            for key, attr in (("prefsrc", "RTA_PREFSRC"), ("priority", "RTA_PRIORITY")):
                if msg.get_attr(attr) is not None:
                    spec[key] = msg.get_attr(attr)
            found.append(spec)
    return found


class Down(_State):
    type_name = "link.down"
    summary = "set a device down; revert sets it up and puts back the routes the kernel dropped"
    state = "down"

    def undo_record(self, runtime):
        record = super().undo_record(runtime)
        if record is not None:
            # going down, the device loses its routes (vif-nat's route to the
            # guest); up again, it gets back only those of its addresses
            record["routes"] = static_routes(runtime, record["ifindex"])
        return record

    @classmethod
    def undo(cls, runtime, args, record):
        super().undo(runtime, args, record)
        idx = live_index(record["ifindex"])
        if idx is None:
            return
        from .address import error_code, netlink_errors
        failed = []
        for spec in record.get("routes") or ():
            try:
                runtime.netlink().route("add", oif=idx, **spec)
            except netlink_errors() as e:
                if error_code(e) != 17:   # EEXIST: never dropped, or put back already
                    failed.append(f"ip route add {spec['dst']}/{spec['dst_len']}: {e}")
        if failed:
            raise StepError("; ".join(failed))

    @classmethod
    def describe_undo(cls, args, record):
        routes = " ".join(f"{s['dst']}/{s['dst_len']}" for s in record.get("routes") or ())
        return f"{args['dev']}: link up again" + (f", routes to {routes} back" if routes else "")
