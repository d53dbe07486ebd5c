"""loop.attach / loop.detach: real loop devices, compared with what util-linux's
losetup makes of the same file (the original block script runs losetup).

Every device is attached to an image in a directory of this test's own and
detached at the end, whatever happens (loop devices are global)."""

import json
import os
import subprocess

import pytest

from xenrules.config import Config
from xenrules.errors import StepError, XenstoreError
from xenrules.event import Event
from xenrules.log import NullLog
from xenrules.runtime import Runtime
from xenrules.sandbox import vbd
from xenrules.steps import loop, step_class
from xenrules.xenstore import XenStore

NODE = "/local/domain/0/backend/vbd/1/51712/node"


@pytest.fixture
def images():
    imgs = vbd.Images(prefix="xr-loop-test-")
    try:
        yield imgs
    finally:
        left = imgs.cleanup()
        assert not left, "loop devices left attached: %s" % left


@pytest.fixture
def runtime(xs_server):
    env = {"XENBUS_PATH": "backend/vbd/1/51712", "XENBUS_TYPE": "vbd"}
    rt = Runtime(Config(env), Event("block", ["add"], env), NullLog(),
                 xenstore=XenStore(xs_server.socket_path))
    try:
        yield rt
    finally:
        rt.close()


def losetup_view(dev):
    """losetup -l -J's description of one device, without its name."""
    out = subprocess.run(["losetup", "-l", "-J", dev], capture_output=True, text=True, check=True)
    (entry,) = json.loads(out.stdout)["loopdevices"]
    entry.pop("name")
    return entry


@pytest.mark.parametrize("read_only", [False, True])
def test_attach_makes_what_losetup_makes(images, read_only):
    path = images.make("disk.img")
    ours, ro = loop.attach(path, read_only)
    assert ro is read_only
    theirs = subprocess.run(["losetup", "-f", "--show"] + (["-r"] if read_only else []) + [path],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert ours != theirs
    assert losetup_view(ours) == losetup_view(theirs)
    assert losetup_view(ours)["ro"] is read_only
    assert losetup_view(ours)["back-file"] == path
    assert losetup_view(ours)["autoclear"] is False
    assert loop.status(ours)["file_name"] == loop.status(theirs)["file_name"] == path
    assert loop.status(ours)["flags"] == loop.status(theirs)["flags"]


def test_devices_of_finds_every_device_on_the_same_inode(images):
    path = images.make("disk.img")
    other = images.make("other.img")
    first, _ = loop.attach(path, True)
    second, _ = loop.attach(path, False)
    loop.attach(other, False)
    link = os.path.join(images.dir, "link.img")
    os.symlink(path, link)
    assert loop.devices_of(link) == sorted([first, second], key=lambda d: int(d[9:]))
    assert first in loop.bound_devices() and second in loop.bound_devices()


def test_detach_frees_the_device(images):
    path = images.make("disk.img")
    dev, _ = loop.attach(path, False)
    loop.detach(dev)
    assert loop.status(dev) is None
    assert images.devices() == {}
    with pytest.raises(OSError):
        loop.detach(dev)   # losetup -d on a free device fails too


def test_attach_step_records_the_device_and_revert_undoes_it(images, runtime):
    path = images.make("disk.img")
    step = step_class("loop.attach")({"file": path, "read_only": "yes", "record": NODE})
    step.run(runtime)
    dev = runtime.xenstore.read(NODE)
    assert loop.is_loop_device(dev)
    assert images.devices() == {dev: path}
    assert loop.status(dev)["flags"] & loop.LO_FLAGS_READ_ONLY
    step.revert(runtime)
    assert runtime.xenstore.read(NODE) is None
    assert images.devices() == {}


def test_attach_step_refuses_a_relative_path_and_a_bad_flag(images, runtime):
    images.make("disk.img")
    with pytest.raises(StepError, match="not an absolute path"):
        step_class("loop.attach")({"file": "disk.img"}).run(runtime)
    with pytest.raises(StepError, match="not a yes/no value"):
        step_class("loop.attach")({"file": os.path.join(images.dir, "disk.img"),
                                   "read_only": "maybe"}).run(runtime)
    assert images.devices() == {}


def test_attach_step_names_a_missing_file(images, runtime):
    with pytest.raises(StepError, match="No such file or directory"):
        step_class("loop.attach")({"file": os.path.join(images.dir, "nope.img")}).run(runtime)


def test_detach_step(images, runtime):
    path = images.make("disk.img")
    dev, _ = loop.attach(path, False)
    step_class("loop.detach")({"dev": dev}).apply(runtime)
    assert images.devices() == {}
    with pytest.raises(StepError, match="failed: No such device or address"):
        step_class("loop.detach")({"dev": dev}).apply(runtime)


@pytest.mark.parametrize("dev", ["/dev/sda", "/dev/loop", "/dev/loop1/../sda", "loop0", ""])
def test_detach_step_touches_only_loop_devices(runtime, dev):
    with pytest.raises(StepError, match="not a loop device"):
        step_class("loop.detach")({"dev": dev}).apply(runtime)


def test_a_long_path_is_cut_like_losetup_cuts_it(images):
    os.makedirs(os.path.join(images.dir, "d" * 40))
    path = images.make(os.path.join("d" * 40, "a-rather-long-image-name.img"))
    assert len(path) > loop.LO_NAME_SIZE
    ours, _ = loop.attach(path, False)
    theirs = subprocess.run(["losetup", "-f", "--show", path],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert loop.status(ours)["file_name"] == loop.status(theirs)["file_name"] == path[:63]
    assert losetup_view(ours) == losetup_view(theirs)


def test_attach_step_that_cannot_record_the_device_detaches_it(images, tmp_path):
    """The engine reverts only steps that completed: a loop.attach whose
    xenstore write fails must detach its device itself."""
    env = {"XENBUS_PATH": "backend/vbd/1/51712", "XENBUS_TYPE": "vbd"}
    rt = Runtime(Config(env), Event("block", ["add"], env), NullLog(),
                 xenstore=XenStore(str(tmp_path / "no-xenstored-here"), timeout=2))
    path = images.make("disk.img")
    step = step_class("loop.attach")({"file": path, "record": NODE})
    with pytest.raises(XenstoreError):
        step.run(rt)
    assert images.devices() == {}
    # a stray revert must not detach what another attach got meanwhile
    images.make("other.img")
    other = images.attach("other.img")
    step.revert(rt)
    assert images.devices() == {other: os.path.join(images.dir, "other.img")}
    rt.close()


def test_attach_takes_the_next_device_when_the_free_one_was_taken(images, monkeypatch):
    """Another process may bind the device LOOP_CTL_GET_FREE named before our
    LOOP_CONFIGURE: the kernel says EBUSY and attach asks again."""
    images.make("taken.img")
    taken = images.attach("taken.img")
    answers = [taken]
    real = loop.free_device
    monkeypatch.setattr(loop, "free_device", lambda: answers.pop() if answers else real())
    path = images.make("disk.img")
    dev, _ = loop.attach(path, False)
    assert not answers, "the taken device was never offered"
    assert dev != taken
    assert images.devices() == {taken: os.path.join(images.dir, "taken.img"), dev: path}


def test_detach_step_with_file_leaves_a_device_that_backs_another_file(images, runtime):
    mine = images.make("mine.img")
    theirs = images.make("theirs.img")
    dev, _ = loop.attach(theirs, False)
    step = step_class("loop.detach")({"dev": dev, "file": mine})
    with pytest.raises(StepError, match="is not attached to %s but to %s: not detaching"
                       % (mine, theirs)):
        step.apply(runtime)
    assert images.devices() == {dev: theirs}
    step_class("loop.detach")({"dev": dev, "file": theirs}).apply(runtime)
    assert images.devices() == {}


def test_detach_step_with_file_detaches_the_device_of_a_deleted_file(images, runtime):
    path = images.make("disk.img")
    dev, _ = loop.attach(path, False)
    os.unlink(path)
    images.make("disk.img")   # a new image of that name: dev backs the old one, "(deleted)"
    step_class("loop.detach")({"dev": dev, "file": path}).apply(runtime)
    assert images.devices() == {}


def test_detach_step_with_file_on_a_free_device_is_done_already(images, runtime):
    # remove run twice: the original's `losetup -d` fails and it exits 0 (issue 9 point 3)
    path = images.make("disk.img")
    dev, _ = loop.attach(path, False)
    loop.detach(dev)
    step_class("loop.detach")({"dev": dev, "file": path}).apply(runtime)
    assert images.devices() == {}


@pytest.mark.parametrize("read_only", [False, True])
def test_the_pre_5_8_ioctls_make_what_losetup_makes(images, read_only):
    """LOOP_SET_FD + LOOP_SET_STATUS64, the way kernels without LOOP_CONFIGURE
    get (this kernel has it, so the fallback is driven directly)."""
    import errno
    path = images.make("disk.img")
    for _ in range(32):
        ours = loop.free_device()
        try:
            loop.attach_to(ours, path, read_only, legacy=True)
            break
        except OSError as e:
            if e.errno != errno.EBUSY:   # someone else took it: ask again
                raise
    theirs = subprocess.run(["losetup", "-f", "--show"] + (["-r"] if read_only else []) + [path],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert losetup_view(ours) == losetup_view(theirs)
    assert losetup_view(ours)["ro"] is read_only
    assert loop.status(ours)["flags"] == loop.status(theirs)["flags"]
    assert loop.status(ours)["file_name"] == path
