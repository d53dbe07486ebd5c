"""tools/demo_session.py: a new admin breaks three things (no bridge, a hook
without its x bit, a typo in a local rule copy), follows `xenrules doctor`'s
fixes as printed, and ends with a working event and a clean doctor."""
import re
import subprocess

import pytest

from conftest import REPO_ROOT, _netns_list

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def session():
    done = subprocess.run(["/usr/bin/python3", "tools/demo_session.py", "--tag", "w11ds"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    return done


def test_the_session_ends_with_a_connected_vif_the_hook_run_and_no_problem(session):
    assert session.returncode == 0, session.stdout + session.stderr
    events = session.stdout.split("\n$ XENBUS_PATH=")[1:]
    assert len(events) >= 2
    assert "exit status 1; hotplug-status = 'error'" in events[0]
    assert "exit status 0; hotplug-status = 'connected'" in events[-1]
    last_doctor = session.stdout.rsplit("$ xenrules doctor", 1)[1]
    assert "PROBLEM" not in last_doctor and "no problem found" in last_doctor
    assert session.stdout.rstrip().endswith("the hook ran: yes")


def test_doctor_named_each_broken_thing_and_each_fix_was_applied(session):
    out = session.stdout
    assert re.search(r"PROBLEM  bridge xenbr0 .* does not exist", out)
    assert re.search(r"PROBLEM  hook \S+/10-log-port.hook is not executable", out)
    assert re.search(r"\| \S+/etc-xen-rules.d/50-vif-bridge.yaml:\d+:\d+: unknown step type 'link.upp'", out)
    assert "$ ip link add xenbr0 type bridge" in out
    assert re.search(r"\$ chmod 755 \S+/10-log-port.hook", out)
    assert re.search(r"\$ sed -i '\d+s/link\\.upp:/link.up:/' \S+/50-vif-bridge.yaml", out)


def test_the_session_leaves_no_namespace_behind(session):
    netns = re.search(r"network namespace (\S+),", session.stdout).group(1)
    assert "w11ds" in netns and netns not in _netns_list()
