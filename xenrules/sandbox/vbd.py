"""Block devices in a simulated dom0: the vbd keys libxl writes, the
environment it gives `block`, disk images and the loop devices on them.

    with XenstoreServer(sock) as xs, SimulatedDom0(xs) as dom0:
        images = Images(dom0.state_dir)
        img = images.make("disk.img")
        add_vbd(dom0, 1, 51712, params=img)          # type phy, mode w, state 2
        dom0.run_original("block", ["add"], block_env(dom0, 1, 51712))
        print(loop_state(images.dir))
        images.cleanup()                             # detaches what is on its images

What is simulated: the backend and frontend directories of
libxl_disk.c's device_disk_add (backend state 2, InitWait, because libxl
runs the script once blkback is waiting; a test can change it), the
/libxl copy, and the domain's `name`, `domid` and `vm` (a stubdom also has
`target`). Permissions are not modelled. Loop devices are global, not per
namespace: Images only ever touches devices whose backing file is one of its
own images.
"""
import os
import shutil
import subprocess
import tempfile
import time

SCRIPT_DIR = "/etc/xen/scripts"
XENBUS_STATE_INITWAIT = 2


def vdev_name(devid):
    """xvd name of a devid (51712 -> xvda), for the backend's `dev`."""
    index = (int(devid) - 202 * 256) // 16
    if int(devid) >> 8 != 202 or index < 0 or index > 25:
        return "xvd%d" % int(devid)
    return "xvd" + chr(ord("a") + index)


def domain_uuid(domid):
    return "00000000-0000-4000-8000-%012x" % int(domid)


def add_domain(dom0, domid, uuid=None, target=None, name=None):
    """/local/domain/D as libxl leaves it: name, domid, vm (-> /vm/<uuid>);
    a stubdom has `target` = the domid of the guest it serves."""
    domid = int(domid)
    base = "/local/domain/%d" % domid
    uuid = uuid or domain_uuid(domid)
    dom0.xs_write(base + "/name", name or "guest%d" % domid)
    dom0.xs_write(base + "/domid", str(domid))
    dom0.xs_write(base + "/vm", "/vm/" + uuid)
    dom0.xs_write("/vm/%s/uuid" % uuid, uuid)
    if target is not None:
        dom0.xs_write(base + "/target", str(int(target)))
    return base


def backend_path(domid, devid):
    return "/local/domain/0/backend/vbd/%d/%d" % (int(domid), int(devid))


def add_vbd(dom0, domid, devid, params, type="phy", mode="w", state=XENBUS_STATE_INITWAIT,
            script="block", domain=True, **extra_backend_keys):
    """The xenstore keys libxl writes for a disk, in its order, before it
    runs the hotplug script. ``type`` and ``mode`` may be None (key left out);
    extra backend keys with dashes as ``**{"physical-device": "7:0"}``."""
    domid, devid = int(domid), int(devid)
    back_path = backend_path(domid, devid)
    front_path = "/local/domain/%d/device/vbd/%d" % (domid, devid)
    libxl_path = "/libxl/%d/device/vbd/%d" % (domid, devid)
    script_path = script if script.startswith("/") else os.path.join(SCRIPT_DIR, script)
    back = [("frontend", front_path), ("params", params), ("script", script_path),
            ("frontend-id", str(domid)), ("online", "1"), ("removable", "0"),
            ("bootable", "1"), ("state", str(state)), ("dev", vdev_name(devid)),
            ("type", type), ("mode", mode), ("device-type", "disk"),
            ("discard-enable", "1")]
    back = [(k, v) for k, v in back if v is not None]
    for k, v in extra_backend_keys.items():
        back = [(bk, bv) for bk, bv in back if bk != k] + [(k, str(v))]
    front = [("backend", back_path), ("backend-id", "0"), ("state", "1"),
             ("virtual-device", str(devid)), ("device-type", "disk")]
    if domain and dom0.xs_read("/local/domain/%d/vm" % domid) is None:
        add_domain(dom0, domid)
    dom0.xs_write(libxl_path + "/frontend", front_path)
    dom0.xs_write(libxl_path + "/backend", back_path)
    for k, v in front:
        dom0.xs_write(front_path + "/" + k, v)
    for k, v in back:
        dom0.xs_write(back_path + "/" + k, v)
        dom0.xs_write(libxl_path + "/" + k, v)
    return back_path


def set_backend_state(dom0, domid, devid, state):
    dom0.xs_write(backend_path(domid, devid) + "/state", str(state))


def block_env(dom0, domid, devid, script="block"):
    """What libxl >= 4.2 gives a vbd hotplug script (libxl_linux.c
    get_hotplug_env), plus XENSTORED_PATH. Arguments: `add` or `remove`."""
    return {
        "script": script if script.startswith("/") else os.path.join(SCRIPT_DIR, script),
        "XENBUS_TYPE": "vbd",
        "XENBUS_PATH": "backend/vbd/%d/%d" % (int(domid), int(devid)),
        "XENBUS_BASE_PATH": "backend",
        "XENSTORED_PATH": dom0.xenstore_socket,
    }


# -- disk images and loop devices ----------------------------------------------

def _sys(dev, *names):
    path = os.path.join("/sys/block", os.path.basename(dev), *names)
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _backing_file(dev):
    return _sys(dev, "loop", "backing_file")


def loop_devices_under(directory):
    """{/dev/loopN: backing file} for every bound loop device whose backing
    file is in directory (a deleted one shows as 'path (deleted)')."""
    from xenrules.steps.loop import bound_devices
    prefix = os.path.realpath(directory).rstrip("/") + "/"
    out = {}
    for dev in bound_devices():
        backing = _backing_file(dev)
        if backing and backing.startswith(prefix):
            out[dev] = backing
    return out


def loop_state(directory):
    """The loop devices backed by files in directory, each as losetup -l
    would describe it (and the kernel's read-only flag), sorted by backing
    file then device number. Device names are kept: callers normalize them."""
    from xenrules.steps.loop import (LO_FLAGS_AUTOCLEAR, LO_FLAGS_DIRECT_IO, LO_FLAGS_PARTSCAN,
                                     LO_FLAGS_READ_ONLY, LO_NAME_SIZE, status)
    out = []
    for dev, backing in loop_devices_under(directory).items():
        info = status(dev) or {}
        flags = info.get("flags", 0)
        out.append({
            "dev": dev,
            "back_file": backing,
            # lo_file_name: the path given, cut to 63 bytes (LO_NAME_SIZE)
            "name_is_path": info.get("file_name") == os.fsdecode(
                os.fsencode(backing)[:LO_NAME_SIZE - 1]),
            "offset": info.get("offset"),
            "sizelimit": info.get("sizelimit"),
            "ro": _sys(dev, "ro") == "1",
            "ro_flag": bool(flags & LO_FLAGS_READ_ONLY),
            "autoclear": bool(flags & LO_FLAGS_AUTOCLEAR),
            "partscan": bool(flags & LO_FLAGS_PARTSCAN),
            "dio": bool(flags & LO_FLAGS_DIRECT_IO),
            "log_sec": _sys(dev, "queue", "logical_block_size"),
        })
    out.sort(key=lambda e: (e["back_file"], int(e["dev"][len("/dev/loop"):])))
    return out


def major_minor(dev):
    """hex major:minor of a device node, as the scripts write physical-device."""
    rdev = os.stat(dev).st_rdev
    return "%x:%x" % (os.major(rdev), os.minor(rdev))


class Images:
    """Disk images in a directory of their own, and the loop devices on them.
    cleanup() detaches every loop device backed by one of them (whoever
    attached it: the scripts under test do) and removes the directory."""

    def __init__(self, parent=None, prefix="xr-blk-"):
        self.dir = tempfile.mkdtemp(prefix=prefix, dir=parent)

    def make(self, name, size=1 << 20, mode=0o644, filesystem=False):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.truncate(size)
        if filesystem:
            subprocess.run(["mkfs.ext2", "-q", "-F", path], check=True, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.chmod(path, mode)
        return path

    def attach(self, name, read_only=False, dev=None):
        """A loop device on one of the images (as a phy device for a test);
        dev: that very device (OSError EBUSY when it is bound already)."""
        from xenrules.steps.loop import attach, attach_to
        if dev:
            attach_to(dev, os.path.join(self.dir, name), read_only)
            return dev
        dev, _ = attach(os.path.join(self.dir, name), read_only)
        return dev

    def devices(self):
        return loop_devices_under(self.dir)

    def cleanup(self):
        """Detach our images' loop devices (retrying: udev may hold one
        open briefly), then remove the directory. Returns what stayed bound."""
        from xenrules.steps.loop import detach
        left = {}
        for _ in range(500):
            left = self.devices()
            if not left:
                break
            for dev in left:
                try:
                    detach(dev)
                except OSError:
                    pass
            time.sleep(0.02)   # a device still open is cleared when closed
        shutil.rmtree(self.dir, ignore_errors=True)
        return left


class PrivateMount:
    """A filesystem mounted in dom0 as the sharing check sees it, yet
    invisible to the rest of the machine: a holder process mounts it in a
    mount namespace of its own, and wrap() makes a command run in that
    namespace (keeping its network namespace). Use as a context manager;
    closing ends the namespace, so the device is free again."""

    def __init__(self, dev, where, read_only=False):
        self.where = where
        os.makedirs(where, exist_ok=True)
        script = 'mount -o "$1" "$2" "$3" || exit 1; echo mounted; read _'
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh",
             "ro" if read_only else "rw", dev, where],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if self.holder.stdout.readline() != "mounted\n":
            err = self.holder.communicate()[1]
            raise RuntimeError("mount %s on %s failed: %s" % (dev, where, err.strip()))

    def wrap(self, argv):
        return ["nsenter", "-t", str(self.holder.pid), "-m", "--"] + [os.fspath(a) for a in argv]

    def close(self):
        if self.holder.poll() is None:
            self.holder.communicate("\n")
        self.holder.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
