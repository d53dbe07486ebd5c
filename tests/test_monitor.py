"""`xenrules monitor` over the log that real events wrote in a simulated dom0:
one line per event start (debug level) and end, failures and fallbacks too."""

import pytest

from events import why
from xenrules.sandbox.dom0 import PYTHON, REPO_ROOT

pytestmark = pytest.mark.netns


def monitor(ev, *options):
    proc = ev.dom0.run([PYTHON, "-m", "xenrules", "monitor", "--from-start", "--once"] + list(options),
                       ev.env())
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_monitor_shows_each_event_start_and_end_with_device_rule_and_verdict(ev):
    ev.steps("""
        - xenstore.write: {path: "{backend}/seen", value: "yes"}
    """)
    ok = ev.run(XENRULES_LOG_LEVEL="debug")
    assert ok.returncode == 0, why(ok, ev)
    ev.steps("""
        - xenstore.read: {path: "{backend}/xr-no-such-key"}
    """, rule="xr-failing")
    failed = ev.run()
    assert failed.returncode == 1, why(failed, ev)
    lines = monitor(ev)
    starts = [l for l in lines if " START " in l]
    ends = [l for l in lines if " END " in l]
    assert len(starts) == 1 and "xr-test online type_if=vif" in starts[0] and "vif dom 1 dev 0" in starts[0]
    assert len(ends) == 2, lines
    assert "rule xr-test-rule" in ends[0] and ends[0].rstrip().endswith("ms") and "  ok  " in ends[0]
    assert "rule xr-failing" in ends[1] and "FAILED (" in ends[1] and "vif dom 1 dev 0" in ends[1]
    # --debug adds the step trace the debug-level event logged
    assert len(monitor(ev, "--debug")) > len(lines)


def test_monitor_shows_a_fallback_to_the_original(ev):
    original = ev.originals / "xr-test"
    original.write_text("#!/bin/sh\nexit 0\n")
    original.chmod(0o755)
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    lines = monitor(ev)
    assert any(" END   original " in l and str(original) in l and "no rule for" in l for l in lines), lines


def test_monitor_of_a_log_that_does_not_exist_says_so(ev):
    proc = ev.dom0.run([PYTHON, "-m", "xenrules", "monitor", "--once"],
                       ev.env(XENRULES_LOG_FILE=str(ev.tmp / "none.log")))
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 1
    assert "cannot read the hotplug log %s" % (ev.tmp / "none.log") in proc.stdout
