#!/usr/bin/python3
"""`make torture`: rounds of concurrent hotplug events on the simulated dom0,
a share of them SIGKILLed at random times, then recovered, then checked for
leaks (osstest ts-leak-check style).

The devices (one event each per round, each flipping the device's state):
vif online/offline for vif-bridge, vif-route and vif-nat; tap add/remove
(vif-bridge, an HVM guest's emulated NIC); block add/remove of a disk image
(`file`: a real loop device per guest), of a block device (`phy`: a loop
device this run attaches), of one image several guests share read-only (a
further guest holds it read-only all the run long), and one guest asking that
shared image read-write every round, which block's sharing check must refuse
(exit 1, hotplug-status=busy, nothing attached).

Rounds alternate between in-process events (the launcher with no helper) and
events offered to a warm helper (`xenrules helper`, running in the dom0's
namespace; when its workers are all busy the launcher runs the event itself,
as in production). A share of rounds (--stall-share) has the XenStore server
stall (answer nothing) for 0.5-2 s mid-round; events then run under a short
XENRULES_DEADLINE and must end done, or reverted (device as before,
hotplug-status=error, or unwritten if XenStore was still hung). A share of
helper rounds (--crash-share) has the whole helper SIGKILLed mid-round: the
events its workers ran end with the launcher's "helper stopped" exit 1, and
the helper's restart must replay their journals before it serves (none may be
left after it).

Each round fires one event per device at once, SIGKILLs about --kill-share
of them after a random delay, runs `xenrules recover`, re-fires the killed
and reverted devices' events (the "next event for that device"), then checks:
every device in its expected state (links, bridge ports, routes, the loop
device of each attached disk, physical-device and node); the whole xenstore
tree as before but for the keys the events own, and those as expected; no
journal left, no lock still held; no process of the round alive, nothing left
running under the helper's workers, no fd more (this process, the helper);
no loop device backing a file of this run but those expected, no image on two
loop devices unless it is shared read-only, no loop device given to two
guests; no network namespace more. Then libxl's part: the backend keys of a
device that went down are put back as they were before its first event.
Prints the figures and writes build/reliability/torture.json and the torture
sections of docs/RELIABILITY.md.

    /usr/bin/python3 tools/torture.py [--rounds N] [--events N] [--seed S] [--stall-share F] [--quick]
"""
import argparse
import contextlib
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
TAG = "w9u"          # every namespace/dir/image this run makes carries it
PYTHON = "/usr/bin/python3"
LAUNCHER = os.path.join(REPO_ROOT, "bin", "xenrules-launcher")
DEADLINE = 15  # XENRULES_DEADLINE in torture, s: 4 s failed 78 of 256 concurrent starts on 2 loaded cores
STALL_SECONDS = (0.5, 2.0)  # a XenStore stall lasts this long
STALL_DELAY = None          # s after the round's start; None: within the first half of a typical event
RELIABILITY = os.path.join(REPO_ROOT, "build", "reliability")
DOM0_IP = "192.0.2.1"        # the uplink eth0's address (vif-route's source address)
VBD_DEVID = 51712            # xvda
MODES = ("in-process", "helper")
HELPER_MAX_EVENTS = 16
HELPER_LOST = "the helper stopped during the event"   # the launcher's words (bin/xenrules-launcher)
BLOCK_KILL_FACTOR = 3        # a disk's chance of a kill, in kill shares
BLOCK_MIN_EVENTS = 12        # fewer devices a round: vifs only (the stall tests)
# events owned keys: what a hotplug event may write in its backend
OWNED = ("hotplug-status", "hotplug-error", "physical-device", "physical-device-path", "node")


class TortureError(RuntimeError):
    """The torture could not run (not a finding: a broken set-up)."""


def _run(argv):
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)


# -- the leak checker: snapshots of what must not grow ---------------------------

def loop_devices():
    """{device: backing file} of every attached loop device on the host (losetup -a)."""
    out = {}
    for line in _run(["losetup", "-a"]).stdout.splitlines():
        dev, _, rest = line.partition(":")
        # "/dev/loop3: []: (/tmp/x/img)": the backing file between the last parentheses
        back = rest.strip()
        if back.endswith(")") and "(" in back:
            back = back[back.index("(") + 1:-1]
        out[dev] = back
    return out


def namespaces():
    return {line.split()[0] for line in _run(["ip", "netns", "list"]).stdout.splitlines()
            if line.strip()}


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def _stat_fields(pid):
    with open("/proc/%s/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()


def session_members(sids):
    """Pids still alive in any of the sessions ``sids`` (each event got its own)."""
    alive = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fields = _stat_fields(name)
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) in sids:   # field 6: session id
            alive.append(int(name))
    return alive


def process_tree(sid):
    """{pid: ppid} of the live processes of session ``sid``."""
    tree = {}
    for pid in session_members({sid}):
        try:
            tree[pid] = int(_stat_fields(pid)[1])
        except OSError:
            continue
    return tree


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
    """A simulated dom0 of another torture run or test on the machine (xrw9u-PID-N)."""
    parts = netns.split("-")
    return (len(parts) == 3 and parts[0] == "xr" + TAG and parts[1].isdigit()
            and int(parts[1]) != os.getpid())


def _under(path, directory):
    return os.path.realpath(path).startswith(os.path.realpath(directory).rstrip("/") + "/")


class Baseline:
    """What the host had before; check() lists what is more now. Loop devices:
    those backing a file under ``loop_dir`` (this run's images), or with our tag
    in the path when no loop_dir is given; namespaces: ours only, so other
    people's runs on the machine do not count. ``shared``: images that may be on
    several loop devices (each read-only)."""

    def __init__(self, journal_dir, lock_dirs, pid=None, loop_dir=None, shared=()):
        self.journal_dir, self.lock_dirs = journal_dir, list(lock_dirs)
        self.loop_dir, self.shared = loop_dir, set(shared)
        self.loops = self._ours(loop_devices())
        self.netns = namespaces()
        self.pid = pid or os.getpid()
        self.fds = fd_count(self.pid)

    def _ours(self, loops):
        if self.loop_dir is None:
            return {d: b for d, b in loops.items() if TAG in b}
        return {d: b for d, b in loops.items() if _under(b.removesuffix(" (deleted)"), self.loop_dir)}

    def check(self, sids=(), expected_loops=None):
        """``expected_loops``: {device: backing file} that may be there besides the
        baseline's (the disks attached now)."""
        leaks = []
        loops = self._ours(loop_devices())
        allowed = dict(self.loops, **(expected_loops or {}))
        leaks += ["loop device %s (%s)" % (d, loops[d]) for d in sorted(loops)
                  if d not in allowed or allowed[d] != loops[d]]
        doubled = {}
        for dev, back in loops.items():
            doubled.setdefault(back, []).append(dev)
        for back, devs in sorted(doubled.items()):
            if len(devs) > 1 and (back not in self.shared or not all(_read_only(d) for d in devs)):
                leaks.append("image %s on %d loop devices: %s" % (back, len(devs), " ".join(sorted(devs))))
        leaks += ["network namespace %s" % n for n in sorted(namespaces() - self.netns)
                  if TAG in n and not _another_runs(n)]
        leaks += ["journal or lock left: %s" % p for p in leftovers(self.journal_dir)]
        leaks += ["lock still held: %s" % p for p in held_locks(self.lock_dirs)]
        leaks += ["process %d of the round still alive" % p for p in session_members(set(sids))]
        fds = fd_count(self.pid)
        if fds > self.fds:
            leaks.append("fds of pid %d: %d, were %d" % (self.pid, fds, self.fds))
        return leaks


def _read_only(dev):
    try:
        with open("/sys/block/%s/ro" % os.path.basename(dev)) as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def _major_minor(dev):
    rdev = os.stat(dev).st_rdev
    return "%x:%x" % (os.major(rdev), os.minor(rdev))


# -- the devices -----------------------------------------------------------------

class Device:
    """One device of the dom0 and what its events must leave.

    kind: vif-bridge, vif-route, vif-nat, tap, block-file, block-shared,
    block-rw (asks the shared image read-write: always refused), block-phy."""

    def __init__(self, kind, domid, script, words, image=None, phy=None):
        self.kind, self.domid, self.script, self.words = kind, domid, script, words
        self.image, self.phy = image, phy
        self.up = False
        self.error_ok = False   # a refused or reverted event wrote hotplug-error
        block = kind.startswith("block")
        self.backend = "/local/domain/0/backend/%s/%d/%d" % (
            "vbd" if block else "vif", domid, VBD_DEVID if block else 0)
        self.link = "vif%d.0" % domid + ("-emu" if kind == "tap" else "")

    @property
    def name(self):
        return "%s %s" % (self.kind, self.link if not self.kind.startswith("block")
                          else "vbd %d" % self.domid)

    def command(self):
        return self.words[1] if self.up else self.words[0]

    def refused(self):
        return self.kind == "block-rw"

    def guest_ip(self):
        if self.kind == "vif-route":
            return "10.200.%d.%d" % (self.domid >> 8, self.domid & 0xff)
        if self.kind == "vif-nat":   # nat.host_address of 10.<domid/256>.<domid%256>.<vifid>
            return "10.%d.%d.1" % (self.domid >> 8, self.domid & 0xff)
        return None

    def problems(self, snap, up=None, reverted=False):
        """What is not as it should be for state ``up`` (default: self.up).
        reverted: the event ended by the deadline: hotplug-status may be error,
        or still what the state had."""
        up = self.up if up is None else up
        xs = snap["xs"]
        status = xs.get(self.backend + "/hotplug-status")
        out = []
        want_status = {True: "connected", False: snap["base"].get(self.backend + "/hotplug-status")}
        if self.kind == "tap":      # tap add reports nothing
            want_status[True] = want_status[False]
        if self.refused():
            want_status[False] = "busy"
        allowed = {want_status[up]}
        if not up and not self.refused():
            allowed.add("connected")   # an offline/remove leaves it: libxl removes the backend
        if reverted:
            allowed.add("error")
        if status not in allowed:
            out.append("hotplug-status %r, want %s" % (status, " or ".join(map(repr, sorted(allowed, key=str)))))
        if xs.get(self.backend + "/hotplug-error") is not None and not (self.error_ok or reverted):
            out.append("hotplug-error %r" % xs.get(self.backend + "/hotplug-error"))
        if self.kind.startswith("block"):
            out += self._block_problems(snap, up)
        else:
            out += self._net_problems(snap, up)
        return out

    def _net_problems(self, snap, up):
        link = snap["links"].get(self.link)
        if link is None:
            return ["%s gone" % self.link]
        out = []
        on_bridge, is_up = link.get("master"), "UP" in link.get("flags", [])
        if self.kind in ("vif-bridge", "tap"):
            if up and (on_bridge != "xenbr0" or not is_up):
                out.append("master %s, up %s; want on xenbr0, up" % (on_bridge, is_up))
            if not up and (on_bridge is not None or is_up):
                out.append("master %s, up %s; want off the bridge, down" % (on_bridge, is_up))
            return out
        routed = self.guest_ip() in snap["routes"].get(self.link, ())
        if up and not (is_up and routed):
            out.append("up %s, route to %s %s; want up and routed" % (is_up, self.guest_ip(), routed))
        if not up and routed:
            out.append("still a route to %s" % self.guest_ip())
        if not up and self.kind == "vif-nat" and is_up:
            out.append("still up")
        return out

    def _block_problems(self, snap, up):
        xs, out = snap["xs"], []
        pdev = xs.get(self.backend + "/physical-device")
        node = xs.get(self.backend + "/node")
        if self.kind == "block-phy":
            want = _major_minor(self.phy)
            if pdev != want and (up or pdev is not None):   # a remove leaves it, like bash
                out.append("physical-device %r, want %r" % (pdev, want if up else None))
            return out
        if not up:
            if pdev is not None and self.refused():
                out.append("physical-device %r written for a refused disk" % pdev)
            return out
        if not node or snap["loops"].get(node) != self.image:
            out.append("node %r backs %r, want %s" % (node, snap["loops"].get(node), self.image))
        elif pdev != _major_minor(node):
            out.append("physical-device %r, node %s is %s" % (pdev, node, _major_minor(node)))
        elif self.kind == "block-shared" and not _read_only(node):
            out.append("%s on the shared image is not read-only" % node)
        return out

    def attached(self, snap):
        """{loop device: image} this disk holds now (its expected loop device)."""
        node = snap["xs"].get(self.backend + "/node")
        if self.up and self.kind in ("block-file", "block-shared") and node:
            return {node: self.image}
        return {}


def _add_uplink(dom0):
    """eth0 with DOM0_IP/24, up: the address vif-route gives its vifs."""
    dom0.ip("link", "add", "name", "eth0", "type", "veth", "peer", "name", "eth0p")
    dom0.ip("address", "add", DOM0_IP + "/24", "dev", "eth0")
    dom0.ip("link", "set", "dev", "eth0", "up")
    dom0.ip("link", "set", "dev", "eth0p", "up")


def mix(events):
    """The kinds of a round of ``events`` devices: the block set (7 disks on 5
    loop-device images) once there are BLOCK_MIN_EVENTS, the rest spread over
    the four network kinds."""
    kinds = []
    if events >= BLOCK_MIN_EVENTS:
        kinds = ["block-file", "block-file", "block-shared", "block-shared", "block-rw",
                 "block-phy", "block-phy"]
    net = ("vif-bridge", "vif-route", "vif-nat", "tap")
    kinds += [net[i % len(net)] for i in range(events - len(kinds))]
    return kinds


# -- a round -------------------------------------------------------------------

def _spawn(dom0, argv, env, out):
    full_env = dict(dom0._base_env(), **env)
    actions = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
               (os.POSIX_SPAWN_OPEN, 1, out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
               (os.POSIX_SPAWN_DUP2, 1, 2)]
    return os.posix_spawn(shutil.which("ip"), ["ip", "netns", "exec", dom0.netns] + argv,
                          full_env, file_actions=actions, setsid=True)


class Torture:
    def __init__(self, dom0, workdir, devices, rng, kill_share, server=None, stall_share=0.0,
                 helper=True, crash_share=0.0):
        from xenrules.sandbox import vbd
        self.dom0, self.workdir, self.rng, self.kill_share = dom0, workdir, rng, kill_share
        self.server, self.stall_share = server, stall_share   # XenStore stalls: this share of rounds
        self.crash_share = crash_share   # the helper killed whole: this share of helper rounds
        self.vbd = vbd
        self.figures = {"events": 0, "killed": 0, "recovered": 0, "failures": 0, "leaks": 0,
                        "state_lost": 0, "rounds": 0, "stall_reverted": 0, "refused": 0,
                        "helper_served": 0, "helper_lost": 0, "helper_replayed": 0, "recover_replayed": 0,
                        "killed_when_done": 0,
                        "faults": {"sigkill": 0, "xs_stall": 0, "helper_killed": 0},
                        "by_kind": {m: {} for m in MODES},
                        "rounds_by_mode": {m: 0 for m in MODES}}
        self.findings = []
        self.durations = {}   # kind -> seconds of its events that were not killed
        self.helper = None
        self.images = None
        self.phys = []
        self.bindir = os.path.join(workdir, "bin")
        os.mkdir(self.bindir)
        for script in ("vif-bridge", "vif-route", "vif-nat", "block"):
            os.symlink(LAUNCHER, os.path.join(self.bindir, script))
        # a short event deadline, so an event caught in a XenStore stall ends (reverted) soon
        self.xr_env = dict(dom0.xenrules_env(), XENRULES_DEADLINE=str(DEADLINE),
                           XENRULES_PYTHONPATH=REPO_ROOT,
                           XENRULES_LOCK_DIR=os.path.join(dom0.state_dir, "locks"),
                           XENRULES_LOG_FILE=os.path.join(workdir, "hotplug.log"))
        self.helper_socket = os.path.join(workdir, "run", "helper.sock")
        self.stats = os.path.join(workdir, "helper.stats")
        try:   # whatever fails here, the loop devices made so far are detached
            _add_uplink(dom0)
            self.devices = self._make_devices(mix(devices))
            self.anchor = None
            if any(d.kind == "block-shared" for d in self.devices):
                self.anchor = self._anchor()
            if helper:
                self.start_helper()
        except BaseException:
            self.close()
            raise
        self.base = dict(server.snapshot()) if server is not None else self._xs_snapshot()
        shared = {self.shared_image} if self.images else ()
        self.baseline = Baseline(dom0.journal_dir, [dom0.state_dir, dom0.journal_dir],
                                 loop_dir=workdir, shared=shared)

    # -- set-up ------------------------------------------------------------------

    def _make_devices(self, kinds):
        out, domid = [], 0
        images = {}
        for kind in kinds:
            domid += 1
            if kind == "vif-bridge":
                self.dom0.add_vif(domid, 0)
                out.append(Device(kind, domid, "vif-bridge", ("online", "offline")))
            elif kind == "tap":
                self.dom0.add_vif(domid, 0)
                self.dom0.add_tap(domid, 0)
                out.append(Device(kind, domid, "vif-bridge", ("add", "remove")))
            elif kind == "vif-route":
                d = Device(kind, domid, "vif-route", ("online", "offline"))
                self.dom0.add_vif(domid, 0, bridge=None, ip=d.guest_ip(), script="vif-route")
                out.append(d)
            elif kind == "vif-nat":
                self.dom0.add_vif(domid, 0, bridge=None, script="vif-nat")
                out.append(Device(kind, domid, "vif-nat", ("online", "offline")))
            else:
                if self.images is None:
                    self.images = self.vbd.Images(self.workdir, prefix="xr-%s-img-" % TAG)
                    self.shared_image = self.images.make("%s-shared.img" % TAG)
                n = images[kind] = images.get(kind, 0) + 1
                image, phy, mode = None, None, "w"
                if kind == "block-file":
                    image = self.images.make("%s-file%d.img" % (TAG, n))
                elif kind in ("block-shared", "block-rw"):
                    image, mode = self.shared_image, "r" if kind == "block-shared" else "w"
                else:   # block-phy: a block device of dom0's, here a loop device of ours
                    name = "%s-phy%d.img" % (TAG, n)
                    self.images.make(name)
                    phy = self.images.attach(name)
                    self.phys.append((phy, os.path.join(self.images.dir, name)))
                self.vbd.add_vbd(self.dom0, domid, VBD_DEVID, params=phy or image, mode=mode,
                                 type="phy" if phy else "file")
                out.append(Device(kind, domid, "block", ("add", "remove"), image=image, phy=phy))
        return out

    def _anchor(self):
        """A guest holding the shared image read-only all the run long: the
        read-write guest is refused every round, whatever the others do."""
        domid = len(self.devices) + 1
        d = Device("block-shared", domid, "block", ("add", "remove"), image=self.shared_image)
        self.vbd.add_vbd(self.dom0, domid, VBD_DEVID, params=self.shared_image, mode="r", type="file")
        proc = self.dom0.run([os.path.join(self.bindir, "block"), "add"], self._env(d, None))
        if proc.returncode != 0:
            raise TortureError("the shared image's first guest: exit %d: %s"
                               % (proc.returncode, proc.stdout + proc.stderr))
        d.up = True
        return d

    def start_helper(self):
        """Start the helper and wait for its socket; returns how many journals it
        replayed before serving (its log says)."""
        log_path = os.path.join(self.workdir, "helper.log")
        try:
            before = os.path.getsize(log_path)
        except OSError:
            before = 0
        env = dict(self.dom0._base_env(), **self.xr_env)
        env["XENRULES_HELPER_SOCKET"] = self.helper_socket
        log = open(os.path.join(self.workdir, "helper.log"), "ab")
        self.helper = subprocess.Popen(
            ["ip", "netns", "exec", self.dom0.netns, PYTHON, "-m", "xenrules.helper",
             "--socket", self.helper_socket, "--stats", self.stats,
             "--max-events", str(HELPER_MAX_EVENTS)],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd="/")
        log.close()
        deadline = time.monotonic() + 60
        while not os.path.exists(self.helper_socket):
            if self.helper.poll() is not None or time.monotonic() > deadline:
                raise TortureError("the helper did not start: " + self._file("helper.log"))
            time.sleep(0.05)
        # settled: the spares are forked (the fd and process baselines)
        time.sleep(0.5)
        self.helper_fds = fd_count(self.helper.pid)
        with open(log_path, errors="replace") as f:
            f.seek(before)
            said = f.read()
        replayed = 0
        for line in said.splitlines():   # "recovered N journal(s), L left alone, F undo(s) failed"
            words = line.split("recovered ", 1)[-1].replace(",", "").split()
            if "recovered " in line and len(words) >= 7 and words[0].isdigit():
                replayed += int(words[0])
                if words[5] != "0":
                    self._finding("failure", "the helper's replay at start: " + line)
        return replayed

    def _crash_helper(self):
        """The helper dies at once, every process of it (an OOM kill, a crash):
        the events its workers ran are cut wherever they were."""
        for _ in range(50):
            members = session_members({self.helper.pid})
            if not members:
                break
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
        self.helper.wait()

    def stop_helper(self):
        if self.helper is None:
            return
        for pid in session_members({self.helper.pid}):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.helper.wait()
        self.helper = None

    def close(self):
        """Stop the helper; take the disks down and detach every loop device of the
        run (also after a failure: the machine has few)."""
        self.stop_helper()
        if self.images is not None:
            left = self.images.cleanup()
            if left:
                print("  could not detach: %s" % left, flush=True)

    # -- events ------------------------------------------------------------------

    def _env(self, dev, mode):
        if dev.kind.startswith("block"):
            env = self.vbd.block_env(self.dom0, dev.domid, VBD_DEVID)
        else:
            env = self.dom0.hotplug_env(dev.domid, 0, type_if="tap" if dev.kind == "tap" else "vif",
                                        script=dev.script)
        env.update(self.xr_env)
        if dev.kind == "vif-nat":
            env["dhcp"] = "no"
        env["XENRULES_HELPER_SOCKET"] = self.helper_socket if mode == "helper" else ""
        return env

    def _event(self, dev, mode):
        argv = [os.path.join(self.bindir, dev.script), dev.command()]
        if not dev.kind.startswith("block"):
            argv.append("type_if=" + ("tap" if dev.kind == "tap" else "vif"))
        out = os.path.join(self.workdir, "ev%d.out" % dev.domid)
        return _spawn(self.dom0, argv, self._env(dev, mode), out)

    def _fire(self, devices, kill, mode):
        """Start every event at once; SIGKILL the ``kill`` ones (the launcher's process
        group, as libxl does) after a random share of what such an event took in the
        rounds before, so the kills land anywhere in the events' lives.
        Returns {device: exit code} (negative: killed)."""
        import select
        pids, timers, fds, started = {}, [], {}, {}
        poller = select.poll()
        for dev in devices:   # each kill timed from its own event's start
            pid = self._event(dev, mode)
            pids[pid] = dev
            started[pid] = time.monotonic()
            fd = os.pidfd_open(pid)
            fds[fd] = pid
            poller.register(fd, select.POLLIN)
            by_kind = self.figures["by_kind"][mode]
            by_kind[dev.kind] = by_kind.get(dev.kind, 0) + 1
            if dev in kill:
                t = threading.Timer(self.rng.uniform(0.0, self._typical(dev.kind)), _killpg, (pid,))
                t.start()
                timers.append(t)
        codes = {}
        while fds:
            for fd, _ in poller.poll():
                pid = fds.pop(fd)
                poller.unregister(fd)
                os.close(fd)
                _, status = os.waitpid(pid, 0)
                dev = pids[pid]
                codes[dev] = os.waitstatus_to_exitcode(status)
                if codes[dev] != -signal.SIGKILL:
                    self.durations.setdefault(dev.kind, []).append(time.monotonic() - started[pid])
        for t in timers:
            t.cancel()
        self.sids |= set(pids)
        if mode == "helper":
            self.figures["helper_served"] += len(set(pids) & self._served())
        return codes

    def _typical(self, kind=None):
        """The median time an event of this kind (of any kind) took so far, or a
        guess before any ended: 0.5 s (0.2 s for any)."""
        if kind is None:
            seen = sorted(x for v in self.durations.values() for x in v[-512:])
        else:
            seen = sorted(self.durations.get(kind, ())[-512:])
        return seen[len(seen) // 2] if seen else (0.5 if kind else 0.2)

    def _served(self):
        try:
            with open(self.stats) as f:
                return {int(line.split()[0]) for line in f if line.strip()}
        except OSError:
            return set()

    def _file(self, name):
        try:
            with open(os.path.join(self.workdir, name), errors="replace") as f:
                return f.read()[-600:]
        except OSError:
            return ""

    def _why(self, dev):
        return self._file("ev%d.out" % dev.domid)

    def _settled(self, dev, code, snap_before_up, stall):
        """Account one ended event; returns 'ok', 'killed', 'reverted' or None (a failure)."""
        if code == -signal.SIGKILL:
            return "killed"
        if dev.refused() and code == 1:   # refused by the sharing check, not by anything else
            xs = self.server.snapshot()
            if xs.get(dev.backend + "/hotplug-status") == "busy" and \
                    "cannot be mounted" in (xs.get(dev.backend + "/hotplug-error") or ""):
                return "refused"
        if code == 0:
            return "ok"
        if code == 1 and HELPER_LOST in self._why(dev):
            return "lost"   # the helper died under it: not run again, its journal left
        if stall and not dev.problems(self._snapshot(), up=snap_before_up, reverted=True):
            return "reverted"
        return None

    def _outcome(self, codes, stall, again=False):
        """Apply exit codes to the model; returns the devices to fire again."""
        redo = set()
        for dev, code in codes.items():
            how = self._settled(dev, code, dev.up, stall)
            if how == "killed":
                self.figures["killed"] += 1
                self.figures["faults"]["sigkill"] += 1
                redo.add(dev)
            elif how == "refused":
                self.figures["refused"] += 1
                self.figures["recovered"] += again and dev in self.killed
                dev.error_ok = True
            elif how == "ok":
                dev.up = not dev.up
                self.figures["recovered"] += again and dev in self.killed
            elif how == "lost":
                self.figures["helper_lost"] += 1
                redo.add(dev)
            elif how == "reverted":
                self.figures["stall_reverted"] += 1
                dev.error_ok = True
                redo.add(dev)
            else:
                self._finding("failure", "%s %s%s exit %d: %s" % (
                    dev.name, dev.command(), " after recovery" if again else "", code,
                    self._why(dev)))
        return redo

    def _after_recovery(self, redo):
        """A killed (or cut) event, once recovered, left its device exactly as
        before it (undone: its event is fired again), or, killed after its last
        step and the journal's unlink (nothing left to undo), exactly as after
        it: then it counts as done. Anything else is half-done: state lost."""
        snap = self._snapshot()
        again = set()
        for dev in redo:
            if dev.refused():   # refused or not, undone or not: the same ask again
                again.add(dev)
            elif not dev.problems(snap, reverted=dev.error_ok):
                again.add(dev)
            elif not dev.problems(snap, up=not dev.up, reverted=dev.error_ok):
                self.figures["killed_when_done"] += 1
                self.figures["recovered"] += dev in self.killed
                dev.up = not dev.up
            else:
                for p in dev.problems(snap, reverted=dev.error_ok):
                    self._finding("state_lost", "%s after recovery of its %s, neither before nor "
                                  "after: %s" % (dev.name, dev.command(), p))
                again.add(dev)   # the next event must still converge
        return again

    def round(self, mode=None):
        mode = mode or MODES[self.figures["rounds"] % 2 if self.helper else 0]
        self.sids = set()
        kill = set()
        if self.kill_share > 0:
            nets = [d for d in self.devices if not d.kind.startswith("block")]
            disks = [d for d in self.devices if d.kind.startswith("block")]
            kill = set(self.rng.sample(nets, max(1, round(len(nets) * self.kill_share))) if nets else [])
            # the disks are few (the machine has few loop devices): each has
            # BLOCK_KILL_FACTOR times the share, so kills hit them every round or two
            kill |= {d for d in disks
                     if self.rng.random() < min(1.0, self.kill_share * BLOCK_KILL_FACTOR)}
        stall = None
        if self.server is not None and self.rng.random() < self.stall_share:
            # begins within the first half of a typical event: while most are in flight
            delay = STALL_DELAY if STALL_DELAY is not None else self.rng.uniform(0.0, 0.5 * self._typical())
            stall = threading.Timer(delay, self.server.stall,
                                    (self.rng.uniform(*STALL_SECONDS),))
            stall.start()
            self.figures["faults"]["xs_stall"] += 1
        crash = None
        if mode == "helper" and self.rng.random() < self.crash_share:
            crash = threading.Timer(self.rng.uniform(0.0, 0.5 * self._typical()), self._crash_helper)
            crash.start()
            self.figures["faults"]["helper_killed"] += 1
        codes = self._fire(self.devices, kill, mode)
        if stall is not None:
            stall.join()
            self.server.stall(0)   # every event has ended: the stall has done its work
        self.figures["events"] += len(codes)
        self.killed = {d for d, c in codes.items() if c == -signal.SIGKILL}
        redo = self._outcome(codes, stall is not None)
        if crash is not None:
            # recovery by the helper's own start: it replays every journal first
            crash.join()
            self.figures["helper_replayed"] += self.start_helper()
            for path in leftovers(self.dom0.journal_dir):
                self._finding("leak", "journal left after the helper's start: %s" % path)
        else:
            # recovery: `xenrules recover`, then the killed/reverted devices' event once more
            proc = self.dom0.run([PYTHON, "-m", "xenrules", "recover"], dict(self.xr_env))
            if proc.returncode != 0:
                self._finding("failure", "recover exit %d: %s" % (proc.returncode, proc.stdout[-600:]))
            # its last line: "N journal(s) undone, L left alone, F undo(s) failed"
            words = (proc.stdout.strip().splitlines() or [""])[-1].split()
            self.figures["recover_replayed"] += int(words[0]) if words and words[0].isdigit() else 0
        redo = self._after_recovery(redo)
        if redo:
            again = self._fire(sorted(redo, key=lambda d: d.domid), set(), mode)
            self.figures["events"] += len(again)
            for dev in self._outcome(again, False, again=True):
                self._finding("failure", "%s killed again?" % dev.name)
        self.check()
        self.figures["rounds"] += 1
        self.figures["rounds_by_mode"][mode] += 1
        return mode

    # -- the checks --------------------------------------------------------------

    def _xs_snapshot(self):
        return self.dom0.xenstore_snapshot()

    def _snapshot(self):
        routes = {}
        for r in self.dom0.ip_json("-4", "route", "show"):
            routes.setdefault(r.get("dev"), set()).add(r.get("dst"))
        return {"xs": self.server.snapshot() if self.server is not None else self._xs_snapshot(),
                "base": self.base, "links": self.dom0.links(), "routes": routes,
                "loops": self.baseline._ours(loop_devices())}

    def check(self):
        snap = self._snapshot()
        everyone = self.devices + ([self.anchor] if self.anchor else [])
        for dev in everyone:
            for p in dev.problems(snap):
                self._finding("state_lost", "%s (%s): %s" % (dev.name, "up" if dev.up else "down", p))
        self._check_tree(snap, everyone)
        expected = {}
        for dev in everyone:
            expected.update(dev.attached(snap))
        expected.update({phy: image for phy, image in self.phys})
        missing = sorted(set(expected) - set(snap["loops"]))
        for dev in missing:
            self._finding("state_lost", "loop device %s (%s) detached" % (dev, expected[dev]))
        given = {}
        for path, value in snap["xs"].items():
            if path.startswith("/local/domain/0/backend/vbd/") and path.endswith("/physical-device"):
                given.setdefault(value, []).append(path)
        for value, paths in sorted(given.items()):
            if len(paths) > 1:
                self._finding("leak", "device %s given to %d guests: %s" % (value, len(paths), paths))
        for leak in self.baseline.check(self.sids, expected) + self._helper_leaks():
            self._finding("leak", leak)
        self._libxl_cleanup(everyone)

    def _owned(self, path):
        parent, _, key = path.rpartition("/")
        return key in OWNED and parent in self.backends

    def _check_tree(self, snap, everyone):
        """Every xenstore node as in the baseline, but those the events own
        (checked per device above)."""
        self.backends = {d.backend for d in everyone}
        xs, base = snap["xs"], self.base
        for path in sorted(set(xs) | set(base)):
            if self._owned(path) or xs.get(path) == base.get(path):
                continue
            if path not in xs:
                self._finding("state_lost", "xenstore %s removed (was %r)" % (path, base[path]))
            else:
                self._finding("state_lost", "xenstore %s = %r, was %r" % (path, xs[path], base.get(path)))

    def _libxl_cleanup(self, everyone):
        """libxl's part: a device down has its backend keys back as before its first
        event (libxl removes the backend after offline/remove, and writes it anew);
        a refused or reverted event's hotplug-error is read and gone."""
        xs = self.server.snapshot() if self.server is not None else self._xs_snapshot()
        for dev in everyone:
            if dev.up and not dev.error_ok:
                continue
            keys = OWNED if not dev.up else ("hotplug-error",)
            for key in keys:
                path = dev.backend + "/" + key
                if xs.get(path) == self.base.get(path):
                    continue
                if self.base.get(path) is None:
                    self.dom0.xs_rm(path)
                else:
                    self.dom0.xs_write(path, self.base[path])
            dev.error_ok = False

    def _helper_leaks(self):
        """Nothing of an event left under the helper's workers (a worker's child),
        at most its supervisors and their workers, no fd more in its main process."""
        if self.helper is None:
            return []
        if self.helper.poll() is not None:
            return ["the helper died: exit %s: %s" % (self.helper.returncode, self._file("helper.log"))]
        main = self.helper.pid
        for _ in range(100):   # a killed launcher's worker is killed by its supervisor, soon
            tree = process_tree(main)
            depth = {main: 0}
            for _ in range(4):
                for pid, ppid in tree.items():
                    if ppid in depth:
                        depth[pid] = depth[ppid] + 1
            deep = sorted(p for p, n in depth.items() if n > 2)
            if not deep:
                break
            time.sleep(0.1)
        leaks = ["helper process %d (%s) left under a worker" % (p, _comm(p)) for p in deep]
        if len(tree) > 1 + 2 * HELPER_MAX_EVENTS:
            leaks.append("helper has %d processes" % len(tree))
        fds = fd_count(main)
        if fds > self.helper_fds:
            leaks.append("fds of the helper: %d, were %d" % (fds, self.helper_fds))
        return leaks

    def _finding(self, kind, text):
        key = {"failure": "failures", "leak": "leaks", "state_lost": "state_lost"}[kind]
        self.figures[key] += 1
        self.findings.append("%s: %s" % (kind, text))
        print("  FINDING %s: %s" % (kind, text), flush=True)


def _comm(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")[:120]
    except OSError:
        return "?"


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


def _kinds_table(f):
    kinds = sorted({k for m in MODES for k in f["by_kind"].get(m, {})})
    rows = ["| event kind | %s |" % " | ".join(MODES), "|---|%s" % ("---|" * len(MODES))]
    for k in kinds:
        rows.append("| %s | %s |" % (k, " | ".join(str(f["by_kind"].get(m, {}).get(k, 0)) for m in MODES)))
    return rows


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
        "| rounds (in-process, helper) | %d (%d, %d) |" % (
            f["rounds"], f["rounds_by_mode"]["in-process"], f["rounds_by_mode"]["helper"]),
        "| events run (devices per round) | %d (%d) |" % (f["events"], result["events_per_round"]),
        "| events offered to the warm helper and served by it | %d |" % f["helper_served"],
        "| events SIGKILLed | %d |" % f["killed"],
        "| killed events recovered (undone then their next event succeeded, or found done) | %d |" % f["recovered"],
        "| journals replayed by `xenrules recover` | %d |" % f["recover_replayed"],
        "| killed after their last step and journal unlink (done, nothing to undo) | %d |"
        % f["killed_when_done"],
        "| read-write asks of a shared image refused (expected) | %d |" % f["refused"],
        "| events cut by the helper's death (journals its restart replayed) | %d (%d) |"
        % (f["helper_lost"], f["helper_replayed"]),
        "| events reverted by the deadline under a XenStore stall (allowed) | %d |"
        % f.get("stall_reverted", 0),
        "| faults injected | %s |" % ", ".join("%s %d" % kv for kv in sorted(f["faults"].items())),
        "| failures (goal 0) | %d |" % f["failures"],
        "| leaks (goal 0) | %d |" % f["leaks"],
        "| state lost (goal 0) | %d |" % f["state_lost"],
        "| running time | %.1f s |" % result["seconds"],
        "| seed | %d |" % result["seed"],
        "",
        "Events by kind and mode (re-fired events after a kill or a revert included):",
        "",
    ] + _kinds_table(f) + [
        "",
        "Events through bin/xenrules-launcher: vif-bridge, vif-route, vif-nat (dhcp off)"
        " online/offline; tap add/remove (vif-bridge); block add/remove of images (file, a"
        " loop device each), of loop devices given as phy, of an image shared read-only by"
        " several guests, and its read-write ask (refused). Rounds alternate between no"
        " helper and a warm helper (%d workers at most; the launcher runs the rest"
        " in-process); in some helper rounds the whole helper is SIGKILLed and restarted"
        " (its start replays the journals, not `xenrules recover`). XENRULES_DEADLINE=%d s;"
        " a XenStore stall lasts %.1f-%.1f s."
        % ((HELPER_MAX_EVENTS, DEADLINE) + STALL_SECONDS),
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


@contextlib.contextmanager
def session(events, seed, kill_share=0.1, stall_share=0.3, helper=True, crash_share=0.0):
    """A XenStore server, a simulated dom0 and a Torture on them; everything
    (the helper, the loop devices, the namespace, the run's files) gone after."""
    from xenrules.sandbox.xsserver import XenstoreServer
    from xenrules.sandbox.dom0 import SimulatedDom0
    rng = random.Random(seed)
    top = tempfile.mkdtemp(prefix="xr-%s-torture-" % TAG, dir="/tmp")
    server = XenstoreServer(os.path.join(top, "xs.sock"))
    server.start()
    try:
        with SimulatedDom0(server, prefix="xr%s" % TAG) as dom0:
            t = Torture(dom0, top, events, rng, kill_share, server, stall_share, helper, crash_share)
            try:
                yield t
            finally:
                t.close()
    finally:
        server.stop()
        shutil.rmtree(top, ignore_errors=True)


def run(rounds, events, seed, kill_share=0.1, report=True, log=print, stall_share=0.3, helper=True,
        crash_share=0.0):
    started = time.monotonic()
    with session(events, seed, kill_share, stall_share, helper, crash_share) as t:
        for n in range(rounds):
            mode = t.round()
            log("round %d/%d (%s): %s" % (n + 1, rounds, mode, json.dumps(
                {k: v for k, v in t.figures.items() if k != "by_kind"})))
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
    p.add_argument("--rounds", type=int, default=10, help="rounds, alternating no helper / helper")
    p.add_argument("--events", type=int, default=256, help="devices, so events, per round")
    p.add_argument("--seed", type=int, default=9)
    p.add_argument("--stall-share", type=float, default=0.3,
                   help="share of rounds with a XenStore stall of 0.5-2 s")
    p.add_argument("--crash-share", type=float, default=0.4,
                   help="share of helper rounds in which the whole helper is SIGKILLed")
    p.add_argument("--quick", action="store_true", help="two rounds (one per mode) of 16 events")
    a = p.parse_args(argv)
    if a.quick:
        a.rounds, a.events = 2, 16
    result = run(a.rounds, a.events, a.seed, stall_share=a.stall_share, crash_share=a.crash_share)
    f = result["torture"]
    print("torture: %d events, %d killed, %d recovered, %d refused, %d served by the helper, "
          "%d failures, %d leaks, %d state lost, %.1f s"
          % (f["events"], f["killed"], f["recovered"], f["refused"], f["helper_served"],
             f["failures"], f["leaks"], f["state_lost"], result["seconds"]))
    import reliability_report
    print(reliability_report.summary_line(result["other"]))
    return 1 if f["failures"] or f["leaks"] or f["state_lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
