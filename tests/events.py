"""Events for the engine and step tests: rule files in a temporary directory,
and hotplug events run through xenrules in a simulated dom0 with every
XENRULES_* path under tmp_path."""

import textwrap
import time

from xenrules.sandbox.dom0 import PYTHON, REPO_ROOT

SCRIPT = "xr-test"
BACK = "/local/domain/0/backend/vif/1/0"


class Events:
    def __init__(self, dom0, tmp_path):
        self.dom0 = dom0
        self.tmp = tmp_path
        self.lock_dir = tmp_path / "locks"
        self.log_file = tmp_path / "xen-hotplug.log"
        self.state_dir = tmp_path / "state"
        self.journal_dir = tmp_path / "journal"
        self.originals = tmp_path / "originals"     # empty unless a test writes one: no fallback
        self.originals.mkdir()
        self.rules_dir = tmp_path / "rules-empty"
        self.rules_dir.mkdir()
        self.rule_file = None
        self._count = 0

    def rules(self, text, name="50-xr-test.yaml"):
        """Write a rule file into a fresh rule directory; returns its path."""
        self._count += 1
        self.rules_dir = self.tmp / ("rules%d" % self._count)
        self.rules_dir.mkdir()
        self.rule_file = self.rules_dir / name
        self.rule_file.write_text(textwrap.dedent(text).lstrip("\n"))
        return self.rule_file

    def steps(self, steps, action="online", rule="xr-test-rule"):
        """A rule for xr-test whose `action` runs the given YAML step list."""
        body = textwrap.indent(textwrap.dedent(steps).strip("\n"), " " * 6)
        return self.rules("- rule: %s\n"
                          "  match: {script: %s}\n"
                          "  actions:\n"
                          "    %s:\n%s\n" % (rule, SCRIPT, action, body))

    def line_of(self, text):
        """1-based line of the rule file holding text (exactly one)."""
        found = [i + 1 for i, l in enumerate(self.rule_file.read_text().splitlines()) if text in l]
        assert len(found) == 1, found
        return found[0]

    def env(self, **extra):
        env = self.dom0.hotplug_env(1, 0, script=SCRIPT)
        env.update({
            "PYTHONPATH": REPO_ROOT,
            "XENRULES_RULES_PATH": str(self.rules_dir),
            "XENRULES_STATE_DIR": str(self.state_dir),
            "XENRULES_LOCK_DIR": str(self.lock_dir),
            "XENRULES_JOURNAL_DIR": str(self.journal_dir),
            "XENRULES_LOG_FILE": str(self.log_file),
            "XENRULES_ORIGINALS_DIR": str(self.originals),
        })
        env.update(extra)
        return env

    def run(self, words=("online", "type_if=vif"), script=SCRIPT, **extra):
        return self.dom0.run([PYTHON, "-m", "xenrules.hotplug", script] + list(words),
                             self.env(**extra))

    def log(self):
        try:
            return self.log_file.read_text()
        except FileNotFoundError:
            return ""


def why(proc, ev):
    """Assertion message: exit code, stderr and the log of a run."""
    return "exit %d\nstderr: %s\nlog: %s" % (proc.returncode, proc.stderr, ev.log())


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
