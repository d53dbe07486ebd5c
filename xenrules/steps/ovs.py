"""Open vSwitch steps: put a vif on an OVS bridge, take it off (vif-openvswitch).

Both run ovs-vsctl with an argv list, like the original, so that the switch
is found the same way: --db is not given unless the rule says so, and
ovs-vsctl then uses unix:$OVS_RUNDIR/db.sock (default
/var/run/openvswitch/db.sock). Without --no-wait, ovs-vsctl waits until
ovs-vswitchd has applied the change, as the original does.

Names are checked before they reach ovs-vsctl: a bridge or port name that
ovs-vsctl could read as a command separator (`--`) or an option is refused,
so a name cannot change what the command does. External-id values are
ovsdb string literals, so they stay data whatever they hold.
"""
from ..errors import DeadlineError, StepError
from .base import Step
from .netlink import IFNAME, checked_name

# vif-openvswitch's bash regex: bridge[.vlan][:trunk[:trunk...]]
BRIDGE_SPEC = r"([^.:]+)(?:\.([0-9]+))?(?::([0-9]+(?::[0-9]+)*))?"
ID_KEY = r"[A-Za-z0-9_.-]+"
DEFAULT_TIMEOUT = 20
# ovs-vsctl ends itself with SIGALRM when --timeout expires
SIGALRM = 14
# a cleanup after a timeout must not wait for the ovs-vswitchd that did not answer
CLEANUP_TIMEOUT = 5
TIMEOUT = {"type": "integer", "minimum": 1,
           "description": "seconds ovs-vsctl may take (its --timeout; default 20, the "
                          "original 30: leaves room for the cleanup within libxl's 40 s)"}
DB = {"type": "string",
      "description": "ovsdb connection (ovs-vsctl --db); empty: ovs-vsctl's default, "
                     "unix:$OVS_RUNDIR/db.sock"}


def parse_bridge(spec):
    """'br[.vlan][:trunk:trunk]' -> (bridge, tag, trunks) with tag/trunks '' when absent
    and trunks comma-separated, as vif-openvswitch parses it."""
    import re   # only OVS events pay for it
    found = re.fullmatch(BRIDGE_SPEC, spec or "")
    if not found:
        raise StepError("No valid bridge was specified")
    bridge, tag, trunks = found.groups()
    return ovs_name(bridge, "bridge"), tag or "", (trunks or "").replace(":", ",")


def ovs_name(name, what="port"):
    """A bridge or port name, as an interface name that ovs-vsctl cannot read
    as `--` (its command separator) or an option."""
    checked_name(name)
    if name.startswith("-"):
        raise StepError(f"invalid {what} name {name!r}: must not start with '-'")
    return name


def ovs_string(value):
    """An ovsdb string literal: double quotes, backslash escapes (ovs-vsctl
    reads it as a JSON string), so spaces, quotes and commas stay data."""
    import json
    return json.dumps(value, ensure_ascii=False)


class VsctlTimeout(StepError):
    """ovs-vsctl did not finish in time: its transaction may have been committed."""


class VsctlDeadline(VsctlTimeout, DeadlineError):
    """... because the event's budget ended (deadline.py)."""


def vsctl(runtime, args, timeout, db=""):
    """Run ovs-vsctl --timeout=T [--db=DB] ARGS...; StepError with its message on
    failure, VsctlTimeout when it ran out of time."""
    import math
    import subprocess   # only OVS events pay for it
    from .. import deadline
    own = int(timeout)
    # --timeout within the event's budget too: ovs-vsctl then ends itself (SIGALRM)
    # and, should it not, the group is killed at the budget's end
    left, cut = deadline.seconds(own + 2)
    timeout = min(own, math.floor(left) - 1) if cut else own
    argv = ["ovs-vsctl", f"--timeout={max(timeout, 1)}"] + ([f"--db={db}"] if db else []) + args
    if timeout < 1:
        raise DeadlineError(f"{' '.join(argv)}: not started, {deadline.why()}")
    runtime.log("debug", "running " + " ".join(argv))
    try:
        done = deadline.run(argv, " ".join(argv), own + 2)
    except FileNotFoundError:
        raise StepError("Unable to find ovs-vsctl tool") from None
    except (subprocess.TimeoutExpired, DeadlineError):   # group killed, reaped
        done = None
    if cut and (done is None or done.returncode == -SIGALRM):
        raise VsctlDeadline(f"{' '.join(argv)} failed: no answer from ovsdb-server or "
                            f"ovs-vswitchd in {timeout} s; {deadline.why()}")
    if done is None or done.returncode == -SIGALRM:
        raise VsctlTimeout(f"{' '.join(argv)} failed: no answer from ovsdb-server or "
                           f"ovs-vswitchd in {timeout} s")
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
        raise StepError(f"{' '.join(argv)} failed: {reason}")
    return done.stdout


def _cleanup(runtime, dev, db):
    try:
        vsctl(runtime, ["--no-wait", "--", "--if-exists", "del-port", dev], CLEANUP_TIMEOUT, db)
    except StepError as e:
        runtime.log("err", f"cannot take port {dev} out again: {e}")


class AddPort(Step):
    type_name = "ovs.add_port"
    summary = ("add a device to an OVS bridge given as bridge[.vlan][:trunk...], replacing any "
               "port of that name, with tag, trunks and external-ids")
    properties = {
        "bridge": {"type": "string",
                   "description": "bridge[.vlan][:trunk[:trunk...]], e.g. xenbr0.10:20:30"},
        "dev": dict(IFNAME, description="the device to add (becomes the port's name)"),
        "external_ids": {"type": "object", "additionalProperties": {"type": ["string", "integer"]},
                         "description": "interface external-ids to set, key: value "
                                        "(xen-vm-name, xen-vm-uuid, attached-mac)"},
        "timeout": TIMEOUT,
        "db": DB,
    }
    required = ("bridge", "dev")

    def plan(self):
        bridge, tag, trunks = parse_bridge(self.args["bridge"])
        import re
        dev = ovs_name(self.args["dev"])
        ids = self.args.get("external_ids") or {}
        for key in ids:
            if not re.fullmatch(ID_KEY, key):
                raise StepError(f"invalid external-ids key {key!r}")
        return bridge, tag, trunks, dev, ids

    def undo_record(self, runtime):
        self.plan()   # refuse bad values before anything is journaled
        return {}

    def apply(self, runtime):
        bridge, tag, trunks, dev, ids = self.plan()
        args = ["--", "--if-exists", "del-port", dev, "--", "add-port", bridge, dev]
        args += [f"tag={tag}"] * bool(tag) + [f"trunks={trunks}"] * bool(trunks)
        if ids:
            args += ["--", "set", "interface", dev]
            args += [f"external-ids:{k}={ovs_string(str(v))}" for k, v in ids.items()]
        try:
            vsctl(runtime, args, self.args.get("timeout", DEFAULT_TIMEOUT), self.args.get("db", ""))
        except VsctlDeadline:
            raise   # no time left here: the engine's undo takes the port out, from the reserve
        except VsctlTimeout:
            # The transaction may be in the database although ovs-vswitchd never
            # applied it: take the port out again without waiting for vswitchd.
            _cleanup(runtime, dev, self.args.get("db", ""))
            self.cleaned = True
            raise

    def undo_failed(self, runtime):
        if getattr(self, "cleaned", False):
            return True   # apply took the port out already, without waiting for vswitchd
        return super().undo_failed(runtime)

    @classmethod
    def undo(cls, runtime, args, record):
        dev, db = ovs_name(args["dev"]), args.get("db", "")
        try:
            vsctl(runtime, ["--", "--if-exists", "del-port", dev],
                  min(int(args.get("timeout", DEFAULT_TIMEOUT)), 10), db)
        except VsctlTimeout:
            _cleanup(runtime, dev, db)
            raise

    @classmethod
    def describe_undo(cls, args, record):
        return f"remove port {args['dev']} from its OVS bridge"

    def describe(self):
        try:
            bridge, tag, trunks, dev, ids = self.plan()
        except StepError as e:
            return f"add {self.args['dev']} to OVS bridge {self.args['bridge']!r}: {e}"
        extra = (f" tag={tag}" if tag else "") + (f" trunks={trunks}" if trunks else "")
        shown = " ".join(f"{k}={v!r}" for k, v in ids.items())
        return f"add {dev} to OVS bridge {bridge}{extra}" + (f" external-ids {shown}" if shown else "")


class DelPort(Step):
    type_name = "ovs.del_port"
    summary = "remove a device's port from whatever OVS bridge has it (nothing if none has)"
    properties = {"dev": dict(IFNAME, description="the port to remove"),
                  "timeout": TIMEOUT, "db": DB}
    required = ("dev",)

    # No revert: a removed port's settings are not kept, and teardown errors
    # are ignored by the toolstack anyway.
    def apply(self, runtime):
        dev = ovs_name(self.args["dev"])
        vsctl(runtime, ["--", "--if-exists", "del-port", dev],
              self.args.get("timeout", DEFAULT_TIMEOUT), self.args.get("db", ""))

    def describe(self):
        return f"remove port {self.args['dev']} from its OVS bridge (if any)"
