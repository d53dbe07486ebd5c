"""The man pages: generated reference parts name everything the code has."""
import os
import subprocess

import pytest

from xenrules import config, manpage
from xenrules.cli import COMMANDS
from xenrules.context import SOURCE_KINDS
from xenrules.event import BUILTIN_NAMES
from xenrules.sources import all_source_kinds
from xenrules.steps import all_step_types

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.package


def _page(kind, template):
    with open(os.path.join(REPO_ROOT, "man", template)) as f:
        return manpage.render(kind, f.read())


@pytest.fixture(scope="module")
def rules_page():
    return _page("rules", "xenrules.rules.5.in")


@pytest.fixture(scope="module")
def command_page():
    return _page("command", "xenrules.8.in")


def _render(text, tmp_path, name):
    """(plain text, groff warnings) of a page, as man(1) shows it."""
    path = tmp_path / name
    path.write_text(text)
    done = subprocess.run(["man", "--warnings", "-l", str(path)], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "MANWIDTH": "200",
                               "MANPAGER": "cat", "PAGER": "cat"}, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


def test_rules_page_lists_every_step_type_with_every_argument(rules_page):
    for name, cls in all_step_types().items():
        assert f".B {manpage.esc(name)}\n" in rules_page, name
        for arg in cls.properties:
            assert f".I {manpage.esc(arg)}\n" in rules_page, f"{name} {arg}"


def test_rules_page_lists_every_variable_source_and_built_in_variable(rules_page):
    for kind in list(SOURCE_KINDS) + list(all_source_kinds()):
        assert f'.BI "{manpage.esc(kind)}: "' in rules_page, kind
    for name in BUILTIN_NAMES:
        assert f".B {manpage.esc(name)}\n" in rules_page, name


def test_command_page_lists_every_subcommand_and_environment_variable(command_page):
    for command in COMMANDS:
        assert f".B xenrules {command}" in command_page, command
    for variable in config.DEFAULTS:
        assert f".B {variable}\n" in command_page, variable


def test_pages_have_no_marker_left_and_carry_the_version(rules_page, command_page):
    from xenrules import __version__
    for page in (rules_page, command_page):
        assert not [l for l in page.splitlines() if manpage.MARKER.match(l)]
        assert "@VERSION@" not in page
        assert f'"xenrules {__version__}"' in page


def test_pages_render_without_groff_warnings(rules_page, command_page, tmp_path):
    text, warnings = _render(rules_page, tmp_path, "xenrules.rules.5")
    assert warnings == ""
    assert "link.prepare_port" in text and "VARIABLE SOURCES" in text
    text, warnings = _render(command_page, tmp_path, "xenrules.8")
    assert warnings == ""
    assert "xenrules explain [--env NAME=VALUE] script ..." in text


def test_roff_escaping_keeps_text_literal():
    assert manpage.esc("a-b\\c") == "a\\-b\\ec"
    assert manpage.esc(".starts with a dot") == "\\&.starts with a dot"
    assert manpage.esc("'quote") == "\\&'quote"


def test_unknown_section_marker_stops_the_build():
    with pytest.raises(SystemExit, match="unknown section @NOPE@"):
        manpage.render("rules", '.\\" @NOPE@\n')


def test_a_built_in_variable_without_description_stops_the_build(monkeypatch):
    monkeypatch.delitem(manpage.BUILTIN_DESCRIPTIONS, "vif")
    with pytest.raises(SystemExit, match="built-in variable"):
        manpage.builtins_section()
