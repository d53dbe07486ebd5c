"""Bridge steps: require, create, add a port, remove a port."""
from .. import netinfo
from ..errors import StepError
from .base import Step
from .netlink import IFNAME, call, checked_name, index


class Require(Step):
    type_name = "bridge.require"
    summary = "fail unless the bridge exists (vif-bridge's 'Could not find bridge device')"
    properties = {"name": {"type": "string"}}
    required = ("name",)

    def apply(self, runtime):
        name = self.args["name"]
        if not name:
            raise StepError("Could not find bridge, and none was specified")
        if not netinfo.exists(checked_name(name)):
            raise StepError(f"Could not find bridge device {name}")
        if not netinfo.is_bridge(name):
            raise StepError(f"{name} is not a bridge")

    def describe(self):
        return f"require bridge {self.args['name'] or '(none found)'}"


class Create(Step):
    type_name = "bridge.create"
    summary = "create the bridge if missing (STP off, forward delay 0)"
    properties = {"name": IFNAME, "stp": {"type": "boolean"},
                  "forward_delay": {"type": "integer", "minimum": 0}}
    required = ("name",)

    def apply(self, runtime):
        name = checked_name(self.args["name"])
        self.created = False
        if netinfo.is_bridge(name):
            return
        stp = 1 if self.args.get("stp", False) else 0
        delay = int(self.args.get("forward_delay", 0)) * 100   # seconds -> centiseconds (USER_HZ)
        call(f"ip link add {name} type bridge", runtime.netlink().link, "add", ifname=name,
             kind="bridge", br_stp_state=stp, br_forward_delay=delay)
        self.created = True

    def revert(self, runtime):
        if self.created:
            runtime.netlink().link("del", index=index(runtime, self.args["name"]))

    def describe(self):
        return f"create bridge {self.args['name']} unless it exists (stp off, forward delay 0)"


class AddPort(Step):
    type_name = "bridge.add_port"
    summary = "enslave a device to a bridge (nothing to do if it already is)"
    properties = {"bridge": IFNAME, "dev": IFNAME}
    required = ("bridge", "dev")

    def apply(self, runtime):
        bridge, dev = self.args["bridge"], self.args["dev"]
        self.previous = netinfo.master(checked_name(dev))
        if self.previous == bridge:
            runtime.log("debug", f"{dev} already on bridge {bridge}")
            return
        bidx = index(runtime, bridge)
        call(f"ip link set {dev} master {bridge}", runtime.netlink().link, "set",
             index=index(runtime, dev), master=bidx)

    def revert(self, runtime):
        if self.previous != self.args["bridge"]:
            prev = index(runtime, self.previous) if self.previous else 0
            runtime.netlink().link("set", index=index(runtime, self.args["dev"]), master=prev)

    def describe(self):
        return f"add {self.args['dev']} to bridge {self.args['bridge']}"


class DelPort(Step):
    type_name = "bridge.del_port"
    summary = "release a device from a bridge (nothing to do if it is not on it)"
    properties = {"bridge": IFNAME, "dev": IFNAME}
    required = ("bridge", "dev")

    def apply(self, runtime):
        bridge, dev = self.args["bridge"], self.args["dev"]
        self.released = False
        if netinfo.master(checked_name(dev)) != bridge:
            runtime.log("debug", f"{dev} not on bridge {bridge}")
            return
        call(f"ip link set {dev} nomaster", runtime.netlink().link, "set",
             index=index(runtime, dev), master=0)
        self.released = True

    def revert(self, runtime):
        if self.released:
            runtime.netlink().link("set", index=index(runtime, self.args["dev"]),
                                   master=index(runtime, self.args["bridge"]))

    def describe(self):
        return f"remove {self.args['dev']} from bridge {self.args['bridge']}"
