"""The engine end to end in a simulated dom0: revert on failure, busy, no-op
actions, fallback to the original script, and the per-event log line.

Events go through `python3 -m xenrules.hotplug` inside the dom0's network
namespace with the libxl environment of vif1.0; rule files, state, locks,
log and originals all live under tmp_path.
"""

import os
import re
import stat
import textwrap

import pytest

from xenrules.errors import XenrulesError

from events import BACK, SCRIPT, why
from xenrules.sandbox.dom0 import PYTHON
from xenrules.xenstore import XenStore

pytestmark = pytest.mark.netns

HOTPLUG_KEYS = (BACK + "/hotplug-status", BACK + "/hotplug-error")


def without_hotplug_keys(state):
    state = dict(state)
    state["xenstore"] = {k: v for k, v in state["xenstore"].items() if k not in HOTPLUG_KEYS}
    return state


def diff(a, b):
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
                for k in sorted(set(a[key]) | set(b[key])):
                    if a[key].get(k) != b[key].get(k):
                        out.append("%s[%s]: before=%r after=%r" % (key, k, a[key].get(k), b[key].get(k)))
            else:
                out.append("%s: before=%r after=%r" % (key, a.get(key), b.get(key)))
    return "\n".join(out)


# -- revert on failure ------------------------------------------------------------------

APPLIED = """
    - link.rename: {dev: "{vif}", to: xrweb0}
    - link.prepare_port: {dev: xrweb0}
    - link.mtu: {dev: xrweb0, mtu: 1400}
    - bridge.add_port: {bridge: xenbr0, dev: xrweb0}
    - link.up: {dev: xrweb0}
    - xenstore.write: {path: "{backend}/xr-old", value: new}
    - xenstore.write: {path: "{backend}/xr-new", value: created}
    - xenstore.remove: {path: "{backend}/xr-gone"}
    - lock.acquire: {name: xr-revert}
"""
APPLIED_TYPES = ["link.rename", "link.prepare_port", "link.mtu", "bridge.add_port", "link.up",
                 "xenstore.write", "xenstore.write", "xenstore.remove", "lock.acquire"]


def _busy_dom0(dom0, xs_server):
    """vif1.0 as a previous event might have left it: up, with addresses, on
    another bridge; plus xenstore nodes the rule overwrites and removes."""
    dom0.add_bridge("xenbr1")
    dom0.ip("link", "set", "dev", "vif1.0", "master", "xenbr1")
    dom0.ip("link", "set", "dev", "vif1.0", "up")
    dom0.ip("address", "add", "192.0.2.1/24", "dev", "vif1.0")
    dom0.ip("address", "add", "2001:db8::1/64", "dev", "vif1.0")
    xs_server.load({BACK + "/xr-old": "old", BACK + "/xr-gone": "keep"})


@pytest.mark.parametrize("failing, message", [
    ('hotplug.error: {message: "stop at {vif}"}', "stop at vif1.0"),
    ("bridge.require: {name: xenbr9}", "Could not find bridge device xenbr9"),
], ids=["hotplug.error", "bridge.require-missing"])
def test_failing_step_reverts_every_earlier_step_in_reverse_order(ev, dom0, xs_server, failing, message):
    _busy_dom0(dom0, xs_server)
    before = dom0.state()
    vif = before["links"]["vif1.0"]
    assert vif["master"] == "xenbr1" and vif["up"] and vif["mtu"] == 1500
    assert vif["addresses"] == ["192.0.2.1/24", "2001:db8::1/64"]
    ev.steps(textwrap.dedent(APPLIED) + "- " + failing + "\n- hotplug.success:\n")
    proc = ev.run(XENRULES_LOG_LEVEL="debug")
    assert proc.returncode == 1, why(proc, ev)
    after = dom0.state()
    # hotplug-status and hotplug-error are the only change
    assert after["xenstore"][BACK + "/hotplug-status"] == "error"
    assert after["xenstore"][BACK + "/hotplug-error"] == message
    assert without_hotplug_keys(after) == without_hotplug_keys(before), \
        diff(without_hotplug_keys(before), without_hotplug_keys(after)) + "\n" + ev.log()
    assert after["links"]["vif1.0"]["mac"] == vif["mac"]
    assert after["xenstore"][BACK + "/xr-old"] == "old"
    assert BACK + "/xr-new" not in after["xenstore"]
    assert after["xenstore"][BACK + "/xr-gone"] == "keep"
    assert not os.path.exists(ev.lock_dir / "xr-revert")
    # reverted in reverse order, each one
    reverted = re.findall(r": reverted (\S+)$", ev.log(), re.M)
    assert reverted == APPLIED_TYPES[::-1], ev.log()
    # the failure names the rule file and the failing step's line, and the step
    step_type = failing.split(":")[0]
    line = ev.line_of(step_type + ":")
    where = "%s:%d: rule xr-test-rule: %s failed: %s" % (ev.rule_file, line, step_type, message)
    assert where in ev.log()


def test_failure_removes_a_bridge_it_created_but_not_an_existing_one(ev, dom0, xs_server):
    dom0.ip("link", "set", "dev", "xenbr0", "type", "bridge", "forward_delay", "700")
    before = dom0.state()
    ev.steps("""
        - bridge.create: {name: xrbr5}
        - bridge.create: {name: xenbr0}
        - bridge.add_port: {bridge: xrbr5, dev: "{vif}"}
        - hotplug.error: {message: stop}
    """)
    proc = ev.run()
    assert proc.returncode == 1, why(proc, ev)
    after = dom0.state()
    assert "xrbr5" not in after["links"]
    assert after["bridges"]["xenbr0"]["forward_delay"] == before["bridges"]["xenbr0"]["forward_delay"]
    assert without_hotplug_keys(after) == without_hotplug_keys(before), \
        diff(without_hotplug_keys(before), without_hotplug_keys(after))


def test_failure_reverts_a_release_from_the_bridge(ev, dom0, xs_server):
    dom0.ip("link", "set", "dev", "vif1.0", "master", "xenbr0")
    dom0.ip("link", "set", "dev", "vif1.0", "up")
    before = dom0.state()
    ev.steps("""
        - link.down: {dev: "{vif}"}
        - bridge.del_port: {bridge: xenbr0, dev: "{vif}"}
        - hotplug.error: {message: stop}
    """, action="offline")
    proc = ev.run(["offline", "type_if=vif"])
    assert proc.returncode == 1, why(proc, ev)
    after = dom0.state()
    assert after["links"]["vif1.0"]["master"] == "xenbr0"
    assert after["links"]["vif1.0"]["up"] is True
    assert without_hotplug_keys(after) == without_hotplug_keys(before), \
        diff(without_hotplug_keys(before), without_hotplug_keys(after))


def test_failure_reverts_a_write_under_a_new_directory_completely(ev, dom0, xs_server):
    """xenstore.write creates missing parents; a reverted write should not
    leave them behind."""
    before = xs_server.snapshot()
    ev.steps("""
        - xenstore.write: {path: "{backend}/xr-dir/sub/key", value: v}
        - hotplug.error: {message: stop}
    """)
    proc = ev.run()
    assert proc.returncode == 1, why(proc, ev)
    after = xs_server.snapshot()
    for key in HOTPLUG_KEYS:
        after.pop(key, None)
        before.pop(key, None)
    assert after == before, sorted(set(after) ^ set(before))


def test_steps_after_the_failure_do_not_run(ev, dom0, xs_server):
    before = dom0.state(xenstore=False)
    ev.steps("""
        - hotplug.error: {message: stop}
        - link.up: {dev: "{vif}"}
        - xenstore.write: {path: "{backend}/xr-after", value: x}
        - hotplug.success:
    """)
    proc = ev.run()
    assert proc.returncode == 1, why(proc, ev)
    snap = xs_server.snapshot()
    assert BACK + "/xr-after" not in snap
    assert snap[BACK + "/hotplug-status"] == "error"
    assert dom0.state(xenstore=False) == before


# -- busy ----------------------------------------------------------------------------------

def test_busy_outcome_reverts_and_reports_busy(ev, dom0, xs_server):
    before = dom0.state()
    ev.steps("""
        - link.up: {dev: "{vif}"}
        - xenstore.write: {path: "{backend}/xr-new", value: x}
        - hotplug.busy: {message: "{vif} is in use"}
    """)
    proc = ev.run()
    assert proc.returncode == 1, why(proc, ev)
    after = dom0.state()
    assert after["xenstore"][BACK + "/hotplug-status"] == "busy"
    assert after["xenstore"][BACK + "/hotplug-error"] == "vif1.0 is in use"
    assert without_hotplug_keys(after) == without_hotplug_keys(before), \
        diff(without_hotplug_keys(before), without_hotplug_keys(after))


# -- empty actions ----------------------------------------------------------------------------

@pytest.mark.parametrize("empty", ["[]", ""], ids=["empty-list", "null"])
def test_empty_action_exits_0_and_changes_nothing(ev, dom0, xs_server, empty):
    before = dom0.state()
    ev.rules("""
        - rule: xr-noop
          match: {script: %s}
          actions:
            online: %s
            offline:
              - link.up: {dev: "{vif}"}
    """ % (SCRIPT, empty))
    # an original that would leave a trace, to prove no fallback happened
    marker = ev.tmp / "original-ran"
    write_original(ev.originals / SCRIPT, marker)
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    assert dom0.state() == before
    assert not marker.exists()
    assert "rule xr-noop" in ev.log() and "0 steps done" in ev.log()


# -- fallback to the original script ------------------------------------------------------

RECORDED_ENV = ("XENBUS_PATH", "XENBUS_TYPE", "XENBUS_BASE_PATH", "vif", "netdev", "script",
                "XENSTORED_PATH", "XR_MARK", "XENRULES_FALLBACK_FROM")
ORIGINAL = "\n".join([
    "#!/bin/sh",
    "# a stand-in for the original hotplug script: records how it was called",
    "out=%(out)s",
    "{",
    '  echo "argc=$#"',
    "  for a in \"$0\" \"$@\"; do printf 'arg=%%s\\n' \"$a\"; done",
] + ["  printf '%s=%%%%s\\n' \"${%s-<unset>}\"" % (v, v) for v in RECORDED_ENV] + [
    '} > "$out"',
    "exit %(code)d",
    ""])


def write_original(path, out, code=0):
    path.write_text(ORIGINAL % {"out": out, "code": code})
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def recorded(out):
    lines = out.read_text().splitlines()
    args = [l[4:] for l in lines if l.startswith("arg=")]
    env = dict(l.split("=", 1) for l in lines if not l.startswith(("arg=", "argc=")))
    return args, env


WORDS = ["online", "type_if=vif", "bridge=xenbr7", "two words", "x;$(touch /tmp/xr-pwned)"]
MARK = "a b;'\"$(id)"


def _assert_original_ran(ev, proc, out, original, code):
    assert proc.returncode == code, why(proc, ev)
    args, env = recorded(out)
    assert args == [str(original)] + WORDS
    expected = ev.env()
    for name in ("XENBUS_PATH", "XENBUS_TYPE", "XENBUS_BASE_PATH", "vif", "netdev", "script",
                 "XENSTORED_PATH"):
        assert env[name] == expected[name], name
    assert env["XR_MARK"] == MARK
    assert env["XENRULES_FALLBACK_FROM"] == str(original)   # marked: it must not lead back
    assert not os.path.exists("/tmp/xr-pwned")


@pytest.mark.parametrize("rules", [
    None,
    """
    - rule: xr-other
      match: {script: xr-other}
      actions:
        online: [{hotplug.success: }]
    """,
    """
    - rule: xr-offline-only
      match: {script: xr-test}
      actions:
        offline: [{hotplug.success: }]
    """,
], ids=["no-rule-files", "other-script", "no-such-action"])
def test_no_matching_rule_runs_the_original_with_the_same_argv_and_env(ev, xs_server, rules):
    if rules:
        ev.rules(rules)
    out = ev.tmp / "record"
    original = write_original(ev.originals / SCRIPT, out, code=7)
    before = xs_server.snapshot()
    proc = ev.run(WORDS, XR_MARK=MARK)
    _assert_original_ran(ev, proc, out, original, 7)
    assert xs_server.snapshot() == before          # xenrules itself wrote nothing
    assert "running the original %s" % original in ev.log()


def test_original_exit_status_0_is_returned(ev):
    out = ev.tmp / "record"
    write_original(ev.originals / SCRIPT, out, code=0)
    proc = ev.run(WORDS, XR_MARK=MARK)
    _assert_original_ran(ev, proc, out, ev.originals / SCRIPT, 0)


@pytest.mark.parametrize("broken", [
    "- rule: xr-broken\n  match: {script: xr-test}\n  actions:\n    online: [{hotplug.succes: }]\n",
    "- rule: xr-broken\n  match: {script: xr-test\n",
], ids=["unknown-step", "yaml-syntax"])
def test_rule_files_that_do_not_validate_fall_back_to_the_original(ev, dom0, xs_server, broken):
    ev.rules(broken)
    out = ev.tmp / "record"
    original = write_original(ev.originals / SCRIPT, out, code=3)
    before = dom0.state()
    proc = ev.run(WORDS, XR_MARK=MARK)
    _assert_original_ran(ev, proc, out, original, 3)
    assert dom0.state() == before
    log = ev.log()
    assert "do not validate" in log and str(ev.rule_file) in log
    assert "running the original" in log


def test_no_original_to_fall_back_to_is_a_clear_error(ev, dom0):
    ev.rules("""
        - rule: xr-other
          match: {script: xr-other}
          actions:
            online: []
    """)
    before = dom0.state()
    proc = ev.run()
    assert proc.returncode == 1, why(proc, ev)
    assert without_hotplug_keys(dom0.state()) == without_hotplug_keys(before)
    expected = "no original script %s" % (ev.originals / SCRIPT)
    assert expected in ev.log()
    assert expected in dom0.xs_read(BACK + "/hotplug-error")   # libxl shows why, not a timeout
    assert "no rule for %s online type_if=vif" % SCRIPT in ev.log()


def test_a_non_executable_original_is_not_run(ev):
    out = ev.tmp / "record"
    original = write_original(ev.originals / SCRIPT, out)
    original.chmod(0o644)
    proc = ev.run()
    assert proc.returncode == 1, why(proc, ev)
    assert not out.exists()
    assert "no original script" in ev.log()


def test_a_launcher_is_never_run_as_the_original(ev):
    """A script carrying the launcher mark would call xenrules again: a loop."""
    out = ev.tmp / "record"
    original = write_original(ev.originals / SCRIPT, out)
    original.write_text(original.read_text() + "# xenrules-launcher\n")
    proc = ev.run()
    assert proc.returncode == 1, why(proc, ev)
    assert not out.exists()


# -- logging ----------------------------------------------------------------------------------

def summary_lines(log):
    return [l for l in log.splitlines() if "steps done" in l]


def test_one_summary_line_per_event(ev, dom0):
    rule_file = ev.rules("""
        - rule: xr-log
          match: {script: %s}
          actions:
            online:
              - link.up: {dev: "{vif}"}
              - link.mtu: {dev: "{vif}", mtu: 1400, when: {unset: vif}}
            offline:
              - link.down: {dev: "{vif}"}
              - hotplug.error: {message: "xr-offline-fails"}
            add: []
    """ % SCRIPT)
    assert ev.run().returncode == 0
    log = ev.log()
    assert len(log.splitlines()) == 1, log        # a successful event: that line only
    (ok,) = summary_lines(log)
    assert re.search(r" %s\[\d+\] info: %s online type_if=vif: rule xr-log \(%s:1\): "
                     r"1 steps done, 1 skipped, ok in [\d.]+ ms; device backend/vif/1/0$" % (SCRIPT, SCRIPT, re.escape(str(rule_file))),
                     ok), ok
    assert ev.run(["offline", "type_if=vif"]).returncode == 1
    assert ev.run(["add"]).returncode == 0
    lines = summary_lines(ev.log())
    assert len(lines) == 3, ev.log()
    assert " err: %s offline type_if=vif: rule xr-log" % SCRIPT in lines[1]
    assert "1 steps done, 0 skipped, FAILED (xr-offline-fails)" in lines[1]
    assert "%s add: rule xr-log" % SCRIPT in lines[2] and "0 steps done" in lines[2]


# -- what must never crash the event path -----------------------------------------------------

def test_a_rule_directory_that_is_a_file_falls_back_to_the_original(ev):
    out = ev.tmp / "record"
    original = write_original(ev.originals / SCRIPT, out, code=0)
    not_a_dir = ev.tmp / "not-a-dir"
    not_a_dir.write_text("")
    proc = ev.run(WORDS, XR_MARK=MARK, XENRULES_RULES_PATH=str(not_a_dir))
    _assert_original_ran(ev, proc, out, original, 0)
    assert "cannot read the rule directory" in ev.log()


def test_a_recursive_yaml_alias_falls_back_to_the_original(ev):
    ev.rules("- &a [*a]\n")
    out = ev.tmp / "record"
    original = write_original(ev.originals / SCRIPT, out, code=0)
    proc = ev.run(WORDS, XR_MARK=MARK)
    _assert_original_ran(ev, proc, out, original, 0)
    assert "recursive alias" in ev.log()


def test_an_original_that_cannot_be_executed_is_a_clear_error(ev):
    original = ev.originals / SCRIPT
    original.write_text("echo no shebang\n")
    original.chmod(0o755)
    proc = ev.run()
    assert proc.returncode == 1, why(proc, ev)
    assert "Traceback" not in proc.stderr
    assert "cannot be run: Exec format error" in ev.log()


def test_an_argument_that_is_not_utf8_is_logged_and_stored_as_bytes(ev, xs_server):
    ev.steps("""
        - xenstore.write: {path: "{backend}/seen", value: "{label}"}
    """)
    ev.rules(ev.rule_file.read_text().replace("  actions:", "  vars: {label: {param: label}}\n  actions:"))
    proc = ev.run(["online", "label=br\udcff"])
    assert proc.returncode == 0, why(proc, ev)
    assert "label=br\\udcff" in ev.log()
    with XenStore(xs_server.socket_path) as store:
        assert store._request("READ", BACK + "/seen") == b"br\xff"   # the raw byte reached xenstore
        with pytest.raises(XenrulesError, match="not UTF-8"):   # and a read refuses it
            store.read(BACK + "/seen")


def test_a_wrapper_that_leads_back_into_xenrules_is_refused_not_looped(ev, xs_server):
    """A new user's wrapper, as the README once showed it, standing where the
    original should be: with no rule for the event, falling back to it would
    run xenrules again, and again. The second fall-back is refused instead."""
    wrapper = ev.originals / SCRIPT
    wrapper.write_text('#!/bin/sh\nexec %s -m xenrules hotplug %s "$@"\n' % (PYTHON, SCRIPT))
    wrapper.chmod(0o755)
    proc = ev.dom0.run([PYTHON, "-m", "xenrules.hotplug", SCRIPT, "online", "type_if=vif"],
                       ev.env(), timeout=20)
    assert not proc.timed_out, "the fallback looped until killed"
    assert proc.returncode == 1, why(proc, ev)
    assert ev.log().count("running the original") == 1, ev.log()
    assert "refusing to loop" in ev.log()
    error = ev.dom0.xs_read(BACK + "/hotplug-error")
    assert "led back into xenrules" in error and str(wrapper) in error
    assert ev.dom0.xs_read(BACK + "/hotplug-status") == "error"

