"""Bridge steps: require, create, add a port, remove a port."""
from .. import netinfo
from ..errors import StepError
from .base import Step
from .netlink import IFNAME, call, checked_name, index, live_index


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

    def undo_record(self, runtime):
        return None if netinfo.is_bridge(checked_name(self.args["name"])) else {}

    def apply(self, runtime):
        name = self.args["name"]
        if self.record is None:
            return
        stp = 1 if self.args.get("stp", False) else 0
        delay = int(self.args.get("forward_delay", 0)) * 100   # seconds -> centiseconds (USER_HZ)
        call(f"ip link add {name} type bridge", runtime.netlink().link, "add", ifname=name,
             kind="bridge", br_stp_state=stp, br_forward_delay=delay)

    @classmethod
    def undo(cls, runtime, args, record):
        # the bridge did not exist before the step (else no record): whatever
        # bears the name now was made by it
        if netinfo.is_bridge(args["name"]):
            runtime.netlink().link("del", index=index(runtime, args["name"]))

    @classmethod
    def describe_undo(cls, args, record):
        return f"delete bridge {args['name']} (created by the event)"

    def describe(self):
        return f"create bridge {self.args['name']} unless it exists (stp off, forward delay 0)"


class AddPort(Step):
    type_name = "bridge.add_port"
    summary = "enslave a device to a bridge (nothing to do if it already is)"
    properties = {"bridge": IFNAME, "dev": IFNAME}
    required = ("bridge", "dev")

    def undo_record(self, runtime):
        bridge, dev = self.args["bridge"], self.args["dev"]
        previous = netinfo.master(checked_name(dev))
        if previous == bridge:
            runtime.log("debug", f"{dev} already on bridge {bridge}")
            return None
        return {"ifindex": index(runtime, dev),
                "previous": index(runtime, previous) if previous else 0}

    def apply(self, runtime):
        if self.record is None:
            return
        bridge, dev = self.args["bridge"], self.args["dev"]
        bidx = index(runtime, bridge)
        call(f"ip link set {dev} master {bridge}", runtime.netlink().link, "set",
             index=self.record["ifindex"], master=bidx)

    @classmethod
    def undo(cls, runtime, args, record):
        idx = live_index(record["ifindex"])
        if idx is not None:
            prev = (live_index(record["previous"]) or 0) if record["previous"] else 0
            runtime.netlink().link("set", index=idx, master=prev)

    @classmethod
    def describe_undo(cls, args, record):
        was = f"ifindex {record['previous']}" if record["previous"] else "no master"
        return f"{args['dev']}: off bridge {args['bridge']} ({was} again)"

    def describe(self):
        return f"add {self.args['dev']} to bridge {self.args['bridge']}"


class DelPort(Step):
    type_name = "bridge.del_port"
    summary = "release a device from a bridge (nothing to do if it is not on it)"
    properties = {"bridge": IFNAME, "dev": IFNAME}
    required = ("bridge", "dev")

    def undo_record(self, runtime):
        bridge, dev = self.args["bridge"], self.args["dev"]
        if netinfo.master(checked_name(dev)) != bridge:
            runtime.log("debug", f"{dev} not on bridge {bridge}")
            return None
        return {"ifindex": index(runtime, dev), "bridge": index(runtime, bridge)}

    def apply(self, runtime):
        if self.record is not None:
            call(f"ip link set {self.args['dev']} nomaster", runtime.netlink().link, "set",
                 index=self.record["ifindex"], master=0)

    @classmethod
    def undo(cls, runtime, args, record):
        idx, bridge = live_index(record["ifindex"]), live_index(record["bridge"])
        if idx is not None and bridge is not None:
            runtime.netlink().link("set", index=idx, master=bridge)

    @classmethod
    def describe_undo(cls, args, record):
        return f"{args['dev']}: back on bridge {args['bridge']}"

    def describe(self):
        return f"remove {self.args['dev']} from bridge {self.args['bridge']}"
