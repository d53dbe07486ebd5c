"""What the package diverts, and the maintainer scripts that do it (no install).

The list of diverted scripts is computed from the shipped rules
(tools/diverted_scripts.py); these tests pin down that rule and check the
static list of xen-utils-common's hotplug scripts against the real package.
"""
import os
import re
import stat
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))

import diverted_scripts  # noqa: E402
from diverted_scripts import XEN_417_HOTPLUG_SCRIPTS, DivertListError, diverted, matched_scripts  # noqa: E402

RULES = os.path.join(REPO_ROOT, "rules.d")
pytestmark = pytest.mark.package
MAINTSCRIPTS = ("xenrules.postinst", "xenrules.prerm", "xenrules.postrm")


def _rule(tmp_path, text, name="50-x.yaml"):
    (tmp_path / name).write_text(text)
    return str(tmp_path)


def test_diverted_list_is_every_matched_script_that_xen_utils_common_ships():
    matched = matched_scripts(RULES)
    assert diverted(RULES) == sorted(n for n in matched if n in XEN_417_HOTPLUG_SCRIPTS)
    assert "vif-bridge" in diverted(RULES)


def test_a_script_of_another_xen_version_has_rules_but_is_not_diverted(tmp_path):
    rules = _rule(tmp_path, "- rule: t\n  match: {script: [vtpm, vif-bridge]}\n  actions: {online: []}\n")
    assert set(matched_scripts(rules)) == {"vtpm", "vif-bridge"}
    assert diverted(rules) == ["vif-bridge"]


@pytest.mark.parametrize("script", ["vif-common.sh", "vif-setup", "locking.sh"])
def test_rules_for_a_helper_or_the_dispatcher_stop_the_build(tmp_path, script):
    rules = _rule(tmp_path, f"- rule: t\n  match: {{script: {script}}}\n  actions: {{online: []}}\n")
    with pytest.raises(DivertListError, match="not a hotplug script"):
        diverted(rules)


def test_a_rule_that_does_not_name_its_script_stops_the_build(tmp_path):
    rules = _rule(tmp_path, "- rule: t\n  match: {type_if: vif}\n  actions: {online: []}\n")
    with pytest.raises(DivertListError, match="does not match on `script`"):
        diverted(rules)


def test_invalid_shipped_rules_stop_the_build(tmp_path):
    rules = _rule(tmp_path, "- rule: t\n  match: {script: vif-bridge}\n")
    with pytest.raises(DivertListError, match="do not validate"):
        diverted(rules)


def test_command_prints_one_name_a_line(capsys):
    assert diverted_scripts.main(["diverted_scripts", RULES]) == 0
    assert capsys.readouterr().out.splitlines() == diverted(RULES)


def test_static_script_list_is_exactly_xen_utils_commons_hotplug_scripts(originals):
    """Every executable of /etc/xen/scripts that is not a helper, the dispatcher or
    launch-xenstore is in the list, and nothing else."""
    shipped = set()
    for name in os.listdir(originals):
        mode = os.stat(os.path.join(originals, name)).st_mode
        if stat.S_ISREG(mode) and mode & 0o111 and not name.endswith(".sh"):
            shipped.add(name)
    assert XEN_417_HOTPLUG_SCRIPTS == shipped - diverted_scripts.NEVER_DIVERTED
    assert {"vif-setup", "launch-xenstore"} <= shipped
    assert "vtpm" not in shipped


def _shared_part(text):
    found = re.search(r"^# --- shared by postinst.*?^# --- end of the shared part$", text, re.M | re.S)
    assert found, "the shared part is missing"
    return found.group(0)


def test_maintainer_scripts_share_one_copy_of_the_divert_helpers():
    parts = []
    for name in MAINTSCRIPTS:
        with open(os.path.join(REPO_ROOT, "debian", name)) as f:
            parts.append(_shared_part(f.read()))
    assert parts[0] == parts[1] == parts[2]


def test_maintainer_scripts_divert_at_configure_and_undivert_at_remove():
    def read(name):
        with open(os.path.join(REPO_ROOT, "debian", name)) as f:
            return f.read()
    # no preinst: a diversion made before xen-utils-common's conffiles are in place loses them
    assert not os.path.exists(os.path.join(REPO_ROOT, "debian", "xenrules.preinst"))
    assert re.search(r"configure\|[^)]*\)\s*\n\s*sync_diversions", read("xenrules.postinst"))
    assert re.search(r"\n    remove\)\n\s*for path in \$\(our_diversions\)", read("xenrules.prerm"))
    assert re.search(r"\n    remove\|purge\)\n\s*for path in \$\(our_diversions\)", read("xenrules.postrm"))
