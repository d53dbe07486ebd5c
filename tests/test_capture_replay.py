"""Capture a real event in a simulated dom0, then replay the capture in a new
sandbox: the same end state with the same rules, a diff with other rules,
and the original script side by side (--compare)."""

import glob
import json
import os
import subprocess

import pytest

from xenrules.sandbox.dom0 import PYTHON, REPO_ROOT

pytestmark = pytest.mark.netns

RULES = os.path.join(REPO_ROOT, "rules.d")


def captured_online(dom0, tmp_path, events=1, **extra):
    env = dom0.hotplug_env(1, 0)
    env.update(PYTHONPATH=REPO_ROOT, XENRULES_RULES_PATH=RULES,
               XENRULES_STATE_DIR=str(tmp_path / "state"), XENRULES_LOCK_DIR=str(tmp_path / "locks"),
               XENRULES_JOURNAL_DIR=str(tmp_path / "journal"),
               XENRULES_LOG_FILE=str(tmp_path / "log"), XENRULES_CAPTURE=str(tmp_path / "cap"),
               XENRULES_VIF_HOOKS_DIR=str(tmp_path / "hooks"), XENRULES_CONF=str(tmp_path / "none.conf"))
    env.update(extra)
    for _ in range(events):
        proc = dom0.run([PYTHON, "-m", "xenrules.hotplug", "vif-bridge", "online", "type_if=vif"], env)
        assert proc.returncode == 0, proc.stderr
    return sorted(glob.glob(str(tmp_path / "cap" / "*.json")))


def replay(path, *options, rules=RULES):
    return subprocess.run([PYTHON, "-m", "xenrules", "--rules-path", rules, "replay", path] + list(options),
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=REPO_ROOT))


def test_a_capture_is_root_only_and_holds_the_event_its_tree_and_its_trace(dom0, tmp_path):
    dom0.add_vif(1, 0)
    [path] = captured_online(dom0, tmp_path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    data = json.load(open(path))
    assert data["argv"][-2:] == ["online", "type_if=vif"]
    assert data["rule"]["name"] == "vif-bridge"
    assert data["outcome"]["exit"] == 0
    assert any(s["type"] == "bridge.add_port" and s["status"] == "done" for s in data["trace"])


def test_replay_of_a_capture_with_the_same_rules_ends_in_the_captured_state(dom0, tmp_path):
    dom0.add_vif(1, 0)
    [path] = captured_online(dom0, tmp_path)
    proc = replay(path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "xenrules: end state is the captured one" in proc.stdout


def test_replay_with_other_rules_shows_how_the_end_state_differs(dom0, tmp_path):
    dom0.add_vif(1, 0)
    [path] = captured_online(dom0, tmp_path)
    other = tmp_path / "other-rules"
    other.mkdir()
    text = open(os.path.join(RULES, "50-vif-bridge.yaml")).read()
    assert '      - bridge.add_port: {bridge: "{bridge}", dev: "{dev}"}\n' in text
    (other / "50-vif-bridge.yaml").write_text(
        text.replace('      - bridge.add_port: {bridge: "{bridge}", dev: "{dev}"}\n', ""))
    proc = replay(path, rules=str(other))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "xenrules: end state differs from the capture" in proc.stdout
    assert "vif1.0" in proc.stdout.split("end state differs", 1)[1]


def test_replay_compare_runs_the_original_beside_the_rules(dom0, tmp_path, originals):
    dom0.add_vif(1, 0)
    [path] = captured_online(dom0, tmp_path)
    proc = replay(path, "--compare")
    assert "xenrules: end state is the captured one" in proc.stdout, proc.stdout + proc.stderr
    assert "original: exit 0" in proc.stdout, proc.stdout + proc.stderr


def test_captures_are_rotated_to_the_count_limit(dom0, tmp_path):
    dom0.add_vif(1, 0)
    files = captured_online(dom0, tmp_path, events=3, XENRULES_CAPTURE_KEEP="2")
    assert len(files) == 2


def test_replay_of_a_file_that_is_no_capture_is_a_clear_error(tmp_path):
    bogus = tmp_path / "bogus.json"
    bogus.write_text("{}")
    proc = replay(str(bogus))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "is not a xenrules capture" in proc.stdout + proc.stderr


def test_replay_rebuilds_a_captured_uplink_without_the_dummy_module(dom0, tmp_path):
    # dom0 kernels (this one too) may lack dummy: an uplink must come back as a veth end
    dom0.add_vif(1, 0)
    [path] = captured_online(dom0, tmp_path)
    data = json.load(open(path))
    uplink = {"kind": "dummy", "mtu": 1500, "up": True, "mac": "02:00:00:00:aa:07",
              "addresses": ["198.51.100.7/24"]}
    for side in ("net_before", "net_after"):
        data[side]["links"]["xrupl0"] = dict(uplink)
    # the kernel's own route of that address, as a real capture shows it afterwards
    data["net_after"]["routes"].append("dst=198.51.100.0/24 dev=xrupl0 prefsrc=198.51.100.7")
    json.dump(data, open(path, "w"))
    proc = replay(path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "xenrules: end state is the captured one" in proc.stdout


def test_replay_of_a_capture_of_another_format_version_says_so(tmp_path):
    future = tmp_path / "future.json"
    future.write_text(json.dumps({"format": "xenrules-capture/9", "argv": ["vif-bridge", "online"]}))
    proc = replay(str(future))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "format 'xenrules-capture/9'" in proc.stdout + proc.stderr
