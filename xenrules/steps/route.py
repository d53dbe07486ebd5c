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
from .netlink import IFNAME, checked_name, index

RT_TABLE_MAIN = 254
RTPROT_BOOT = 3            # what `ip route add` says when no proto is given
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_NOWHERE = 0, 253, 255
ESRCH, ENODEV = 3, 19      # "no such route", "no such device": already gone

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

    def apply(self, runtime):
        dev = checked_name(self.args["dev"])
        src_addr, metric = self.common()
        # every destination checked before the first route goes in
        plan = [(entry, self.spec(entry, src_addr, metric)) for entry in self.entries()]
        self.added = []
        if not plan:
            return
        idx = index(runtime, dev)
        ipr = runtime.netlink()
        for entry, spec in plan:
            try:
                kernel_call(f"ip route add {self.words(entry)}", ipr.route, "add",
                            oif=idx, **self.add_args(spec))
            except StepError:
                self.revert(runtime)   # the engine reverts earlier steps, not this one
                raise
            self.added.append((idx, spec))

    def revert(self, runtime):
        ipr = runtime.netlink()
        for idx, spec in reversed(getattr(self, "added", [])):
            try:
                ipr.route("del", oif=idx, **self.del_args(spec))
            except netlink_errors() as e:
                runtime.log("debug", f"route {spec['dst']}/{spec['dst_len']} already gone: {e}")
        self.added = []

    def describe(self):
        return f"{self.args['dev']}: add a route to each of [{self.args['to']}]" + self.tail()


class Remove(_Routes):
    type_name = "route.remove"
    summary = ("delete one route per destination through a device; routes or a device already "
               "gone are not an error, other failures are reported after trying every one")

    def apply(self, runtime):
        dev = checked_name(self.args["dev"])
        self.removed = []
        entries = self.entries()
        if not entries:
            return
        if not netinfo.exists(dev):
            # the kernel dropped the device's routes with it
            runtime.log("debug", f"{dev} does not exist: its routes are gone")
            return
        src_addr, metric = self.common()
        idx = index(runtime, dev)
        ipr = runtime.netlink()
        failed = []
        # like a loop of `do_without_error ip route del`: one bad entry
        # does not keep the others in place
        for entry in entries:
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
                continue
            self.removed.append((idx, spec))
        if failed:
            raise StepError("; ".join(failed))

    def revert(self, runtime):
        ipr = runtime.netlink()
        for idx, spec in reversed(getattr(self, "removed", [])):
            ipr.route("add", oif=idx, **self.add_args(spec))
        self.removed = []

    def describe(self):
        return f"{self.args['dev']}: delete the route to each of [{self.args['to']}] (if there)" + self.tail()
