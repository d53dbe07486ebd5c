"""sysctl.set: write a kernel parameter under /proc/sys, as the bash
`echo 1 >/proc/sys/net/ipv4/conf/${dev}/proxy_arp` does (no subprocess)."""
import os

from ..errors import StepError
from .base import Step

PROC_SYS = "/proc/sys"


def sysctl_path(name, root=PROC_SYS):
    """The file of a sysctl.

    `a/b/c` is a path under /proc/sys. `a.b.c` is sysctl(8)'s dotted form;
    since a device name may hold dots (vif1.0), the dots are matched against
    what /proc/sys really holds: net.ipv4.conf.vif1.0.proxy_arp is
    net/ipv4/conf/vif1.0/proxy_arp. None if no such file.
    """
    if not name or name.startswith(("/", ".")) or "\0" in name:
        return None
    if "/" in name:
        parts = name.split("/")
        if any(p in ("", ".", "..") for p in parts):
            return None
        path = os.path.join(root, *parts)
        return path if os.path.isfile(path) else None
    return _walk(root, name.split("."))


def _walk(base, words):
    # Join consecutive words with dots until a directory entry matches;
    # try the shortest first, back off if the rest does not resolve.
    for n in range(1, len(words) + 1):
        part = ".".join(words[:n])
        if part in (".", "..") or not part:
            continue
        path = os.path.join(base, part)
        if n == len(words):
            if os.path.isfile(path):
                return path
        elif os.path.isdir(path):
            found = _walk(path, words[n:])
            if found:
                return found
    return None


class Set(Step):
    type_name = "sysctl.set"
    summary = "write a kernel parameter (/proc/sys); revert writes the old value back"
    properties = {
        "name": {"type": "string", "minLength": 1,
                 "description": "sysctl name, dotted (net.ipv4.conf.vif1.0.proxy_arp) or as a "
                                "path under /proc/sys (net/ipv4/conf/vif1.0/proxy_arp)"},
        "value": {"type": ["string", "integer"], "description": "the value to write"},
    }
    required = ("name", "value")

    def _path(self):
        name = str(self.args["name"]).strip()
        path = sysctl_path(name)
        if path is None:
            raise StepError(f"no sysctl {name} (is the device there?)")
        return path

    def _value(self):
        value = str(self.args["value"]).strip()
        if not value or "\n" in value:
            raise StepError(f"invalid value {value!r} for sysctl {self.args['name']}")
        return value

    def undo_record(self, runtime):
        path = self._path()
        self._value()
        return {"path": path, "previous": _read(path)}

    def apply(self, runtime):
        _write(self.record["path"], self._value(), self.args["name"])

    @classmethod
    def undo(cls, runtime, args, record):
        # the path of the event's own device: gone with the device, nothing to put back
        if os.path.isfile(record["path"]) and record["path"].startswith(PROC_SYS + "/"):
            _write(record["path"], record["previous"], args["name"])

    @classmethod
    def describe_undo(cls, args, record):
        return f"sysctl {args['name']} = {record['previous']} again"

    def describe(self):
        return f"sysctl {self.args['name']} = {self.args['value']}"


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        raise StepError(f"cannot read {path}: {e.strerror}") from e


def _write(path, value, name):
    try:
        with open(path, "w") as f:
            f.write(value + "\n")
    except OSError as e:
        raise StepError(f"sysctl {name} = {value} failed: {e.strerror}") from e
