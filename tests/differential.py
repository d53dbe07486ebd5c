"""Differential testing: the same events through the original script and xenrules.

A Scenario says how to build a dom0 (bridges, vifs, taps) and which hotplug
events to send. compare_scenario() builds two identical fresh sandboxes, runs
the events through Debian's original script in one and through xenrules in
the other, and returns both end states, normalized so that only real
differences remain. Tests then assert equality, or encode a documented,
intended difference explicitly.
"""

import dataclasses
from typing import Callable, Sequence, Tuple

# Placeholders for values that legitimately differ between two sandboxes.
NETNS = "<netns>"
XS_SOCKET = "<xenstored-socket>"
STATE_DIR = "<state-dir>"


@dataclasses.dataclass
class Event:
    """One hotplug script invocation, as libxl makes it."""
    args: Sequence[str]                  # e.g. ("online", "type_if=vif")
    domid: int = 1
    devid: int = 0
    script: str = "vif-bridge"
    type_if: str = "vif"
    env: dict = dataclasses.field(default_factory=dict)   # added on top of libxl's

    def environment(self, dom0):
        env = dom0.hotplug_env(self.domid, self.devid, type_if=self.type_if,
                               script=self.script)
        env.update(self.env)
        return env


@dataclasses.dataclass
class Scenario:
    name: str
    events: Sequence[Event]
    setup: Callable = lambda dom0: dom0.add_vif(1, 0)    # builds vifs/taps/bridges
    bridges: Tuple[str, ...] = ("xenbr0",)               # made before setup()


# Common events
def online(domid=1, devid=0, **kw):
    return Event(("online", "type_if=vif"), domid, devid, **kw)


def offline(domid=1, devid=0, **kw):
    return Event(("offline", "type_if=vif"), domid, devid, **kw)


def tap_add(domid=1, devid=0, **kw):
    return Event(("add", "type_if=tap"), domid, devid, type_if="tap", **kw)


def tap_remove(domid=1, devid=0, **kw):
    return Event(("remove", "type_if=tap"), domid, devid, type_if="tap", **kw)


def _replace_all(obj, subs):
    if isinstance(obj, str):
        for old, new in subs:
            if old:
                obj = obj.replace(old, new)
        return obj
    if isinstance(obj, dict):
        return {_replace_all(k, subs): _replace_all(v, subs) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_replace_all(v, subs) for v in obj]
    return obj


def normalize(state, dom0):
    """Replace the sandbox's own names (netns, socket, state dir) by placeholders."""
    return _replace_all(state, [(dom0.xenstore_socket, XS_SOCKET),
                                (dom0.state_dir, STATE_DIR),
                                (dom0.netns, NETNS)])


def run_events(dom0, scenario, runner):
    """Run the scenario's events with runner(script, args, env); return the
    per-event outcomes (exit code, timed out) and the raw results."""
    outcomes, results = [], []
    for ev in scenario.events:
        proc = runner(ev.script, list(ev.args), ev.environment(dom0))
        results.append(proc)
        outcomes.append({"event": " ".join([ev.script] + list(ev.args)),
                         "exit": proc.returncode, "timed_out": proc.timed_out})
    return outcomes, results


def build(dom0_factory, scenario):
    dom0 = dom0_factory(bridges=scenario.bridges)
    scenario.setup(dom0)
    return dom0


def compare_scenario(dom0_factory, scenario, rules_path=None):
    """Build two identical fresh sandboxes, run the scenario through the
    original script in one and through xenrules in the other.

    Returns (orig_state, xenrules_state): each is dom0.state() normalized,
    plus "outcomes" (exit code per event), plus "output" (stdout/stderr/log
    per event, for assertion messages; drop it before comparing: see
    comparable()). The sandboxes are destroyed by the factory's owner.
    """
    orig_dom0 = build(dom0_factory, scenario)
    xr_dom0 = build(dom0_factory, scenario)
    # Same starting point, or nothing after it means anything.
    start_o = normalize(orig_dom0.state(), orig_dom0)
    start_x = normalize(xr_dom0.state(), xr_dom0)
    assert start_o == start_x, "the two sandboxes differ before any event"

    orig_out, orig_res = run_events(orig_dom0, scenario, orig_dom0.run_original)

    def xr_runner(script, args, env):
        return xr_dom0.run_xenrules(script, args, env, rules_path=rules_path)

    xr_out, xr_res = run_events(xr_dom0, scenario, xr_runner)

    def pack(dom0, outcomes, results):
        st = normalize(dom0.state(), dom0)
        st["outcomes"] = outcomes
        st["output"] = [{"stdout": r.stdout, "stderr": r.stderr, "log": r.hotplug_log}
                        for r in results]
        return st

    return pack(orig_dom0, orig_out, orig_res), pack(xr_dom0, xr_out, xr_res)


def comparable(state, drop_xenstore=(), mask_xenstore=()):
    """The state without diagnostic output; xenstore paths in drop_xenstore
    (exact paths, or prefixes ending in '/') removed, those in mask_xenstore
    replaced by '<present>' (for messages that may legitimately differ)."""
    st = {k: v for k, v in state.items() if k != "output"}
    xs = dict(st.get("xenstore", {}))
    for p in list(xs):
        for d in drop_xenstore:
            if p == d or (d.endswith("/") and (p + "/").startswith(d)):
                del xs[p]
                break
    for p in mask_xenstore:
        if p in xs:
            xs[p] = "<present>"
    st["xenstore"] = xs
    return st


def explain(orig, xr):
    """A short human-readable diff for assertion messages."""
    lines = []
    for key in sorted(set(orig) | set(xr)):
        if key == "output":
            continue
        a, b = orig.get(key), xr.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if a.get(k) != b.get(k):
                    lines.append("%s[%s]: original=%r xenrules=%r" % (key, k, a.get(k), b.get(k)))
        else:
            lines.append("%s: original=%r xenrules=%r" % (key, a, b))
    out = xr.get("output") or []
    for i, o in enumerate(out):
        if o.get("stderr"):
            lines.append("xenrules event %d stderr: %s" % (i, o["stderr"].strip()[-2000:]))
    return "\n".join(lines)


def assert_same(orig, xr, **kw):
    """The two end states are equal once diagnostics (and what kw drops or masks) are set aside."""
    a, b = comparable(orig, **kw), comparable(xr, **kw)
    assert a == b, explain(a, b)


def exits(state):
    """The exit code of every event of a compared run, in order."""
    return [o["exit"] for o in state["outcomes"]]
