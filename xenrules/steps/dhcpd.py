"""ISC dhcpd steps of vif-nat: host entries, the interface list, the restart.

The files are edited in place, like the original's `cp tmp file` and
`echo >> file`: a symlinked dhcpd.conf stays a symlink (its target is
edited), and the inode, owner and mode stay. Each edit takes the lock
`lock` (default vif-nat-dhcp, the original's claim_lock name) unless the
rule took it already; the rule releases it with lock.release before the
restart, as the original does. A revert puts the file back as it was when
nobody changed it since, else undoes just this step's edit.
"""
import os
import re

from ..errors import StepError
from .base import Step

PATH = {"type": "string", "minLength": 1, "description": "absolute path of the file"}
LOCK = {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$",
        "description": "lock held while editing (locking.sh name; default vif-nat-dhcp)"}
DEFAULT_LOCK = "vif-nat-dhcp"
# The variables of the dhcpd defaults files that list interfaces: Red Hat
# (DHCPDARGS), SUSE (DHCPD_INTERFACE), Debian (INTERFACES, INTERFACESv4 since
# isc-dhcp-server 4.3).
DEFAULT_KEYS = "DHCPDARGS DHCPD_INTERFACE INTERFACES INTERFACESv4"

_HOSTNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_MAC = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
_IPV4 = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}")
# The defaults file is sourced by the init script's shell: an interface name
# may hold only characters that are plain text inside "..." there (not $, `
# or backslash, which would expand) and none that would end the value
# (quote, blank, #).
_IFNAME = re.compile(r"[A-Za-z0-9_.@+=%,-]{1,15}")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _checked(pattern, value, what):
    if not pattern.fullmatch(value):
        raise StepError(f"invalid {what} {value!r}")
    if pattern is _IPV4 and any(int(part) > 255 for part in value.split(".")):
        raise StepError(f"invalid {what} {value!r}")
    return value


def read_text(path):
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
            return fh.read()
    except OSError as e:
        raise StepError(f"cannot read {path}: {e.strerror}") from e


def write_in_place(path, text):
    """Rewrite the file through any symlink, keeping its inode (like cp onto it)."""
    try:
        with open(path, "r+", encoding="utf-8", errors="surrogateescape", newline="") as fh:
            fh.write(text)
            fh.truncate()
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as e:
        raise StepError(f"cannot write {path}: {e.strerror}") from e


# -- dhcpd.conf host entries ---------------------------------------------------

def host_entry(name, mac, address, router):
    """The one-line host declaration vif-nat writes."""
    return (f"host {name} {{ hardware ethernet {mac}; fixed-address {address}; "
            f"option routers {router}; option host-name \"{name}\"; }}")


def lines_of(text, keepends=False):
    """The lines of a text split at newlines only (str.splitlines also splits at \\r, \\f...)."""
    found = re.findall(r"[^\n]*\n|[^\n]+$", text)
    return found if keepends else [line.rstrip("\n") for line in found]


def _declares(line, name):
    # the whole name, so that dom1 never takes dom10's or dom1-2's entry
    return re.match(r"\s*host\s+" + re.escape(name) + r"(\s|\{|$)", line) is not None


def without_host(text, name):
    """(text without the lines declaring host NAME, the removed lines).
    Every line ends with a newline afterwards, as grep's output does."""
    kept, removed = [], []
    for line in lines_of(text):
        (removed if _declares(line, name) else kept).append(line)
    return "".join(line + "\n" for line in kept), removed


def with_host(text, name, entry):
    text, removed = without_host(text, name)
    return text + entry + "\n", removed


# -- interface lists in the dhcpd defaults file --------------------------------

def _split_assignment(line, key):
    """(value, quoted, rest) of a line `KEY=value rest`, or None."""
    if not line.startswith(key + "="):
        return None
    body = line[len(key) + 1:]
    if body.startswith('"'):
        end = body.find('"', 1)
        if end < 0:
            return body[1:], True, ""
        return body[1:end], True, body[end + 1:]
    found = re.match(r"[^\s\"#]*", body)
    return found.group(0), False, body[found.end():]


def _drop_word(value, word):
    """value without the whitespace-separated word and one space next to it."""
    for found in re.finditer(r"\S+", value):
        if found.group(0) != word:
            continue
        start, end = found.span()
        if end < len(value):
            end += 1           # the separator after it
        elif start > 0:
            start -= 1         # last word: the separator before it
        return value[:start] + value[end:], True
    return value, False


def _add_word(value, word):
    value, _ = _drop_word(value, word)
    if not value or value[-1].isspace():
        return value + word + " "     # the original's style: "vif1.0 vif2.0 "
    return value + " " + word          # never glue onto "eth0"


def edit_lists(text, keys, dev, add):
    """Add dev to (or remove it from) the value of every `KEY=` line."""
    out = []
    for line in lines_of(text, keepends=True):
        body = line.rstrip("\n")
        newline = line[len(body):]
        for key in keys:
            parts = _split_assignment(body, key)
            if parts is None:
                continue
            value, quoted, rest = parts
            if add:
                body = f'{key}="{_add_word(value, dev)}"{rest}'
            else:
                new, found = _drop_word(value, dev)
                if found:
                    body = f'{key}="{new}"{rest}' if quoted or new else f"{key}={rest}"
            break
        out.append(body + newline)
    return "".join(out)


# -- the steps ---------------------------------------------------------------

class _FileEdit(Step):
    """Common part: lock, read, edit, write in place; revert."""

    def file(self):
        path = self.args["file"]
        if not os.path.isabs(path):
            raise StepError(f"{path!r} is not an absolute path")
        if not os.path.isfile(path):
            raise StepError(f"{path} does not exist or is not a file")
        return path

    def lock_name(self):
        return self.args.get("lock") or DEFAULT_LOCK

    def edit(self, text):
        """Return the new text; raise StepError if the step cannot be done."""
        raise NotImplementedError

    def unedit(self, text):
        """Undo this step's edit on a text someone else changed since
        (self.removed: the lines the edit took out)."""
        raise NotImplementedError

    def undo_record(self, runtime):
        # under the lock from here to the end of the event: nobody edits the
        # file between this reading and apply's writing
        path = self.file()
        runtime.lock(self.lock_name())
        before = read_text(path)
        self.removed = []
        self.after = self.edit(before)
        self.planned = True
        if self.after == before:
            return None
        # the whole text before (a dhcpd.conf is a few KB): undo restores it
        # byte for byte unless someone edited the file since
        return {"before": before, "after_crc": _crc(self.after), "removed": self.removed}

    def apply(self, runtime):
        if not getattr(self, "planned", False):
            self.record = self.undo_record(runtime)   # called alone (tests): plan it now
        if self.record is not None:
            write_in_place(self.args["file"], self.after)
            runtime.test_point("dhcpd.edited")

    @classmethod
    def undo(cls, runtime, args, record):
        step = cls(args)
        step.removed = record["removed"]
        name = step.lock_name()
        took = name not in runtime.locks
        runtime.lock(name)
        try:
            path = args["file"]
            now = read_text(path)
            new = record["before"] if _crc(now) == record["after_crc"] else step.unedit(now)
            if new != now:
                write_in_place(path, new)
        finally:
            if took:
                runtime.unlock(name)

    @classmethod
    def describe_undo(cls, args, record):
        return f"{args['file']}: back as before the edit ({cls(args).describe()})"


def _crc(text):
    from zlib import crc32
    return crc32(text.encode("utf-8", "surrogateescape"))


class AddHost(_FileEdit):
    type_name = "dhcpd.add_host"
    summary = "put the one-line `host NAME { ... }` entry for a guest in dhcpd.conf (replacing NAME's old one)"
    properties = {
        "file": PATH,
        "name": {"type": "string", "description": "host name (dom<domid>[-<vifid>])"},
        "mac": {"type": "string", "description": "the guest's MAC address"},
        "address": {"type": "string", "description": "fixed-address: the guest's IPv4 address"},
        "router": {"type": "string", "description": "option routers: the router address on the vif"},
        "lock": LOCK,
    }
    required = ("file", "name", "mac", "address", "router")

    def entry(self):
        a = self.args
        return host_entry(_checked(_HOSTNAME, a["name"], "host name"),
                          _checked(_MAC, a["mac"], "MAC address"),
                          _checked(_IPV4, a["address"], "guest address"),
                          _checked(_IPV4, a["router"], "router address"))

    def undo_record(self, runtime):
        self.entry()   # refuse bad values before taking the lock
        return super().undo_record(runtime)

    def edit(self, text):
        new, self.removed = with_host(text, self.args["name"], self.entry())
        return new

    def unedit(self, text):
        new, _ = without_host(text, self.args["name"])
        return new + "".join(line + "\n" for line in self.removed)

    def describe(self):
        a = self.args
        return (f"{a['file']}: host {a['name']} {{ hardware ethernet {a['mac']}; "
                f"fixed-address {a['address']}; option routers {a['router']}; }}")


class RemoveHost(_FileEdit):
    type_name = "dhcpd.remove_host"
    summary = "remove the lines declaring `host NAME` from dhcpd.conf (other hosts stay)"
    properties = {"file": PATH, "name": {"type": "string", "description": "host name"}, "lock": LOCK}
    required = ("file", "name")

    def edit(self, text):
        _checked(_HOSTNAME, self.args["name"], "host name")
        new, self.removed = without_host(text, self.args["name"])
        return new

    def unedit(self, text):
        return text + "".join(line + "\n" for line in self.removed)

    def describe(self):
        return f"{self.args['file']}: remove host {self.args['name']}"


def _keys(args):
    keys = (args.get("keys") or DEFAULT_KEYS).split()
    for key in keys:
        _checked(_KEY, key, "variable name")
    return keys


KEYS = {"type": "string", "description": f"the variables holding interface lists (default {DEFAULT_KEYS})"}
DEV = {"type": "string",
       "description": "interface name (ASCII letters, digits, _.@+=%,- only: the file is sourced by a shell)"}


class AddInterface(_FileEdit):
    type_name = "dhcpd.add_interface"
    summary = "add an interface to the lists (INTERFACES=...) of the dhcpd defaults file"
    properties = {"file": PATH, "dev": DEV, "keys": KEYS, "lock": LOCK}
    required = ("file", "dev")

    def edit(self, text):
        dev = _checked(_IFNAME, self.args["dev"], "interface name")
        return edit_lists(text, _keys(self.args), dev, add=True)

    def unedit(self, text):
        return edit_lists(text, _keys(self.args), self.args["dev"], add=False)

    def describe(self):
        return f"{self.args['file']}: add {self.args['dev']} to {' '.join(_keys(self.args))}"


class RemoveInterface(_FileEdit):
    type_name = "dhcpd.remove_interface"
    summary = "remove an interface from the lists (INTERFACES=...) of the dhcpd defaults file"
    properties = {"file": PATH, "dev": DEV, "keys": KEYS, "lock": LOCK}
    required = ("file", "dev")

    def edit(self, text):
        dev = _checked(_IFNAME, self.args["dev"], "interface name")
        return edit_lists(text, _keys(self.args), dev, add=False)

    def unedit(self, text):
        return edit_lists(text, _keys(self.args), self.args["dev"], add=True)

    def describe(self):
        return f"{self.args['file']}: remove {self.args['dev']} from {' '.join(_keys(self.args))}"


class Restart(Step):
    type_name = "dhcpd.restart"
    summary = "run the dhcpd restart command (argv split like a shell's words; no shell)"
    properties = {
        "command": {"type": "string", "minLength": 1,
                    "description": "the command, e.g. '/etc/init.d/isc-dhcp-server restart'"},
        "timeout": {"type": ["string", "integer"], "description": "seconds before it is killed (default 30)"},
    }
    required = ("command",)

    def argv(self):
        import shlex
        try:
            argv = shlex.split(self.args["command"])
        except ValueError as e:
            raise StepError(f"cannot split command {self.args['command']!r}: {e}") from e
        if not argv:
            raise StepError("empty restart command")
        return argv

    def timeout(self):
        text = str(self.args.get("timeout") or "30").strip()
        if not (text.isascii() and text.isdigit()) or int(text) == 0:
            raise StepError(f"invalid timeout {text!r}")
        return int(text)

    def apply(self, runtime):
        import subprocess
        from .. import deadline
        argv = self.argv()
        try:
            # its own timeout, or the event's budget if less (DeadlineError then)
            proc = deadline.run(argv, " ".join(argv), self.timeout(), stderr=subprocess.STDOUT)
        except subprocess.TimeoutExpired as e:
            raise StepError(f"{' '.join(argv)} did not finish in {self.timeout()} s") from e
        except OSError as e:
            raise StepError(f"cannot run {argv[0]}: {e.strerror}") from e
        output = (proc.stdout or "").strip()
        if output:
            runtime.log("debug", f"{' '.join(argv)}: {output[-2000:]}")
        if proc.returncode != 0:
            raise StepError(f"{' '.join(argv)} exited with status {proc.returncode}"
                            + (f": {output.splitlines()[-1]}" if output else ""))

    def describe(self):
        return f"run {self.args['command']}"
