#!/usr/bin/python3
"""A new admin's session with `xenrules doctor`, played for real in the sandbox.

Three things are broken in a simulated dom0 (network namespace, XenStore
server, every path under one temp dir): the bridge the guest's config names
was never made, a vif-post.d hook lost its executable bit, and a local copy
of 50-vif-bridge.yaml has a typo in a step name. Then, as the admin would:
the guest's vif event (`vif-bridge online`) fails, `xenrules doctor` is run,
every fix it prints is applied as printed, and the event is run again until
it succeeds and doctor finds no problem. Prints the transcript ($ command,
then its output); exit 0 when the session ends with a working event.

    sudo /usr/bin/python3 tools/demo_session.py [--tag NAME]

Needs root (network namespaces) and iproute2; removes everything it made.
"""
import argparse
import os
import re
import shlex
import shutil
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from xenrules.sandbox.dom0 import PYTHON, SimulatedDom0  # noqa: E402
from xenrules.sandbox.xsserver import XenstoreServer  # noqa: E402

DOMID, DEVID = 1, 0
BACK = f"/local/domain/0/backend/vif/{DOMID}/{DEVID}"
ROUNDS = 4          # event, doctor, fixes: a session that needs more is a failure
TYPO = ("- link.up:", "- link.upp:")   # the admin's slip in a local rule copy


class Session:
    def __init__(self, dom0, tmp, out):
        self.dom0, self.tmp, self.out = dom0, tmp, out
        self.scripts = os.path.join(tmp, "etc-xen-scripts")
        self.hooks = os.path.join(self.scripts, "vif-post.d")
        self.local_rules = os.path.join(tmp, "etc-xen-rules.d")
        self.rules_path = f"{self.local_rules}:{os.path.join(REPO, 'rules.d')}"
        self.cfg = os.path.join(tmp, "guest.cfg")
        self.xl_conf = os.path.join(tmp, "xl.conf")
        self.log = os.path.join(tmp, "xen-hotplug.log")
        self.marker = os.path.join(tmp, "hook-ran")
        self.env = {
            "XENRULES_SCRIPTS_DIR": self.scripts, "XENRULES_XL_CONF": self.xl_conf,
            "XENRULES_VIF_HOOKS_DIR": self.hooks, "XENRULES_LOG_FILE": self.log,
            "XENRULES_LOCK_DIR": os.path.join(tmp, "locks"),
            "XENRULES_CONF": os.path.join(tmp, "xenrules.conf"),
            "XENRULES_HELPER_SOCKET": ""}

    def say(self, text=""):
        self.out.write(text + "\n")
        self.out.flush()

    # -- the broken dom0 -----------------------------------------------------

    def break_things(self):
        os.makedirs(self.hooks)
        launcher = os.path.join(self.scripts, "vif-bridge")
        shutil.copy(os.path.join(REPO, "bin", "xenrules-launcher"), launcher)
        os.chmod(launcher, 0o755)
        with open(self.xl_conf, "w") as f:
            f.write('vif.default.script="vif-bridge"\n')
        with open(self.cfg, "w") as f:
            f.write("name = 'guest1'\nvif = ['bridge=xenbr0,mac=00:16:3e:00:01:00']\n")
        hook = os.path.join(self.hooks, "10-log-port.hook")
        with open(hook, "w") as f:    # written without the x bit: call_hooks skips it
            f.write(f'#!/bin/bash\necho "$vif on $bridge" >> {shlex.quote(self.marker)}\n')
        os.chmod(hook, 0o644)
        os.makedirs(self.local_rules)
        with open(os.path.join(REPO, "rules.d", "50-vif-bridge.yaml")) as f:
            text = f.read()
        with open(os.path.join(self.local_rules, "50-vif-bridge.yaml"), "w") as f:
            f.write(text.replace(TYPO[0], TYPO[1], 1))
        self.dom0.add_vif(DOMID, DEVID, bridge="xenbr0")
        self.say("# broken on purpose: no bridge xenbr0; hook 10-log-port.hook not executable;")
        self.say(f"# a local copy of 50-vif-bridge.yaml in {self.local_rules} with '{TYPO[1]}'")

    # -- what the admin runs -------------------------------------------------

    def event(self):
        """libxl's `vif-bridge online` for the guest's vif; True when it worked."""
        env = dict(self.dom0.hotplug_env(DOMID, DEVID), **self.env)
        self.say(f"\n$ XENBUS_PATH={env['XENBUS_PATH']} vif={env['vif']} vif-bridge online type_if=vif")
        size = os.path.getsize(self.log) if os.path.exists(self.log) else 0
        done = self.dom0.run_xenrules("vif-bridge", ["online", "type_if=vif"], env,
                                      rules_path=self.rules_path,
                                      state_dir=os.path.join(self.tmp, "state"))
        with open(self.log, encoding="utf-8", errors="replace") as f:
            f.seek(size)
            for line in f.read().splitlines():   # without the date and time columns
                self.say(line.split(" ", 2)[-1] if re.match(r"\d{4}-\d\d-\d\d ", line) else line)
        status = self.dom0.xs_read(BACK + "/hotplug-status")
        self.say(f"exit status {done.returncode}; hotplug-status = {status!r}")
        if status == "error":
            self.say(f"hotplug-error = {self.dom0.xs_read(BACK + '/hotplug-error')!r}")
        return done.returncode == 0 and status == "connected"

    def doctor(self):
        """Run doctor; [(problem line, fix, details)] of what it reports."""
        self.say(f"\n$ xenrules doctor --config {self.cfg} --domain {DOMID}")
        env = dict(self.dom0.hotplug_env(DOMID, DEVID), **self.env)
        env.update(self.dom0.xenrules_env(self.rules_path, os.path.join(self.tmp, "state")))
        env["XENRULES_CONF"] = self.env["XENRULES_CONF"]
        done = self.dom0.run([PYTHON, "-m", "xenrules", "doctor", "--config", self.cfg,
                              "--domain", str(DOMID)], env)
        self.out.write(done.stdout)
        if done.stderr.strip():
            self.say(done.stderr.rstrip())
        found, current = [], None
        for line in done.stdout.splitlines():
            if line.startswith("PROBLEM"):
                current = [line[9:], "", []]
                found.append(current)
            elif current and line.strip().startswith("fix: "):
                current[1] = line.strip()[5:]
            elif current and line.strip().startswith("| "):
                current[2].append(line.strip()[2:])
        return done.returncode, found

    def run_fix(self, argv):
        self.say("$ " + " ".join(shlex.quote(a) for a in argv))
        done = self.dom0.run(argv)
        self.out.write(done.stdout + done.stderr)
        return done.returncode == 0

    def apply(self, problem, fix, details):
        """Do what the fix line says, as an admin would type it."""
        quoted = re.findall(r"`([^`]+)`", fix)
        if fix.startswith("chmod "):
            return self.run_fix(fix.split(" (")[0].split())
        if quoted and quoted[0].startswith("ip link add"):
            return all(self.run_fix(shlex.split(part)) for part in quoted[0].split("&&"))
        if "rule files do not validate" in problem:
            ok = True
            for detail in details:   # FILE:LINE:COL: unknown step type 'X' (did you mean 'Y'?)
                m = re.match(r"(/\S+?):(\d+):\d+: .*'([^']+)' \(did you mean '([^']+)'\?\)", detail)
                if m:
                    path, line, wrong, right = m.groups()
                    ok &= self.run_fix(["sed", "-i", f"{line}s/{re.escape(wrong)}:/{right}:/", path])
            return ok
        if "hotplug-status error" in problem:
            self.say("# (the failed event: it is run again below, as `xl create` would)")
            return True
        self.say(f"# no way to apply this fix by hand here: {fix}")
        return False


def play(out, tag):
    tmp = tempfile.mkdtemp(prefix=f"xenrules-demo-{tag}-")
    try:
        with XenstoreServer(os.path.join(tmp, "xs.sock")) as server, \
                SimulatedDom0(server.socket_path, prefix=f"xr{tag}"[:8], bridges=()) as dom0:
            session = Session(dom0, tmp, out)
            session.say(f"# simulated dom0: network namespace {dom0.netns}, files under {tmp}")
            session.break_things()
            for _ in range(ROUNDS):
                worked = session.event()
                code, found = session.doctor()
                if worked and code == 0:
                    hooked = os.path.exists(session.marker)
                    session.say(f"\n# the event worked, doctor found no problem; the hook ran: "
                                f"{'yes' if hooked else 'no'}")
                    return 0 if hooked else 1
                if not found:
                    session.say("# the event failed but doctor found nothing: a doctor bug")
                    return 1
                for problem, fix, details in found:
                    session.apply(problem, fix, details)
            session.say(f"# still broken after {ROUNDS} rounds")
            return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", default="demo", help="name part of everything made (default demo)")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[a-z0-9]{1,6}", args.tag):
        parser.error("--tag: 1 to 6 lower-case letters or digits")
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces)")
    return play(sys.stdout, args.tag)


if __name__ == "__main__":
    sys.exit(main())
