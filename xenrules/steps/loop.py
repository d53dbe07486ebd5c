"""Loop device steps: attach a file to a free loop device, detach one.

Plain ioctls on /dev/loop-control and /dev/loopN, no `losetup` fork (the
event path must stay fast). The device ends up exactly as util-linux 2.38's
`losetup [-r] /dev/loopN FILE` (what block's `losetup $roflag` runs) leaves
it: one LOOP_CONFIGURE with offset 0, no size limit, no autoclear, no
partition scan, no direct I/O, block size 0 (512), lo_file_name = the path
given, the read-only flag for -r. Kernels older than 5.8 get LOOP_SET_FD +
LOOP_SET_STATUS64, as losetup does there.
"""
import errno
import os
import struct

from ..errors import StepError
from .base import Step

LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
LOOP_SET_STATUS64 = 0x4C04
LOOP_GET_STATUS64 = 0x4C05
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_GET_FREE = 0x4C82
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
LO_FLAGS_PARTSCAN = 8
LO_FLAGS_DIRECT_IO = 16
LO_NAME_SIZE = 64
LOOP_CONTROL = "/dev/loop-control"
# struct loop_info64: device, inode, rdevice, offset, sizelimit (u64);
# number, encrypt_type, encrypt_key_size, flags (u32); file_name,
# crypt_name (64 bytes), encrypt_key (32 bytes); init[2] (u64). 232 bytes.
_INFO = struct.Struct("=QQQQQIIII64s64s32sQQ")
# struct loop_config: fd, block_size (u32), info, __reserved[8] (u64).
_CONFIG = struct.Struct("=II%ds64x" % _INFO.size)
# Attempts when another process takes the free device between
# LOOP_CTL_GET_FREE and LOOP_CONFIGURE (losetup -f has the same race).
_ATTEMPTS = 32

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


def is_loop_device(path):
    """/dev/loopN, nothing else (no re: the event path stays light)."""
    number = (path or "").removeprefix("/dev/loop")
    # minors are 20 bits: more digits than that name no device ever
    return number != path and 0 < len(number) <= 7 and number.isascii() and number.isdigit()


def _info(flags, file_name):
    name = os.fsencode(file_name)[:LO_NAME_SIZE - 1]   # losetup truncates, NUL-terminated
    return _INFO.pack(0, 0, 0, 0, 0, 0, 0, 0, flags, name, b"", b"", 0, 0)


def free_device():
    """/dev/loopN that the kernel says is free (it creates one if needed)."""
    import fcntl
    fd = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
    try:
        return "/dev/loop%d" % fcntl.ioctl(fd, LOOP_CTL_GET_FREE)
    finally:
        os.close(fd)


def _configure(dev, file_fd, file_name, read_only, legacy=False):
    """Bind file_fd to dev; legacy: the pre-5.8 way only (for tests)."""
    import fcntl
    flags = LO_FLAGS_READ_ONLY if read_only else 0
    fd = os.open(dev, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
    try:
        if not legacy:
            try:
                fcntl.ioctl(fd, LOOP_CONFIGURE, _CONFIG.pack(file_fd, 0, _info(flags, file_name)))
                return
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.ENOTTY):
                    raise
        # before Linux 5.8: bind, then describe; read-only follows the file's open mode
        fcntl.ioctl(fd, LOOP_SET_FD, file_fd)
        try:
            fcntl.ioctl(fd, LOOP_SET_STATUS64, _info(0, file_name))
        except OSError:
            fcntl.ioctl(fd, LOOP_CLR_FD, 0)
            raise
    finally:
        os.close(fd)


def _open_backing(path, flags):
    """Open a backing file without waiting or side effects: a FIFO or device
    swapped in after the checks would block the open (no writer) or act on
    it (a tty, a watchdog); only a regular file or a block device is kept."""
    import fcntl
    import stat
    fd = os.open(path, flags | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            raise OSError(errno.EINVAL, "not a regular file or block device")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def attach_to(dev, path, read_only, legacy=False):
    """Attach path to the loop device dev (EBUSY if it is bound already);
    legacy: LOOP_SET_FD + LOOP_SET_STATUS64 as on kernels before 5.8."""
    file_fd = _open_backing(path, os.O_RDONLY if read_only else os.O_RDWR)
    try:
        _configure(dev, file_fd, path, read_only, legacy)
    finally:
        os.close(file_fd)


def attach(path, read_only):
    """Attach path to a free loop device; return (device, read_only).

    Like losetup, a file that cannot be opened for writing (read-only file
    system) is attached read-only rather than refused."""
    try:
        file_fd = _open_backing(path, os.O_RDONLY if read_only else os.O_RDWR)
    except OSError as e:
        if read_only or e.errno not in (errno.EROFS, errno.EACCES):
            raise
        file_fd = _open_backing(path, os.O_RDONLY)
        read_only = True
    try:
        for _ in range(_ATTEMPTS):
            dev = free_device()
            try:
                _configure(dev, file_fd, path, read_only)
                return dev, read_only
            except OSError as e:
                if e.errno != errno.EBUSY:
                    raise
        raise OSError(errno.EBUSY, "every free loop device was taken by someone else")
    finally:
        os.close(file_fd)


def detach(dev):
    """LOOP_CLR_FD, as `losetup -d` (the kernel defers it while the device is open)."""
    import fcntl
    fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, LOOP_CLR_FD, 0)
    finally:
        os.close(fd)


def status(dev):
    """LOOP_GET_STATUS64 of a bound device as a dict; None if it is not bound."""
    import fcntl
    try:
        fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        buf = bytearray(_INFO.size)
        try:
            fcntl.ioctl(fd, LOOP_GET_STATUS64, buf, True)
        except OSError as e:
            if e.errno == errno.ENXIO:
                return None
            raise
    finally:
        os.close(fd)
    (device, inode, _rdev, offset, sizelimit, _number, _enc, _keysize, flags,
     name, _crypt, _key, _i0, _i1) = _INFO.unpack(bytes(buf))
    return {"device": device, "inode": inode, "offset": offset, "sizelimit": sizelimit,
            "flags": flags, "file_name": os.fsdecode(name.split(b"\0", 1)[0])}


def backing_file(dev):
    """The kernel's name of dev's backing file ("PATH (deleted)" once it is
    unlinked); None when dev is not bound."""
    try:
        with open(f"/sys/block/{os.path.basename(dev)}/loop/backing_file") as f:
            return f.read().rstrip("\n")
    except OSError:
        return None


def backs(dev, path):
    """Whether dev is bound to path: the same inode while path exists, else
    the kernel's name of the backing file is path's, deleted."""
    info = status(dev)
    if info is None:
        return False
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is not None and info["inode"] == st.st_ino and \
            (os.major(info["device"]), os.minor(info["device"])) == \
            (os.major(st.st_dev), os.minor(st.st_dev)):
        return True
    return backing_file(dev) == path + " (deleted)"


def bound_devices():
    """Names (/dev/loopN) of the loop devices that have a backing file, by number."""
    found = []
    try:
        names = os.listdir("/sys/block")
    except OSError:
        return found
    for name in names:
        # /sys/block/loopN/loop exists only while the device is bound
        if name.startswith("loop") and name[4:].isdigit() and \
                os.path.exists(f"/sys/block/{name}/loop/backing_file"):
            found.append(int(name[4:]))
    return ["/dev/loop%d" % n for n in sorted(found)]


def devices_of(path):
    """The bound loop devices whose backing file is path's inode (losetup -j, by inode)."""
    st = os.stat(path)
    out = []
    for dev in bound_devices():
        try:
            info = status(dev)
        except OSError:
            continue   # detached meanwhile, or not ours to open
        if info and info["inode"] == st.st_ino and \
                (os.major(info["device"]), os.minor(info["device"])) == \
                (os.major(st.st_dev), os.minor(st.st_dev)):
            out.append(dev)
    return out


def _flag(value, name):
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise StepError(f"{name}: {value!r} is not a yes/no value")


class Attach(Step):
    type_name = "loop.attach"
    summary = ("attach a file to a free loop device, read-only or not, like `losetup [-r] "
               "$(losetup -f) FILE`; write the device's name to a xenstore node; revert detaches")
    properties = {
        "file": {"type": "string", "minLength": 1, "description": "the backing file (absolute path)"},
        "read_only": {"type": "string", "description": "yes: attach read-only (losetup -r); no (default): read-write"},
        "record": {"type": "string", "description": "xenstore node that receives the device name, "
                                                   "e.g. <backend>/node (read it back as a variable)"},
    }
    required = ("file",)

    def undo_record(self, runtime):
        from .xenstore import checked_path
        path = self.args["file"]
        if not path.startswith("/"):
            raise StepError(f"loop.attach: {path!r} is not an absolute path")
        from .block import refuse_kernel_file
        refuse_kernel_file(path)   # /proc/sys/... as a guest's disk: never
        _flag(self.args.get("read_only", "no"), "read_only")
        node = self.args.get("record")
        try:
            before = devices_of(path)
        except OSError as e:
            raise StepError(f"losetup {path} failed: {e.strerror or e}") from None
        # killed before the device's name is noted: undo detaches the devices
        # on this file that were not there before (the block lock keeps other
        # events from attaching it meanwhile)
        return {"before": before, "dev": None,
                "node": checked_path(node) if node else None,
                "previous": runtime.xenstore.read(node) if node else None}

    def apply(self, runtime):
        path = self.args["file"]
        read_only = _flag(self.args.get("read_only", "no"), "read_only")
        try:
            dev, ro = attach(path, read_only)
        except OSError as e:
            raise StepError(f"losetup {'-r ' if read_only else ''}{path} failed: "
                            f"{e.strerror or e}") from None
        runtime.test_point("loop.attached")
        runtime.note(self, dev=dev)
        runtime.log("debug", f"attached {path} to {dev}{' read-only' if ro else ''}")
        if self.record["node"]:
            # a failure here: the engine undoes this step too, from its record
            runtime.xenstore.write(self.record["node"], dev)

    @classmethod
    def undo(cls, runtime, args, record):
        path = args["file"]
        if record["dev"]:
            devs = [record["dev"]] if backs(record["dev"], path) else []
        else:
            try:
                devs = [d for d in devices_of(path) if d not in record["before"]]
            except OSError:
                devs = []   # the file is gone: its devices show in no listing
        for dev in devs:   # first: a device must not leak when xenstore fails below
            detach(dev)
        if record["node"]:
            from .xenstore import restore_node
            restore_node(runtime.xenstore, record["node"], record["previous"])

    @classmethod
    def describe_undo(cls, args, record):
        dev = record["dev"] or "the loop devices on it that were not there before"
        node = f", xenstore {record['node']} = {record['previous']!r} again" if record["node"] else ""
        return f"detach {dev} from {args['file']}{node}"

    def describe(self):
        ro = " read-only" if _flag(self.args.get("read_only", "no"), "read_only") else ""
        rec = f", name -> xenstore {self.args['record']}" if self.args.get("record") else ""
        return f"attach {self.args['file']} to a free loop device{ro}{rec}"


class Detach(Step):
    type_name = "loop.detach"
    summary = ("detach a loop device, like `losetup -d DEV`; with `file`, only if the device "
               "still backs that file, and a device that backs nothing is done already "
               "(not reverted)")
    properties = {
        "dev": {"type": "string", "minLength": 1, "description": "the loop device, /dev/loopN"},
        "file": {"type": "string", "description": "the file the device must still back (same inode, "
                                                  "or the same path deleted); empty: no check"},
    }
    required = ("dev",)

    def apply(self, runtime):
        dev, path = self.args["dev"], self.args.get("file")
        if not is_loop_device(dev):
            raise StepError(f"losetup -d {dev!r}: not a loop device (/dev/loopN)")
        try:
            # remove run twice: the device backs nothing, the work is done (the
            # original's `losetup -d` fails there too, and it exits 0)
            if path and status(dev) is None:
                runtime.log("info", f"{dev} backs nothing: already detached")
                return
            # a device freed earlier (remove run twice) may back another guest's disk by now
            if path and not backs(dev, path):
                raise StepError(f"{dev} is not attached to {path} but to {backing_file(dev)}: "
                                "not detaching it")
            detach(dev)
        except OSError as e:
            raise StepError(f"losetup -d {dev} failed: {e.strerror or e}") from None

    def describe(self):
        what = f" if it backs {self.args['file']}" if self.args.get("file") else ""
        return f"detach loop device {self.args['dev']}{what}"
