"""vscsi: xenrules against Debian's original script, event for event.

Debian 4.17's /etc/xen/scripts/vscsi (the same as Xen 4.1's) means to do one
thing: `add` writes <backend>/hotplug-status = connected; `remove` does
nothing. It reads no sysfs and resolves no SCSI device (libxl and
xen-scsiback do that), so no SCSI device is needed here: the sandboxes hold
the xenstore tree of a vscsi backend, and the tests compare the end states.

The script says `#!/bin/sh` but sources bash-only helpers (locking.sh's
`for ((...))`): on Debian, where /bin/sh is dash, it dies with a syntax error
(exit 2) before doing anything. The oracle is therefore the script run by
bash, i.e. what it does where /bin/sh is bash; the dash failure is pinned by
its own test and is an intended difference (xenrules works).
"""
import dataclasses
import os

import pytest

from differential import assert_same, comparable, Event, exits, explain, normalize, run_events
from xenrules.sandbox.originals import originals_dir

pytestmark = pytest.mark.netns

BACK = "/local/domain/0/backend/vscsi/1/0"


@dataclasses.dataclass
class VscsiEvent(Event):
    """`vscsi ACTION` as Xen 4.1's udev rule runs it (xen-backend.rules)."""
    script: str = "vscsi"

    def environment(self, dom0):
        env = {"XENBUS_TYPE": "vscsi", "XENBUS_PATH": "backend/vscsi/%d/%d" % (self.domid, self.devid),
               "XENBUS_BASE_PATH": "backend", "ACTION": self.args[0],
               "XENSTORED_PATH": dom0.xenstore_socket}
        env.update(self.env)
        return env


def vscsi_backend(dom0, domid=1, devid=0):
    """The backend tree the toolstack writes for `vscsi = ['/dev/sdb, 0:0:0:0']`."""
    back = "/local/domain/0/backend/vscsi/%d/%d" % (domid, devid)
    front = "/local/domain/%d/device/vscsi/%d" % (domid, devid)
    keys = {back + "/frontend": front, back + "/frontend-id": str(domid), back + "/online": "1",
            back + "/state": "1", back + "/feature-host": "0",
            back + "/vscsi-devs/dev-0/p-dev": "2:0:0:0",
            back + "/vscsi-devs/dev-0/p-devname": "/dev/sdb",
            back + "/vscsi-devs/dev-0/v-dev": "0:0:0:0",
            back + "/vscsi-devs/dev-0/state": "1",
            front + "/backend": back, front + "/backend-id": "0", front + "/state": "1"}
    for path, value in keys.items():
        dom0.xs_write(path, value)


class _Scenario:
    def __init__(self, events):
        self.events = events


def run(dom0_factory, *events, setup=vscsi_backend, shell="bash"):
    """Two identical sandboxes: the original run by `shell` in one, xenrules
    in the other. Returns both end states (as differential.compare_scenario)."""
    scenario = _Scenario(list(events))
    orig_dom0, xr_dom0 = dom0_factory(bridges=()), dom0_factory(bridges=())
    for dom0 in (orig_dom0, xr_dom0):
        setup(dom0)
    assert normalize(orig_dom0.state(), orig_dom0) == normalize(xr_dom0.state(), xr_dom0)

    def original(script, args, env):
        return orig_dom0.run([shell, os.path.join(originals_dir(), script)] + args, env)

    def xenrules(script, args, env):
        return xr_dom0.run_xenrules(script, args, env)

    states = []
    for dom0, runner in ((orig_dom0, original), (xr_dom0, xenrules)):
        outcomes, results = run_events(dom0, scenario, runner)
        state = normalize(dom0.state(), dom0)
        state["outcomes"] = outcomes
        state["output"] = [{"stdout": r.stdout, "stderr": r.stderr, "log": r.hotplug_log}
                           for r in results]
        states.append(state)
    return states


def assert_same_but_exit(orig, xr, **kw):
    a, b = comparable(orig, **kw), comparable(xr, **kw)
    a.pop("outcomes"), b.pop("outcomes")
    assert a == b, explain(a, b)


def test_add_reports_success(dom0_factory, originals):
    orig, xr = run(dom0_factory, VscsiEvent(("add",)))
    assert exits(orig) == [0]
    assert orig["xenstore"][BACK + "/hotplug-status"] == "connected"
    assert_same(orig, xr)


def test_add_then_remove_leaves_the_backend_as_add_left_it(dom0_factory, originals):
    orig, xr = run(dom0_factory, VscsiEvent(("add",)), VscsiEvent(("remove",)))
    assert exits(orig) == [0, 0]
    assert orig["xenstore"][BACK + "/hotplug-status"] == "connected"
    assert orig["xenstore"][BACK + "/vscsi-devs/dev-0/p-dev"] == "2:0:0:0"
    assert_same(orig, xr)


def test_remove_alone_changes_nothing(dom0_factory, originals):
    orig, xr = run(dom0_factory, VscsiEvent(("remove",)))
    assert exits(orig) == [0]
    assert BACK + "/hotplug-status" not in orig["xenstore"]
    assert_same(orig, xr)


def test_add_called_by_libxl_convention_with_the_device_as_argument(dom0_factory, originals):
    # extra key=value words are parameters, not the command (findCommand)
    orig, xr = run(dom0_factory, VscsiEvent(("add", "type_if=vscsi")))
    assert exits(orig) == [0]
    assert orig["xenstore"][BACK + "/hotplug-status"] == "connected"
    assert_same(orig, xr)


def test_add_fails_when_xenstore_cannot_be_reached(dom0_factory, originals, tmp_path):
    gone = str(tmp_path / "no-xenstored-socket")
    orig, xr = run(dom0_factory, VscsiEvent(("add",), env={"XENSTORED_PATH": gone}))
    assert exits(orig) == [1]
    assert exits(xr) == [1]
    assert BACK + "/hotplug-status" not in orig["xenstore"]
    assert_same(orig, xr)


def test_add_without_xenbus_path_is_refused(dom0_factory, originals):
    # Intended difference: with XENBUS_PATH unset the original writes
    # "/hotplug-status" at the root of the store and exits 0; xenrules
    # refuses the event (required variable `backend`), as every rule does.
    orig, xr = run(dom0_factory, VscsiEvent(("add",), env={"XENBUS_PATH": ""}))
    assert exits(orig) == [0]
    assert orig["xenstore"]["/hotplug-status"] == "connected"
    assert exits(xr) == [1]
    assert "/hotplug-status" not in xr["xenstore"]
    assert_same_but_exit(orig, xr, drop_xenstore=("/hotplug-status",))


def test_debian_original_under_dash_dies_before_doing_anything(dom0_factory, originals):
    # Intended difference: the real Debian script, run as the toolstack runs
    # it (its #!/bin/sh is dash), fails with a syntax error in locking.sh and
    # writes nothing; xenrules reports success as the script means to.
    assert os.path.realpath("/bin/sh").endswith("dash"), "this test pins Debian's /bin/sh"
    orig, xr = run(dom0_factory, VscsiEvent(("add",)), shell="/bin/sh")
    assert exits(orig) == [2]
    assert "Bad for loop variable" in orig["output"][0]["stderr"] + orig["output"][0]["log"]
    assert BACK + "/hotplug-status" not in orig["xenstore"]
    assert exits(xr) == [0]
    assert xr["xenstore"][BACK + "/hotplug-status"] == "connected"
    assert_same_but_exit(orig, xr, drop_xenstore=(BACK + "/hotplug-status",))


def test_the_rule_needs_no_sysfs_and_no_scsi_device():
    # what the brief feared (find_sdev over /sys/bus/scsi) is not in the
    # original: it must not creep into the rule either
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "rules.d", "50-vscsi.yaml")) as fh:
        text = fh.read()
    assert "/sys" not in text
    from xenrules.sandbox.originals import originals_dir
    with open(os.path.join(originals_dir(), "vscsi")) as fh:
        original = fh.read()
    assert "/sys" not in original and "find_sdev" not in original
