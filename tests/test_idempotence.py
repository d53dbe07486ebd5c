"""Idempotent and convergent (issue 9 point 3).

Repeated, missing or broken-off events: online twice, offline twice, offline
without online, remove after a failed add, add after a killed add. Each one
runs through Debian's original (in one sandbox) and xenrules (in a twin);
the end state of xenrules must equal both the original's and that of one
clean run of what the sequence amounts to, with the original's exit codes.
Where the original errors or leaves a mess and xenrules converges, the test
says so and docs/ARCHITECTURE.md ("Idempotence") lists it.
"""

import os
import signal

import pytest

import differential as diff
from differential import Scenario, offline, online
from test_block_differential import (ADD, BACK as VBD, DEVID, DOMID, REMOVE, assert_same,
                                     compare, exits, file_vbd, outputs, sides)  # noqa: F401
from test_vif_route_differential import down, routed_dom0, up
from events import wait_for
from xenrules.sandbox import vbd
from xenrules.sandbox.dom0 import PYTHON
from xenrules.steps import loop

pytestmark = pytest.mark.netns

BACK = "/local/domain/0/backend/vif/1/0"


# -- vif-bridge and vif-route ---------------------------------------------------

STATUS = (BACK + "/hotplug-status", BACK + "/hotplug-error")


def converges(dom0_factory, make, events, clean, exit_codes):
    """events end where `clean` (one clean run) ends, in the original and in
    xenrules alike, with the original's exit codes (exit_codes). A last event
    that fails (as the original's does) is compared without the status it
    reports: the dom0 itself must be as after the clean run."""
    failed = exit_codes[-1] != 0
    orig, xr = diff.compare_scenario(dom0_factory, make(events))
    assert diff.exits(orig) == exit_codes, diff.explain(orig, xr)
    assert diff.exits(xr) == exit_codes, diff.explain(orig, xr)
    diff.assert_same(orig, xr, mask_xenstore=STATUS[1:] if failed else ())
    once_o, once_x = diff.compare_scenario(dom0_factory, make(clean))
    diff.assert_same(once_o, once_x)
    for st in (orig, xr, once_o, once_x):     # the runs differ in length: the states count
        st["outcomes"] = None
    diff.assert_same(once_x, xr, drop_xenstore=STATUS if failed else ())
    return orig, xr


def bridged(events):
    return Scenario("idempotence", events)


def routed(events):
    return Scenario("idempotence-route", events, setup=routed_dom0(), bridges=())


@pytest.mark.parametrize("events,clean", [
    ([online(), online()], [online()]),
    ([online(), offline(), offline()], [online(), offline()]),
    ([offline()], []),
    ([offline(), offline()], []),
], ids=["online-online", "online-offline-offline", "offline-without-online",
        "offline-offline-without-online"])
def test_vif_bridge_repeated_events_converge_like_the_original(dom0_factory, originals,
                                                               events, clean):
    orig, _ = converges(dom0_factory, bridged, events, clean, [0] * len(events))
    if clean and clean[-1].args[0] == "online":
        assert orig["links"]["vif1.0"]["master"] == "xenbr0"
        assert orig["xenstore"][BACK + "/hotplug-status"] == "connected"
    else:
        assert orig["links"]["vif1.0"]["master"] is None
        assert orig["bridges"]["xenbr0"]["ports"] == []


@pytest.mark.parametrize("events,clean,exit_codes", [
    # the original's second `ip route add` fails (File exists): exit 1,
    # hotplug-status=error; so does xenrules', and neither undoes the first
    ([up(), up()], [up()], [0, 1]),
    ([up(), down(), down()], [up(), down()], [0, 0, 0]),
    ([down()], [], [0]),
], ids=["online-online", "online-offline-offline", "offline-without-online"])
def test_vif_route_repeated_events_converge_like_the_original(dom0_factory, originals,
                                                              events, clean, exit_codes):
    orig, xr = converges(dom0_factory, routed, events, clean, exit_codes)
    if exit_codes[-1]:
        assert xr["xenstore"][BACK + "/hotplug-status"] == "error"
        assert "File exists" in xr["xenstore"][BACK + "/hotplug-error"]
    routes = [r for r in orig["routes"] if "10.0.0.5" in str(r)]
    assert len(routes) == (1 if clean and clean[-1].args[0] == "online" else 0), routes


# -- block (file images) -----------------------------------------------------------

def test_block_second_add_of_a_file_image_changes_nothing(sides, originals):
    orig, xr = compare(sides, file_vbd("w"), [ADD, ADD])
    once_o, once_x = compare(sides, file_vbd("w"), [ADD])
    assert exits(orig) == exits(xr) == [0, 0], outputs(orig)
    assert len(xr[1]["loops"]) == 1, outputs(xr)
    assert_same(orig, xr)
    assert_same(once_x, xr[1:])


def still_free(side):
    """Before the second remove: the freed device must back nothing. The
    kernel defers a detach while someone (udev's probe) holds the device
    open: wait for it. Taken by another process meanwhile: stop here, before
    the original's `losetup -d` could detach that other disk."""
    node = side.dom0.xs_read(VBD + "/node")
    wait_for(lambda: not loop.backs(node, side.path("disk.img")), timeout=10)
    if loop.status(node) is not None:
        pytest.fail("%s is bound again (to %s) before the second remove: another process took it"
                    % (node, loop.backing_file(node)))


def test_block_second_remove_succeeds_and_changes_nothing(sides, originals):
    """xenrules better: the original's second `losetup -d` fails on the freed
    device, its ERR trap reports an error (exit 1, hotplug-status=error) for
    a disk that is gone as asked; xenrules finds the device backs nothing and
    is done (exit 0, nothing changed)."""
    orig, xr = compare(sides, file_vbd("w"), [ADD, REMOVE, REMOVE], between={2: still_free})
    assert exits(orig) == [0, 0, 1], outputs(orig)
    assert orig[2]["xenstore"][VBD + "/hotplug-status"] == "error"
    assert exits(xr) == [0, 0, 0], outputs(xr)
    assert xr[2]["loops"] == [] and orig[2]["loops"] == []
    assert_same(orig[:2], xr[:2])
    assert_same(xr[1:2], [dict(xr[2], exit=0)])       # the second changed nothing
    for st in (orig[2], xr[2]):
        st["exit"] = None
        for key in ("hotplug-status", "hotplug-error"):
            st["xenstore"].pop(VBD + "/" + key, None)
    assert_same(orig[2:], xr[2:])


def test_block_remove_without_add_fails_as_the_original_does(sides, originals):
    # no `node`: the original's xenstore_read fails, its ERR trap says so
    orig, xr = compare(sides, file_vbd("w"), [REMOVE])
    assert exits(orig) == exits(xr) == [1], outputs(orig) + outputs(xr)
    assert xr[0]["xenstore"][VBD + "/hotplug-error"] == (
        "xenstore-read backend/vbd/1/51712/node failed.")
    assert orig[0]["xenstore"][VBD + "/hotplug-error"].endswith("/block failed; error detected.")
    for st in orig + xr:
        st["xenstore"][VBD + "/hotplug-error"] = "<masked>"
    assert xr[0]["loops"] == []
    assert_same(orig, xr)


def missing_image(side):
    vbd.add_vbd(side.dom0, DOMID, DEVID, params=side.path("gone.img"), mode="w", type="file")


def busy_image(side):
    file_vbd("w", image_mode=0o444)(side)    # read-only image asked read-write


@pytest.mark.parametrize("setup", [missing_image, busy_image], ids=["missing-image", "busy"])
def test_block_remove_after_a_failed_add_is_the_remove_without_add(sides, originals, setup):
    orig, xr = compare(sides, setup, [ADD, REMOVE])
    alone_o, alone_x = compare(sides, setup, [REMOVE])
    assert exits(orig)[0] == exits(xr)[0] == 1, outputs(orig) + outputs(xr)
    # the remove: the original's exit code, and just what a remove without add does
    assert exits(orig)[1] == exits(xr)[1] == exits(alone_o)[0] == exits(alone_x)[0], \
        outputs(orig) + outputs(xr)
    for st in xr + alone_x:
        assert st["loops"] == []
    if setup is missing_image:
        # xenrules better: the original wrote hotplug-status=connected for a
        # disk it never attached, with no hotplug-error; xenrules says why
        assert orig[0]["xenstore"][VBD + "/hotplug-status"] == "connected"
        assert xr[0]["xenstore"][VBD + "/hotplug-error"] == "<images>/gone.img does not exist."
    for st in orig + xr + alone_o + alone_x:
        for key in ("hotplug-status", "hotplug-error"):
            st["xenstore"].pop(VBD + "/" + key, None)
    assert_same(orig, xr)
    assert_same(alone_x, xr[1:])


def run_killed(side, action, point):
    """A xenrules event that SIGKILLs itself at point (the test-only hook)."""
    env = vbd.block_env(side.dom0, DOMID, DEVID)
    env.update(side.dom0.xenrules_env(rules_path=side.rules))
    env.update(XENRULES_TEST_HOOKS="1", XENRULES_TEST_KILL_AT=point)
    return side.dom0.run([PYTHON, "-m", "xenrules.hotplug", "block", action], env)


@pytest.mark.parametrize("point", ["loop.attached", "after:13"])
def test_block_add_after_a_killed_add_is_one_clean_add(sides, originals, point):
    """libxl retries an add whose script died. xenrules undoes the dead
    event's loop device first and attaches one; the original has no such
    case (a killed bash add leaks its loop device, and the retry makes a
    second one)."""
    clean_o, clean_x = compare(sides, file_vbd("w"), [ADD])
    side = sides()
    file_vbd("w")(side)
    killed = run_killed(side, "add", point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert side.images.devices(), "the kill came before the attach"
    retry = side.run("xenrules", "add")
    assert retry.returncode == clean_o[0]["exit"] == 0, retry.stderr + retry.hotplug_log
    assert "undoing" in retry.hotplug_log and "killed event block add" in retry.hotplug_log
    st = side.state()
    st["exit"], st["output"] = retry.returncode, retry.hotplug_log
    assert len(st["loops"]) == 1
    assert_same(clean_o, [st])
    assert_same(clean_x, [st])
    assert os.listdir(side.dom0.journal_dir) == []


def test_block_original_add_after_a_leaked_loop_device_attaches_a_second(sides, originals):
    """What a killed bash add leaves (the image on a loop device, no `node`
    written) and libxl's retry: the original misses the device (its check
    compares hex with decimal numbers) and attaches another, leaking one.
    The counterpart of the test above, for docs/ARCHITECTURE.md."""
    def leaked(side):
        file_vbd("w")(side)
        side.attach("disk.img", "<leaked>")
    orig, _ = compare(sides, leaked, [ADD])
    assert exits(orig) == [0], outputs(orig)
    assert sorted(e["dev"] for e in orig[0]["loops"]) == ["<leaked>", "<loop1 on disk.img>"]
