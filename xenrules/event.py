"""A hotplug event: what the toolstack asked for, parsed from argv and env.

Both calling conventions land here: libxl (Xen >= 4.2) runs the script with
`online|offline type_if=vif`, `add|remove type_if=tap` or `add|remove`, and
udev (Xen 4.1) runs `vif-setup online type_if=vif`, which execs `$script`.
Words `key=value` are data: they are split, never evaluated.
"""
import os


# The Xen 4.1 udev rules call this dispatcher, which execs $script.
DISPATCHERS = ("vif-setup",)
DEFAULT_VIF_SCRIPT = "vif-bridge"
# Variables every rule may use without declaring them.
BUILTIN_NAMES = ("script", "action", "device", "type_if", "backend", "backend_base",
                 "vif", "interface", "netdev", "domid", "devid")


class Event:
    """argv + environment of one hotplug call, and the variables they define."""

    def __init__(self, argv0, words, env):
        self.argv0 = argv0
        self.words = list(words)
        self.env = dict(env)
        self.command = ""
        self.params = {}
        for word in self.words:
            # bash's `expr index "$arg" =` > 1: a word whose first '=' is not
            # its first character is an assignment, the first other word is
            # the command (findCommand/evalVariables of xen-script-common.sh).
            eq = word.find("=")
            if eq > 0:
                self.params[word[:eq]] = word[eq + 1:]
            elif eq < 0 and not self.command:
                self.command = word
        self.script = self._script_name()
        self.builtins = self._builtin_vars()

    def _script_name(self):
        name = os.path.basename(self.argv0)
        if name in DISPATCHERS:
            name = os.path.basename(self.value("script")) or DEFAULT_VIF_SCRIPT
        return name

    def value(self, name):
        """A parameter: the environment, overridden by a key=value argument."""
        if name in self.params:
            return self.params[name]
        return self.env.get(name, "")

    def origin(self, name):
        if name in self.params:
            return f"argument {name}="
        if name in self.env:
            return f"environment {name}"
        return f"{name} not set"

    def _builtin_vars(self):
        """Variables every rule may use, each with where it came from."""
        device = self.value("XENBUS_TYPE")
        type_if = self.value("type_if")
        if not type_if and (device == "vif" or self.script.startswith("vif")):
            type_if = "vif"  # "Older versions of Xen do not pass in the type"
        out = {
            "script": (self.script, f"program name {self.argv0}"),
            "action": (self.command, "command word"),
            "device": (device, self.origin("XENBUS_TYPE")),
            "type_if": (type_if, self.origin("type_if") if self.value("type_if") else "default"),
            "backend": (self.value("XENBUS_PATH"), self.origin("XENBUS_PATH")),
            "backend_base": (self.value("XENBUS_BASE_PATH"), self.origin("XENBUS_BASE_PATH")),
            "vif": (self.value("vif"), self.origin("vif")),
            "interface": (self.value("INTERFACE"), self.origin("INTERFACE")),
            "netdev": (self.value("netdev"), self.origin("netdev")),
        }
        if type_if == "tap":
            out.update(self._tap_vars())
        else:
            domid, devid = split_backend_path(out["backend"][0])
            path = out["backend"][0]
            if path and not (domid or _store_path(path)):
                # hostile or garbled: unset, so a rule's `require: backend`
                # refuses the event before any step, naming XENBUS_PATH
                # (a test's own store path, /xr-test/backend, stays usable)
                out["backend"] = ("", "XENBUS_PATH %.60r refused: not "
                                      "backend/<type>/<domid>/<devid>" % path)
            out["domid"] = (domid, "from XENBUS_PATH")
            out["devid"] = (devid, "from XENBUS_PATH")
        return out

    def _tap_vars(self):
        # An emulated NIC is named "vif<domid>.<devid>-emu"; its backend is
        # the vif's, which the tap event does not carry under udev (4.1).
        # Split the name exactly as vif-common.sh does, whatever it is (udev
        # on 4.1 says tapD.N): rules decide what to do with odd names.
        name = self.value("INTERFACE")
        if not name:
            return {"domid": ("", "INTERFACE not set"), "devid": ("", "INTERFACE not set"),
                    "backend": ("", "INTERFACE not set")}
        core = name[3:] if name.startswith("vif") else name
        if core.endswith("-emu"):
            core = core[:-4]
        domid = core.rsplit(".", 1)[0]     # ${dev_%.*}
        devid = core.split(".", 1)[-1]     # ${dev_#*.}
        src = f"from INTERFACE={name}"
        return {
            "domid": (domid, src),
            "devid": (devid, src),
            "backend": (f"/local/domain/0/backend/vif/{domid}/{devid}", src),
        }

    def describe(self):
        words = " ".join(self.words)
        return f"{self.script} {words}".rstrip()


def split_backend_path(path):
    """backend/<type>/<domid>/<devid> -> (domid, devid); ('', '') if not that shape."""
    parts = path.strip("/").split("/")
    if len(parts) >= 4 and parts[-4] == "backend" and _id(parts[-2]) and _id(parts[-1]):
        return parts[-2], parts[-1]
    return "", ""


def _id(text):
    """A domid/devid: ASCII digits only (str.isdigit takes any script's
    digits), at most 10 of them (both are 32-bit at most)."""
    return 0 < len(text) <= 10 and text.isascii() and text.isdigit()


def _store_path(path):
    from .xenstore import valid_path
    return len(path) <= 1024 and valid_path(path.encode("utf-8", "surrogateescape"))

