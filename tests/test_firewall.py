"""The originals' anti-spoofing firewall (handle_iptable) as the firewall.vif step.

Debian's vif-common.sh makes handle_iptable a no-op (`return 0`, bug
#894013), so with the shipped default (firewall off) xenrules must add no
rule either. With `firewall` on, xenrules must do what upstream's
handle_iptable does: the oracle is Debian's vif-common.sh with exactly that
one `return 0` line taken out (a copy in tmp_path; nothing else changes).
Real iptables in the sandbox's namespace; the states compare iptables-save.
"""

import os
import re
import shutil
import subprocess
import threading

import pytest

from differential import (assert_same, compare_scenario, exits, offline, online, Scenario,
                          tap_add, tap_remove)
from events import BACK, why, wait_for
from xenrules.locking import HotplugLock

pytestmark = pytest.mark.netns

DEBIAN_NOOP = ("  # This function is disabled in Debian packaging. See Debian bug #894013.\n"
               "  return 0\n")
ON = {"XENRULES_FIREWALL": "on"}


@pytest.fixture
def upstream_originals(originals, tmp_path, monkeypatch):
    """Debian's scripts with handle_iptable switched back on, as upstream has it."""
    copy = tmp_path / "upstream-scripts"
    shutil.copytree(originals, copy, symlinks=True)
    common = copy / "vif-common.sh"
    text = common.read_text()
    assert text.count(DEBIAN_NOOP) == 1, "Debian's handle_iptable no-op is not where it was"
    common.write_text(text.replace(DEBIAN_NOOP, ""))
    monkeypatch.setenv("XENRULES_ORIGINALS_DIR", str(copy))
    return str(copy)


def forward_rules(state):
    return [l.split(": ", 1)[1] for l in state["firewall"]
            if l.startswith("iptables-save: -A FORWARD")]


def rule(dev, direction, extra=""):
    # iptables-save's spelling of frob_iptable's rules
    words = ["-A FORWARD"] + ([extra] if extra.startswith("-s") else [])
    words += ["-p udp"] if "udp" in extra else []
    words += [f"-m physdev --physdev-{direction} {dev} --physdev-is-bridged"]
    words += ["-m udp --sport 68 --dport 67"] if "udp" in extra else []
    return " ".join(words + ["-j ACCEPT"])


def vif_with_ip(ip):
    return lambda d: d.add_vif(1, 0, ip=ip)


# -- Debian's default: off ------------------------------------------------------------

def test_shipped_rules_add_no_firewall_rule_like_debian(dom0_factory, originals):
    scenario = Scenario("debian-off", [online(), offline()], setup=vif_with_ip("192.0.2.10"))
    orig, xr = compare_scenario(dom0_factory, scenario)
    assert exits(orig) == [0, 0]
    assert forward_rules(orig) == []
    assert_same(orig, xr)
    orig, xr = compare_scenario(dom0_factory, Scenario("debian-off-online", [online()],
                                                       setup=vif_with_ip("192.0.2.10")))
    assert forward_rules(orig) == [] and forward_rules(xr) == []


# -- switched on: the same as upstream's handle_iptable -----------------------------------

@pytest.mark.parametrize("ip", ["192.0.2.10", "192.0.2.10 198.51.100.0/24", None],
                         ids=["one-address", "two-addresses", "no-address"])
def test_online_inserts_the_upstream_rules(dom0_factory, upstream_originals, ip):
    scenario = Scenario("fw-online", [online(env=ON)], setup=vif_with_ip(ip))
    orig, xr = compare_scenario(dom0_factory, scenario)
    assert exits(orig) == [0]
    addrs = ip.split() if ip else []
    expected = []
    # -I puts each new rule first: the last frob_iptable's rules come first
    extras = [f"-s {a if '/' in a else a + '/32'}" for a in addrs]
    extras = extras + ["udp"] if addrs else [""]
    for extra in extras:
        expected[:0] = [rule("vif1.0", "out"), rule("vif1.0", "in", extra)]
    assert forward_rules(orig) == expected
    assert_same(orig, xr)


def test_offline_deletes_them_again(dom0_factory, upstream_originals):
    scenario = Scenario("fw-off", [online(env=ON), offline(env=ON)],
                        setup=vif_with_ip("192.0.2.10 192.0.2.11"))
    orig, xr = compare_scenario(dom0_factory, scenario)
    assert exits(orig) == [0, 0]
    assert forward_rules(orig) == []
    assert_same(orig, xr)


def test_offline_without_rules_is_quiet(dom0_factory, upstream_originals):
    scenario = Scenario("fw-off-only", [offline(env=ON)], setup=vif_with_ip("192.0.2.10"))
    orig, xr = compare_scenario(dom0_factory, scenario)
    assert exits(orig) == [0]
    assert_same(orig, xr)


def test_tap_add_and_remove(dom0_factory, upstream_originals):
    def setup(d):
        d.add_vif(1, 0, ip="192.0.2.10")
        d.add_tap(1, 0)
    orig, xr = compare_scenario(dom0_factory, Scenario("fw-tap", [tap_add(env=ON)], setup=setup))
    assert exits(orig) == [0]
    assert rule("vif1.0-emu", "in", "-s 192.0.2.10/32") in forward_rules(orig)
    assert_same(orig, xr)
    orig, xr = compare_scenario(dom0_factory, Scenario(
        "fw-tap-remove", [tap_add(env=ON), tap_remove(env=ON)], setup=setup))
    assert forward_rules(orig) == []
    assert_same(orig, xr)


def test_an_address_iptables_refuses_is_logged_and_the_rest_applied(dom0_factory, upstream_originals):
    # an IPv6 address (the original is IPv4-only) and a bad mask: iptables
    # refuses those rules; the event still succeeds, the others are there
    scenario = Scenario("fw-bad", [online(env=ON)],
                        setup=vif_with_ip("2001:db8::1 192.0.2.10 10.0.0.1/99"))
    orig, xr = compare_scenario(dom0_factory, scenario)
    assert exits(orig) == [0]
    assert orig["xenstore"][BACK + "/hotplug-status"] == "connected"
    assert rule("vif1.0", "in", "-s 192.0.2.10/32") in forward_rules(orig)
    assert len(forward_rules(orig)) == 4      # 192.0.2.10 and DHCP, each in + out
    assert_same(orig, xr)


# -- xenrules alone: revert, strict, iptables missing, the lock ----------------------------

def test_a_later_failure_deletes_the_inserted_rules(ev, dom0):
    ev.steps("""
        - firewall.vif: {action: online, dev: "{vif}", addresses: 192.0.2.10}
        - hotplug.error: {message: stop}
    """)
    proc = ev.run()
    assert proc.returncode == 1, why(proc, ev)
    assert forward_rules(dom0.state()) == []


def test_revert_of_a_deletion_puts_the_rules_back(ev, dom0):
    ev.steps("""
        - firewall.vif: {action: online, dev: "{vif}", addresses: 192.0.2.10}
    """)
    assert ev.run().returncode == 0
    inserted = forward_rules(dom0.state())
    assert len(inserted) == 4
    ev.steps("""
        - firewall.vif: {action: offline, dev: "{vif}", addresses: 192.0.2.10}
        - hotplug.error: {message: stop}
    """)
    assert ev.run().returncode == 1
    assert forward_rules(dom0.state()) == inserted      # in the same order, too


def test_strict_fails_the_event_and_leaves_no_rule(ev, dom0):
    ev.steps("""
        - firewall.vif: {action: online, dev: "{vif}", addresses: "192.0.2.10 10.0.0.1/99", strict: true}
    """)
    proc = ev.run()
    assert proc.returncode == 1, why(proc, ev)
    assert "iptables setup failed" in dom0.xs_read(BACK + "/hotplug-error")
    assert forward_rules(dom0.state()) == []


def test_not_strict_logs_the_failure_as_an_error(ev, dom0):
    ev.steps("""
        - firewall.vif: {action: online, dev: "{vif}", addresses: "10.0.0.1/99"}
    """)
    proc = ev.run()
    assert proc.returncode == 0, why(proc, ev)
    assert "err: iptables setup failed. This may affect guest networking." in ev.log()
    assert "invalid mask" in ev.log()
    assert forward_rules(dom0.state()) == [rule("vif1.0", "out"),
                                           rule("vif1.0", "in", "udp")]


def test_no_working_iptables_means_no_rules_and_no_failure(ev, dom0, tmp_path):
    bare = tmp_path / "bin"              # `ip` to enter the namespace, no iptables
    bare.mkdir()
    (bare / "ip").symlink_to(shutil.which("ip"))
    ev.steps("""
        - firewall.vif: {action: online, dev: "{vif}", addresses: 192.0.2.10, strict: true}
    """)
    proc = ev.run(PATH=str(bare))
    assert proc.returncode == 0, why(proc, ev)
    assert forward_rules(dom0.state()) == []


def test_unknown_action_fails(ev, dom0):
    ev.steps("""
        - firewall.vif: {action: "{action}-ish", dev: "{vif}"}
    """)
    proc = ev.run()
    assert proc.returncode == 1
    assert "none of online, add, offline, remove" in dom0.xs_read(BACK + "/hotplug-error")


def _lock_waiters(path):
    """pids (other than ours) that have the lock file open."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == path:
                    found.append(pid)
            except OSError:
                pass
    return found


def test_rules_wait_for_the_iptables_lock_of_locking_sh(ev, dom0):
    ev.steps("""
        - firewall.vif: {action: online, dev: "{vif}", addresses: 192.0.2.10}
    """)
    held = HotplugLock(str(ev.lock_dir), "iptables")
    held.acquire()
    result = {}
    worker = threading.Thread(target=lambda: result.update(proc=ev.run()))
    try:
        worker.start()
        assert wait_for(lambda: _lock_waiters(held.path)), "the event never opened the lock"
        assert forward_rules(dom0.state()) == []     # blocked on the lock, nothing done yet
    finally:
        held.release()
        worker.join(60)
    assert result["proc"].returncode == 0, why(result["proc"], ev)
    assert len(forward_rules(dom0.state())) == 4
    assert not os.path.exists(held.path)             # released, locking.sh style


# -- addresses are checked before iptables sees them; a time budget ------------------------

def localhost_addresses_in_iptables():
    """How many -s rules `iptables -A ... -s localhost` makes on this release."""
    out = subprocess.run(["iptables", "--version"], capture_output=True, text=True,
                         check=True).stdout
    version = tuple(int(n) for n in re.search(r"v(\d+)\.(\d+)\.(\d+)", out).groups())
    return 2 if version >= (1, 8, 11) else 1


def test_a_host_name_in_ip_is_not_resolved_like_the_original_does(dom0_factory, upstream_originals):
    # Intended difference: the original hands every `ip` word to `iptables -s`,
    # which resolves a host name (DNS in the event path) and accepts whatever
    # address it gets. xenrules takes IPv4 addresses and networks only, and
    # refuses anything else as iptables refuses a bad address: logged, skipped.
    scenario = Scenario("fw-hostname", [online(env=ON)], setup=vif_with_ip("192.0.2.10 localhost"))
    orig, xr = compare_scenario(dom0_factory, scenario)
    assert exits(orig) == [0] and exits(xr) == [0]
    xr_log = xr["output"][0]["log"]
    # the original: the localhost rules between 192.0.2.10's and DHCP's. iptables
    # 1.8.9 (bookworm) adds one "-s 127.0.0.1/32" rule for localhost; 1.8.11
    # (trixie) adds that same rule twice (seen in the trixie container).
    localhost = [rule("vif1.0", "out")]
    localhost += [rule("vif1.0", "in", "-s 127.0.0.1/32")] * localhost_addresses_in_iptables()
    expected = [rule("vif1.0", "out"), rule("vif1.0", "in", "udp")]
    expected += [rule("vif1.0", "out"), rule("vif1.0", "in", "-s 192.0.2.10/32")]
    assert forward_rules(orig) == expected[:2] + localhost + expected[2:]
    assert forward_rules(xr) == expected
    xr["output"] = orig["output"] = []
    orig["firewall"] = xr["firewall"] = []     # compared above
    assert_same(orig, xr)
    assert "'localhost' is not an IPv4 address or network" in xr_log


@pytest.mark.parametrize("word, ok", [
    ("192.0.2.10", True), ("192.0.2.0/24", True), ("192.0.2.0/255.255.255.0", True),
    ("192.0.2.10,198.51.100.1/32", True), ("localhost", False), ("-j", False),
    ("!", False), ("192.0.2.10/", False), ("2001:db8::1", False), ("1.2.3", False),
    ("192.0.2.10,", False), ("１.2.3.4", False)])
def test_only_ipv4_words_reach_iptables(word, ok):
    from xenrules.steps.firewall import ipv4_source
    assert ipv4_source(word) is ok


def test_iptables_that_hangs_is_given_up_within_the_step_budget(ev, dom0, tmp_path):
    # `iptables -w` waits as long as someone holds the xtables lock: the step
    # stops each command at its time budget instead of outliving libxl's 40 s
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ip").symlink_to(shutil.which("ip"))
    (fake / "iptables").write_text('#!/bin/sh\ncase " $* " in *" -L "*) exit 0 ;; esac\n'
                                   'exec /bin/sleep 600\n')
    (fake / "iptables").chmod(0o755)
    ev.steps("""
        - firewall.vif: {action: online, dev: "{vif}", addresses: 192.0.2.10, timeout: 2}
    """)
    proc = ev.run(PATH=str(fake))
    assert proc.returncode == 0, why(proc, ev)        # not strict: logged, as the original
    assert "did not finish within the step's 2 s" in ev.log()
    assert "not run, the step's 2 s are used up" in ev.log()


def test_revert_leaves_rules_the_step_did_not_add(ev, dom0):
    # the same rules inserted by someone else (a bash script sharing the host)
    # before: the revert of an insertion deletes only xenrules' copies, and the
    # revert of an offline that found nothing to delete adds nothing
    theirs = ["FORWARD", "-m", "physdev", "--physdev-is-bridged", "--physdev-in", "vif1.0",
              "-s", "192.0.2.10", "-j", "ACCEPT"]
    assert dom0.run(["iptables", "-w", "-I"] + theirs).returncode == 0
    before = forward_rules(dom0.state())
    ev.steps("""
        - firewall.vif: {action: online, dev: "{vif}", addresses: 192.0.2.10}
        - hotplug.error: {message: stop}
    """)
    assert ev.run().returncode == 1
    assert forward_rules(dom0.state()) == before
    assert dom0.run(["iptables", "-w", "-D"] + theirs).returncode == 0
    ev.steps("""
        - firewall.vif: {action: offline, dev: "{vif}", addresses: 192.0.2.10}
        - hotplug.error: {message: stop}
    """)
    assert ev.run().returncode == 1
    assert forward_rules(dom0.state()) == []
