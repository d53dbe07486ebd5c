"""The events the benchmark sends, each with the sandbox it needs.

A scenario sets up one simulated dom0 and gives a round of events (in
order, so each round leaves the dom0 as it found it: online then offline,
add then remove). Each event says how to check its result: the exit status
and a light look at the end state, so a fast wrong answer never counts.
A scenario whose rule file (or sandbox helper) is missing is "not
available", with the reason.
"""
import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES_D = os.path.join(REPO_ROOT, "rules.d")
VIF_BACK = "/local/domain/0/backend/vif/%d/%d"
DOM0_IP = "192.0.2.1"


class Event:
    def __init__(self, label, script, words, env, check, code=0, after=None):
        self.label = label        # the row of the report, e.g. "vif-bridge online"
        self.script = script
        self.words = words
        self.env = env
        self.check = check        # check(dom0) -> None if right, else what is wrong
        self.code = code          # the exit status both implementations must give
        self.after = after        # after(dom0): unmeasured, puts back what netback would


def status_is(path, want, reset=True):
    """A check: xenstore `path` is `want` (then cleared, as libxl leaves it for the next run)."""
    def check(dom0):
        have = dom0.xs_read(path)
        if reset:
            dom0.xs_write(path, "")
        return None if have == want else f"{path} is {have!r}, not {want!r}"
    return check


def link_check(name, master=None, up=True):
    def check(dom0):
        link = dom0.links().get(name)
        if link is None:
            return f"{name} is gone"
        if (link.get("master") == master) and (("UP" in link["flags"]) == up):
            return None
        return f"{name}: master {link.get('master')}, flags {link['flags']}"
    return check


def both(*checks):
    def check(dom0):
        for c in checks:
            why = c(dom0)
            if why:
                return why
        return None
    return check


def add_uplink(dom0, name="eth0", cidr=DOM0_IP + "/24"):
    """dom0's uplink for routed and NAT guests: a veth with an address, up."""
    dom0.ip("link", "add", "name", name, "address", "02:58:99:00:01:01", "type", "veth",
            "peer", "name", name + "p", "address", "02:58:99:00:01:02")
    dom0.ip("address", "add", cidr, "dev", name)
    dom0.ip("link", "set", "dev", name, "up")
    dom0.ip("link", "set", "dev", name + "p", "up")


class Scenario:
    rule_file = None      # rules.d file the events need
    bridges = ("xenbr0",)

    def available(self):
        """None, or why this scenario cannot run here."""
        if self.rule_file and not os.path.exists(os.path.join(RULES_D, self.rule_file)):
            return f"rules.d/{self.rule_file} does not exist yet"
        return None

    def setup(self, dom0):
        raise NotImplementedError

    def cleanup(self):
        pass


class VifBridge(Scenario):
    name = "vif-bridge"
    rule_file = "50-vif-bridge.yaml"

    def setup(self, dom0):
        dom0.add_vif(1, 0)
        env = dom0.hotplug_env(1, 0)
        back = VIF_BACK % (1, 0)
        return [
            Event("vif-bridge online", "vif-bridge", ["online", "type_if=vif"], env,
                  both(status_is(back + "/hotplug-status", "connected"),
                       link_check("vif1.0", "xenbr0", True))),
            Event("vif-bridge offline", "vif-bridge", ["offline", "type_if=vif"], env,
                  link_check("vif1.0", None, False)),
        ]


class Tap(Scenario):
    name = "tap"
    rule_file = "50-vif-bridge.yaml"

    def setup(self, dom0):
        dom0.add_vif(1, 0)
        dom0.add_tap(1, 0)
        env = dom0.hotplug_env(1, 0, type_if="tap")
        return [
            Event("tap add", "vif-bridge", ["add", "type_if=tap"], env,
                  link_check("vif1.0-emu", "xenbr0", True)),
            Event("tap remove", "vif-bridge", ["remove", "type_if=tap"], env,
                  link_check("vif1.0-emu", None, False)),
        ]


class ErrorPath(Scenario):
    """vif-bridge online for a bridge that does not exist: both fail, say so in xenstore."""
    name = "error path"
    rule_file = "50-vif-bridge.yaml"

    def setup(self, dom0):
        dom0.add_vif(2, 0, bridge="nosuchbr0")
        env = dom0.hotplug_env(2, 0)
        return [Event("error: no bridge", "vif-bridge", ["online", "type_if=vif"], env,
                      status_is(VIF_BACK % (2, 0) + "/hotplug-status", "error"), code=1)]


class VifRoute(Scenario):
    name = "vif-route"
    rule_file = "50-vif-route.yaml"
    bridges = ()

    def setup(self, dom0):
        add_uplink(dom0)
        dom0.add_vif(1, 0, bridge=None, ip="10.0.0.5", script="vif-route")
        env = dom0.hotplug_env(1, 0, script="vif-route")
        back = VIF_BACK % (1, 0)
        return [
            Event("vif-route online", "vif-route", ["online", "type_if=vif"], env,
                  status_is(back + "/hotplug-status", "connected")),
            Event("vif-route offline", "vif-route", ["offline", "type_if=vif"], env,
                  lambda d: None),
        ]


class VifNat(Scenario):
    name = "vif-nat"
    rule_file = "50-vif-nat.yaml"
    bridges = ()

    def setup(self, dom0):
        add_uplink(dom0)
        dom0.add_vif(1, 0, bridge=None, script="vif-nat")
        env = dict(dom0.hotplug_env(1, 0, script="vif-nat"), dhcp="no")   # no /etc edits
        back = VIF_BACK % (1, 0)
        return [
            Event("vif-nat online", "vif-nat", ["online", "type_if=vif"], env,
                  status_is(back + "/hotplug-status", "connected")),
            # netback deletes the device after offline; the next online finds
            # it new, without the router address (the original's `ip addr add`
            # fails on an address already there)
            Event("vif-nat offline", "vif-nat", ["offline", "type_if=vif"], env,
                  link_check("vif1.0", None, False),
                  after=lambda d: d.ip("address", "flush", "dev", "vif1.0")),
        ]


class Block(Scenario):
    """block add/remove of a file image (a loop device is attached and detached)
    or of a phy device (a loop device the benchmark attached)."""
    rule_file = "50-block.yaml"
    bridges = ()

    def __init__(self, kind):
        self.kind = kind
        self.name = f"block {kind}"
        self.images = None

    def available(self):
        why = super().available()
        if why:
            return why
        try:
            import xenrules.sandbox.vbd   # noqa: F401
        except ImportError as e:
            return f"xenrules/sandbox/vbd.py cannot be imported: {e}"
        return None

    def setup(self, dom0):
        from xenrules.sandbox import vbd
        self.images = vbd.Images(dom0.state_dir, prefix="xr-bench-blk-")
        domid, devid = 1, 51712
        back = vbd.backend_path(domid, devid)
        if self.kind == "file":
            params = self.images.make("disk.img")
        else:
            self.images.make("phy.img")
            params = self.images.attach("phy.img")
        vbd.add_vbd(dom0, domid, devid, params=params, mode="w")
        env = vbd.block_env(dom0, domid, devid)
        images = self.images

        def attached(dom0):
            why = status_is(back + "/hotplug-status", "connected")(dom0)
            if why:
                return why
            if self.kind == "file" and len(images.devices()) != 1:
                return f"loop devices on the image: {images.devices()}"
            return None

        def detached(dom0):
            want = 0 if self.kind == "file" else 1
            if len(images.devices()) != want:
                return f"loop devices on the images after remove: {images.devices()}"
            return None

        def fresh_backend(dom0):   # libxl removes the backend after remove; the next add is new
            dom0.xs_rm(back)
            vbd.add_vbd(dom0, domid, devid, params=params, mode="w")

        return [Event(f"block add {self.kind}", "block", ["add"], env, attached),
                Event(f"block remove {self.kind}", "block", ["remove"], env, detached,
                      after=fresh_backend)]

    def cleanup(self):
        if self.images is not None:
            self.images.cleanup()
            self.images = None


def all_scenarios():
    return [VifBridge(), Tap(), VifRoute(), VifNat(), Block("file"), Block("phy"), ErrorPath()]
