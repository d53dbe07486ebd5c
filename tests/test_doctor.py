"""`xenrules doctor` in a simulated dom0: each check healthy and broken, as an
admin meets it (the seed's "why doesn't the script run?" checklist).

doctor runs inside the dom0's network namespace (so the bridge check sees its
links) with every path under tmp_path: scripts directory, xl.conf, rules,
log, locks, journals.
"""

import os
import textwrap

import pytest

from events import BACK
from xenrules.sandbox.dom0 import PYTHON, REPO_ROOT

pytestmark = pytest.mark.netns

RULES = os.path.join(REPO_ROOT, "rules.d")
BASH_SCRIPT = "#!/bin/bash\necho fine\n"


class Doctor:
    def __init__(self, dom0, tmp_path):
        self.dom0, self.tmp = dom0, tmp_path
        self.scripts = tmp_path / "scripts"
        self.scripts.mkdir()
        self.script("vif-bridge")
        self.xl_conf = tmp_path / "xl.conf"
        self.xl_conf.write_text('vif.default.script="vif-bridge"\n')
        self.domu = tmp_path / "guest.cfg"
        self.domu.write_text("name = 'guest'\nvif = ['bridge=xenbr0,mac=00:16:3e:00:00:01']\n")
        self.rules = RULES
        self.log_file = tmp_path / "xen-hotplug.log"
        self.hooks = tmp_path / "w11-vif-post.d"
        self.conf = tmp_path / "w11-xenrules.conf"   # absent unless a test writes it

    def hook(self, name, text="#!/bin/bash\nlog debug hooked\n", mode=0o755):
        self.hooks.mkdir(exist_ok=True)
        path = self.hooks / name
        path.write_text(text)
        path.chmod(mode)
        return path

    def script(self, name, text=BASH_SCRIPT, mode=0o755):
        path = self.scripts / name
        path.write_text(text)
        path.chmod(mode)
        return path

    def run(self, *extra):
        env = self.dom0.hotplug_env(1, 0)
        env.update({"PYTHONPATH": REPO_ROOT, "XENRULES_SCRIPTS_DIR": str(self.scripts),
                    "XENRULES_XL_CONF": str(self.xl_conf),
                    "XENRULES_RULES_PATH": str(self.rules),
                    "XENRULES_STATE_DIR": str(self.tmp / "state"),
                    "XENRULES_LOCK_DIR": str(self.tmp / "locks"),
                    "XENRULES_JOURNAL_DIR": str(self.tmp / "journal"),
                    "XENRULES_LOG_FILE": str(self.log_file),
                    "XENRULES_HELPER_SOCKET": "",
                    "XENRULES_VIF_HOOKS_DIR": str(self.hooks),
                    "XENRULES_CONF": str(self.conf)})
        return self.dom0.run([PYTHON, "-m", "xenrules", "doctor", "--config", str(self.domu)]
                             + list(extra), env)


@pytest.fixture
def doc(dom0, tmp_path):
    dom0.add_vif(1, 0)
    return Doctor(dom0, tmp_path)


def problems(proc):
    return [l for l in proc.stdout.splitlines() if l.startswith("PROBLEM")]


def test_a_healthy_dom0_has_no_problem_and_doctor_exits_0(doc):
    proc = doc.run("--domain", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert problems(proc) == []
    assert "no problem found" in proc.stdout
    assert "bridge xenbr0" in proc.stdout and "exists" in proc.stdout
    assert "runs rule vif-bridge" in proc.stdout   # which rule the guest's vif gets, and why


def test_a_missing_bridge_is_named_with_how_to_create_it(doc):
    doc.domu.write_text("vif = ['bridge=xrnobr0']\n")
    proc = doc.run()
    assert proc.returncode == 1
    assert any("bridge xrnobr0" in l and "does not exist" in l for l in problems(proc)), proc.stdout
    assert "ip link add xrnobr0 type bridge" in proc.stdout


def test_a_script_that_is_not_executable_gets_its_chmod(doc):
    path = doc.script("vif-bridge", mode=0o644)
    proc = doc.run()
    assert proc.returncode == 1
    assert any("is not executable" in l for l in problems(proc)), proc.stdout
    assert "chmod 755 %s" % path in proc.stdout


def test_a_script_named_by_the_domain_config_that_does_not_exist_is_a_problem(doc):
    doc.domu.write_text("vif = ['bridge=xenbr0,script=vif-xrmissing']\n")
    proc = doc.run()
    assert proc.returncode == 1
    assert any("vif-xrmissing" in l and "does not exist" in l for l in problems(proc)), proc.stdout


def test_a_bash_syntax_error_the_toolstack_never_reports_is_found(doc):
    doc.script("vif-bridge", "#!/bin/bash\nif then fi (\n")
    proc = doc.run()
    assert proc.returncode == 1
    assert any("syntax error" in l for l in problems(proc)), proc.stdout


def test_rule_files_that_do_not_validate_are_a_problem_with_their_place(doc, tmp_path):
    bad = tmp_path / "bad-rules"
    bad.mkdir()
    (bad / "50-bad.yaml").write_text(textwrap.dedent("""\
        - rule: bad
          match: {script: vif-bridge}
          actions: {online: [{no.such_step: {}}]}
    """))
    doc.rules = str(bad)
    proc = doc.run()
    assert proc.returncode == 1
    assert any("rule files do not validate" in l for l in problems(proc)), proc.stdout
    assert "50-bad.yaml:3:" in proc.stdout and "unknown step type" in proc.stdout


def test_a_failed_device_shows_its_hotplug_error_and_its_log_lines(doc):
    doc.dom0.xs_write(BACK + "/hotplug-status", "error")
    doc.dom0.xs_write(BACK + "/hotplug-error", "xenrules-test: bridge xrgone does not exist")
    doc.log_file.write_text("2026-12-05 10:00:00 vif-bridge[1] err: vif1.0: something xrlogged\n")
    proc = doc.run("--domain", "1")
    assert proc.returncode == 1, proc.stdout
    assert any("hotplug-status error" in l and "xrgone" in l for l in problems(proc)), proc.stdout
    assert "something xrlogged" in proc.stdout


def test_xenstore_unreachable_is_a_problem_not_a_traceback(doc):
    proc = doc.dom0.run([PYTHON, "-m", "xenrules", "doctor"],
                        dict(doc.dom0.hotplug_env(1, 0), PYTHONPATH=REPO_ROOT,
                             XENSTORED_PATH=str(doc.tmp / "no-such-socket"),
                             XENRULES_SCRIPTS_DIR=str(doc.scripts),
                             XENRULES_RULES_PATH=RULES, XENRULES_LOG_FILE=str(doc.log_file),
                             XENRULES_LOCK_DIR=str(doc.tmp / "locks"),
                             XENRULES_JOURNAL_DIR=str(doc.tmp / "journal"),
                             XENRULES_STATE_DIR=str(doc.tmp / "state")))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert any("XenStore not reachable" in l for l in problems(proc)), proc.stdout


def test_doctor_names_settings_typo_with_file_line_and_closest_key(tmp_path):
    import io
    from xenrules.doctor import Report, check_settings
    bad = tmp_path / "w11-xenrules.conf"
    bad.write_text("# comment\ncaptur = 1\n")
    out = io.StringIO()
    report = Report(out)
    check_settings(report, {"XENRULES_CONF": str(bad)})
    assert report.problems == 1
    assert f"{bad}:2: unknown setting 'captur'" in out.getvalue()
    assert "rename captur to capture" in out.getvalue()
    good = tmp_path / "w11-good.conf"
    good.write_text("capture = /var/tmp/w11-captures\ncapture_keep = 5\n")
    out, report = io.StringIO(), Report(io.StringIO())
    check_settings(report, {"XENRULES_CONF": str(good)})
    assert report.problems == 0


def test_healthy_hooks_are_each_checked_ok(doc):
    doc.hook("10-w11-ok.hook")
    proc = doc.run()
    assert proc.returncode == 0, proc.stdout
    assert f"hook directory {doc.hooks}" in proc.stdout and "1 hook(s)" in proc.stdout
    assert f"ok       hook {doc.hooks}/10-w11-ok.hook: executable, bash -n clean" in proc.stdout


def test_a_hook_that_is_not_executable_is_named_with_its_chmod(doc):
    path = doc.hook("10-w11-quiet.hook", mode=0o644)
    proc = doc.run()
    assert proc.returncode == 1
    assert any(str(path) in l and "not executable" in l for l in problems(proc)), proc.stdout
    assert f"fix: chmod 755 {path}" in proc.stdout


def test_a_hook_with_a_bash_syntax_error_is_found(doc):
    path = doc.hook("20-w11-broken.hook", "#!/bin/bash\nif then fi (\n")
    proc = doc.run()
    assert proc.returncode == 1
    assert any(str(path) in l and "syntax error" in l for l in problems(proc)), proc.stdout
    assert f"bash -n {path}" in proc.stdout


def test_a_hook_whose_shebang_interpreter_is_missing_is_a_problem(doc):
    path = doc.hook("30-w11-gone.hook", "#!/usr/bin/w11-no-such-shell\necho hi\n")
    proc = doc.run()
    assert proc.returncode == 1
    assert any(str(path) in l and "w11-no-such-shell is missing" in l for l in problems(proc)), proc.stdout


def test_a_python_hook_is_a_problem_because_hooks_are_sourced_by_bash(doc):
    path = doc.hook("40-w11-py.hook", "#!/usr/bin/python3\nprint('hi')\n")
    proc = doc.run()
    assert proc.returncode == 1
    assert any(str(path) in l and "sourced by bash" in l for l in problems(proc)), proc.stdout


def test_a_settings_typo_fails_doctor_with_file_line_and_the_rename(doc):
    doc.conf.write_text("# site\nantisppof = on\ncapture_keep = none\n")
    proc = doc.run()
    assert proc.returncode == 1
    found = problems(proc)
    assert any(f"{doc.conf}:2: unknown setting 'antisppof'" in l and "did you mean 'antispoof'" in l
               for l in found), proc.stdout
    assert "fix: rename antisppof to antispoof on line 2" in proc.stdout
    assert any(f"{doc.conf}:3: capture_keep = 'none'" in l for l in found), proc.stdout
    assert "set capture_keep to a whole number, 1 or more on line 3" in proc.stdout


def test_hooks_are_still_checked_while_a_rule_file_does_not_validate(doc, tmp_path):
    bad = tmp_path / "w11-bad-rules"
    bad.mkdir()
    (bad / "40-bad.yaml").write_text("- rule: bad\n  match: {script: vif-bridge}\n"
                                     "  actions: {online: [{no.such_step: {}}]}\n")
    doc.rules = f"{bad}:{RULES}"
    path = doc.hook("10-w11-quiet.hook", mode=0o644)
    proc = doc.run()
    assert proc.returncode == 1
    assert any("rule files do not validate" in l for l in problems(proc)), proc.stdout
    assert any(str(path) in l and "not executable" in l for l in problems(proc)), proc.stdout
