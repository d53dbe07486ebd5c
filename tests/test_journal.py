"""The journal: crash-safe revert of killed events (issue 9 point 1).

Real events of the shipped rules in a simulated dom0, killed with a real
SIGKILL at chosen points (the test-only XENRULES_TEST_KILL_AT /
XENRULES_TEST_STOP_AT, honoured only with XENRULES_TEST_HOOKS=1), then the
next event for the device or `xenrules recover`: the dom0 (links, routes,
sysctls, the whole xenstore tree, loop devices, lock files) must be exactly
as before the killed event, or as after a clean run of what the next event
asks for, and the journal directory empty.
"""
import os
import signal
import subprocess
import time

import pytest

from xenrules import journal
from xenrules.errors import JournalError
from xenrules.sandbox import vbd
from xenrules.sandbox.dom0 import PYTHON, REPO_ROOT

RULES = os.path.join(REPO_ROOT, "rules.d")
BACK = "/local/domain/0/backend/vif/1/0"


# -- the file format, without a dom0 ------------------------------------------------

def test_a_torn_tail_is_dropped_and_every_whole_record_kept():
    records = [{"k": "event", "event": "vif-bridge online"},
               {"k": "step", "n": 0, "type": "link.mtu", "args": {"dev": "vif1.0"},
                "undo": {"ifindex": 5, "previous": 1500}, "where": "f:1"}]
    data = b"".join(journal.encode(r) for r in records)
    assert journal.decode(data) == (records, False)
    last = journal.encode({"k": "undone", "n": 0})
    for cut in range(1, len(last)):
        assert journal.decode(data + last[:cut]) == (records, True), cut
    flipped = bytearray(data + last)
    flipped[-1] ^= 0xFF      # a CRC that does not check out ends the journal too
    assert journal.decode(bytes(flipped)) == (records, True)
    assert journal.decode(b"\xff" * 64) == ([], True)


def test_pending_steps_merges_notes_skips_undone_and_comes_newest_first():
    records = [{"k": "event", "event": "e"},
               {"k": "step", "n": 0, "type": "a", "args": {}, "undo": {"x": 1}, "where": "w0"},
               {"k": "step", "n": 2, "type": "b", "args": {}, "undo": {"dev": None}, "where": "w2"},
               {"k": "note", "n": 2, "more": {"dev": "/dev/loop7"}},
               {"k": "step", "n": 3, "type": "c", "args": {}, "undo": {}, "where": "w3"},
               {"k": "undone", "n": 3}]
    header, steps = journal.pending_steps(records)
    assert header["event"] == "e"
    assert steps == [(2, "b", {}, {"dev": "/dev/loop7"}, "w2"), (0, "a", {}, {"x": 1}, "w0")]


@pytest.mark.parametrize("key", ["/local/domain/0/backend/vif/1/0", "/a b/../%x\n", "script:vif1.0"])
def test_file_names_are_safe_and_give_the_key_back(key):
    name = journal.file_name(key, 4026531840)
    assert "/" not in name and set(name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_%")
    assert journal.key_of(name) == (4026531840, key)
    with pytest.raises(JournalError, match="too long"):
        journal.file_name("/" * 300)


def test_the_journal_directory_must_be_private_and_no_symlink(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    assert journal.check_dir(str(real))
    os.chmod(real, 0o755)
    with pytest.raises(JournalError, match="mode 0700"):
        journal.check_dir(str(real))
    os.chmod(real, 0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(JournalError, match="not a symlink"):
        journal.check_dir(str(link))
    made = tmp_path / "made"
    journal.check_dir(str(made))
    assert os.lstat(made).st_mode & 0o777 == 0o700


def test_a_journal_unlinked_by_its_holder_is_not_taken_for_the_new_one(tmp_path):
    directory = str(tmp_path / "j")
    first = journal.Journal(directory, "/k")
    first.acquire()
    first.start({"event": "first"})
    assert os.stat(first.path).st_mode & 0o777 == 0o600
    # a second holder of the old inode (as a waiter would be) sees it unlinked
    fd = os.open(first.path, os.O_RDWR)
    first.finish()
    assert not os.path.exists(first.path)
    second = journal.Journal(directory, "/k")
    assert not second.acquire(create=False)          # nothing to replay
    assert second.acquire()                          # a fresh file, not the unlinked one
    assert os.fstat(second.fd).st_ino != os.fstat(fd).st_ino or os.fstat(fd).st_nlink == 0
    os.close(fd)
    second.finish()


def test_a_replay_cuts_a_torn_tail_so_its_own_marks_are_read_back(tmp_path):
    j = journal.Journal(str(tmp_path / "j"), "/k")
    j.acquire()
    j.start({"event": "e"})
    j.step(0, "link.up", {"dev": "x"}, {"ifindex": 3}, "f:1")
    whole = os.path.getsize(j.path)
    os.pwrite(j.fd, journal.encode({"k": "step", "n": 1})[:-3], whole)   # killed mid-write
    records, torn = j.read()
    assert torn and len(records) == 2 and os.path.getsize(j.path) == whole
    j.undone(0)
    assert j.read() == (records + [{"k": "undone", "n": 0}], False)
    j.finish()


# -- killed events in a simulated dom0 ----------------------------------------------

class Killable:
    """Events through xenrules (python3 -m xenrules.hotplug), each killable at a point."""

    def __init__(self, dom0, tmp_path, script, env_of):
        self.dom0, self.tmp, self.script, self.env_of = dom0, tmp_path, script, env_of
        self.journal_dir = tmp_path / "journal"
        self.lock_dir = tmp_path / "locks"
        self.log_file = tmp_path / "xen-hotplug.log"
        self.hooks = tmp_path / "hooks"
        self.hooks.mkdir(exist_ok=True)
        (tmp_path / "originals").mkdir(exist_ok=True)

    def env(self, **extra):
        env = self.env_of()
        env.update({"PYTHONPATH": REPO_ROOT, "XENRULES_RULES_PATH": RULES,
                    "XENRULES_STATE_DIR": str(self.tmp / "state"),
                    "XENRULES_LOCK_DIR": str(self.lock_dir),
                    "XENRULES_JOURNAL_DIR": str(self.journal_dir),
                    "XENRULES_LOG_FILE": str(self.log_file),
                    "XENRULES_VIF_HOOKS_DIR": str(self.hooks),
                    "XENRULES_ORIGINALS_DIR": str(self.tmp / "originals")})
        env.update(extra)
        return env

    def run(self, *words, kill_at=None, **extra):
        if kill_at:
            extra.update(XENRULES_TEST_HOOKS="1", XENRULES_TEST_KILL_AT=kill_at)
        return self.dom0.run([PYTHON, "-m", "xenrules.hotplug", self.script] + list(words),
                             self.env(**extra))

    def recover(self, *options, **extra):
        return self.dom0.run([PYTHON, "-m", "xenrules", "recover"] + list(options),
                             self.env(**extra))

    def recovered_to(self, before):
        """`xenrules recover` puts the dom0 back to `before`, and leaves no journal."""
        self.ok(self.recover())
        assert self.dom0.state() == before and self.journals() == []

    def killed(self, proc):
        assert proc.returncode == -signal.SIGKILL, self.why(proc)

    def ok(self, proc):
        assert proc.returncode == 0, self.why(proc)

    def why(self, proc):
        log = self.log_file.read_text() if self.log_file.exists() else ""
        return f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}\nlog: {log}"

    def journals(self):
        return sorted(os.listdir(self.journal_dir)) if self.journal_dir.exists() else []

    def locks(self):
        return sorted(os.listdir(self.lock_dir)) if self.lock_dir.exists() else []


def bridge_dom0(dom0_factory, vifname=None):
    dom0 = dom0_factory()
    dom0.add_vif(1, 0, vifname=vifname, mtu=1400)
    return dom0


def bridge_events(dom0_factory, where):
    """A fresh dom0 with vif1.0 (vifname xrweb0, MTU 1400), its events' files under where."""
    dom0 = bridge_dom0(dom0_factory, vifname="xrweb0")
    os.makedirs(where, exist_ok=True)
    return Killable(dom0, where, "vif-bridge", lambda: dom0.hotplug_env(1, 0))


@pytest.fixture
def bridged(dom0_factory, tmp_path):
    return bridge_events(dom0_factory, tmp_path)


# vif-bridge online: 0 rename, 1 bridge.require, 2 prepare_port, 3 mtu, 4 xenstore.write, 5 antispoof (off),
# 6 add_port, 7 link.up, 8 firewall (off), 9 hooks.run, 10 hotplug.success
BRIDGE_POINTS = ["apply:0", "after:0", "apply:2", "link.prepare_port.down", "after:2", "apply:3",
                 "apply:4", "after:4", "after:6", "after:7", "after:9", "apply:10", "end"]


@pytest.mark.netns
@pytest.mark.parametrize("point", BRIDGE_POINTS)
def test_vif_bridge_online_killed_anywhere_is_undone_by_recover(bridged, point):
    before = bridged.dom0.state()
    bridged.killed(bridged.run("online", "type_if=vif", kill_at=point))
    assert bridged.journals(), "the killed event left no journal"
    half_done = bridged.dom0.state()
    dry = bridged.recover("--dry-run")
    assert dry.returncode == 0 and "killed event vif-bridge online" in dry.stdout, bridged.why(dry)
    assert bridged.dom0.state() == half_done, "a dry run changed something"
    proc = bridged.recover()
    bridged.ok(proc)
    assert "1 journal(s) undone" in proc.stdout
    assert bridged.dom0.state() == before
    assert bridged.journals() == [] and bridged.locks() == []
    # and the device works as if nothing happened
    bridged.ok(bridged.run("online", "type_if=vif"))
    assert bridged.dom0.state()["links"]["xrweb0"]["master"] == "xenbr0"


@pytest.mark.netns
@pytest.mark.parametrize("then", ["online", "offline"])
def test_the_next_event_for_the_device_undoes_a_killed_online_first(dom0_factory, tmp_path, then):
    reference = bridge_events(dom0_factory, tmp_path / "ref")
    ref_dom0 = reference.dom0
    # the killed online never happened: the reference runs the next event alone
    reference.ok(reference.run(then, "type_if=vif"))
    killed = bridge_events(dom0_factory, tmp_path)
    killed.killed(killed.run("online", "type_if=vif", kill_at="after:6"))
    killed.ok(killed.run(then, "type_if=vif"))
    assert "undoing 5 step(s) of the killed event vif-bridge online" in killed.log_file.read_text()
    assert comparable(killed.dom0.state()) == comparable(reference.dom0.state())
    assert killed.journals() == []


def comparable(state):
    """Two sandboxes differ in their namespace-derived names only (the xenstore socket path)."""
    return {k: v for k, v in state.items() if k != "xenstore"} | {
        "xenstore": {k: v for k, v in state["xenstore"].items() if "/script" not in k}}


@pytest.mark.netns
def test_an_unsafe_journal_directory_refuses_the_event_before_it_changes_anything(bridged):
    bridged.journal_dir.mkdir()
    os.chmod(bridged.journal_dir, 0o755)
    before = bridged.dom0.state()
    proc = bridged.run("online", "type_if=vif")
    assert proc.returncode == 1, bridged.why(proc)
    after = bridged.dom0.state()
    assert "mode 0700" in after["xenstore"].pop(BACK + "/hotplug-error")
    assert after["xenstore"].pop(BACK + "/hotplug-status") == "error"
    before["xenstore"].pop(BACK + "/hotplug-status")
    assert after == before


@pytest.mark.netns
def test_an_event_stopped_and_killed_from_outside_is_undone(bridged):
    before = bridged.dom0.state()
    env = bridged.env(XENRULES_TEST_HOOKS="1", XENRULES_TEST_STOP_AT="after:7")
    env.update({"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "XENSTORED_PATH": bridged.dom0.xenstore_socket})
    proc = subprocess.Popen(["ip", "netns", "exec", bridged.dom0.netns, PYTHON, "-m",
                             "xenrules.hotplug", "vif-bridge", "online", "type_if=vif"],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with open(f"/proc/{proc.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "T":
                    break
            time.sleep(0.02)
        else:
            pytest.fail("the event never reached its stop point")
        assert bridged.dom0.state()["links"]["xrweb0"]["up"]   # half-way: renamed, enslaved, up
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    bridged.recovered_to(before)


@pytest.mark.netns
@pytest.mark.parametrize("undo_point", ["undo:7", "undo:2", "undo:0"])
def test_a_killed_recovery_is_recovered_by_the_next(bridged, undo_point):
    before = bridged.dom0.state()
    bridged.killed(bridged.run("online", "type_if=vif", kill_at="after:9"))
    bridged.killed(bridged.recover(XENRULES_TEST_HOOKS="1", XENRULES_TEST_KILL_AT=undo_point))
    assert bridged.journals()
    bridged.recovered_to(before)


@pytest.mark.netns
def test_a_killed_event_undone_by_a_killed_next_event_is_undone_by_the_one_after(bridged):
    before = bridged.dom0.state()
    bridged.killed(bridged.run("online", "type_if=vif", kill_at="after:7"))
    bridged.killed(bridged.run("online", "type_if=vif", kill_at="undo:2"))
    bridged.killed(bridged.run("online", "type_if=vif", kill_at="after:6"))
    bridged.recovered_to(before)


@pytest.mark.netns
def test_a_torn_record_of_a_killed_event_is_ignored(bridged):
    before = bridged.dom0.state()
    bridged.killed(bridged.run("online", "type_if=vif", kill_at="after:2"))
    (name,) = bridged.journals()
    with open(bridged.journal_dir / name, "ab") as f:   # a record cut short by the kill
        f.write(journal.encode({"k": "step", "n": 3, "type": "link.mtu", "args": {},
                                "undo": {"ifindex": 1, "previous": 9000}, "where": "x"})[:-5])
    bridged.recovered_to(before)


@pytest.mark.netns
def test_journals_of_another_network_namespace_are_left_alone(bridged, dom0_factory, tmp_path):
    bridged.killed(bridged.run("online", "type_if=vif", kill_at="after:6"))
    other = dom0_factory()
    proc = other.run([PYTHON, "-m", "xenrules", "recover"], bridged.env())
    assert proc.returncode == 1 and "not this one" in proc.stdout, bridged.why(proc)
    assert bridged.journals()
    bridged.ok(bridged.recover())
    assert bridged.journals() == []


# -- vif-route ------------------------------------------------------------------------

@pytest.fixture
def routed(dom0_factory, tmp_path):
    from test_vif_route_differential import add_uplink
    dom0 = dom0_factory(bridges=())
    add_uplink(dom0)
    dom0.add_vif(1, 0, bridge=None, ip="10.0.0.5 10.0.0.6 2001:db8:5::5", vifname="xrrt0",
                 script="vif-route")
    return Killable(dom0, tmp_path, "vif-route",
                    lambda: dom0.hotplug_env(1, 0, script="vif-route"))


# vif-route online: 0 error (skipped), 1 rename, 2 antispoof (off), 3 address.add, 4 link.up, 5 sysctl,
# 6 route.add (v4), 7 route.add (v6), 8 firewall (off), 9 hooks, 10 success
@pytest.mark.netns
@pytest.mark.parametrize("point", ["after:1", "after:3", "after:5", "after:6", "apply:7", "end"])
def test_vif_route_online_killed_is_undone_by_recover(routed, point):
    before = routed.dom0.state()
    routed.killed(routed.run("online", "type_if=vif", kill_at=point))
    routed.recovered_to(before)


# -- block: a loop device must not leak ------------------------------------------------

@pytest.fixture
def blocks(dom0_factory, tmp_path):
    dom0 = dom0_factory(bridges=())
    images = vbd.Images(str(tmp_path))
    k = Killable(dom0, tmp_path, "block", lambda: vbd.block_env(dom0, 1, 51712))
    k.images = images
    try:
        yield k
    finally:
        left = images.cleanup()
        assert not left, "loop devices left attached: %s" % left


# block add (file): 0 run_original (skipped), 1-3 xenstore.read, 4 check_phy (skipped),
# 5 check_file, 6 lock.acquire, 7-8 (phy, skipped), 9 hotplug.error (skipped),
# 10 check_writable, 11 check_sharing, 12 loop.attach, 13 write_physical_device,
# 14 hotplug.success, 15 lock.release
@pytest.mark.netns
@pytest.mark.parametrize("point", ["after:6", "apply:12", "loop.attached", "after:12", "after:13",
                                   "after:14", "end"])
def test_block_add_killed_leaks_no_loop_device(blocks, point):
    path = blocks.images.make("disk.img")
    vbd.add_vbd(blocks.dom0, 1, 51712, params=path, mode="w")
    before = blocks.dom0.state()
    blocks.killed(blocks.run("add", kill_at=point))
    if point not in ("after:6", "apply:12"):
        assert blocks.images.devices(), "the kill came before the attach"
    # the dead event's lock file may be left: it must not block anyone (flock died with it)
    blocks.ok(blocks.recover())
    assert blocks.images.devices() == {}
    assert blocks.dom0.state() == before
    assert blocks.journals() == [] and blocks.locks() == []
    blocks.ok(blocks.run("add"))
    assert list(blocks.images.devices().values()) == [path]
    blocks.ok(blocks.run("remove"))
    assert blocks.images.devices() == {}


@pytest.mark.netns
def test_a_killed_block_add_is_undone_by_the_remove_that_follows(blocks, originals):
    path = blocks.images.make("disk.img")
    vbd.add_vbd(blocks.dom0, 1, 51712, params=path, mode="w")
    blocks.killed(blocks.run("add", kill_at="loop.attached"))
    # the lock the dead event held is free for locking.sh too
    held = subprocess.run(["bash", "-c", 'source "$1/locking.sh" && LOCK_BASEDIR="$2" && '
                           'claim_lock block && release_lock block', "_", originals,
                           str(blocks.lock_dir)], env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                          timeout=20, capture_output=True, text=True)
    assert held.returncode == 0, held.stderr
    after_kill = blocks.run("remove")
    assert blocks.images.devices() == {}
    assert blocks.journals() == [] and blocks.locks() == []
    assert "undoing 2 step(s) of the killed event block add" in blocks.log_file.read_text()
    # then the remove does what it does after an add that never happened
    # (the original's "xenstore-read .../node failed" too: issue 9 point 3)
    fresh = Killable(blocks.dom0, blocks.tmp, "block", lambda: vbd.block_env(blocks.dom0, 1, 51728))
    vbd.add_vbd(blocks.dom0, 1, 51728, params=path, mode="w")
    clean = fresh.run("remove")
    assert after_kill.returncode == clean.returncode
    assert blocks.dom0.xs_read(vbd.backend_path(1, 51712) + "/hotplug-error").replace("51712", "") == \
        blocks.dom0.xs_read(vbd.backend_path(1, 51728) + "/hotplug-error").replace("51728", "")


@pytest.mark.netns
def test_the_warm_helper_undoes_every_journal_before_it_serves(bridged, tmp_path):
    before = bridged.dom0.state()
    bridged.killed(bridged.run("online", "type_if=vif", kill_at="after:7"))
    assert bridged.journals()
    sock = str(tmp_path / "helper" / "helper.sock")
    os.makedirs(os.path.dirname(sock), mode=0o700)
    env = bridged.env()
    env.update({"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "XENSTORED_PATH": bridged.dom0.xenstore_socket})
    out = open(tmp_path / "helper.out", "wb")
    helper = subprocess.Popen(["ip", "netns", "exec", bridged.dom0.netns, PYTHON, "-m", "xenrules.helper",
                               "--socket", sock], env=env, stdin=subprocess.DEVNULL, stdout=out,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(sock) and helper.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.path.exists(sock), (tmp_path / "helper.out").read_text()
        assert bridged.journals() == []
        assert "recovered 1 journal(s)" in (tmp_path / "helper.out").read_text()
    finally:
        os.killpg(helper.pid, signal.SIGKILL)   # its own session: the helper and its spares
        helper.wait()
        out.close()
    assert bridged.dom0.state() == before


# -- the firewall, dhcpd files, ovs --------------------------------------------------

@pytest.mark.netns
@pytest.mark.parametrize("point", ["apply:8", "firewall.vif.rule", "after:8"])
def test_firewall_rules_of_a_killed_online_are_deleted(dom0_factory, tmp_path, point):
    dom0 = dom0_factory()
    dom0.add_vif(1, 0, ip="10.0.0.5 10.0.0.6")
    k = Killable(dom0, tmp_path, "vif-bridge", lambda: dom0.hotplug_env(1, 0))
    before = dom0.state()
    k.killed(k.run("online", "type_if=vif", kill_at=point, XENRULES_FIREWALL="on"))
    if point != "apply:8":
        assert [l for l in dom0.firewall() if " -A " in l], "no rule was in before the kill"
    k.ok(k.recover())
    # iptables leaves its empty tables and chains behind (a clean offline too): the rules count
    assert rules_only(dom0.state()) == rules_only(before)
    assert k.journals() == [] and k.locks() == []


def rules_only(state):
    return dict(state, firewall=[line for line in state["firewall"] if " -A " in line])


@pytest.mark.netns
@pytest.mark.parametrize("point", ["after:11", "dhcpd.edited", "after:12", "after:13"])
def test_dhcpd_files_of_a_killed_vif_nat_online_are_put_back(xs_server, tmp_path, point):
    from test_vif_nat_netns import Nat
    from xenrules.sandbox.dhcp import DhcpDom0
    dom0 = DhcpDom0(xs_server.socket_path)
    try:
        dom0.add_vif(1, 0, script="vif-nat")
        nat = Nat(dom0, tmp_path)
        nat.dhcp_on()
        journal_dir = str(tmp_path / "journal")
        before = dom0.state()
        proc = nat.run("online", dhcp="yes", XENRULES_JOURNAL_DIR=journal_dir, XENRULES_TEST_HOOKS="1",
                       XENRULES_TEST_KILL_AT=point)
        assert proc.returncode == -signal.SIGKILL, nat.why(proc)
        assert dom0.dhcp_files() != before["dhcp"], "the kill came before the first edit"
        env = dom0.hotplug_env(1, 0, script="vif-nat")
        env.update(PYTHONPATH=REPO_ROOT, XENRULES_JOURNAL_DIR=journal_dir,
                   XENRULES_LOCK_DIR=str(nat.lock_dir), XENRULES_LOG_FILE=str(nat.log_file))
        proc = dom0.run([PYTHON, "-m", "xenrules", "recover"], env)
        assert proc.returncode == 0, nat.why(proc)
        assert dom0.state() == before
        assert os.listdir(journal_dir) == [] and not os.listdir(nat.lock_dir)
    finally:
        dom0.destroy()


@pytest.mark.netns
@pytest.mark.parametrize("point", ["apply:2", "after:2", "after:3"])
def test_the_ovs_port_of_a_killed_online_is_deleted(xs_server, tmp_path, point):
    from xenrules.sandbox.ovs import ovs_dom0
    dom0 = ovs_dom0(xs_server.socket_path)
    try:
        dom0.add_vif(1, 0, bridge="xenbr0", script="vif-openvswitch")
        k = Killable(dom0, tmp_path, "vif-openvswitch",
                     lambda: dom0.hotplug_env(1, 0, script="vif-openvswitch"))
        before = dom0.state()
        k.killed(k.run("online", "type_if=vif", kill_at=point))
        k.recovered_to(before)
    finally:
        dom0.destroy()


def _spawn(k, words, **extra):
    env = k.env(**extra)
    env.update({"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "XENSTORED_PATH": k.dom0.xenstore_socket})
    return subprocess.Popen(["ip", "netns", "exec", k.dom0.netns, PYTHON, "-m", "xenrules.hotplug",
                             k.script] + list(words), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stopped(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


@pytest.mark.netns
def test_a_second_event_for_the_device_waits_for_the_live_first_one(dom0_factory, tmp_path):
    ref = bridge_events(dom0_factory, tmp_path / "ref")
    ref_dom0 = ref.dom0
    ref.ok(ref.run("online", "type_if=vif"))
    ref.ok(ref.run("offline", "type_if=vif"))
    k = bridge_events(dom0_factory, tmp_path)
    dom0 = k.dom0
    first = _spawn(k, ["online", "type_if=vif"], XENRULES_TEST_HOOKS="1", XENRULES_TEST_STOP_AT="after:6")
    second = None
    try:
        deadline = time.monotonic() + 30
        while not _stopped(first.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _stopped(first.pid)
        second = _spawn(k, ["offline", "type_if=vif"])
        time.sleep(1.0)
        assert second.poll() is None, "the offline ran while the online was half-way"
        os.kill(first.pid, signal.SIGCONT)
        assert first.wait(timeout=30) == 0
        assert second.wait(timeout=30) == 0
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert comparable(dom0.state()) == comparable(ref_dom0.state())
    assert k.journals() == []


@pytest.mark.netns
@pytest.mark.parametrize("point", ["after:1", "after:2"])
def test_a_killed_offline_is_undone_and_the_next_offline_does_it_all(dom0_factory, tmp_path, point):
    ref = bridge_events(dom0_factory, tmp_path / "ref")
    ref_dom0 = ref.dom0
    ref.ok(ref.run("online", "type_if=vif"))
    online = ref_dom0.state()
    ref.ok(ref.run("offline", "type_if=vif"))
    k = bridge_events(dom0_factory, tmp_path)
    dom0 = k.dom0
    k.ok(k.run("online", "type_if=vif"))
    k.killed(k.run("offline", "type_if=vif", kill_at=point))
    k.ok(k.recover())
    assert comparable(dom0.state()) == comparable(online)     # as before the killed offline
    k.ok(k.run("offline", "type_if=vif"))
    assert comparable(dom0.state()) == comparable(ref_dom0.state())
    assert k.journals() == []


def test_the_package_runs_recover_before_the_helper_serves():
    unit = open(os.path.join(REPO_ROOT, "systemd", "xenrules-recover.service")).read()
    assert "ExecStart=/usr/bin/python3 -m xenrules recover\n" in unit
    assert "Type=oneshot" in unit and "Before=xenrules-helper.service" in unit
    assert "After=" in unit and "xenstored.service" in unit
    assert "WantedBy=multi-user.target" in unit


def test_recover_without_a_journal_directory_creates_none_and_succeeds(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, XENRULES_JOURNAL_DIR=str(tmp_path / "none"),
               XENRULES_LOG_FILE=str(tmp_path / "log"))
    proc = subprocess.run([PYTHON, "-m", "xenrules", "recover"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "0 journal(s) undone" in proc.stdout
    assert not (tmp_path / "none").exists()
    helped = subprocess.run([PYTHON, "-m", "xenrules", "recover", "--help"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert "--dry-run" in helped.stdout and "killed" in helped.stdout


def test_an_undo_that_cannot_be_done_is_reported_and_never_blocks_the_device(tmp_path):
    directory = str(tmp_path / "journal")
    j = journal.Journal(directory, "/local/domain/0/backend/vif/7/0")
    j.acquire()
    j.start({"v": 1, "event": "vif-bridge online type_if=vif", "pid": 1})
    j.step(0, "no.such_step", {}, {}, "f.yaml:3")
    j.step(1, "hooks.run", {}, None, "f.yaml:4")
    j.release()   # the event died: its journal stays
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, XENRULES_JOURNAL_DIR=directory,
               XENRULES_LOG_FILE=str(tmp_path / "log"))
    proc = subprocess.run([PYTHON, "-m", "xenrules", "recover"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 journal(s) undone, 0 left alone, 2 undo(s) failed" in proc.stdout
    log = (tmp_path / "log").read_text()
    assert "f.yaml:3: unknown step type 'no.such_step'" in log
    assert "f.yaml:4: hooks.run has no undo record" in log
    assert os.listdir(directory) == []


@pytest.mark.netns
@pytest.mark.parametrize("point", ["apply:5", "antispoof.vif.changed", "after:5"])
def test_antispoof_elements_of_a_killed_online_are_removed(dom0_factory, tmp_path, point):
    from test_antispoof import elements
    dom0 = dom0_factory()
    dom0.add_vif(1, 0, ip="10.0.0.5 2001:db8::5")
    k = Killable(dom0, tmp_path, "vif-bridge", lambda: dom0.hotplug_env(1, 0))
    on = {"XENRULES_ANTISPOOF": "on", "XENRULES_ANTISPOOF_RECORDS": str(tmp_path / "as")}
    k.killed(k.run("online", "type_if=vif", kill_at=point, **on))
    if point != "apply:5":
        assert "vifs" in elements(dom0), "no element was in before the kill"
    k.ok(k.recover(**on))
    assert elements(dom0) == {} and k.journals() == []
    assert not list((tmp_path / "as").glob("*.json"))
    # and the vif can be guarded again, and let go
    k.ok(k.run("online", "type_if=vif", **on))
    assert "vifs" in elements(dom0)
    k.ok(k.run("offline", "type_if=vif", **on))
    assert elements(dom0) == {}


@pytest.mark.netns
def test_a_killed_vif_nat_offline_is_undone_with_the_route_its_link_down_dropped(xs_server, tmp_path):
    """link.down takes the vif's route to the guest with it (the kernel drops a
    device's routes); up again, the kernel brings back only those of its
    addresses, so the undo puts the route back itself (found by make torture)."""
    from test_vif_nat_netns import Nat
    from xenrules.sandbox.dhcp import DhcpDom0
    dom0 = DhcpDom0(xs_server.socket_path)
    try:
        dom0.add_vif(1, 0, script="vif-nat")
        nat = Nat(dom0, tmp_path)
        journal_dir = str(tmp_path / "journal")
        nat.ok("online", dhcp="no", XENRULES_JOURNAL_DIR=journal_dir)
        online = dom0.state()
        assert any('"dst": "10.0.1.1"' in r for r in online["routes"])
        proc = nat.run("offline", dhcp="no", XENRULES_JOURNAL_DIR=journal_dir, XENRULES_TEST_HOOKS="1",
                       XENRULES_TEST_KILL_AT="end")
        assert proc.returncode == -signal.SIGKILL, nat.why(proc)
        env = dom0.hotplug_env(1, 0, script="vif-nat")
        env.update(PYTHONPATH=REPO_ROOT, XENRULES_JOURNAL_DIR=journal_dir,
                   XENRULES_LOCK_DIR=str(nat.lock_dir), XENRULES_LOG_FILE=str(nat.log_file))
        proc = dom0.run([PYTHON, "-m", "xenrules", "recover"], env)
        assert proc.returncode == 0, nat.why(proc)
        assert dom0.state() == online   # as before the killed offline: up, and routed
        nat.ok("offline", dhcp="no", XENRULES_JOURNAL_DIR=journal_dir)
        assert not any('"dst": "10.0.1.1"' in r for r in dom0.state()["routes"])
        assert os.listdir(journal_dir) == []
    finally:
        dom0.destroy()
