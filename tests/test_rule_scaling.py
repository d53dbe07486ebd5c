"""The rule index: an event tests only the rules that may match it, same winner.

ruleset.candidates() leaves out every rule with a literal `match:` value
that differs from the event's, so the first match among the candidates must
be the first match among all rules, whatever the rules look like. And with
1000 per-guest rules an event still tests a handful (what keeps 1000 rules
as cheap as 10: bench/bench.py measures the time).
"""
import itertools
import os

from xenrules import engine, ruleset
from xenrules.config import Config
from xenrules.event import Event

RULES = """\
- rule: templated
  match: {script: "{vif}-x"}
  actions: {online: []}
- rule: route-guest-7
  match: {script: vif-route, vif: vif7.0}
  actions: {online: [], offline: []}
- rule: bridge-tap
  match: {script: vif-bridge, type_if: tap}
  actions: {add: [], remove: []}
- rule: bridge-online-only-for-3
  match: {script: vif-bridge, vif: [vif3.0, vif3.1]}
  actions: {online: []}
- rule: any-script-on-vif9
  match: {vif: vif9.0}
  actions: {online: [], offline: []}
- rule: bridge
  match: {script: [vif-bridge, vif-setup], type_if: vif}
  actions: {online: [], offline: [], add: [], remove: []}
- rule: braces
  match: {script: "odd{{name}}"}
  actions: {online: []}
- rule: route
  match: {script: vif-route}
  actions: {online: [], offline: []}
"""


def config_for(tmp_path, files):
    rules = tmp_path / "rules"
    rules.mkdir()
    for name, text in files.items():
        (rules / name).write_text(text)
    return Config({"XENRULES_RULES_PATH": str(rules), "XENRULES_STATE_DIR": str(tmp_path / "state")})


def winner(rules, event):
    rule, _ = engine.choose(rules, event)
    return rule and rule["name"]


def test_candidates_choose_what_a_full_scan_chooses(tmp_path):
    config = config_for(tmp_path, {"50-a.yaml": RULES})
    every = ruleset.load(config)
    scripts = ["vif-bridge", "vif-route", "vif3.0-x", "odd{name}", "block", "vif-setup"]
    vifs = ["vif1.0", "vif3.0", "vif3.1", "vif7.0", "vif9.0", ""]
    chosen = set()
    for script, vif, type_if, action in itertools.product(
            scripts, vifs, ["vif", "tap", ""], ["online", "offline", "add"]):
        event = Event(script, [action, f"type_if={type_if}"] if type_if else [action],
                      {"vif": vif, "XENBUS_PATH": "backend/vif/1/0"})
        for cold in (False, True):
            if cold:
                ruleset._memo.clear()   # a fresh process: from the cache file
            found = ruleset.candidates(config, engine.event_lookup(event))
            assert winner(found, event) == winner(every, event), (script, vif, type_if, action)
        chosen.add(winner(every, event))
    # the events above exercise every rule, or the comparison proves little
    assert chosen >= {r["name"] for r in every} - {"templated"} | {None}


def filler(n):
    return (f"- rule: guest-{n}\n"
            f"  match: {{script: vif-bridge, vif: vif{1000 + n}.0}}\n"
            f"  actions: {{online: [{{xenstore.write: {{path: '{{backend}}/x', value: '{n}'}}}}]}}\n")


def test_a_thousand_rules_leave_an_event_a_handful_to_test(tmp_path):
    files = {f"40-fill-{i}.yaml": "".join(filler(i * 100 + j) for j in range(100)) for i in range(10)}
    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "rules.d",
                           "50-vif-bridge.yaml")) as f:
        files["50-vif-bridge.yaml"] = f.read()
    config = config_for(tmp_path, files)
    assert len(ruleset.load(config)) == 1002
    env = {"XENBUS_PATH": "backend/vif/1/0", "vif": "vif1.0"}
    event = Event("/etc/xen/scripts/vif-bridge", ["online", "type_if=vif"], env)
    found = ruleset.candidates(config, engine.event_lookup(event))
    assert [r["name"] for r in found] == ["vif-bridge"]
    guest = Event("/etc/xen/scripts/vif-bridge", ["online", "type_if=vif"], dict(env, vif="vif1234.0"))
    found = ruleset.candidates(config, engine.event_lookup(guest))
    assert [r["name"] for r in found] == ["guest-234", "vif-bridge"]
    assert winner(found, guest) == "guest-234"


def test_the_in_memory_rules_follow_a_changed_file(tmp_path):
    config = config_for(tmp_path, {"50-a.yaml": RULES})
    event = Event("vif-route", ["online"], {"vif": "vif7.0"})
    assert winner(ruleset.candidates(config, engine.event_lookup(event)), event) == "route-guest-7"
    path = tmp_path / "rules" / "50-a.yaml"
    path.write_text(RULES.replace("vif: vif7.0", "vif: vif8.0"))
    assert winner(ruleset.candidates(config, engine.event_lookup(event)), event) == "route"


def test_invalid_rules_raise_from_candidates_too(tmp_path):
    import pytest
    from xenrules.errors import RuleError
    config = config_for(tmp_path, {"50-a.yaml": "- rule: x\n  match: {script: a}\n  actions: {online: [{nope.step: {}}]}\n"})
    event = Event("a", ["online"], {})
    for _ in range(2):
        with pytest.raises(RuleError):
            ruleset.candidates(config, engine.event_lookup(event))
