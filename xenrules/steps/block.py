"""Block device steps: what Xen's `block` script and block-common.sh do.

A vbd's backend says what to export in `params` (a device or a file), how in
`mode` (r, w, or with `!`: no sharing check) and `type`. The rule
(rules.d/50-block.yaml) chains these steps; each one mirrors a piece of the
bash, with the same messages:

  block.check_phy             expand_dev, links resolved, must be a block device
  block.check_file            readlink -f, must be a regular file, not on a
                              kernel file system (/proc, /sys, ...)
  block.check_writable        mode w needs a file with a write bit (else ebusy)
  block.check_sharing         check_sharing + do_ebusy: /proc/mounts, loop
                              devices on the same file, other guests'
                              physical-device (same_vm, stubdom targets)
  block.write_physical_device write_dev: physical-device (hex major:minor)
                              and physical-device-path
  block.run_original          other types: the original `block` script, which
                              runs block-<type> (a type that is no script name
                              is refused)
"""
import os
import stat

from ..errors import BusyError, StepError
from .base import Step

PATH = {"type": "string"}
MODE = {"type": "string", "description": "the backend's mode: r, w, or with ! (no sharing check)"}


# -- what the bash helpers compute -------------------------------------------

def canonical_mode(mode):
    """canonicalise_mode: 'r' without a w, 'w' with a w and no !, else '!'."""
    if "w" not in mode:
        return "r"
    return "w" if "!" not in mode else "!"


def expand_dev(name):
    return name if name.startswith("/") else "/dev/" + name


def params_kind(path):
    """What `params` really is, following links: 'phy' ([ -b ]), 'file' ([ -f ]) or ''."""
    try:
        mode = os.stat(path).st_mode if path else 0
    except (OSError, ValueError):
        return ""
    if stat.S_ISBLK(mode):
        return "phy"
    return "file" if stat.S_ISREG(mode) else ""


def readlink_f(path):
    """`readlink -f`: the canonical path, or None when a directory on the way is missing."""
    resolved = os.path.realpath(path)
    return resolved if os.path.isdir(os.path.dirname(resolved) or "/") else None


def resolve_phy(params):
    """The device path block's phy branch uses: under /dev unless absolute, links resolved."""
    dev = expand_dev(params)
    if os.path.islink(dev):
        return readlink_f(dev) or dev
    return dev


def major_minor(path):
    """`stat -L -c %t:%T`: the device number in hex, unpadded ('7:a'); None if missing."""
    try:
        rdev = os.stat(path).st_rdev
    except OSError:
        return None
    return "%x:%x" % (os.major(rdev), os.minor(rdev))


def _parse_mm(text):
    """'7:a' -> (7, 10); None when it is not hex major:minor."""
    major, sep, minor = (text or "").strip().partition(":")
    try:
        return (int(major, 16), int(minor, 16)) if sep else None
    except ValueError:
        return None


def _unescape_mount_field(text):
    # /proc/mounts writes space, tab, newline and backslash as \ooo
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and text[i + 1:i + 4].isdigit():
            out.append(chr(int(text[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


# File systems whose files are kernel or process state, never disk images:
# a guest given /proc/sys/kernel/core_pattern read-write through a loop
# device would write dom0's sysctls (losetup, so the original, attaches it).
KERNEL_FS = frozenset(("proc", "sysfs", "debugfs", "tracefs", "securityfs", "configfs",
                       "cgroup", "cgroup2", "bpf", "efivarfs", "pstore", "devpts",
                       "selinuxfs", "binfmt_misc", "fusectl", "mqueue", "nsfs"))
# domids of guests: DOMID_FIRST_RESERVED (0x7FF0) and above are Xen's own
DOMID_LIMIT = 0x7FF0


def filesystem_of(path, mountinfo):
    """The file system type holding path (absolute, links resolved) from the
    text of /proc/self/mountinfo: the longest mount point that is path or a
    directory above it, the last such line when mounts are stacked."""
    best, fstype = -1, ""
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        try:
            point = _unescape_mount_field(fields[4])
            kind = fields[fields.index("-", 6) + 1]
        except (IndexError, ValueError):
            continue
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= best:
            best, fstype = len(point), kind
    return fstype


def kernel_fs_of(path):
    """The kernel file system (proc, sysfs...) path is on, or '' for any other."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError:
        return ""
    kind = filesystem_of(os.path.realpath(path), text)
    return kind if kind in KERNEL_FS else ""


def refuse_kernel_file(path):
    """StepError when path is a file of /proc, /sys or the like: no disk image."""
    kind = kernel_fs_of(path)
    if kind:
        raise StepError(f"{path} is a file of the kernel's {kind} file system, not a disk "
                        "image: refused")


def is_domid(text):
    """A guest's domain id as libxl writes it: ASCII digits, below 0x7FF0."""
    return 0 < len(text) <= 5 and text.isascii() and text.isdigit() and int(text) < DOMID_LIMIT


def valid_block_type(kind):
    """A `type` the original may turn into block-<type>: empty (the original's
    own branches) or a script name word, no path, no space or shell syntax."""
    if not kind:
        return True
    return (len(kind) <= 64 and kind.isascii() and ".." not in kind and kind[0].isalnum()
            and all(c.isalnum() or c in "_.+-" for c in kind))


def _read_default(xs, path, default):
    # xenstore_read_default: a node that exists, even empty, is its value
    value = xs.read(path)
    return default if value is None else value


def _domain_key(xs, domid, key, default):
    """xenstore_read_default /local/domain/<domid>/<key>. A domid read from
    xenstore that is no number names no domain: the default, as the bash
    gets from a failed read (never a request for a path it makes up)."""
    if not (domid.isascii() and domid.isdigit()):
        return default
    return _read_default(xs, f"/local/domain/{domid}/{key}", default)


def same_vm(xs, frontend_id, frontend_uuid, otherdom):
    """block-common.sh's same_vm: the other domain is this guest's VM, its
    stubdom's target, or has the same target (stubdom and its guest)."""
    othervm = _domain_key(xs, otherdom, "vm", frontend_uuid)
    target = _domain_key(xs, frontend_id, "target", "-1")
    targetvm = _domain_key(xs, target, "vm", "No Target")
    otarget = _domain_key(xs, otherdom, "target", "-1")
    otvm = _domain_key(xs, otarget, "vm", "No Other Target")
    uuid = frontend_uuid[:-2] if frontend_uuid.endswith("-1") else frontend_uuid
    return uuid == othervm or targetvm == othervm or uuid == otvm or targetvm == otvm


def _xs_name_ok(name):
    return bool(name) and set(name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_@")


def find_conflict(xs, numbers, mode, frontend_id, backends, mounts="/proc/self/mounts"):
    """check_sharing after the device list is known: ('local', mm) when a
    device is mounted in dom0 in a way the mode forbids, ('guest', mm) when
    another VM's vbd uses it so, else None. numbers: {(major, minor): 'mm'}."""
    with open(mounts, encoding="utf-8", errors="surrogateescape") as f:
        lines = f.read().splitlines()
    for line in lines:
        fields = line.split(" ")
        if len(fields) < 4:
            continue
        options = fields[3]
        if mode != "w" and (options == "ro" or options.startswith("ro,")):
            continue   # a read-only mount does not stop a read-only export
        source = _unescape_mount_field(fields[0])
        mm = major_minor(source) if os.path.exists(source) else None
        if mm and _parse_mm(mm) in numbers:
            return "local", mm
    frontend_uuid = None
    for dom in xs.list(backends):
        if not _xs_name_ok(dom):
            continue
        for dev in xs.list(f"{backends}/{dom}"):
            if not _xs_name_ok(dev):
                continue
            d = _read_default(xs, f"{backends}/{dom}/{dev}/physical-device", "")
            if not d or _parse_mm(d) not in numbers:
                continue
            if mode != "w":
                other = canonical_mode(_read_default(xs, f"{backends}/{dom}/{dev}/mode", ""))
                if other != "w":
                    continue   # read-only next to read-only is fine
            if frontend_uuid is None:
                frontend_uuid = _domain_key(xs, frontend_id, "vm", "unknown")
            if not same_vm(xs, frontend_id, frontend_uuid, dom):
                return "guest", d
    return None


def _absolute(path):
    # xenstored resolves a relative path under dom0's own directory
    return path if path.startswith("/") else "/local/domain/0/" + path


def _same_family(backend, backends):
    """The list the sharing check reads must be the one holding this very
    backend: XENBUS_TYPE/XENBUS_BASE_PATH naming another list (backend/vif)
    would let a second guest have a disk another has read-write."""
    parent = backend.rstrip("/").rsplit("/", 2)[0]
    if _absolute(parent) != _absolute(backends.rstrip("/")):
        raise StepError(f"the sharing check would read {backends!r}, but this device's backend "
                        f"is {backend!r}: XENBUS_BASE_PATH/XENBUS_TYPE do not match XENBUS_PATH")


def busy_message(prefix, mode, where):
    """do_ebusy's sentence, word for word."""
    dom, when = ("a guest ", "now") if where == "guest" else ("the privileged ", "by a guest")
    m1, m2 = ("", "") if mode == "w" else ("read-write ", "read-only ")
    return f"{prefix}{m1}in {dom}domain,\nand so cannot be mounted {m2}{when}."


# -- steps ---------------------------------------------------------------------

class CheckPhy(Step):
    type_name = "block.check_phy"
    summary = "the device (under /dev unless absolute, links resolved) must exist and be a block device"
    properties = {"dev": dict(PATH, description="the backend's params, e.g. /dev/vg0/guest or sdb")}
    required = ("dev",)

    def apply(self, runtime):
        dev = expand_dev(self.args["dev"])
        if os.path.islink(dev):
            resolved = readlink_f(dev)
            if resolved is None:
                raise StepError(f"{dev} link does not exist.")
            dev = resolved
        if not os.path.exists(dev):
            raise StepError(f"{dev} does not exist.")
        if not stat.S_ISBLK(os.stat(dev).st_mode):
            raise StepError(f"{dev} is not a block device.")

    def describe(self):
        return f"require block device {self.args['dev']}"


class CheckFile(Step):
    type_name = "block.check_file"
    summary = ("the file (links resolved, like readlink -f) must exist, be a regular file and "
               "not be on a kernel file system (/proc, /sys, debugfs...)")
    properties = {"path": dict(PATH, description="the backend's params, a disk image")}
    required = ("path",)

    def apply(self, runtime):
        path = self.args["path"]
        resolved = readlink_f(path) if path else None
        if resolved is None:
            raise StepError(f"{path} does not exist.")
        if not os.path.isfile(resolved):
            raise StepError(f"{resolved} does not exist.")
        refuse_kernel_file(resolved)

    def describe(self):
        return f"require regular file {self.args['path']}"


class CheckWritable(Step):
    type_name = "block.check_writable"
    summary = "mode w needs a file with a write permission bit (the bash `stat -c %A | grep w`), else busy"
    properties = {"file": dict(PATH, description="the disk image"), "mode": MODE}
    required = ("file", "mode")

    def apply(self, runtime):
        if canonical_mode(self.args["mode"]) != "w":
            return
        try:
            bits = os.stat(self.args["file"]).st_mode
        except OSError as e:
            raise StepError(f"{self.args['file']}: {e.strerror}") from None
        if not bits & 0o222:
            raise BusyError(f"File {self.args['file']} is read-only, and so I will not\n"
                            "mount it read-write in a guest domain.")

    def describe(self):
        return f"mode {self.args['mode']}: require a writable {self.args['file']}"


class CheckSharing(Step):
    type_name = "block.check_sharing"
    summary = ("refuse (busy) a device or file already in use in a way the mode forbids: mounted in "
               "dom0, or used by another VM's vbd (its stubdom and target excepted); mode ! skips it")
    properties = {
        "device": dict(PATH, description="the block device to export (phy)"),
        "file": dict(PATH, description="or the disk image, checked through its loop devices"),
        "mode": MODE,
        "frontend_id": {"type": "string", "description": "the guest's domid (backend frontend-id)"},
        "backends": {"type": "string", "description": "where every vbd backend is listed: "
                                                      "{backend_base}/{device} (backend/vbd)"},
    }
    required = ("mode", "frontend_id", "backends")

    def apply(self, runtime):
        from .loop import devices_of
        from .xenstore import checked_path
        frontend_id = self.args["frontend_id"]
        if not is_domid(frontend_id):
            # the check compares VMs by it: a guess could share another guest's disk
            raise StepError(f"frontend-id {frontend_id!r} is not a domain id")
        mode = canonical_mode(self.args["mode"])
        if mode == "!":
            return
        device, path = self.args.get("device"), self.args.get("file")
        if bool(device) == bool(path):
            raise StepError("block.check_sharing: give either device or file")
        backends = checked_path(self.args["backends"])
        _same_family(runtime.backend_path(), backends)
        if path:
            # the loop devices already attached to this very file (device and inode)
            try:
                names = [major_minor(d) for d in devices_of(path)]
            except OSError:
                raise StepError(f"Unable to lookup {path}: dev:  inode: ") from None
        else:
            names = [major_minor(device)]
        numbers = {_parse_mm(n): n for n in names if n}
        if not numbers:
            return
        found = find_conflict(runtime.xenstore, numbers, mode, frontend_id, backends)
        if found is None:
            return
        where, mm = found
        if path:
            prefix = f"File {path} is loopback-mounted through {mm},\nwhich is mounted "
        else:
            prefix = f"Device {device} is mounted "
        raise BusyError(busy_message(prefix, mode, where))

    def describe(self):
        what = self.args.get("device") or self.args.get("file")
        return f"require {what} not in use against mode {self.args['mode']}"


class WritePhysicalDevice(Step):
    type_name = "block.write_physical_device"
    summary = ("write <backend>/physical-device (hex major:minor) and physical-device-path, "
               "which blkback waits for (write_dev)")
    properties = {"dev": dict(PATH, description="the block device handed to blkback")}
    required = ("dev",)
    KEYS = ("physical-device", "physical-device-path")

    def apply(self, runtime):
        mm = major_minor(self.args["dev"]) if self.args["dev"] else None
        if not mm:
            raise StepError("Backend device does not exist")
        backend = self.record["backend"]
        runtime.xenstore.write(f"{backend}/physical-device", mm)
        runtime.xenstore.write(f"{backend}/physical-device-path", self.args["dev"])

    def undo_record(self, runtime):
        backend = runtime.backend_path()
        return {"backend": backend,
                "previous": {k: runtime.xenstore.read(f"{backend}/{k}") for k in self.KEYS}}

    @classmethod
    def undo(cls, runtime, args, record):
        from .xenstore import restore_node
        for key, value in record["previous"].items():
            restore_node(runtime.xenstore, f"{record['backend']}/{key}", value)

    def describe(self):
        return f"write <backend>/physical-device and physical-device-path for {self.args['dev']}"


class RunOriginal(Step):
    type_name = "block.run_original"
    summary = ("hand the event to the original block script (it runs block-<type>: iscsi, nbd, "
               "drbd, ...); replaces this process; refuses a type that is no script name")
    properties = {
        "reason": {"type": "string", "description": "why, for the log"},
        "type": {"type": "string", "description": "the backend's type: the original runs "
                                                  "block-<type>, so a type that is no script name "
                                                  "(a '/', '..', space, shell syntax, over 64 "
                                                  "bytes) is refused"},
    }

    def apply(self, runtime):
        from ..fallback import run_original
        kind = self.args.get("type") or ""
        if not valid_block_type(kind):
            # the original would test ${XEN_SCRIPT_DIR}/block-$type: no path outside that
            # directory, no name no script of Xen's has
            raise StepError(f"refusing block type {kind!r}: block-<type> must name a script "
                            "in the scripts directory")
        reason = self.args.get("reason") or "handed over by the rule"
        # exec keeps no xenstore connection or lock of ours; the original owns
        # the device from here, so no journal of ours may undo it later
        runtime.finish_journal()
        runtime.close()
        run_original(runtime.config, runtime.event, runtime.log, reason)

    def describe(self):
        return f"run the original script ({self.args.get('reason') or 'handed over by the rule'})"
