"""block: xenrules against Debian's 4.17 original, event for event.

Each test builds two identical sandboxes (a dom0 with its own XenStore and
its own directory of disk images), sends the same libxl events (`block add`,
`block remove`) to the original in one and to xenrules in the other, and
after every event compares: the whole xenstore tree, the exit status, and
the loop devices on the sandbox's images (backing file, read-only flag,
offset, size limit, autoclear, partition scan, direct I/O, name).

Loop devices are global: each side gets whatever number is free, so device
names and numbers are replaced by what they stand for ("<loop on disk.img>",
"<phy>") before comparing. Intended differences are named where they occur:
- a file image already loop-attached and in use by another guest, or
  loop-mounted in dom0: the original's check compares `stat -c %D` (hex)
  with losetup -a's decimal device number, never finds the loop device, and
  lets the guest have the image read-write; xenrules finds it and refuses
  (busy), as block-common.sh means to;
- params that is neither a block device nor a regular file (missing image):
  the original writes hotplug-status=connected and exits 1 with no
  hotplug-error; xenrules reports "... does not exist." (hotplug-status=error);
- a second `remove` (the freed device backs nothing): the original's
  `losetup -d` fails and it exits 1; xenrules is done (exit 0), see
  tests/test_idempotence.py;
- a second `remove` once the freed loop device backs another image: the
  original's `losetup -d $node` detaches that other disk; xenrules sees the
  device no longer backs the vbd's image and refuses (error), leaving it;
- a `type` with '/' or '..': the original would look for
  ${XEN_SCRIPT_DIR}/block-<type> outside its directory; xenrules refuses
  the event (error) instead of handing it over;
- messages of failed reads (the original's ERR trap overwrites them), see
  mask_err_trap_message.
"""

import os
import re

import pytest

from xenrules.sandbox import vbd
from xenrules.sandbox.dom0 import PYTHON, REPO_ROOT
from xenrules.sandbox.originals import originals_dir

pytestmark = pytest.mark.netns

DOMID, DEVID = 1, 51712
BACK = vbd.backend_path(DOMID, DEVID)
OTHER_BACK = vbd.backend_path(2, 51712)


@pytest.fixture
def sides(dom0_factory):
    """Callable() -> a fresh Side; every Side's loop devices are detached and
    its images removed after the test, before the dom0s go."""
    made = []

    def new():
        side = Side(dom0_factory(bridges=()))
        made.append(side)
        return side

    yield new
    left = {}
    for side in made:
        side.unmount()
        left.update(side.images.cleanup())
    assert not left, "loop devices left attached: %s" % left


class Side:
    """One sandbox: dom0 + images + the names of the devices the test made."""

    def __init__(self, dom0):
        self.dom0 = dom0
        # directly in /tmp: the same path length on both sides (losetup's name is cut at 63)
        self.images = vbd.Images()
        self.names = {}          # device path -> placeholder, for devices the test attached
        self.mounted = None
        # only this rule file: the test is about it, whatever else rules.d holds meanwhile
        self.rules = os.path.join(dom0.state_dir, "rules")
        os.makedirs(self.rules)
        os.symlink(os.path.join(REPO_ROOT, "rules.d", "50-block.yaml"),
                   os.path.join(self.rules, "50-block.yaml"))

    def attach(self, image, placeholder, read_only=False, dev=None):
        dev = self.images.attach(image, read_only, dev)
        self.names[dev] = placeholder
        return dev

    def mount(self, dev, read_only):
        """Mount dev in this dom0 (a mount namespace of its own: see PrivateMount)."""
        self.mounted = vbd.PrivateMount(dev, self.path("mnt"), read_only)

    def unmount(self):
        if self.mounted:
            self.mounted.close()
            self.mounted = None

    def path(self, name):
        return os.path.join(self.images.dir, name)

    def run(self, runner, action, domid=DOMID, devid=DEVID, fallback=False):
        env = vbd.block_env(self.dom0, domid, devid)
        if runner == "original":
            argv = [os.path.join(originals_dir(), "block"), action]
        else:
            env.update(self.dom0.xenrules_env(rules_path=self.rules, fallback=fallback))
            argv = [PYTHON, "-m", "xenrules.hotplug", "block", action]
        if self.mounted:
            argv = self.mounted.wrap(argv)
        return self.dom0.run(argv, env)

    def state(self):
        loops = vbd.loop_state(self.images.dir)
        names = dict(self.names)
        counts = {}
        for entry in loops:
            if entry["dev"] not in names:
                base = os.path.basename(entry["back_file"])
                counts[base] = counts.get(base, 0) + 1
                names[entry["dev"]] = "<loop%d on %s>" % (counts[base], base)
        subs = []
        for dev, name in names.items():
            subs.append((re.compile(re.escape(dev) + r"(?![0-9])"), name))
            if os.path.exists(dev):
                subs.append((re.compile(r"(?<![0-9a-f:])" + re.escape(vbd.major_minor(dev))
                                        + r"(?![0-9a-f:])"), name + "#mm"))
        subs += [(re.compile(re.escape(self.images.dir)), "<images>"),
                 (re.compile(re.escape(self.dom0.state_dir)), "<state-dir>"),
                 (re.compile(re.escape(self.dom0.xenstore_socket)), "<xenstored-socket>")]

        def norm(text):
            for pattern, name in subs:
                text = pattern.sub(name, text)
            return text

        xenstore = {k: norm(v) for k, v in self.dom0.xenstore_snapshot().items()}
        return {"xenstore": xenstore,
                "loops": [{k: norm(v) if isinstance(v, str) else v for k, v in e.items()}
                          for e in loops]}


def compare(sides, setup, events, fallback=False, between=None):
    """Run events (action, domid, devid) on both sides after setup(side);
    between: {i: callable(side)} runs before event i.
    Returns (original, xenrules): per event, exit status and end state."""
    out = {}
    for runner in ("original", "xenrules"):
        side = sides()
        setup(side)
        steps = []
        for i, (action, domid, devid) in enumerate(events):
            if between and i in between:
                between[i](side)
            proc = side.run(runner, action, domid, devid, fallback=fallback)
            st = side.state()
            st["exit"] = proc.returncode
            st["output"] = "stdout: %s\nstderr: %s\nlog: %s" % (proc.stdout, proc.stderr,
                                                                   proc.hotplug_log[-3000:])
            steps.append(st)
        out[runner] = steps
    return out["original"], out["xenrules"]


def exits(states):
    return [st["exit"] for st in states]


def outputs(states):
    return "\n".join("event %d: exit %d\n%s" % (i, st["exit"], st["output"])
                     for i, st in enumerate(states))


def assert_same(orig, xr):
    assert len(orig) == len(xr)
    for i, (a, b) in enumerate(zip(orig, xr)):
        a = {k: v for k, v in a.items() if k != "output"}
        b = {k: v for k, v in b.items() if k != "output"}
        if a != b:
            lines = ["event %d differs" % i]
            for key in sorted(set(a) | set(b)):
                if key == "xenstore":
                    for p in sorted(set(a[key]) | set(b[key])):
                        if a[key].get(p) != b[key].get(p):
                            lines.append("xenstore %s: original=%r xenrules=%r"
                                         % (p, a[key].get(p), b[key].get(p)))
                elif a.get(key) != b.get(key):
                    lines.append("%s: original=%r xenrules=%r" % (key, a.get(key), b.get(key)))
            lines.append("original output:\n" + orig[i]["output"])
            lines.append("xenrules output:\n" + xr[i]["output"])
            raise AssertionError("\n".join(lines))


ADD = ("add", DOMID, DEVID)
REMOVE = ("remove", DOMID, DEVID)


def file_vbd(mode, image_mode=0o644, **keys):
    def setup(side):
        side.images.make("disk.img", mode=image_mode)
        vbd.add_vbd(side.dom0, DOMID, DEVID, params=side.path("disk.img"), mode=mode, **keys)
    return setup


# -- file images ---------------------------------------------------------------

def test_file_read_write_add_then_remove(sides, originals):
    orig, xr = compare(sides, file_vbd("w"), [ADD, REMOVE])
    assert exits(orig) == [0, 0], outputs(orig)
    added = orig[0]
    assert added["xenstore"][BACK + "/hotplug-status"] == "connected"
    assert added["xenstore"][BACK + "/node"] == "<loop1 on disk.img>"
    assert added["xenstore"][BACK + "/physical-device"] == "<loop1 on disk.img>#mm"
    assert added["xenstore"][BACK + "/physical-device-path"] == "<loop1 on disk.img>"
    assert [(e["ro"], e["autoclear"], e["offset"]) for e in added["loops"]] == [(False, False, 0)]
    assert orig[1]["loops"] == []
    assert_same(orig, xr)


def test_file_read_only_add_then_remove(sides, originals):
    orig, xr = compare(sides, file_vbd("r"), [ADD, REMOVE])
    assert exits(orig) == [0, 0], outputs(orig)
    assert [(e["ro"], e["ro_flag"]) for e in orig[0]["loops"]] == [(True, True)]
    assert orig[1]["loops"] == []
    assert_same(orig, xr)


def test_file_given_as_type_file_and_mode_rw_bang(sides, originals):
    # "w!" skips the sharing check and attaches read-write
    orig, xr = compare(sides, file_vbd("w!", type="file"), [ADD, REMOVE])
    assert exits(orig) == [0, 0], outputs(orig)
    assert [e["ro"] for e in orig[0]["loops"]] == [False]
    assert_same(orig, xr)


def test_file_through_a_symlink_is_attached_by_its_real_path(sides, originals):
    def setup(side):
        side.images.make("disk.img")
        os.symlink(side.path("disk.img"), side.path("alias.img"))
        vbd.add_vbd(side.dom0, DOMID, DEVID, params=side.path("alias.img"), mode="w")
    orig, xr = compare(sides, setup, [ADD, REMOVE])
    assert exits(orig) == [0, 0], outputs(orig)
    assert [(e["back_file"], e["name_is_path"]) for e in orig[0]["loops"]] == [
        ("<images>/disk.img", True)]
    assert_same(orig, xr)


def test_read_only_file_asked_read_write_is_busy(sides, originals):
    orig, xr = compare(sides, file_vbd("w", image_mode=0o444), [ADD, REMOVE])
    # the remove that libxl runs after a failed add finds no loop device to detach
    assert exits(orig) == [1, 1], outputs(orig)
    assert xr[1]["xenstore"][BACK + "/hotplug-error"] == (
        "xenstore-read backend/vbd/1/51712/node failed.")
    mask_err_trap_message(orig, xr, 1)
    st = orig[0]
    assert st["xenstore"][BACK + "/hotplug-status"] == "busy"
    assert st["xenstore"][BACK + "/hotplug-error"] == (
        "File <images>/disk.img is read-only, and so I will not\n"
        "mount it read-write in a guest domain.")
    assert st["loops"] == [] and BACK + "/node" not in st["xenstore"]
    assert_same(orig, xr)


def test_read_only_file_asked_read_only_is_attached(sides, originals):
    orig, xr = compare(sides, file_vbd("r", image_mode=0o444), [ADD, REMOVE])
    assert exits(orig) == [0, 0], outputs(orig)
    assert [e["ro"] for e in orig[0]["loops"]] == [True]
    assert_same(orig, xr)


def test_backend_no_longer_waiting_is_refused(sides, originals):
    orig, xr = compare(sides, file_vbd("w", state=5), [ADD])
    assert exits(orig) == [1], outputs(orig)
    assert orig[0]["xenstore"][BACK + "/hotplug-error"] == (
        "Path closed or removed during hotplug add: backend/vbd/1/51712 state: 5")
    assert orig[0]["xenstore"][BACK + "/hotplug-status"] == "error"
    assert orig[0]["loops"] == []
    assert_same(orig, xr)


def test_second_add_changes_nothing(sides, originals):
    orig, xr = compare(sides, file_vbd("w"), [ADD, ADD])
    assert exits(orig) == [0, 0], outputs(orig)
    assert len(orig[1]["loops"]) == 1
    assert_same(orig, xr)


def test_unknown_mode_word_means_read_only(sides, originals):
    orig, xr = compare(sides, file_vbd("z"), [ADD, REMOVE])
    assert exits(orig) == [0, 0], outputs(orig)
    assert [e["ro"] for e in orig[0]["loops"]] == [True]
    assert_same(orig, xr)


@pytest.mark.parametrize("missing", ["mode", "params", "frontend-id"])
def test_missing_backend_key_fails_like_the_original(sides, originals, missing):
    def setup(side):
        file_vbd("w")(side)
        side.dom0.xs_rm(BACK + "/" + missing)
    orig, xr = compare(sides, setup, [ADD, REMOVE])
    assert exits(orig) == [1, 1], outputs(orig)
    assert orig[0]["xenstore"][BACK + "/hotplug-status"] == "error"
    assert orig[0]["loops"] == []
    assert xr[0]["xenstore"][BACK + "/hotplug-error"] == (
        "xenstore-read backend/vbd/1/51712/%s failed." % missing)
    for i in (0, 1):
        assert xr[i]["xenstore"][BACK + "/hotplug-error"].startswith("xenstore-read backend/vbd/1/51712/")
        mask_err_trap_message(orig, xr, i)
    assert_same(orig, xr)


def mask_err_trap_message(orig, xr, i):
    """Intended difference: a failed `x=$(xenstore_read ...)` in the original
    writes its own message, then the ERR trap overwrites it with
    "<script> failed; error detected."; xenrules keeps the message that
    names the missing node. Same status and exit code."""
    assert orig[i]["xenstore"][BACK + "/hotplug-error"].endswith("/block failed; error detected.")
    assert orig[i]["exit"] == xr[i]["exit"] == 1
    for st in (orig[i], xr[i]):
        st["xenstore"][BACK + "/hotplug-error"] = "<masked>"


def test_missing_image_is_an_intended_difference(sides, originals):
    def setup(side):
        vbd.add_vbd(side.dom0, DOMID, DEVID, params=side.path("gone.img"), mode="w")
    orig, xr = compare(sides, setup, [ADD, REMOVE])
    # the original: neither a device nor a file -> `success`, then the last
    # line `[ -x block-phy ] && ...` fails: exit 1 with no hotplug-error
    assert exits(orig) == [1, 0], outputs(orig)
    assert orig[0]["xenstore"][BACK + "/hotplug-status"] == "connected"
    assert BACK + "/hotplug-error" not in orig[0]["xenstore"]
    # xenrules: same exit status, and it says why
    assert exits(xr) == [1, 0], outputs(xr)
    assert xr[0]["xenstore"][BACK + "/hotplug-status"] == "error"
    assert xr[0]["xenstore"][BACK + "/hotplug-error"] == "<images>/gone.img does not exist."
    for st in orig + xr:
        for key in ("hotplug-status", "hotplug-error"):
            st["xenstore"].pop(BACK + "/" + key, None)
    assert_same(orig, xr)


# -- phy: a real block device (a loop device the test attached) -----------------

def phy_vbd(mode, link=False, **keys):
    def setup(side):
        side.images.make("phy.img")
        dev = side.attach("phy.img", "<phy>")
        params = dev
        if link:
            params = side.path("disk-link")
            os.symlink(dev, params)
        vbd.add_vbd(side.dom0, DOMID, DEVID, params=params, mode=mode, **keys)
    return setup


@pytest.mark.parametrize("mode", ["w", "r"])
def test_phy_add_then_remove(sides, originals, mode):
    orig, xr = compare(sides, phy_vbd(mode), [ADD, REMOVE])
    assert exits(orig) == [0, 0], outputs(orig)
    st = orig[0]["xenstore"]
    assert st[BACK + "/physical-device"] == "<phy>#mm"
    assert st[BACK + "/physical-device-path"] == "<phy>"
    assert st[BACK + "/hotplug-status"] == "connected"
    assert BACK + "/node" not in st
    assert len(orig[1]["loops"]) == 1      # remove leaves a phy device alone
    assert_same(orig, xr)


def test_phy_through_a_symlink_is_resolved(sides, originals):
    orig, xr = compare(sides, phy_vbd("w", link=True), [ADD, REMOVE])
    assert exits(orig) == [0, 0], outputs(orig)
    assert orig[0]["xenstore"][BACK + "/physical-device-path"] == "<phy>"
    assert_same(orig, xr)


# -- sharing with other guests --------------------------------------------------

def shared_phy(mode, other_mode, other_domain):
    """Our guest 1 asks for the device another vbd (of domain 2) already uses.
    other_domain: 'other' (another VM), 'same-vm' (domain 2 is the same VM),
    'stubdom' (domain 2 is guest 1's device-model stubdom)."""
    def setup(side):
        phy_vbd(mode)(side)
        dev = [d for d, n in side.names.items() if n == "<phy>"][0]
        if other_domain == "same-vm":
            vbd.add_domain(side.dom0, 2, uuid=vbd.domain_uuid(DOMID))
        elif other_domain == "stubdom":
            vbd.add_domain(side.dom0, 2, target=DOMID)
        vbd.add_vbd(side.dom0, 2, 51712, params=dev, mode=other_mode, state=4,
                    **{"physical-device": vbd.major_minor(dev), "physical-device-path": dev,
                       "hotplug-status": "connected"})
    return setup


@pytest.mark.parametrize("mode,other_mode,busy", [
    ("w", "w", True), ("w", "r", True), ("r", "w", True), ("r", "r", False)])
def test_phy_shared_with_another_guest(sides, originals, mode, other_mode, busy):
    orig, xr = compare(sides, shared_phy(mode, other_mode, "other"), [ADD, REMOVE])
    assert exits(orig) == [1 if busy else 0, 0], outputs(orig)
    st = orig[0]["xenstore"]
    if busy:
        assert st[BACK + "/hotplug-status"] == "busy"
        if mode == "w":
            assert st[BACK + "/hotplug-error"] == (
                "Device <phy> is mounted in a guest domain,\nand so cannot be mounted now.")
        else:
            assert st[BACK + "/hotplug-error"] == (
                "Device <phy> is mounted read-write in a guest domain,\n"
                "and so cannot be mounted read-only now.")
        assert BACK + "/physical-device" not in st
    else:
        assert st[BACK + "/hotplug-status"] == "connected"
    assert_same(orig, xr)


@pytest.mark.parametrize("other_domain", ["same-vm", "stubdom"])
def test_phy_shared_within_the_same_vm_is_allowed(sides, originals, other_domain):
    orig, xr = compare(sides, shared_phy("w", "w", other_domain), [ADD, REMOVE])
    assert exits(orig) == [0, 0], outputs(orig)
    assert orig[0]["xenstore"][BACK + "/hotplug-status"] == "connected"
    assert_same(orig, xr)


def test_stubdom_asking_for_its_guests_device_is_allowed(sides, originals):
    # the frontend is the stubdom (domain 1, target 2); domain 2 holds the device
    def setup(side):
        vbd.add_domain(side.dom0, DOMID, target=2)
        shared_phy("w", "w", "other")(side)
    orig, xr = compare(sides, setup, [ADD])
    assert exits(orig) == [0], outputs(orig)
    assert_same(orig, xr)


def test_mode_bang_skips_the_sharing_check(sides, originals):
    orig, xr = compare(sides, shared_phy("w!", "w", "other"), [ADD, REMOVE])
    assert exits(orig) == [0, 0], outputs(orig)
    assert_same(orig, xr)


def test_shared_image_is_an_intended_difference(sides, originals):
    """Guest 2 uses disk.img read-write through a loop device; guest 1 asks
    for the same image read-write."""
    def setup(side):
        side.images.make("disk.img")
        dev = side.attach("disk.img", "<guest2 loop>")
        vbd.add_vbd(side.dom0, 2, 51712, params=side.path("disk.img"), mode="w", state=4,
                    node=dev, **{"physical-device": vbd.major_minor(dev),
                                 "physical-device-path": dev, "hotplug-status": "connected"})
        vbd.add_vbd(side.dom0, DOMID, DEVID, params=side.path("disk.img"), mode="w")
    orig, xr = compare(sides, setup, [ADD, REMOVE])
    # the original does not see the loop device (hex vs decimal) and shares
    assert exits(orig) == [0, 0], outputs(orig)
    assert orig[0]["xenstore"][BACK + "/hotplug-status"] == "connected"
    assert len(orig[0]["loops"]) == 2
    # xenrules refuses, with do_ebusy's message for a file (and the remove
    # that follows finds no `node`, as after any failed add)
    assert exits(xr) == [1, 1], outputs(xr)
    assert xr[0]["xenstore"][BACK + "/hotplug-status"] == "busy"
    assert xr[0]["xenstore"][BACK + "/hotplug-error"] == (
        "File <images>/disk.img is loopback-mounted through <guest2 loop>#mm,\n"
        "which is mounted in a guest domain,\nand so cannot be mounted now.")
    assert len(xr[0]["loops"]) == 1
    # after remove, both have only guest 2's loop device left
    assert orig[1]["loops"] == xr[1]["loops"]
    assert [e["dev"] for e in xr[1]["loops"]] == ["<guest2 loop>"]


@pytest.mark.parametrize("mount_ro,mode,busy", [
    (False, "r", True), (False, "w", True), (True, "w", True), (True, "r", False)])
def test_phy_mounted_in_dom0(sides, originals, mount_ro, mode, busy):
    def setup(side):
        side.images.make("fs.img", size=4 << 20, filesystem=True)
        dev = side.attach("fs.img", "<phy>")
        side.mount(dev, read_only=mount_ro)
        vbd.add_vbd(side.dom0, DOMID, DEVID, params=dev, mode=mode)
    orig, xr = compare(sides, setup, [ADD])
    assert exits(orig) == [1 if busy else 0], outputs(orig)
    if busy:
        assert "in the privileged domain" in orig[0]["xenstore"][BACK + "/hotplug-error"]
    assert_same(orig, xr)


# -- other types: the original script, unchanged --------------------------------

def test_other_type_is_handed_to_the_original(sides, originals):
    def setup(side):
        side.images.make("disk.img")
        vbd.add_vbd(side.dom0, DOMID, DEVID, params="dummy:" + side.path("disk.img"),
                    type="dummy", mode="w")
    orig, xr = compare(sides, setup, [ADD, REMOVE], fallback=True)
    # what the original does depends on /etc/xen/scripts/block-dummy being
    # installed; whatever it is, xenrules must have done the same by running it
    assert "type dummy is not phy or file: running the original" in xr[0]["output"]
    assert_same(orig, xr)


def test_mode_w_bang_on_a_read_only_image_attaches_it_read_write(sides, originals):
    # `!` skips the writable check as well as the sharing check
    orig, xr = compare(sides, file_vbd("w!", image_mode=0o444), [ADD, REMOVE])
    assert exits(orig) == [0, 0], outputs(orig)
    assert [e["ro"] for e in orig[0]["loops"]] == [False]
    assert_same(orig, xr)


def test_a_target_that_is_no_domid_names_no_domain(sides, originals):
    """`target` values that are no domid: the bash's reads of
    /local/domain/<junk>/vm fail and it takes the defaults; so must xenrules
    (never asking xenstore for a path made of junk)."""
    def setup(side):
        shared_phy("w", "w", "other")(side)
        side.dom0.xs_write("/local/domain/1/target", "1 2")
        side.dom0.xs_write("/local/domain/2/target", "no domid")
    orig, xr = compare(sides, setup, [ADD, REMOVE])
    assert exits(orig) == [1, 0], outputs(orig)
    assert orig[0]["xenstore"][BACK + "/hotplug-status"] == "busy"
    assert_same(orig, xr)


def test_second_remove_after_the_device_was_reused_is_an_intended_difference(sides, originals):
    """add, remove; the freed loop device then goes to another image (another
    guest's disk); remove runs again. The original detaches the other disk;
    xenrules refuses and leaves it."""
    def reuse(side):
        # take the very device `node` names, before anyone else can: the
        # original must never detach a device of another test
        node = side.dom0.xs_read(BACK + "/node")
        side.images.make("other.img")
        try:
            side.attach("other.img", "<other loop>", dev=node)
        except OSError as e:
            pytest.fail("%s was taken by another process before the test could: %s" % (node, e))
    orig, xr = compare(sides, file_vbd("w"), [ADD, REMOVE, REMOVE], between={2: reuse})
    assert exits(orig) == [0, 0, 0], outputs(orig)
    assert orig[2]["loops"] == []          # the other image's device is gone
    assert exits(xr) == [0, 0, 1], outputs(xr)
    assert xr[2]["xenstore"][BACK + "/hotplug-status"] == "error"
    assert xr[2]["xenstore"][BACK + "/hotplug-error"] == (
        "<other loop> is not attached to <images>/disk.img but to <images>/other.img: "
        "not detaching it")
    assert [(e["dev"], e["back_file"]) for e in xr[2]["loops"]] == [
        ("<other loop>", "<images>/other.img")]
    assert_same(orig[:2], xr[:2])
    for st in (orig[2], xr[2]):
        for key in ("hotplug-status", "hotplug-error"):
            st["xenstore"].pop(BACK + "/" + key, None)
    assert orig[2]["xenstore"] == xr[2]["xenstore"]


@pytest.mark.parametrize("kind", ["../../../../tmp/xr-none", ".."])
def test_a_type_with_a_path_is_an_intended_difference(sides, originals, kind):
    def setup(side):
        side.images.make("disk.img")
        vbd.add_vbd(side.dom0, DOMID, DEVID, params="dummy:" + side.path("disk.img"),
                    type=kind, mode="w")
    orig, xr = compare(sides, setup, [ADD, REMOVE], fallback=True)
    # the original: params is no device or file -> `success`, then no
    # executable block-<type> -> exit 1; remove does nothing
    assert exits(orig) == [1, 0], outputs(orig)
    assert orig[0]["xenstore"][BACK + "/hotplug-status"] == "connected"
    assert exits(xr) == [1, 1], outputs(xr)
    for st in xr:
        assert st["xenstore"][BACK + "/hotplug-status"] == "error"
        assert st["xenstore"][BACK + "/hotplug-error"] == (
            "refusing block type %r: block-<type> must name a script in the scripts directory"
            % kind)
    for st in orig + xr:
        for key in ("hotplug-status", "hotplug-error"):
            st["xenstore"].pop(BACK + "/" + key, None)
        st["exit"] = None
    assert_same(orig, xr)


def test_image_loop_mounted_in_dom0_is_an_intended_difference(sides, originals):
    """dom0 has the image mounted read-write through a loop device; a guest
    asks for it read-write. The original misses the loop device (see the
    shared image) and attaches a second one; xenrules refuses (busy)."""
    def setup(side):
        side.images.make("disk.img", size=4 << 20, filesystem=True)
        dev = side.attach("disk.img", "<dom0 loop>")
        side.mount(dev, read_only=False)
        vbd.add_vbd(side.dom0, DOMID, DEVID, params=side.path("disk.img"), mode="w")
    orig, xr = compare(sides, setup, [ADD])
    assert exits(orig) == [0], outputs(orig)
    assert orig[0]["xenstore"][BACK + "/hotplug-status"] == "connected"
    assert len(orig[0]["loops"]) == 2
    assert exits(xr) == [1], outputs(xr)
    assert xr[0]["xenstore"][BACK + "/hotplug-status"] == "busy"
    assert xr[0]["xenstore"][BACK + "/hotplug-error"] == (
        "File <images>/disk.img is loopback-mounted through <dom0 loop>#mm,\n"
        "which is mounted in the privileged domain,\nand so cannot be mounted by a guest.")
    assert [e["dev"] for e in xr[0]["loops"]] == ["<dom0 loop>"]
