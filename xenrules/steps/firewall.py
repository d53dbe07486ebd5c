"""The anti-spoofing firewall of the original vif scripts (vif-common.sh handle_iptable).

For a vif on a bridge: iptables FORWARD rules that accept bridged packets
coming in from the vif only from its addresses (plus DHCP requests), and
everything going out to it; with no address, everything from it. Exactly
the rules, order and lock of the original, so the two can share a host:

  per address A:  -I FORWARD -m physdev --physdev-is-bridged --physdev-in DEV -s A -j ACCEPT
                  -I FORWARD -m physdev --physdev-is-bridged --physdev-out DEV -j ACCEPT
  then DHCP:      ... --physdev-in DEV -p udp --sport 68 --dport 67 -j ACCEPT, and the out rule
  no address:     ... --physdev-in DEV -j ACCEPT, and the out rule

online/add insert (-I), offline/remove delete (-D) one copy of each, all
under the hotplug lock `iptables`, with -w (wait for the xtables lock). As in
the original, a host whose iptables does not work (`iptables -L` fails) is
left alone, and a rule that cannot be inserted is logged, not fatal, unless
`strict` is set. Debian's scripts have this disabled (bug #894013); the
shipped rules run it only when their `firewall` variable is on.

Unlike the original, each word of `addresses` must be an IPv4 address or
network (a.b.c.d, a.b.c.d/len, a.b.c.d/mask, or a comma list of those, as
iptables -s reads them) before it reaches iptables: anything else (a host
name iptables would resolve, a word starting with '-' or '!') is refused
like a rule iptables refuses. And the whole step has a time budget
(`timeout`, default 10 s), so a held xtables lock cannot stall the event
past libxl's 40 s.
"""
from ..errors import DeadlineError, StepError
from .base import Step
from .netlink import IFNAME, checked_name

INSERTING = ("online", "add")
DEFAULT_TIMEOUT = 10
REMOVING = ("offline", "remove")
FAILED = "iptables setup failed. This may affect guest networking."


def ipv4_source(word):
    """True if iptables -s would read `word` as IPv4 addresses/networks only
    (no host name to resolve, no option, no negation)."""
    def octets(text):
        parts = text.split(".")
        return len(parts) == 4 and all(p.isdigit() and p.isascii() and 0 < len(p) <= 3
                                       for p in parts)

    def one(item):
        addr, slash, mask = item.partition("/")
        if not octets(addr):
            return False
        return not slash or (mask.isdigit() and mask.isascii() and len(mask) <= 3) or octets(mask)
    return all(one(item) for item in word.split(","))


def frobs(dev, addresses):
    """The (in, out) rule pairs of frob_iptable calls, in the original's order;
    an address that is not IPv4 gives (None, reason) instead of a pair."""
    match = ["FORWARD", "-m", "physdev", "--physdev-is-bridged"]
    out_rule = match + ["--physdev-out", dev, "-j", "ACCEPT"]
    words = addresses.split()
    extras = [["-s", a] for a in words] + [["-p", "udp", "--sport", "68", "--dport", "67"]]
    if not words:
        extras = [[]]
    pairs = []
    for extra in extras:
        if extra[:1] == ["-s"] and not ipv4_source(extra[1]):
            pairs.append((None, f"address {extra[1]!r} is not an IPv4 address or network"))
        else:
            pairs.append((match + ["--physdev-in", dev] + extra + ["-j", "ACCEPT"], out_rule))
    return pairs


class Budget:
    """The seconds the step has left, shared by all its iptables calls."""

    def __init__(self, seconds):
        import time
        self.clock = time.monotonic
        self.deadline = self.clock() + seconds
        self.seconds = seconds

    def left(self):
        """The step's seconds left, or the event's (deadline.py) when fewer."""
        from .. import deadline
        return deadline.seconds(self.deadline - self.clock())[0]

    def why(self):
        from .. import deadline
        budget = deadline.current()
        if budget is not None and budget.left() < self.deadline - self.clock():
            return budget.why()
        return f"the step's {self.seconds} s are used up"


def iptables(runtime, args, budget):
    """Run iptables -w SECONDS ARGS within the step's budget; (ok, message)."""
    import math
    import subprocess   # only firewall events pay for it
    from .. import deadline
    left = budget.left()
    if left < 1:
        return False, f"iptables {' '.join(args)}: not run, {budget.why()}"
    # -w N: iptables stops waiting for the xtables lock by itself; the
    # subprocess timeout catches anything else
    argv = ["iptables", "-w", str(max(1, math.floor(left) - 1))] + args
    try:
        done = deadline.run(argv, " ".join(argv), left)
    except subprocess.TimeoutExpired:
        return False, f"{' '.join(argv)}: did not finish within the step's {budget.seconds} s"
    except DeadlineError:
        return False, f"{' '.join(argv)}: still running, killed; {deadline.why()}"
    except OSError as e:
        return False, f"{' '.join(argv)}: {e}"
    if done.returncode != 0:
        return False, f"{' '.join(argv)}: {done.stderr.strip() or 'exit status %d' % done.returncode}"
    runtime.log("debug", " ".join(argv))
    return True, ""


class _held:
    """Hold a hotplug lock for a block; one the rule already holds stays held."""

    def __init__(self, runtime, name):
        self.runtime, self.name = runtime, name

    def __enter__(self):
        self.taken = self.name not in self.runtime.locks
        self.runtime.lock(self.name)

    def __exit__(self, *exc):
        if self.taken:
            self.runtime.unlock(self.name)
        return False


class Vif(Step):
    type_name = "firewall.vif"
    summary = ("the original vif scripts' iptables FORWARD physdev rules for a vif "
               "(handle_iptable): insert on online/add, delete on offline/remove")
    properties = {
        "action": {"type": "string",
                   "description": "online/add insert the rules, offline/remove delete them "
                                  "(usually \"{action}\")"},
        "dev": dict(IFNAME, description="the vif (or tap) on the bridge"),
        "addresses": {"type": "string",
                      "description": "the guest's addresses (xenstore `ip`), space-separated; "
                                     "empty: accept anything from the vif"},
        "strict": {"type": "boolean",
                   "description": "fail the event when a rule cannot be inserted (default "
                                  "false: log it and go on, as the original does)"},
        "lock": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$",
                 "description": "hotplug lock held meanwhile (default iptables, as locking.sh)"},
        "timeout": {"type": "integer", "minimum": 2,
                    "description": "seconds all the step's iptables commands may take together "
                                   "(default 10; the original waits as long as the xtables "
                                   "lock is held)"},
    }
    required = ("action", "dev")

    def undo_record(self, runtime):
        checked_name(self.args["dev"])
        if self.args["action"] not in INSERTING + REMOVING:
            raise StepError(f"firewall.vif: action {self.args['action']!r} is none of "
                            + ", ".join(INSERTING + REMOVING))
        # filled in by notes: each iptables call about to run (pending), and
        # those that took effect (done)
        return {"done": [], "pending": None}

    def apply(self, runtime):
        self.done = []      # [verb, rule] that took effect, for revert
        dev = checked_name(self.args["dev"])
        verb = "-I" if self.args["action"] in INSERTING else "-D"
        self.budget = Budget(int(self.args.get("timeout", DEFAULT_TIMEOUT)))
        ok, why = iptables(runtime, ["-L", "-n"], self.budget)
        if not ok:
            # "If iptables is not working, then there's no need to do anything with it"
            runtime.log("debug", f"iptables does not work here, no firewall rules: {why}")
            return
        with _held(runtime, self.args.get("lock") or "iptables"):
            self._frob_all(runtime, verb, frobs(dev, self.args.get("addresses", "")))

    def _frob_all(self, runtime, verb, pairs):
        for in_rule, out_rule in pairs:
            if in_rule is None:         # refused before iptables, as iptables refuses it
                ok, why = False, out_rule
            # like `iptables_w -I ...in... && iptables_w -I ...out...`
            for rule in (in_rule, out_rule) if in_rule else ():
                self._note(runtime, [verb, rule])
                ok, why = iptables(runtime, [verb] + rule, self.budget)
                if not ok:
                    break
                self.done.append([verb, rule])
                runtime.test_point("firewall.vif.rule")
            if ok or verb == "-D":
                if not ok:
                    runtime.log("debug", f"{why} (rule already gone?)")
                continue
            runtime.log("err", f"{FAILED} ({why})")
            if self.args.get("strict"):
                # the engine undoes the failed step from its record
                raise StepError(f"{FAILED} ({why})")
        self._note(runtime, None)

    def _note(self, runtime, pending):
        if self.record is not None:
            runtime.note(self, done=list(self.done), pending=pending)

    @classmethod
    def undo(cls, runtime, args, record):
        done = list(record["done"])
        budget = Budget(int(args.get("timeout", DEFAULT_TIMEOUT)))   # a fresh one
        with _held(runtime, args.get("lock") or "iptables"):
            pending = record["pending"]
            # killed around an insert: undone if it is there; a delete that may
            # have happened stays done (the teardown direction)
            if pending and pending[0] == "-I" and iptables(runtime, ["-C"] + pending[1], budget)[0]:
                done.append(pending)
            # Deleted rules go back in the order they were deleted: each -I puts
            # its rule first, which rebuilds the order the original's online made.
            for verb, rule in done if done and done[0][0] == "-D" else reversed(done):
                ok, why = iptables(runtime, ["-D" if verb == "-I" else "-I"] + rule, budget)
                if not ok:
                    runtime.log("err", f"cannot undo a firewall rule: {why}")

    @classmethod
    def describe_undo(cls, args, record):
        return (f"{args['dev']}: undo {len(record['done'])} iptables change(s)"
                + (" and the one in flight" if record["pending"] else ""))

    def describe(self):
        verb = "insert" if self.args["action"] in INSERTING else "delete"
        addrs = self.args.get("addresses") or "any address"
        lock = self.args.get("lock") or "iptables"
        return f"{verb} FORWARD physdev rules for {self.args['dev']} ({addrs}, DHCP) under lock {lock}"
