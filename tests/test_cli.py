"""The xenrules command: --help everywhere, list, explain, schema."""
import json
import os
import subprocess

import pytest

from xenrules import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES = os.path.join(REPO, "rules.d")
SUBCOMMANDS = ["hotplug", "check", "list", "explain", "schema", "sandbox"]


@pytest.mark.parametrize("sub", [None] + SUBCOMMANDS)
def test_every_subcommand_has_help(sub):
    argv = ["/usr/bin/python3", "-m", "xenrules"] + ([sub] if sub else []) + ["--help"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout.startswith("usage: xenrules")
    if sub is None:
        for name in SUBCOMMANDS:
            assert name in done.stdout


def test_no_subcommand_is_a_usage_error():
    done = subprocess.run(["/usr/bin/python3", "-m", "xenrules"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and "required" in done.stderr


def test_list_shows_override_and_mask(tmp_path, capsys):
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    etc.mkdir(), lib.mkdir()
    body = "rule: {}\nmatch: {{script: s}}\nactions: {{online: []}}\n"
    (lib / "10-a.yaml").write_text(body.format("vendor-a"))
    (etc / "10-a.yaml").write_text(body.format("admin-a"))
    (lib / "20-b.yaml").write_text(body.format("vendor-b"))
    os.symlink("/dev/null", etc / "20-b.yaml")
    assert cli.main(["--rules-path", f"{etc}:{lib}", "list"]) == 0
    out = capsys.readouterr().out
    assert f"{etc}/10-a.yaml [OVERRIDDEN]\n    overrides {lib}/10-a.yaml\n    1: admin-a" in out
    assert f"{etc}/20-b.yaml [MASKED]\n    overrides {lib}/20-b.yaml\n" in out
    assert "vendor-a" not in out and "vendor-b" not in out


def test_explain_shows_verdicts_steps_with_values_and_changes_nothing(xs_server, capsys, monkeypatch):
    back = "/local/domain/0/backend/vif/7/0"
    xs_server.load({back + "/bridge": "xenbr7", back + "/mtu": "1400",
                    back + "/frontend": "/local/domain/7/device/vif/0", back + "/hotplug-status": ""})
    before = xs_server.snapshot()
    monkeypatch.setenv("XENSTORED_PATH", xs_server.socket_path)
    code = cli.main(["--rules-path", RULES, "explain", "--env", "XENBUS_PATH=backend/vif/7/0",
                     "--env", "vif=vif7.0", "vif-bridge", "online", "type_if=vif"])
    out = capsys.readouterr().out
    assert code == 0
    assert "[MATCH] vif-bridge " in out
    assert "[no   ] vif-bridge-tap " in out and "type_if is 'vif', not 'tap'" in out
    assert "link.rename: skipped: vifname is empty" in out
    assert "bridge.require: would run: require bridge xenbr7" in out
    assert "link.mtu: would run, on_error: ignore: vif7.0: mtu 1400" in out
    assert "write xenstore /local/domain/7/device/vif/0/mtu = '1400'" in out
    assert "mtu = '1400'  (xenstore backend/vif/7/0/mtu)" in out
    assert xs_server.snapshot() == before


def test_explain_says_when_no_rule_applies(capsys, monkeypatch):
    monkeypatch.setenv("XENSTORED_PATH", "/nonexistent/socket")
    # block-iscsi: a script xenrules ships no rule for
    assert cli.main(["--rules-path", RULES, "explain", "block-iscsi", "add"]) == 0
    out = capsys.readouterr().out
    assert "script is 'block-iscsi', not 'vif-bridge'" in out
    assert "no rule: the original block-iscsi script would run" in out


def test_explain_with_unreachable_xenstore_says_so(capsys, monkeypatch):
    monkeypatch.setenv("XENSTORED_PATH", "/nonexistent/socket")
    cli.main(["--rules-path", RULES, "explain", "--env", "XENBUS_PATH=backend/vif/1/0",
              "--env", "vif=vif1.0", "vif-bridge", "online"])
    assert "xenstore was not reachable" in capsys.readouterr().out


def test_explain_rejects_env_without_equals(capsys):
    assert cli.main(["--rules-path", RULES, "explain", "--env", "oops", "vif-bridge", "online"]) == 1
    assert "--env takes NAME=VALUE" in capsys.readouterr().err


def test_schema_is_json_and_knows_every_step(capsys):
    from xenrules.steps import all_step_types
    assert cli.main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert set(schema["definitions"]["step"]["properties"]) == set(all_step_types())


def test_explain_refuses_an_event_without_its_required_variables(capsys, monkeypatch):
    monkeypatch.setenv("XENSTORED_PATH", "/nonexistent/socket")
    monkeypatch.delenv("XENBUS_PATH", raising=False)
    monkeypatch.delenv("vif", raising=False)
    assert cli.main(["--rules-path", RULES, "explain", "vif-bridge", "online"]) == 0
    captured = capsys.readouterr()
    assert ("require: failed: required variable(s) not set: backend (XENBUS_PATH not set), "
            "vif (vif not set)") in captured.out
    assert captured.err == ""


def test_check_accepts_action_lists_and_steps_reused_through_aliases(tmp_path, capsys):
    (tmp_path / "50-alias.yaml").write_text(
        "rule: alias\nmatch: {script: vif-x}\nactions:\n"
        "  online: &steps\n    - log: {message: hi}\n  offline: *steps\n"
        "  add:\n    - &one {log: {message: two}}\n    - *one\n")
    assert cli.main(["--rules-path", str(tmp_path), "check"]) == 0
    assert "1 rule(s): OK" in capsys.readouterr().out


def test_global_options_may_follow_the_subcommand(tmp_path, capsys):
    (tmp_path / "50-x.yaml").write_text("rule: x\nmatch: {script: vif-x}\nactions: {online: []}\n")
    assert cli.main(["check", "--rules-path", str(tmp_path), "--state-dir", str(tmp_path / "st")]) == 0
    assert "1 rule file(s), 1 rule(s): OK" in capsys.readouterr().out
