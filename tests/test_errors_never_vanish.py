"""The seed's complaint: errors of hotplug scripts vanish (stderr discarded,
syntax errors unreported). Each way an event can fail reaches the log with the
file:line to look at, and hotplug-error carries words a person can act on."""

import os
import re

import pytest

from events import BACK, why
from xenrules.sandbox.dom0 import REPO_ROOT

pytestmark = pytest.mark.netns

SHIPPED = os.path.join(REPO_ROOT, "rules.d")


def write_hook(directory, name, text):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)
    return path


def test_a_broken_rule_file_names_its_line_in_the_log_and_in_hotplug_error(ev, dom0):
    path = ev.rules("""
        - rule: broken
          match: {script: xr-test}
          actions:
            online:
              - bridge.add_prot: {bridge: xenbr0}
        """)
    proc = ev.run()
    assert proc.returncode != 0
    assert re.search(re.escape(str(path)) + r":5:\d+: unknown step type 'bridge.add_prot'", ev.log()), why(proc, ev)
    error = dom0.xs_read(BACK + "/hotplug-error")
    assert f"{path}:5:" in error and "no original script" in error
    assert dom0.xs_read(BACK + "/hotplug-status") == "error"


def test_a_failing_hook_is_named_with_what_it_said_on_stderr(ev, dom0, tmp_path):
    hooks = str(tmp_path / "hooks")
    write_hook(hooks, "10-ok.hook", "true\n")
    hook = write_hook(hooks, "20-vlan.hook", 'echo "vlan 12 is not configured on eth0" >&2\nfalse\n')
    proc = ev.run(script="vif-bridge", XENRULES_RULES_PATH=SHIPPED, XENRULES_VIF_HOOKS_DIR=hooks)
    assert proc.returncode == 1
    expected = f"hook {hook} failed: vlan 12 is not configured on eth0"
    assert dom0.xs_read(BACK + "/hotplug-error") == expected
    # the rule's file:line of the hooks step, and the hook's words, in the log
    assert re.search(r"50-vif-bridge\.yaml:\d+: rule vif-bridge: hooks\.run failed: " + re.escape(expected),
                     ev.log()), why(proc, ev)


def test_a_silent_failing_hook_is_still_named(ev, dom0, tmp_path):
    hooks = str(tmp_path / "hooks")
    hook = write_hook(hooks, "10-silent.hook", "exit 7\n")
    proc = ev.run(script="vif-bridge", XENRULES_RULES_PATH=SHIPPED, XENRULES_VIF_HOOKS_DIR=hooks)
    assert proc.returncode == 1
    assert dom0.xs_read(BACK + "/hotplug-error") == f"hook {hook} failed: exit status 7, nothing on stderr"


def test_a_step_that_raises_logs_its_traceback_and_file_line_at_err(ev, dom0):
    ev.steps("""
        - xenstore.write: {path: "{backend}/xr-raise", value: "1"}
        - hotplug.success:
        """)
    proc = ev.run(XENRULES_TEST_HOOKS="1", XENRULES_TEST_RAISE_AT="apply:0", XENRULES_LOG_LEVEL="info")
    assert proc.returncode == 1
    line = ev.line_of("xr-raise")
    log = ev.log()
    assert f"{ev.rule_file}:{line}: xenstore.write raised:" in log, why(proc, ev)
    assert "Traceback (most recent call last)" in log
    assert "RuntimeError: raised by XENRULES_TEST_RAISE_AT=apply:0" in log
    error = dom0.xs_read(BACK + "/hotplug-error")
    assert error.startswith("internal error in xenstore.write: RuntimeError(")
    assert "the traceback is in the log" in error
    assert dom0.xs_read(BACK + "/hotplug-status") == "error"
