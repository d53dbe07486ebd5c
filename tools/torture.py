#!/usr/bin/python3
"""`make torture`: rounds of concurrent hotplug events on the simulated dom0,
a share of them SIGKILLed at random times, then recovered, then checked for
leaks (osstest ts-leak-check style). A share of rounds (--stall-share) also
has the XenStore server stall (answer nothing) for 0.5-2 s mid-round; events
then run under a short XENRULES_DEADLINE and must end done, or reverted (link
as before, hotplug-status=error, or unwritten if XenStore was still hung), and
the device's next event must converge.

Each round fires one event per device at once (vif-bridge online/offline,
each flipping the device's state), SIGKILLs about --kill-share of them after
a random delay, runs `xenrules recover`, re-fires the killed devices' events
(the "next event for that device"), and then asserts: every vif on the bridge
with hotplug-status=connected or off it; no journal left; no lock still held
under the run dirs; no process of the round left; no loop device, network
namespace or fd (of this process) more than before. Prints the figures and
writes build/reliability/torture.json and docs/RELIABILITY.md.

    /usr/bin/python3 tools/torture.py [--rounds N] [--events N] [--seed S] [--stall-share F] [--quick]
"""
import argparse
import fcntl
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO_ROOT, os.path.dirname(os.path.abspath(__file__))]
TAG = "w9t"          # every namespace/dir this run makes carries it
PYTHON = "/usr/bin/python3"
VIF_BACK = "/local/domain/0/backend/vif/%d/0"
DEADLINE = 15  # XENRULES_DEADLINE in torture, s: 4 s failed 78 of 256 concurrent starts on 2 loaded cores
STALL_SECONDS = (0.5, 2.0)  # a XenStore stall lasts this long
RELIABILITY = os.path.join(REPO_ROOT, "build", "reliability")


class TortureError(RuntimeError):
    """The torture could not run (not a finding: a broken set-up)."""


def _run(argv):
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)


# -- the leak checker: snapshots of what must not grow ---------------------------

def loop_devices():
    """{device: backing file} of every attached loop device on the host."""
    out = {}
    for line in _run(["losetup", "-a"]).stdout.splitlines():
        dev, _, rest = line.partition(":")
        out[dev] = rest.strip()
    return out


def namespaces():
    return {line.split()[0] for line in _run(["ip", "netns", "list"]).stdout.splitlines()
            if line.strip()}


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def session_members(sids):
    """Pids still alive in any of the sessions ``sids`` (each event got its own)."""
    alive = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) in sids:   # field 6: session id
            alive.append(int(name))
    return alive


def held_locks(dirs):
    """Files under ``dirs`` someone still holds an flock on (stale: no event runs)."""
    held = []
    for top in dirs:
        for root, _, files in os.walk(top):
            for name in files:
                path = os.path.join(root, name)
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
                except OSError:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(fd, fcntl.LOCK_UN)
                except OSError:
                    held.append(path)
                finally:
                    os.close(fd)
    return held


def leftovers(directory):
    """Files left in a directory that must be empty between events (journals)."""
    out = []
    for root, _, files in os.walk(directory):
        out += [os.path.join(root, f) for f in files]
    return out


def _another_runs(netns):
    """A simulated dom0 of another torture run or test on the machine (xrw9t-PID-N)."""
    parts = netns.split("-")
    return (len(parts) == 3 and parts[0] == "xr" + TAG and parts[1].isdigit()
            and int(parts[1]) != os.getpid())


class Baseline:
    """What the host had before; check() lists what is more now (with our tag only
    for the shared tables, so other people's runs on the machine do not count)."""

    def __init__(self, journal_dir, lock_dirs, pid=None):
        self.journal_dir, self.lock_dirs = journal_dir, list(lock_dirs)
        self.loops = loop_devices()
        self.netns = namespaces()
        self.pid = pid or os.getpid()
        self.fds = fd_count(self.pid)

    def check(self, sids=()):
        leaks = []
        loops = loop_devices()
        leaks += ["loop device %s (%s)" % (d, loops[d]) for d in sorted(set(loops) - set(self.loops))
                  if TAG in loops[d]]
        doubled = {}
        for dev, back in loops.items():
            doubled.setdefault(back, []).append(dev)
        leaks += ["image on two loop devices: %s" % " ".join(devs)
                  for back, devs in doubled.items() if TAG in back and len(devs) > 1
                  and "ro" not in back]
        leaks += ["network namespace %s" % n for n in sorted(namespaces() - self.netns)
                  if TAG in n and not _another_runs(n)]
        leaks += ["journal or lock left: %s" % p for p in leftovers(self.journal_dir)]
        leaks += ["lock still held: %s" % p for p in held_locks(self.lock_dirs)]
        leaks += ["process %d of the round still alive" % p for p in session_members(set(sids))]
        fds = fd_count(self.pid)
        if fds > self.fds:
            leaks.append("fds of pid %d: %d, were %d" % (self.pid, fds, self.fds))
        return leaks


# -- a round -------------------------------------------------------------------

def _spawn(dom0, argv, env, out):
    full_env = dict(dom0._base_env(), **env)
    actions = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
               (os.POSIX_SPAWN_OPEN, 1, out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
               (os.POSIX_SPAWN_DUP2, 1, 2)]
    return os.posix_spawn(shutil.which("ip"), ["ip", "netns", "exec", dom0.netns] + argv,
                          full_env, file_actions=actions, setsid=True)


class Torture:
    def __init__(self, dom0, workdir, devices, rng, kill_share, server=None, stall_share=0.0):
        self.dom0, self.workdir, self.rng, self.kill_share = dom0, workdir, rng, kill_share
        self.server, self.stall_share = server, stall_share   # XenStore stalls: this share of rounds
        self.domids = list(range(1, devices + 1))
        self.online = {d: False for d in self.domids}
        for d in self.domids:
            dom0.add_vif(d, 0)
        # a short event deadline, so an event caught in a XenStore stall ends (reverted) soon
        self.xr_env = dict(dom0.xenrules_env(), XENRULES_DEADLINE=str(DEADLINE))
        self.baseline = Baseline(dom0.journal_dir, [dom0.state_dir, dom0.journal_dir])
        self.figures = {"events": 0, "killed": 0, "recovered": 0, "failures": 0, "leaks": 0,
                        "state_lost": 0, "rounds": 0, "stall_reverted": 0,
                        "faults": {"sigkill": 0, "xs_stall": 0}}
        self.findings = []

    def _event(self, d, command):
        env = dict(self.dom0.hotplug_env(d, 0), **self.xr_env)
        argv = [PYTHON, "-m", "xenrules.hotplug", "vif-bridge", command, "type_if=vif"]
        return _spawn(self.dom0, argv, env, os.path.join(self.workdir, "ev%d.out" % d))

    def _fire(self, domids, kill):
        """Start every event at once; SIGKILL the ``kill`` ones after a random delay.
        Returns {domid: exit code} (negative: killed)."""
        pids, timers = {}, []
        for d in domids:   # each kill timed from its own event's start
            pid = self._event(d, "offline" if self.online[d] else "online")
            pids[pid] = d
            if d in kill:
                t = threading.Timer(self.rng.uniform(0.0, 1.0), _killpg, (pid,))
                t.start()
                timers.append(t)
        codes = {}
        for pid, d in pids.items():
            _, status = os.waitpid(pid, 0)
            codes[d] = os.waitstatus_to_exitcode(status)
        for t in timers:
            t.cancel()
        self.sids |= set(pids)
        return codes

    def _why(self, d):
        try:
            with open(os.path.join(self.workdir, "ev%d.out" % d), errors="replace") as f:
                return f.read()[-600:]
        except OSError:
            return ""

    def round(self):
        self.sids = set()
        kill = set(self.rng.sample(self.domids, max(1, round(len(self.domids) * self.kill_share))))
        stall = None
        if self.server is not None and self.rng.random() < self.stall_share:
            stall = threading.Timer(self.rng.uniform(0.0, 0.5), self.server.stall,
                                    (self.rng.uniform(*STALL_SECONDS),))
            stall.start()
            self.figures["faults"]["xs_stall"] += 1
        codes = self._fire(self.domids, kill)
        if stall is not None:
            stall.join()
            self.server.stall(0)   # every event has ended: the stall has done its work
        killed = {d for d, c in codes.items() if c == -signal.SIGKILL}
        reverted = set()
        self.figures["events"] += len(codes)
        self.figures["killed"] += len(killed)
        self.figures["faults"]["sigkill"] += len(killed)
        for d, c in codes.items():
            if c != 0 and d not in killed and stall is not None and self._reverted(d):
                reverted.add(d)   # ended by the deadline, reverted: allowed under a stall
                self.figures["stall_reverted"] += 1
            elif c != 0 and d not in killed:
                self._finding("failure", "vif%d.0 exit %d: %s" % (d, c, self._why(d)))
            elif c == 0:
                self.online[d] = not self.online[d]
        # recovery: `xenrules recover`, then the killed devices' event once more
        proc = self.dom0.run([PYTHON, "-m", "xenrules", "recover"], dict(self.xr_env))
        if proc.returncode != 0:
            self._finding("failure", "recover exit %d: %s" % (proc.returncode, proc.stdout[-600:]))
        if killed or reverted:   # the next event for each such device converges
            again = self._fire(sorted(killed | reverted), set())
            for d, c in again.items():
                if c == 0:
                    self.online[d] = not self.online[d]
                    self.figures["recovered"] += d in killed
                else:
                    self._finding("failure", "vif%d.0 after recovery exit %d: %s"
                                  % (d, c, self._why(d)))
        self._check_state()
        for leak in self.baseline.check(self.sids):
            self._finding("leak", leak)
        self.figures["rounds"] += 1

    def _reverted(self, d):
        """An event that failed under a stall left the link as it was before (on the
        bridge if it was online, off it if not) and hotplug-status=error, or, when
        XenStore stayed hung past the deadline so that write could not be made, the
        status it had before ("connected" if online, none if not)."""
        status = self.dom0.xs_read(VIF_BACK % d + "/hotplug-status") or ""
        link = self.dom0.links().get("vif%d.0" % d) or {}
        on = link.get("master") == "xenbr0"
        return on == self.online[d] and status in ("error", "connected" if on else "")

    def _check_state(self):
        links = self.dom0.links()
        for d in self.domids:
            link = links.get("vif%d.0" % d)
            status = self.dom0.xs_read(VIF_BACK % d + "/hotplug-status")
            if link is None:
                self._finding("state_lost", "vif%d.0 gone" % d)
            elif self.online[d] and (link.get("master") != "xenbr0" or status != "connected"):
                self._finding("state_lost", "vif%d.0 online but master %s, hotplug-status %r"
                              % (d, link.get("master"), status))
            elif not self.online[d] and link.get("master") is not None:
                self._finding("state_lost", "vif%d.0 offline but still on %s"
                              % (d, link.get("master")))
            if not self.online[d]:
                # libxl removes the backend after offline; the next online starts clean
                self.dom0.xs_write(VIF_BACK % d + "/hotplug-status", "")

    def _finding(self, kind, text):
        key = {"failure": "failures", "leak": "leaks", "state_lost": "state_lost"}[kind]
        self.figures[key] += 1
        self.findings.append("%s: %s" % (kind, text))
        print("  FINDING %s: %s" % (kind, text), flush=True)


def _killpg(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# -- the figures ---------------------------------------------------------------

def machine():
    return {"nproc": os.cpu_count(), "load": [round(x, 2) for x in os.getloadavg()],
            "kernel": platform.release(), "python": platform.python_version()}


def other_figures():
    """What `make fuzz` and the hostile-values tests left in build/reliability."""
    import reliability_report
    return reliability_report.load(RELIABILITY)


def write_report(result, path):
    import reliability_report   # tools/: the hostile and fuzz sections, the embedded figures
    f, m = result["torture"], result["machine"]
    lines = [
        "# Reliability figures",
        "",
        "Written by `make torture` (tools/torture.py; `make reliability-report` refreshes the"
        " hostile and fuzz figures); do not edit by hand.",
        "",
        "## Torture (simulated dom0)",
        "",
        "| figure | value |", "|---|---|",
        "| rounds | %d |" % f["rounds"],
        "| events run (concurrent per round) | %d (%d) |" % (f["events"], result["events_per_round"]),
        "| events SIGKILLed | %d |" % f["killed"],
        "| killed events recovered | %d |" % f["recovered"],
        "| events reverted by the deadline under a XenStore stall (allowed) | %d |"
        % f.get("stall_reverted", 0),
        "| faults injected | %s |" % ", ".join("%s %d" % kv for kv in sorted(f["faults"].items())),
        "| failures (goal 0) | %d |" % f["failures"],
        "| leaks (goal 0) | %d |" % f["leaks"],
        "| state lost (goal 0) | %d |" % f["state_lost"],
        "| running time | %.1f s |" % result["seconds"],
        "| seed | %d |" % result["seed"],
        "",
        "Events: vif-bridge online/offline through `python3 -m xenrules.hotplug`, no warm helper;"
        " XENRULES_DEADLINE=%d s; a XenStore stall lasts %.1f-%.1f s." % ((DEADLINE,) + STALL_SECONDS),
        "",
    ] + reliability_report.sections(result["other"]) + [
        "## Machine",
        "",
        "nproc %d, load %s, kernel %s, python %s."
        % (m["nproc"], " ".join(map(str, m["load"])), m["kernel"], m["python"]),
        "",
    ]
    if result["findings"]:
        lines += ["## Findings", ""] + ["- " + x.replace("\n", " ")[:300] for x in result["findings"][:50]] + [""]
    lines.append(reliability_report.embed(result))   # so the page can be rendered again
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n")


def run(rounds, events, seed, kill_share=0.1, report=True, log=print, stall_share=0.3):
    from xenrules.sandbox.xsserver import XenstoreServer
    from xenrules.sandbox.dom0 import SimulatedDom0
    rng = random.Random(seed)
    top = tempfile.mkdtemp(prefix="xr-%s-torture-" % TAG, dir="/tmp")
    started = time.monotonic()
    server = XenstoreServer(os.path.join(top, "xs.sock"))
    server.start()
    try:
        with SimulatedDom0(server, prefix="xr%s" % TAG) as dom0:
            t = Torture(dom0, top, events, rng, kill_share, server, stall_share)
            for n in range(rounds):
                t.round()
                log("round %d/%d: %s" % (n + 1, rounds, json.dumps(t.figures)))
    finally:
        server.stop()
        shutil.rmtree(top, ignore_errors=True)
    result = {"torture": t.figures, "findings": t.findings, "seed": seed,
              "events_per_round": events, "seconds": time.monotonic() - started,
              "machine": machine(), "other": other_figures()}
    if report:
        os.makedirs(RELIABILITY, exist_ok=True)
        with open(os.path.join(RELIABILITY, "torture.json"), "w") as out:
            json.dump(result, out, indent=1)
        write_report(result, os.path.join(REPO_ROOT, "docs", "RELIABILITY.md"))
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--events", type=int, default=256)
    p.add_argument("--seed", type=int, default=9)
    p.add_argument("--stall-share", type=float, default=0.3,
                   help="share of rounds with a XenStore stall of 0.5-2 s")
    p.add_argument("--quick", action="store_true", help="one round of 16 events")
    a = p.parse_args(argv)
    if a.quick:
        a.rounds, a.events = 1, 16
    result = run(a.rounds, a.events, a.seed, stall_share=a.stall_share)
    f = result["torture"]
    print("torture: %d events, %d killed, %d recovered, %d failures, %d leaks, %d state lost, %.1f s"
          % (f["events"], f["killed"], f["recovered"], f["failures"], f["leaks"],
             f["state_lost"], result["seconds"]))
    import reliability_report
    print(reliability_report.summary_line(result["other"]))
    return 1 if f["failures"] or f["leaks"] or f["state_lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
