"""`xenrules check`: every problem as file:line:col, the source line and a caret.

Each tests/golden/NAME.yaml is a broken rule file; NAME.out is exactly what
`check` must print for it. Review a changed .out by eye before committing it.
"""
import os

import pytest

from xenrules import cli

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
CASES = sorted(f[:-5] for f in os.listdir(GOLDEN) if f.endswith(".yaml"))


@pytest.mark.parametrize("name", CASES)
def test_check_reports_golden_message(name, monkeypatch, capsys):
    monkeypatch.chdir(GOLDEN)
    code = cli.main(["--rules-path", "/nonexistent", "check", name + ".yaml"])
    err = capsys.readouterr().err
    with open(os.path.join(GOLDEN, name + ".out")) as f:
        assert err == f.read()
    assert code == 1


def test_golden_cases_cover_what_check_must_catch():
    for needed in ("unknown-step", "unknown-variable", "wrong-type", "duplicate-name", "yaml-syntax"):
        assert needed in CASES


def test_shipped_rules_are_valid(capsys):
    rules = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "rules.d")
    assert cli.main(["--rules-path", rules, "check"]) == 0
    assert "OK" in capsys.readouterr().out


def test_duplicate_rule_names_across_files_point_at_the_second(tmp_path, capsys):
    for name in ("10-a.yaml", "20-b.yaml"):
        (tmp_path / name).write_text("rule: twin\nmatch: {script: x}\nactions: {online: []}\n")
    assert cli.main(["--rules-path", str(tmp_path), "check"]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path}/20-b.yaml:1:7: duplicate rule name 'twin' (first defined at {tmp_path}/10-a.yaml:1)" in err


def test_every_problem_is_reported_not_just_the_first(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text(
        "rule: t\nmatch: {script: x}\nactions:\n  online:\n    - link.up: {dev: '{nope}'}\n"
        "    - link.fly: {}\n    - link.mtu: {dev: x, mtu: [1]}\n")
    assert cli.main(["--rules-path", str(tmp_path), "check"]) == 1
    err = capsys.readouterr().err
    assert "3 problem(s)" in err
    assert ":5:" in err and ":6:" in err and ":7:" in err
