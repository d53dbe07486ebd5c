"""block through xenrules in a simulated dom0: every action, every error path.

Real loop devices on images in a directory of each test's own (detached at
the end whatever happens), a real XenStore server, the shipped rule file
alone (rules.d/50-block.yaml), locks and log under tmp_path.
"""

import os
import subprocess
import textwrap

import pytest

from events import wait_for
from xenrules.locking import HotplugLock
from xenrules.sandbox import vbd
from xenrules.sandbox.dom0 import PYTHON, REPO_ROOT
from xenrules.steps import loop

pytestmark = pytest.mark.netns

DOMID, DEVID = 1, 51712
BACK = vbd.backend_path(DOMID, DEVID)
RULE_FILE = os.path.join(REPO_ROOT, "rules.d", "50-block.yaml")


class Block:
    """One dom0, its images, and `block` events run through xenrules."""

    def __init__(self, dom0, tmp_path):
        self.dom0 = dom0
        self.tmp = tmp_path
        self.images = vbd.Images(str(tmp_path))
        self.mounts = []
        self.rules = tmp_path / "rules"
        self.rules.mkdir()
        os.symlink(RULE_FILE, self.rules / "50-block.yaml")
        self.originals = tmp_path / "originals"      # empty: no fallback unless a test fills it
        self.originals.mkdir()
        self.lock_dir = tmp_path / "locks"
        self.log_file = tmp_path / "xen-hotplug.log"

    def env(self, domid=DOMID, devid=DEVID, **extra):
        env = vbd.block_env(self.dom0, domid, devid)
        env.update({"PYTHONPATH": REPO_ROOT,
                    "XENRULES_RULES_PATH": str(self.rules),
                    "XENRULES_STATE_DIR": str(self.tmp / "state"),
                    "XENRULES_LOCK_DIR": str(self.lock_dir),
                    "XENRULES_JOURNAL_DIR": str(self.tmp / "journal"),
                    "XENRULES_LOG_FILE": str(self.log_file),
                    "XENRULES_ORIGINALS_DIR": str(self.originals)})
        env.update(extra)
        return env

    def argv(self, action):
        return [PYTHON, "-m", "xenrules.hotplug", "block", action]

    def run(self, action, domid=DOMID, devid=DEVID, **extra):
        argv = self.argv(action)
        if self.mounts:   # one mount per test: each lives in a namespace of its own
            argv = self.mounts[-1].wrap(argv)
        return self.dom0.run(argv, self.env(domid, devid, **extra))

    def back(self, key, domid=DOMID, devid=DEVID):
        return self.dom0.xs_read(vbd.backend_path(domid, devid) + "/" + key)

    def log(self):
        return self.log_file.read_text() if self.log_file.exists() else ""

    def why(self, proc):
        return "exit %d\nstderr: %s\nlog: %s" % (proc.returncode, proc.stderr, self.log())

    def mount(self, dev, read_only):
        """Mount dev in this dom0 (a mount namespace of its own: see PrivateMount)."""
        where = os.path.join(self.images.dir, "mnt%d" % len(self.mounts))
        self.mounts.append(vbd.PrivateMount(dev, where, read_only))

    def cleanup(self):
        for m in reversed(self.mounts):
            m.close()
        return self.images.cleanup()


@pytest.fixture
def blk(dom0_factory, tmp_path):
    b = Block(dom0_factory(bridges=()), tmp_path)
    try:
        yield b
    finally:
        left = b.cleanup()
        assert not left, "loop devices left attached: %s" % left


def file_vbd(blk, mode="w", name="disk.img", image_mode=0o644, **keys):
    path = blk.images.make(name, mode=image_mode)
    vbd.add_vbd(blk.dom0, DOMID, DEVID, params=path, mode=mode, **keys)
    return path


# -- the two branches, add then remove ---------------------------------------------

@pytest.mark.parametrize("mode,read_only", [("w", False), ("r", True), ("w!", False), ("rw", False)])
def test_file_add_attaches_a_loop_device_and_remove_detaches_it(blk, mode, read_only):
    path = file_vbd(blk, mode)
    proc = blk.run("add")
    assert proc.returncode == 0, blk.why(proc)
    node = blk.back("node")
    assert blk.images.devices() == {node: path}
    assert bool(loop.status(node)["flags"] & loop.LO_FLAGS_READ_ONLY) is read_only
    assert blk.back("physical-device") == vbd.major_minor(node)
    assert blk.back("physical-device-path") == node
    assert blk.back("hotplug-status") == "connected"
    assert not os.path.exists(blk.lock_dir / "block"), "the block lock was not released"
    proc = blk.run("remove")
    assert proc.returncode == 0, blk.why(proc)
    assert blk.images.devices() == {}


def test_phy_add_writes_the_device_and_remove_leaves_it(blk):
    blk.images.make("phy.img")
    dev = blk.images.attach("phy.img")
    link = os.path.join(blk.images.dir, "by-name")
    os.symlink(dev, link)
    vbd.add_vbd(blk.dom0, DOMID, DEVID, params=link, mode="w")
    proc = blk.run("add")
    assert proc.returncode == 0, blk.why(proc)
    assert blk.back("physical-device") == vbd.major_minor(dev)
    assert blk.back("physical-device-path") == dev
    assert blk.back("node") is None
    assert blk.back("hotplug-status") == "connected"
    assert blk.run("remove").returncode == 0
    assert list(blk.images.devices()) == [dev]


def test_a_device_name_without_dev_is_looked_up_under_dev(blk):
    # expand_dev: `phy:loopN` means /dev/loopN (the original only gets there
    # when run from /dev; xenrules always does, as expand_dev intends)
    blk.images.make("phy.img")
    dev = blk.images.attach("phy.img")
    vbd.add_vbd(blk.dom0, DOMID, DEVID, params=os.path.basename(dev), mode="r")
    proc = blk.run("add")
    assert proc.returncode == 0, blk.why(proc)
    assert blk.back("physical-device-path") == dev


def test_add_twice_leaves_the_first_result(blk):
    file_vbd(blk)
    assert blk.run("add").returncode == 0
    node = blk.back("node")
    assert blk.run("add").returncode == 0
    assert blk.back("node") == node
    assert len(blk.images.devices()) == 1


# -- error paths ----------------------------------------------------------------------

def assert_failed(blk, proc, status, message):
    assert proc.returncode == 1, blk.why(proc)
    assert blk.back("hotplug-status") == status
    assert blk.back("hotplug-error") == message
    assert blk.images.devices() == {} or status == "busy"


def test_missing_image(blk):
    path = os.path.join(blk.images.dir, "missing.img")
    vbd.add_vbd(blk.dom0, DOMID, DEVID, params=path, type="file", mode="w")
    assert_failed(blk, blk.run("add"), "error", "%s does not exist." % path)


def test_missing_directory_of_the_image(blk):
    path = os.path.join(blk.images.dir, "nodir", "missing.img")
    vbd.add_vbd(blk.dom0, DOMID, DEVID, params=path, type="file", mode="w")
    assert_failed(blk, blk.run("add"), "error", "%s does not exist." % path)


def test_phy_that_is_not_a_block_device(blk):
    vbd.add_vbd(blk.dom0, DOMID, DEVID, params="/dev/null", type="phy", mode="w")
    assert_failed(blk, blk.run("add"), "error", "/dev/null is not a block device.")


def test_phy_link_into_nowhere(blk):
    link = os.path.join(blk.images.dir, "dangling")
    os.symlink("/nonexistent-xr-dir/disk", link)
    vbd.add_vbd(blk.dom0, DOMID, DEVID, params=link, type="phy", mode="w")
    assert_failed(blk, blk.run("add"), "error", "%s link does not exist." % link)


def test_read_only_image_asked_read_write_is_busy(blk):
    path = file_vbd(blk, "w", image_mode=0o444)
    assert_failed(blk, blk.run("add"), "busy",
                  "File %s is read-only, and so I will not\nmount it read-write in a guest domain."
                  % path)
    assert blk.images.devices() == {}


@pytest.mark.parametrize("key", ["params", "mode", "frontend-id"])
def test_missing_backend_key(blk, key):
    file_vbd(blk)
    blk.dom0.xs_rm(BACK + "/" + key)
    assert_failed(blk, blk.run("add"), "error", "xenstore-read backend/vbd/1/51712/%s failed." % key)


def test_backend_closing_during_add(blk):
    file_vbd(blk, state=6)
    assert_failed(blk, blk.run("add"), "error",
                  "Path closed or removed during hotplug add: backend/vbd/1/51712 state: 6")


def test_remove_without_node_fails_like_the_original(blk):
    file_vbd(blk)
    assert_failed(blk, blk.run("remove"), "error", "xenstore-read backend/vbd/1/51712/node failed.")


def test_remove_detaches_even_when_the_image_was_deleted(blk):
    path = file_vbd(blk)
    assert blk.run("add").returncode == 0
    os.unlink(path)
    proc = blk.run("remove")
    assert proc.returncode == 0, blk.why(proc)
    assert blk.images.devices() == {}


def test_without_xenbus_path_nothing_happens(blk):
    file_vbd(blk)
    proc = blk.run("add", XENBUS_PATH="")
    assert proc.returncode == 1
    assert "required variable(s) not set: backend" in blk.log()
    assert blk.images.devices() == {}


# -- sharing --------------------------------------------------------------------------

def other_guest_uses(blk, dev, mode="w", domid=2, **domain):
    if domain:
        vbd.add_domain(blk.dom0, domid, **domain)
    vbd.add_vbd(blk.dom0, domid, 51712, params=dev, mode=mode, state=4,
                **{"physical-device": vbd.major_minor(dev), "physical-device-path": dev})


def test_device_used_by_another_guest_is_busy(blk):
    blk.images.make("phy.img")
    dev = blk.images.attach("phy.img")
    other_guest_uses(blk, dev)
    vbd.add_vbd(blk.dom0, DOMID, DEVID, params=dev, mode="w")
    assert_failed(blk, blk.run("add"), "busy",
                  "Device %s is mounted in a guest domain,\nand so cannot be mounted now." % dev)
    assert blk.back("physical-device") is None


def test_device_used_by_own_stubdom_is_fine(blk):
    blk.images.make("phy.img")
    dev = blk.images.attach("phy.img")
    other_guest_uses(blk, dev, target=DOMID)
    vbd.add_vbd(blk.dom0, DOMID, DEVID, params=dev, mode="w")
    proc = blk.run("add")
    assert proc.returncode == 0, blk.why(proc)


def test_image_in_use_by_another_guest_is_busy(blk):
    path = blk.images.make("disk.img")
    dev = blk.images.attach("disk.img")
    other_guest_uses(blk, dev)
    vbd.add_vbd(blk.dom0, DOMID, DEVID, params=path, mode="r")
    assert_failed(blk, blk.run("add"), "busy",
                  "File %s is loopback-mounted through %s,\nwhich is mounted read-write in a "
                  "guest domain,\nand so cannot be mounted read-only now."
                  % (path, vbd.major_minor(dev)))
    assert list(blk.images.devices()) == [dev]


def test_image_attached_but_unused_can_be_shared(blk):
    path = blk.images.make("disk.img")
    blk.images.attach("disk.img")
    vbd.add_vbd(blk.dom0, DOMID, DEVID, params=path, mode="w")
    proc = blk.run("add")
    assert proc.returncode == 0, blk.why(proc)
    assert len(blk.images.devices()) == 2


@pytest.mark.parametrize("mount_ro,mode,message", [
    (False, "r", "Device {dev} is mounted read-write in the privileged domain,\n"
                 "and so cannot be mounted read-only by a guest."),
    (True, "w", "Device {dev} is mounted in the privileged domain,\n"
                "and so cannot be mounted by a guest."),
    (True, "r", None),
])
def test_device_mounted_in_dom0(blk, mount_ro, mode, message):
    blk.images.make("fs.img", size=4 << 20, filesystem=True)
    dev = blk.images.attach("fs.img")
    blk.mount(dev, read_only=mount_ro)
    vbd.add_vbd(blk.dom0, DOMID, DEVID, params=dev, mode=mode)
    proc = blk.run("add")
    if message is None:
        assert proc.returncode == 0, blk.why(proc)
        assert blk.back("hotplug-status") == "connected"
    else:
        assert_failed(blk, proc, "busy", message.format(dev=dev))


@pytest.mark.parametrize("mount_ro,mode,message", [
    (False, "r", "File {path} is loopback-mounted through {mm},\nwhich is mounted read-write "
                 "in the privileged domain,\nand so cannot be mounted read-only by a guest."),
    (True, "w", "File {path} is loopback-mounted through {mm},\nwhich is mounted in the "
                "privileged domain,\nand so cannot be mounted by a guest."),
    (True, "r", None),
])
def test_image_loop_mounted_in_dom0(blk, mount_ro, mode, message):
    path = blk.images.make("fs.img", size=4 << 20, filesystem=True)
    dev = blk.images.attach("fs.img")
    blk.mount(dev, read_only=mount_ro)
    vbd.add_vbd(blk.dom0, DOMID, DEVID, params=path, mode=mode)
    proc = blk.run("add")
    if message is None:
        assert proc.returncode == 0, blk.why(proc)
        assert len(blk.images.devices()) == 2
    else:
        assert_failed(blk, proc, "busy", message.format(path=path, mm=vbd.major_minor(dev)))
        assert list(blk.images.devices()) == [dev]


# -- other types: the original script -----------------------------------------------

def test_other_type_runs_the_original_with_the_same_event(blk):
    recorder = blk.originals / "block"
    seen = blk.tmp / "seen"
    recorder.write_text(textwrap.dedent("""\
        #!/bin/sh
        echo "$0 $*" > %s
        echo "XENBUS_PATH=$XENBUS_PATH" >> %s
        exit 7
        """ % (seen, seen)))
    recorder.chmod(0o755)
    vbd.add_vbd(blk.dom0, DOMID, DEVID, params="iqn.2026-01.test:disk", type="iscsi", mode="w")
    proc = blk.run("add")
    assert proc.returncode == 7, blk.why(proc)
    assert seen.read_text() == "%s add\nXENBUS_PATH=backend/vbd/1/51712\n" % recorder
    assert "type iscsi is not phy or file: running the original" in blk.log()
    assert blk.back("hotplug-status") is None


def test_missing_type_runs_the_original_too(blk):
    recorder = blk.originals / "block"
    recorder.write_text("#!/bin/sh\nexit 0\n")
    recorder.chmod(0o755)
    file_vbd(blk, type=None)
    proc = blk.run("add")
    assert proc.returncode == 0, blk.why(proc)
    assert "type  is not phy or file: running the original" in blk.log()
    assert blk.images.devices() == {}


def test_other_type_without_an_original_fails_and_says_so(blk):
    vbd.add_vbd(blk.dom0, DOMID, DEVID, params="nbd-host 1234", type="nbd", mode="w")
    proc = blk.run("add")
    assert proc.returncode == 1
    assert blk.back("hotplug-status") == "error"
    assert "there is no original script" in blk.back("hotplug-error")


# -- lock and revert --------------------------------------------------------------------

def test_add_waits_for_the_block_lock_held_by_locking_sh(blk, originals):
    """claim_lock of the real locking.sh holds `block`; the event must wait."""
    file_vbd(blk)
    holder = subprocess.Popen(
        ["bash", "-c", 'LOCK_BASEDIR=%s; . %s/locking.sh; LOCK_BASEDIR=%s; claim_lock block; '
         'echo held; read _; release_lock block' % (blk.lock_dir, originals, blk.lock_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        event = subprocess.Popen(["ip", "netns", "exec", blk.dom0.netns] + blk.argv("add"),
                                 env=dict(blk.env(), PATH=os.environ["PATH"]),
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        try:
            assert wait_for(lambda: lock_waiters(blk.lock_dir / "block", holder.pid) == 1), \
                "the event never waited"
            assert blk.back("hotplug-status") is None
            assert blk.images.devices() == {}
            holder.stdin.write("\n")
            holder.stdin.flush()
            assert event.wait(timeout=40) == 0, event.stderr.read()
        finally:
            if event.poll() is None:
                event.kill()
                event.wait()
        assert blk.back("hotplug-status") == "connected"
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()


def test_failure_after_attach_detaches_again(blk, tmp_path):
    """The engine reverts loop.attach when a later step fails."""
    path = file_vbd(blk)
    rules = tmp_path / "rules-revert"
    rules.mkdir()
    (rules / "50-t.yaml").write_text(textwrap.dedent("""\
        - rule: t
          match: {script: block}
          actions:
            add:
              - loop.attach: {file: "%s", record: "{backend}/node"}
              - hotplug.error: {message: "later step failed"}
        """ % path))
    proc = blk.run("add", XENRULES_RULES_PATH=str(rules))
    assert_failed(blk, proc, "error", "later step failed")
    assert blk.back("node") is None


def test_block_lock_is_free_after_a_failure(blk):
    # release_lock unlinks the file; a lock only dropped by exiting leaves it
    file_vbd(blk, "w", image_mode=0o444)
    assert blk.run("add").returncode == 1
    assert not os.path.exists(blk.lock_dir / "block")
    lock = HotplugLock(str(blk.lock_dir), "block")
    lock.acquire()
    lock.release()


def test_explain_shows_the_file_branch_and_changes_nothing(blk):
    path = file_vbd(blk)
    env = blk.env()
    argv = [PYTHON, "-m", "xenrules", "--rules-path", str(blk.rules), "explain"]
    for key in ("XENBUS_PATH", "XENBUS_TYPE", "XENBUS_BASE_PATH"):
        argv += ["--env", "%s=%s" % (key, env[key])]
    proc = blk.dom0.run(argv + ["block", "add"], env)
    assert proc.returncode == 0, proc.stderr
    assert "loop.attach: would run: attach %s to a free loop device, name -> xenstore " \
           "backend/vbd/1/51712/node" % path in proc.stdout
    assert "block.check_phy: skipped" in proc.stdout
    assert "truetype = 'file'" in proc.stdout
    assert blk.images.devices() == {}
    assert blk.back("hotplug-status") is None


def test_concurrent_adds_each_get_their_own_loop_device(blk):
    devids = [51712 + 16 * i for i in range(6)]
    paths = {}
    for devid in devids:
        paths[devid] = blk.images.make("disk%d.img" % devid)
        vbd.add_vbd(blk.dom0, DOMID, devid, params=paths[devid], mode="w")
    procs = {devid: subprocess.Popen(["ip", "netns", "exec", blk.dom0.netns] + blk.argv("add"),
                                     env=dict(blk.env(devid=devid), PATH=os.environ["PATH"]),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
             for devid in devids}
    for devid, proc in procs.items():
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    nodes = {devid: blk.back("node", devid=devid) for devid in devids}
    assert blk.images.devices() == {nodes[d]: paths[d] for d in devids}
    for devid in devids:
        assert blk.back("hotplug-status", devid=devid) == "connected"
        assert blk.back("physical-device", devid=devid) == vbd.major_minor(nodes[devid])


# -- what a backend may hold that must not be trusted ----------------------------------

@pytest.mark.parametrize("kind", ["../../../tmp/xr-evil", "x/y", ".."])
def test_a_type_that_is_no_script_name_is_refused(blk, kind):
    """The original would run ${XEN_SCRIPT_DIR}/block-<type>: a '/' or '..'
    would leave that directory. xenrules refuses before handing over."""
    recorder = blk.originals / "block"
    seen = blk.tmp / "seen"
    recorder.write_text("#!/bin/sh\necho ran > %s\nexit 0\n" % seen)
    recorder.chmod(0o755)
    vbd.add_vbd(blk.dom0, DOMID, DEVID, params="target", type=kind, mode="w")
    for action in ("add", "remove"):
        proc = blk.run(action)
        assert proc.returncode == 1, blk.why(proc)
        assert blk.back("hotplug-status") == "error"
        assert blk.back("hotplug-error") == (
            "refusing block type %r: block-<type> must name a script in the scripts directory"
            % kind)
        assert not seen.exists(), "the original was run"


def test_remove_leaves_a_device_that_now_backs_another_image(blk):
    """`node` names a device that is no longer on our image (a second remove
    after the device went to another guest): the original detaches that
    guest's disk; xenrules refuses and leaves it."""
    path = file_vbd(blk)
    assert blk.run("add").returncode == 0
    blk.run("remove")
    other = blk.images.make("other.img")
    dev = blk.images.attach("other.img")
    blk.dom0.xs_write(BACK + "/node", dev)
    proc = blk.run("remove")
    assert proc.returncode == 1, blk.why(proc)
    assert blk.back("hotplug-status") == "error"
    assert blk.back("hotplug-error") == (
        "%s is not attached to %s but to %s: not detaching it" % (dev, path, other))
    assert blk.images.devices() == {dev: other}
    assert not os.path.exists(blk.lock_dir / "block"), "the block lock was not released"


def test_remove_twice_succeeds_the_second_time_and_detaches_nothing(blk):
    path = file_vbd(blk)
    keep = blk.images.make("keep.img")
    assert blk.run("add").returncode == 0
    node = blk.back("node")
    assert blk.run("remove").returncode == 0
    kept = blk.images.attach("keep.img")
    proc = blk.run("remove")
    assert blk.images.devices() == {kept: keep}
    if kept == node:    # we took the freed device: not the vbd's image, refused
        assert proc.returncode == 1, blk.why(proc)
        assert blk.back("hotplug-error") == (
            "%s is not attached to %s but to %s: not detaching it" % (node, path, keep))
    elif loop.status(node) is None:   # still free: done already, as the original's exit 0
        assert proc.returncode == 0, blk.why(proc)


def test_remove_after_a_failed_add_fails_like_the_original(blk):
    file_vbd(blk, "w", image_mode=0o444)
    assert blk.run("add").returncode == 1
    assert_failed(blk, blk.run("remove"), "error", "xenstore-read backend/vbd/1/51712/node failed.")
    assert not os.path.exists(blk.lock_dir / "block"), "the block lock was not released"


def test_image_gone_before_the_sharing_check_fails_like_the_original(xs_server, tmp_path):
    from xenrules.config import Config
    from xenrules.errors import StepError
    from xenrules.event import Event
    from xenrules.log import NullLog
    from xenrules.runtime import Runtime
    from xenrules.steps import step_class
    from xenrules.xenstore import XenStore
    env = {"XENBUS_PATH": "backend/vbd/1/51712", "XENBUS_TYPE": "vbd"}
    rt = Runtime(Config(env), Event("block", ["add"], env), NullLog(),
                 xenstore=XenStore(xs_server.socket_path))
    gone = str(tmp_path / "gone.img")
    step = step_class("block.check_sharing")({"file": gone, "mode": "w", "frontend_id": "1",
                                              "backends": "backend/vbd"})
    try:
        with pytest.raises(StepError, match=r"^Unable to lookup %s: dev:  inode: $" % gone):
            step.apply(rt)
    finally:
        rt.close()


# -- what the `block` lock covers ------------------------------------------------------

def lock_waiters(path, holder):
    """How many processes wait for the flock on path that process holder holds."""
    st = os.stat(path)
    with open("/proc/locks") as fh:
        lines = fh.read().splitlines()
    mine = [line for line in lines if (":%d " % st.st_ino) in line]
    if any("->" not in line for line in mine):
        # the kernel lists a waiter on the lock file as a blocked FLOCK ("->")
        return sum(1 for line in mine if "->" in line)
    # In a PID namespace (tools/container_check.py) /proc/locks hides a lock
    # whose owner pid is gone, and its waiters with it: locking.sh's lock is
    # owned by flock(1), which has exited. While holder holds the lock, every
    # other process with the file open waits for it.
    waiting = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == holder:
            continue
        try:
            fds = os.listdir("/proc/%s/fd" % pid)
        except OSError:
            continue                    # exited, or not ours to read
        for fd in fds:
            try:
                fst = os.stat("/proc/%s/fd/%s" % (pid, fd))
            except OSError:
                continue
            if (fst.st_dev, fst.st_ino) == (st.st_dev, st.st_ino):
                waiting += 1
                break
    return waiting


class HeldBlockLock:
    """The `block` lock held by the real locking.sh (claim_lock) until release()."""

    def __init__(self, blk, originals):
        self.blk = blk
        self.holder = subprocess.Popen(
            ["bash", "-c", 'LOCK_BASEDIR=%s; . %s/locking.sh; LOCK_BASEDIR=%s; claim_lock block; '
             'echo held; read _; release_lock block' % (blk.lock_dir, originals, blk.lock_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.holder.stdout.readline() == "held\n"

    def waiters(self):
        return lock_waiters(self.blk.lock_dir / "block", self.holder.pid)

    def release(self):
        if self.holder.poll() is None:
            self.holder.stdin.write("\n")
            self.holder.stdin.flush()
        self.holder.wait(timeout=20)

    def close(self):
        if self.holder.poll() is None:
            self.holder.kill()
        self.holder.wait()


def start(blk, action, domid=DOMID, devid=DEVID):
    return subprocess.Popen(["ip", "netns", "exec", blk.dom0.netns] + blk.argv(action),
                            env=dict(blk.env(domid, devid), PATH=os.environ["PATH"]),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(procs):
    """(exit status, stderr) of each event."""
    out = []
    for proc in procs:
        _o, err = proc.communicate(timeout=60)
        out.append((proc.returncode, err))
    return out


def kill_left(procs):
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_state_guard_reads_the_state_under_the_lock(blk, originals):
    """The backend leaves InitWait while add waits for the lock: the add must
    see it (block reads `state` after claim_lock) and attach nothing."""
    file_vbd(blk)
    lock = HeldBlockLock(blk, originals)
    procs = []
    try:
        procs.append(start(blk, "add"))
        assert wait_for(lambda: lock.waiters() == 1), "the event never waited"
        vbd.set_backend_state(blk.dom0, DOMID, DEVID, 5)
        lock.release()
        ((code, err),) = finish(procs)
    finally:
        kill_left(procs)
        lock.close()
    assert code == 1, err
    assert blk.back("hotplug-status") == "error"
    assert blk.back("hotplug-error") == (
        "Path closed or removed during hotplug add: backend/vbd/1/51712 state: 5")
    assert blk.images.devices() == {}


def test_two_guests_asking_one_image_at_once_get_it_once(blk, originals):
    """Guests 1 and 2 ask for the same image read-write at the same moment:
    under the lock, the second sees the first's loop device and is busy."""
    path = blk.images.make("disk.img")
    for domid in (1, 2):
        vbd.add_vbd(blk.dom0, domid, DEVID, params=path, mode="w")
    lock = HeldBlockLock(blk, originals)
    procs = []
    try:
        procs = [start(blk, "add", domid=d) for d in (1, 2)]
        assert wait_for(lambda: lock.waiters() == 2), "the events never waited"
        lock.release()
        results = finish(procs)
    finally:
        kill_left(procs)
        lock.close()
    status = {d: blk.back("hotplug-status", domid=d) for d in (1, 2)}
    assert sorted(code for code, _ in results) == [0, 1], results
    assert sorted(status.values()) == ["busy", "connected"], status
    (winner,) = [d for d in (1, 2) if status[d] == "connected"]
    (loser,) = [d for d in (1, 2) if status[d] == "busy"]
    node = blk.back("node", domid=winner)
    assert blk.images.devices() == {node: path}
    assert blk.back("hotplug-error", domid=loser) == (
        "File %s is loopback-mounted through %s,\nwhich is mounted in a guest domain,\n"
        "and so cannot be mounted now." % (path, vbd.major_minor(node)))
