"""Link steps: rename, prepare a bridge port, MTU, up, down."""
from .. import netinfo
from ..errors import StepError
from .base import Step
from .netlink import IFNAME, call, checked_name, index, is_up, link_attr

# The numerically largest non-broadcast address, so the bridge never takes a
# vif's address as its own for STP (xen-network-common.sh).
PORT_MAC = "fe:ff:ff:ff:ff:ff"


class Rename(Step):
    type_name = "link.rename"
    summary = "rename a device; fails if the new name is taken (Debian bug #658305)"
    properties = {"dev": IFNAME, "to": IFNAME}
    required = ("dev", "to")

    def apply(self, runtime):
        dev, to = self.args["dev"], checked_name(self.args["to"])
        if dev == to:
            return
        if netinfo.exists(to):
            raise StepError(f"Cannot rename interface {dev}. An interface with name {to} already exists.")
        ipr = runtime.netlink()
        call(f"ip link set {dev} name {to}", ipr.link, "set", index=index(runtime, dev), ifname=to)
        self.done = True

    def revert(self, runtime):
        if getattr(self, "done", False):
            ipr = runtime.netlink()
            ipr.link("set", index=index(runtime, self.args["to"]), ifname=self.args["dev"])

    def describe(self):
        return f"rename {self.args['dev']} to {self.args['to']} (fail if {self.args['to']} exists)"


class PreparePort(Step):
    type_name = "link.prepare_port"
    summary = f"link down, MAC {PORT_MAC}, flush addresses (a virtual bridge port)"
    properties = {"dev": IFNAME}
    required = ("dev",)

    def apply(self, runtime):
        dev = self.args["dev"]
        ipr = runtime.netlink()
        idx = index(runtime, dev)
        self.was_up = is_up(runtime, idx)
        self.mac = link_attr(runtime, idx, "IFLA_ADDRESS")
        self.addrs = [(a["family"], a.get_attr("IFA_ADDRESS"), a["prefixlen"])
                      for a in ipr.get_addr(index=idx)]
        call(f"ip link set dev {dev} down", ipr.link, "set", index=idx, state="down")
        try:
            ipr.link("set", index=idx, address=PORT_MAC)
        except OSError:
            runtime.log("debug", f"ip link set dev {dev} address {PORT_MAC} failed (ignored, as bash did)")
        call(f"ip address flush dev {dev}", ipr.flush_addr, index=idx)

    def revert(self, runtime):
        ipr = runtime.netlink()
        idx = index(runtime, self.args["dev"])
        if self.mac:
            ipr.link("set", index=idx, address=self.mac)
        for family, address, prefixlen in self.addrs:
            ipr.addr("add", index=idx, family=family, address=address, prefixlen=prefixlen)
        if self.was_up:
            ipr.link("set", index=idx, state="up")

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

    def apply(self, runtime):
        mtu = self.mtu()
        dev = self.args["dev"]
        idx = index(runtime, dev)
        self.previous = link_attr(runtime, idx, "IFLA_MTU")
        call(f"ip link set dev {dev} mtu {mtu}", runtime.netlink().link, "set", index=idx, mtu=mtu)

    def revert(self, runtime):
        runtime.netlink().link("set", index=index(runtime, self.args["dev"]), mtu=self.previous)

    def describe(self):
        return f"{self.args['dev']}: mtu {self.args['mtu']}"


class _State(Step):
    properties = {"dev": IFNAME}
    required = ("dev",)
    state = ""

    def apply(self, runtime):
        dev = checked_name(self.args["dev"])
        self.was_up = netinfo.is_up(dev)
        if self.was_up is None:
            raise StepError(f"device {dev} does not exist")
        if self.was_up == (self.state == "up"):
            return   # already so: no netlink needed
        call(f"ip link set dev {dev} {self.state}", runtime.netlink().link, "set",
             index=index(runtime, dev), state=self.state)

    def revert(self, runtime):
        if self.was_up != (self.state == "up"):
            undo = "up" if self.was_up else "down"
            runtime.netlink().link("set", index=index(runtime, self.args["dev"]), state=undo)

    def describe(self):
        return f"{self.args['dev']}: link {self.state}"


class Up(_State):
    type_name = "link.up"
    summary = "set a device up"
    state = "up"


class Down(_State):
    type_name = "link.down"
    summary = "set a device down"
    state = "down"
