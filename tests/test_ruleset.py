"""Rule directories: order, override, masking; the compiled cache; matching."""
import os
import subprocess

import pytest

from xenrules import engine, ruleset
from xenrules.config import Config
from xenrules.errors import RuleError
from xenrules.event import Event

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rule(name, script="s", actions="{online: []}", extra=""):
    return f"rule: {name}\nmatch: {{script: {script}}}\nactions: {actions}\n{extra}"


@pytest.fixture
def dirs(tmp_path):
    etc, lib, state = tmp_path / "etc", tmp_path / "lib", tmp_path / "state"
    etc.mkdir(), lib.mkdir()
    config = Config({"XENRULES_RULES_PATH": f"{etc}:{lib}", "XENRULES_STATE_DIR": str(state)})
    return etc, lib, state, config


def names(config):
    return [r["name"] for r in ruleset.load(config)]


def test_files_from_all_directories_sort_together_by_name(dirs):
    etc, lib, _, config = dirs
    (lib / "50-b.yaml").write_text(rule("b"))
    (etc / "10-a.yaml").write_text(rule("a"))
    (lib / "90-c.yaml").write_text(rule("c"))
    assert names(config) == ["a", "b", "c"]


def test_same_name_in_etc_overrides_the_vendor_file(dirs):
    etc, lib, _, config = dirs
    (lib / "50-x.yaml").write_text(rule("vendor"))
    (etc / "50-x.yaml").write_text(rule("admin"))
    assert names(config) == ["admin"]
    (f,) = ruleset.discover(config.rules_path)
    assert f.hidden == [str(lib / "50-x.yaml")]


def test_symlink_to_dev_null_masks_the_vendor_file(dirs):
    etc, lib, _, config = dirs
    (lib / "50-x.yaml").write_text(rule("vendor"))
    os.symlink("/dev/null", etc / "50-x.yaml")
    assert names(config) == []
    assert ruleset.discover(config.rules_path)[0].masked


def test_other_file_names_are_ignored(dirs):
    etc, _, _, config = dirs
    (etc / "50-x.yaml.dpkg-old").write_text("garbage: [")
    (etc / ".hidden.yaml").write_text("garbage: [")
    (etc / "README").write_text("hello")
    assert names(config) == []


def test_cache_is_written_and_rebuilt_when_a_rule_file_changes(dirs):
    etc, _, state, config = dirs
    path = etc / "50-x.yaml"
    path.write_text(rule("first"))
    assert names(config) == ["first"]
    cache = state / ruleset.CACHE_NAME
    assert cache.exists()
    before = os.stat(cache).st_ino
    assert names(config) == ["first"] and os.stat(cache).st_ino == before  # reused
    path.write_text(rule("second-longer"))
    assert names(config) == ["second-longer"]
    assert os.stat(cache).st_ino != before   # replaced by rename, never rewritten in place
    assert not [n for n in os.listdir(state) if n.startswith(".rules.")]


def test_new_and_removed_files_invalidate_the_cache(dirs):
    etc, lib, _, config = dirs
    (lib / "50-x.yaml").write_text(rule("x"))
    assert names(config) == ["x"]
    (etc / "60-y.yaml").write_text(rule("y"))
    assert names(config) == ["x", "y"]
    os.unlink(lib / "50-x.yaml")
    assert names(config) == ["y"]


def test_invalid_rules_raise_and_stay_invalid_from_cache(dirs):
    etc, _, _, config = dirs
    (etc / "50-x.yaml").write_text(rule("x", actions="{online: [{link.fly: {}}]}"))
    for _ in range(2):
        with pytest.raises(RuleError, match="unknown step type 'link.fly'"):
            ruleset.load(config)


def test_unwritable_state_dir_still_loads_rules(dirs, tmp_path):
    etc, lib, _, _ = dirs
    (etc / "50-x.yaml").write_text(rule("x"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = Config({"XENRULES_RULES_PATH": str(etc), "XENRULES_STATE_DIR": str(blocker / "sub")})
    assert names(config) == ["x"]


def test_event_path_with_warm_cache_imports_neither_yaml_nor_jsonschema(dirs):
    etc, lib, state, config = dirs
    (etc / "50-x.yaml").write_text(rule("x"))
    ruleset.load(config)
    code = ("import sys; from xenrules import ruleset; from xenrules.config import Config; "
            f"ruleset.load(Config({{'XENRULES_RULES_PATH': {str(etc)!r}, 'XENRULES_STATE_DIR': {str(state)!r}}})); "
            "print(sorted(m for m in ('yaml', 'jsonschema', 'pyroute2') if m in sys.modules))")
    out = subprocess.run(["/usr/bin/python3", "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# matching: first rule (file order) whose match holds and that has the action

def compiled(tmp_path, text):
    (tmp_path / "r.yaml").write_text(text)
    return ruleset.load(Config({"XENRULES_RULES_PATH": str(tmp_path),
                                "XENRULES_STATE_DIR": str(tmp_path / "st")}))


def test_first_matching_rule_with_the_action_wins(tmp_path):
    rules = compiled(tmp_path, "- " + rule("a", "vif-x", "{offline: []}").replace("\n", "\n  ") +
                     "\n- " + rule("b", "vif-x").replace("\n", "\n  ") +
                     "\n- " + rule("c", "vif-x").replace("\n", "\n  "))
    winner, verdicts = engine.choose(rules, Event("vif-x", ["online"], {}), every=True)
    assert winner["name"] == "b"
    reasons = {r["name"]: why for r, _, why in verdicts}
    assert reasons["a"] == "matches (script='vif-x') but has no action 'online'"
    assert reasons["c"] == "matches too, but b comes first"


def test_match_lists_mean_any_of_and_can_test_arguments(tmp_path):
    text = ("rule: r\nmatch: {script: [vif-a, vif-b], type_if: tap, bridge: br1}\n"
            "actions: {add: []}\n")
    rules = compiled(tmp_path, text)
    assert engine.choose(rules, Event("vif-b", ["add", "type_if=tap", "bridge=br1"],
                                      {"INTERFACE": "vif1.0-emu"}))[0]
    winner, verdicts = engine.choose(rules, Event("vif-b", ["add", "type_if=tap"],
                                                  {"INTERFACE": "vif1.0-emu"}))
    assert winner is None and verdicts[0][2] == "bridge is '', not 'br1'"


def test_no_rule_for_an_unknown_script(tmp_path):
    rules = compiled(tmp_path, rule("a", "vif-bridge"))
    assert engine.choose(rules, Event("block", ["add"], {}))[0] is None


def test_thousand_rules_compile_and_the_last_one_matches(tmp_path):
    text = "".join(f"- rule: r{i}\n  match: {{script: s{i}}}\n  actions: {{online: []}}\n" for i in range(1000))
    rules = compiled(tmp_path, text)
    assert engine.choose(rules, Event("s999", ["online"], {}))[0]["name"] == "r999"
