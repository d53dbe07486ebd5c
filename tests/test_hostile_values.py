"""Hostile interface names: what the kernel would mangle must be refused.

Property-based (python3-hypothesis) over netinfo.valid_ifname and the template
expander. Defects this caught: a name of 8 two-byte characters (16 bytes) and a
name containing NUL were both accepted before.
"""
from hypothesis import given, strategies as st

from xenrules import netinfo, template

HOSTILE = ["", ".", "..", "../etc", "/abs", "a:b", "a b", "a\nb", "a\0b",
           "x" * 16, "é" * 8, "\udcff", "x" * 4096]


def test_table_of_hostile_ifnames_is_refused():
    for name in HOSTILE:
        assert not netinfo.valid_ifname(name), repr(name)


def test_ordinary_ifnames_are_accepted():
    for name in ("vif1.0", "xenbr0", "x" * 15, "é" * 7):
        assert netinfo.valid_ifname(name), name


@given(st.text(max_size=40))
def test_accepted_ifname_fits_ifnamsiz_and_has_no_separator(name):
    if netinfo.valid_ifname(name):
        raw = name.encode("utf-8")
        assert 0 < len(raw) < 16
        assert not set(name) & set("/: \t\n\r\v\f\0")


@given(st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=200))
def test_text_without_braces_expands_to_itself(text):
    assert template.expand(text, lambda n: "X") == text


# -- real events in the simulated dom0 ---------------------------------------
# Each hostile value goes into one backend key (or argv/env word) of vif1.0,
# then vif-bridge online runs with the shipped rules. It must exit non-zero,
# name the key in hotplug-error, leave links/addresses/routes as they were
# and create no file (the canary names below). Values a key legitimately
# tolerates (empty bridge: first bridge; empty vifname: keep vif) are left out.
import json
import os

import pytest

from events import BACK

CANARY = "/tmp/xr-w9h2-canary"
LONG = "x" * 4000   # about the most one xenstored request takes (4096 with the path)
NAMEY = ["../x", "../../../../tmp/xr-w9h2-canary", CANARY, "a;touch " + CANARY,
         "$(touch %s)" % CANARY, "`touch %s`" % CANARY, "a\nb", "a\0b", "a\udcffb",
         "x" * 16, LONG, "fe80::1%eth0"]
BYTES = ["a\0b", "a\udcffb"]   # refused by every XenStore read
CASES = {
    "bridge": NAMEY,
    "vifname": NAMEY,
    "mtu": BYTES + [LONG[:-1] + "\0"],
    "ip": BYTES + ["1.2.3.4\0; touch " + CANARY],
    # mac is read only with antispoof on (tests/test_antispoof.py): not here
    "frontend": BYTES + ["../../x", "/local/domain/1/device/vif/0\0"],
}
TRIED = {"values": 0, "failures": 0, "accepted": []}


@pytest.fixture(scope="module", autouse=True)
def _write_figures():
    yield
    out = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "build", "reliability")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "hostile.json"), "w") as f:
        json.dump({"values tried": TRIED["values"], "failures": TRIED["failures"],
                   "accepted": TRIED["accepted"]}, f, indent=1)


def _net(dom0):
    """links, addresses, routes; without `qdisc`: a link that was up once keeps
    the kernel's default qdisc after the revert takes it down (not ours to undo)."""
    shot = [dom0.ip_json(*what) for what in (("link",), ("addr",), ("route",))]
    for part in shot[:2]:
        for link in part:
            link.pop("qdisc", None)
    return shot


def _try(dom0, key, value, args=("online", "type_if=vif"), env_extra=None):
    """Run one event; returns a list of what went wrong (empty when refused cleanly)."""
    TRIED["values"] += 1
    dom0.xs_rm(BACK + "/hotplug-error")
    before = _net(dom0)
    env = dom0.hotplug_env(1, 0)
    env.update(env_extra or {})
    proc = dom0.run_xenrules("vif-bridge", list(args), env)
    raw = b""
    if proc.returncode:
        with dom0._xs() as xs:   # raw bytes: the message may quote the hostile value
            try:
                raw = xs._request("READ", BACK + "/hotplug-error")
            except Exception as e:
                raw = b"no hotplug-error: %r; stderr %r" % (e, proc.stderr[-300:])
    wrong = []
    if proc.returncode == 0:
        wrong.append("exit 0")
    elif key.encode() not in raw and key not in (proc.hotplug_log or ""):
        # hotplug-error keeps the original's words; the log line names the key
        wrong.append("neither hotplug-error nor the log names %s: %r" % (key, raw[:200]))
    after = _net(dom0)
    if after != before:
        wrong.append("namespace changed: %s" % [
            (a, b) for a, b in zip(before, after) if a != b])
    if os.path.lexists(CANARY):
        os.unlink(CANARY)
        wrong.append("created " + CANARY)
    if wrong:
        TRIED["failures"] += 1
        TRIED["accepted"].append("%s=%r" % (key, value[:40]))
    return wrong


@pytest.mark.parametrize("key", sorted(CASES))
def test_hostile_xenstore_value_is_refused_naming_the_key(ev, key):
    dom0 = ev.dom0
    good = dom0.xs_read(BACK + "/" + key)
    bad = {}
    for value in CASES[key]:
        dom0.xs_write(BACK + "/" + key, value)
        wrong = _try(dom0, key, value)
        if wrong:
            bad[value[:40]] = wrong
        dom0.xs_write(BACK + "/" + key, good)
    assert not bad, bad


def test_hostile_argv_and_env_values_are_refused(ev):
    dom0 = ev.dom0
    dom0.xs_rm(BACK + "/bridge")   # so the argument bridge= is the one used
    bad = {}
    for value in NAMEY:
        if "\0" in value:
            continue    # execve cannot pass a NUL; the kernel refuses it first
        for key, args, env in (("bridge", ("online", "type_if=vif", "bridge=" + value), {}),
                               ("vif", ("online", "type_if=vif"), {"vif": value})):
            wrong = _try(dom0, key, value, args, env)
            if wrong:
                bad["%s=%s" % (key, value[:40])] = wrong
    # the backend path itself: nothing to write hotplug-error to, so only the
    # exit code, the log's naming of XENBUS_PATH and the namespace count
    # (/etc/passwd is a well-formed store path, never a file to xenrules: not here)
    for value in ("backend/vif/1/0/../../x", "backend/vif/1/0;touch " + CANARY,
                  "backend/vif/1/0\nx", "backend/vif/1/" + "0" * 4000):
        TRIED["values"] += 1
        before = _net(dom0)
        env = dom0.hotplug_env(1, 0)
        env["XENBUS_PATH"] = value
        proc = dom0.run_xenrules("vif-bridge", ["online", "type_if=vif"], env)
        wrong = [w for w, bad_ in (("exit 0", proc.returncode == 0),
                                   ("namespace changed", _net(dom0) != before),
                                   ("created " + CANARY, os.path.lexists(CANARY))) if bad_]
        if "XENBUS_PATH" not in proc.stderr + (proc.hotplug_log or ""):
            wrong.append("XENBUS_PATH not named: %r" % (proc.stderr[-200:],))
        if wrong:
            TRIED["failures"] += 1
            TRIED["accepted"].append("XENBUS_PATH=%r" % value[:40])
            bad["XENBUS_PATH=%s" % value[:40]] = wrong
    assert not bad, bad


def test_out_of_range_mtu_is_not_told_to_the_guest(ev):
    # bash writes any positive number to the frontend; no link can have these
    dom0 = ev.dom0
    front = "/local/domain/1/device/vif/0/mtu"
    for value in ("65536", "70000", "99999999999", "1" + "0" * 40):
        TRIED["values"] += 1
        dom0.xs_write(front, "1500")
        dom0.xs_write(BACK + "/mtu", value)
        dom0.run_xenrules("vif-bridge", ["online", "type_if=vif"], dom0.hotplug_env(1, 0))
        dom0.run_xenrules("vif-bridge", ["offline", "type_if=vif"], dom0.hotplug_env(1, 0))
        told = dom0.xs_read(front)
        if told != "1500":
            TRIED["failures"] += 1
            TRIED["accepted"].append("mtu=%s" % value[:40])
        assert told == "1500", (value, told)
    dom0.xs_write(BACK + "/mtu", "9000")
    dom0.run_xenrules("vif-bridge", ["online", "type_if=vif"], dom0.hotplug_env(1, 0))
    assert dom0.xs_read(front) == "9000"   # an ordinary one still is

