"""Route steps: one route per destination through a device, and their removal.

`route.add` is vif-route's `ip route add ADDR dev DEV src SRC metric N` for
each address of `ip`, `route.remove` the `do_without_error ip route del ...`
of offline. The routes look exactly like those `ip route add` makes:
protocol boot, table main, scope link for IPv4 (universe for IPv6).
"""
from .. import netinfo
from ..errors import StepError
from .address import error_code, family, is_decimal, kernel_call, netlink_errors, parse_cidr
from .base import Step
from .netlink import IFNAME, checked_name, index, live_index

RT_TABLE_MAIN = 254
RTPROT_BOOT = 3            # what `ip route add` says when no proto is given
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_NOWHERE = 0, 253, 255
ESRCH, ENODEV = 3, 19      # "no such route", "no such device": already gone
EEXIST, EINVAL = 17, 22

PROPERTIES = {
    "dev": dict(IFNAME, description="the device the routes go through"),
    "to": {"type": "string",
           "description": "destinations, space-separated: ADDRESS or ADDRESS/PREFIXLEN, IPv4 "
                          "or IPv6; one route each; empty: nothing to do"},
    "src": {"type": "string",
            "description": "preferred source address (same family as every destination); "
                           "empty or absent: none"},
    "metric": {"type": ["string", "integer"],
               "description": "route metric (priority); absent: the kernel's default"},
}


IP6_DEFAULT_METRIC = 1024   # what the kernel gives an IPv6 route added without one


def route_key(spec):
    """What makes two routes of a device the same: destination, source, metric."""
    metric = spec.get("priority")
    if metric is None and spec["family"] == 10:
        metric = IP6_DEFAULT_METRIC
    return (spec["family"], spec["dst"], spec["dst_len"], spec.get("prefsrc"), metric)


def existing_routes(runtime, idx, specs):
    """route_key()s of the main-table routes through device idx among those of specs."""
    import ipaddress
    found = set()
    for fam in sorted({s["family"] for s in specs}):
        for msg in runtime.netlink().get_routes(family=fam, table=RT_TABLE_MAIN):
            if msg.get_attr("RTA_OIF") != idx or msg.get_attr("RTA_DST") is None:
                continue
            src = msg.get_attr("RTA_PREFSRC")
            found.add((fam, str(ipaddress.ip_address(msg.get_attr("RTA_DST"))), msg["dst_len"],
                       str(ipaddress.ip_address(src)) if src else None, msg.get_attr("RTA_PRIORITY")))
    return found


class _Routes(Step):
    properties = PROPERTIES
    required = ("dev", "to")

    def common(self):
        """(source address or None, metric or None), checked."""
        src = str(self.args.get("src") or "").strip()
        src_addr = None
        if src:
            if "/" in src:
                raise StepError(f"invalid source address {src!r}")
            src_addr = parse_cidr(src, "source address")[0]
        metric = str(self.args.get("metric", "")).strip()
        if metric and (not is_decimal(metric) or int(metric) > 0xFFFFFFFF):
            raise StepError(f"invalid metric {metric!r}")
        return src_addr, int(metric) if metric else None

    @staticmethod
    def spec(entry, src_addr, metric):
        """Netlink arguments (without oif) of the route to one destination."""
        addr, plen = parse_cidr(entry, "route destination")
        spec = {"family": family(addr), "dst": str(addr), "dst_len": plen,
                "table": RT_TABLE_MAIN}
        if src_addr is not None:
            if src_addr.version != addr.version:
                raise StepError(f"source address {src_addr} is not of the family of {entry}")
            spec["prefsrc"] = str(src_addr)
        if metric is not None:
            spec["priority"] = metric
        return spec

    def entries(self):
        return str(self.args["to"]).split()

    def words(self, entry):
        return f"{entry} dev {self.args['dev']}" + self.tail()

    def tail(self):
        src, metric = self.args.get("src"), self.args.get("metric")
        return (f" src {src}" if src else "") + (f" metric {metric}" if metric not in (None, "") else "")

    @staticmethod
    def add_args(spec):
        scope = RT_SCOPE_LINK if spec["family"] == 2 else RT_SCOPE_UNIVERSE
        return dict(spec, proto=RTPROT_BOOT, scope=scope, type=RTN_UNICAST)

    @staticmethod
    def del_args(spec):
        # like `ip route del`: any scope and protocol; dst, dev, src and
        # metric must match
        return dict(spec, scope=RT_SCOPE_NOWHERE, type=RTN_UNICAST, proto=0)


class Add(_Routes):
    type_name = "route.add"
    summary = "one route per destination through a device, with optional src and metric; revert deletes them"

    def undo_record(self, runtime):
        dev = checked_name(self.args["dev"])
        src_addr, metric = self.common()
        # every destination checked before the first route goes in
        plan = [self.spec(entry, src_addr, metric) for entry in self.entries()]
        if not plan:
            return None
        idx = index(runtime, dev)
        # undo deletes only the routes that are not there now: one that is
        # (the step then fails with "File exists") was never this event's
        present = existing_routes(runtime, idx, plan)
        return {"ifindex": idx, "routes": [s for s in plan if route_key(s) not in present]}

    def apply(self, runtime):
        if self.record is None:
            return
        src_addr, metric = self.common()
        idx = self.record["ifindex"]
        ipr = runtime.netlink()
        for entry in self.entries():
            # a failure part way: the engine undoes this step too, from its record
            kernel_call(f"ip route add {self.words(entry)}", ipr.route, "add",
                        oif=idx, **self.add_args(self.spec(entry, src_addr, metric)))

    @classmethod
    def undo(cls, runtime, args, record):
        if live_index(record["ifindex"]) is None:
            return   # the kernel dropped the device's routes with it
        ipr = runtime.netlink()
        failed = []
        for spec in reversed(record["routes"]):
            try:
                ipr.route("del", oif=record["ifindex"], **cls.del_args(spec))
            except netlink_errors() as e:
                # never added (gone already, or one the kernel refuses): nothing to undo
                if error_code(e) not in (ESRCH, ENODEV, EINVAL):
                    failed.append(f"ip route del {spec['dst']}/{spec['dst_len']}: {e}")
        if failed:
            raise StepError("; ".join(failed))

    @classmethod
    def describe_undo(cls, args, record):
        dsts = " ".join(f"{s['dst']}/{s['dst_len']}" for s in record["routes"]) or "none"
        return f"{args['dev']}: delete the routes to {dsts}"

    def describe(self):
        return f"{self.args['dev']}: add a route to each of [{self.args['to']}]" + self.tail()


class Remove(_Routes):
    keeps_partial_work = True
    type_name = "route.remove"
    summary = ("delete one route per destination through a device; routes or a device already "
               "gone are not an error, other failures are reported after trying every one")

    def undo_record(self, runtime):
        dev = checked_name(self.args["dev"])
        entries = self.entries()
        if not entries:
            return None
        if not netinfo.exists(dev):
            # the kernel dropped the device's routes with it
            runtime.log("debug", f"{dev} does not exist: its routes are gone")
            return None
        src_addr, metric = self.common()
        specs = []
        for entry in entries:
            try:
                specs.append(self.spec(entry, src_addr, metric))
            except StepError:
                pass   # apply reports it, after removing the others
        idx = index(runtime, dev)
        # undo puts back only the routes that are there now
        present = existing_routes(runtime, idx, specs)
        return {"ifindex": idx, "routes": [s for s in specs if route_key(s) in present]}

    def apply(self, runtime):
        if self.record is None:
            return
        src_addr, metric = self.common()
        idx = self.record["ifindex"]
        ipr = runtime.netlink()
        failed = []
        # like a loop of `do_without_error ip route del`: one bad entry
        # does not keep the others in place
        for entry in self.entries():
            try:
                spec = self.spec(entry, src_addr, metric)
            except StepError as e:
                failed.append(str(e))
                continue
            try:
                ipr.route("del", oif=idx, **self.del_args(spec))
            except netlink_errors() as e:
                if error_code(e) in (ESRCH, ENODEV):
                    runtime.log("debug", f"no route {self.words(entry)}")
                    continue
                failed.append(f"ip route del {self.words(entry)}: {e}")
        if failed:
            raise StepError("; ".join(failed))

    @classmethod
    def undo(cls, runtime, args, record):
        if live_index(record["ifindex"]) is None:
            return
        ipr = runtime.netlink()
        for spec in reversed(record["routes"]):
            try:
                ipr.route("add", oif=record["ifindex"], **cls.add_args(spec))
            except netlink_errors() as e:
                if error_code(e) != EEXIST:   # never removed, or put back already
                    raise

    @classmethod
    def describe_undo(cls, args, record):
        dsts = " ".join(f"{s['dst']}/{s['dst_len']}" for s in record["routes"]) or "none"
        return f"{args['dev']}: add the routes to {dsts} again"

    def describe(self):
        return f"{self.args['dev']}: delete the route to each of [{self.args['to']}] (if there)" + self.tail()
