"""antispoof.vif without packets: hostile values, revert, the per-vif record and
its fallback, the tables after `nft flush ruleset`. Real nftables in the
simulated dom0's namespace; what is checked is the tables' elements. (The
packets themselves: tests/test_antispoof_packets.py.)"""
import json
import subprocess

import pytest

from events import BACK, why

pytestmark = pytest.mark.netns

MAC = "00:16:3e:00:01:00"


def nft_json(dom0, *args):
    out = subprocess.run(["ip", "netns", "exec", dom0.netns, "nft", "-j"] + list(args),
                         capture_output=True, text=True)
    return json.loads(out.stdout)["nftables"] if out.returncode == 0 else None


def elements(dom0, family="bridge"):
    """{set: [element]} of the package's table in one family ({} if no table)."""
    listing = nft_json(dom0, "list", "table", family, "xenrules_antispoof") or []
    return {o["set"]["name"]: o["set"]["elem"] for o in listing
            if "set" in o and o["set"].get("elem")}


def records(tmp_path):
    d = tmp_path / "records"
    return sorted(d.iterdir()) if d.exists() else []


def step(ev, tmp_path, action="online", mode="bridge", ip="192.0.2.10 2001:db8::10", mac=MAC,
         then=""):
    ev.steps(f"""
        - antispoof.vif: {{action: {action}, dev: "{{vif}}", mode: {mode}, mac: "{mac}",
                          ip: "{ip}", records: "{tmp_path}/records"}}
    """ + then)
    return ev.run(XENRULES_LOG_LEVEL="debug")


@pytest.mark.parametrize("mac, ip, message", [
    ("00:16:3e:00:01", "192.0.2.10", "is not six colon-separated hex bytes"),
    ("01:00:5e:00:00:01", "192.0.2.10", "is not a unicast address"),
    ("00:00:00:00:00:00", "192.0.2.10", "is not a unicast address"),
    (MAC + "; flush ruleset", "192.0.2.10", "is not six"),
    (MAC, "guest.example.org", "is not an IPv4 or IPv6 address"),
    (MAC, "fe80::1%eth0", "is not an IPv4 or IPv6 address"),
    (MAC, "192.0.2.10 -j ACCEPT", "is not an IPv4 or IPv6 address"),
    (MAC, "0.0.0.0/0", "cannot be a guest's source address"),
    (MAC, "224.0.0.1", "cannot be a guest's source address"),
    (MAC, "::", "cannot be a guest's source address"),
], ids=["short-mac", "multicast-mac", "zero-mac", "mac-with-text", "host-name", "zone",
        "option", "everything", "multicast-ip", "unspecified-ip"])
def test_a_hostile_value_fails_the_event_and_changes_nothing(ev, dom0, tmp_path, mac, ip, message):
    proc = step(ev, tmp_path, mac=mac, ip=ip)
    assert proc.returncode == 1, why(proc, ev)
    assert message in dom0.xs_read(BACK + "/hotplug-error")
    assert nft_json(dom0, "list", "ruleset") == [nft_json(dom0, "list", "ruleset")[0]]   # metainfo only
    assert not (tmp_path / "records").exists()


def test_online_then_offline_leaves_the_table_empty(ev, dom0, tmp_path):
    assert step(ev, tmp_path).returncode == 0
    got = elements(dom0)
    assert set(got) == {"vifs", "vifmac", "ndlla", "ipguard", "addr4", "addr6", "ndtarget"}
    assert len(got["addr6"]) == 2       # its address and the link-local from its MAC
    assert step(ev, tmp_path, action="offline").returncode == 0
    assert elements(dom0) == {}
    assert records(tmp_path) == []


def test_routed_mode_uses_the_inet_and_arp_tables(ev, dom0, tmp_path):
    assert step(ev, tmp_path, mode="route").returncode == 0
    assert "addr6" in elements(dom0, "inet") and "addr4" in elements(dom0, "arp")
    assert elements(dom0, "bridge") == {}
    assert step(ev, tmp_path, action="offline", mode="route").returncode == 0
    assert elements(dom0, "inet") == elements(dom0, "arp") == {}


def test_a_later_failure_removes_what_online_added(ev, dom0, tmp_path):
    proc = step(ev, tmp_path, then="- hotplug.error: {message: stop}\n")
    assert proc.returncode == 1, why(proc, ev)
    assert elements(dom0) == {}
    assert records(tmp_path) == []


def test_a_later_failure_puts_back_what_offline_removed(ev, dom0, tmp_path):
    assert step(ev, tmp_path).returncode == 0
    before = elements(dom0)
    proc = step(ev, tmp_path, action="offline", then="- hotplug.error: {message: stop}\n")
    assert proc.returncode == 1, why(proc, ev)
    assert elements(dom0) == before
    assert step(ev, tmp_path, action="offline").returncode == 0      # the record is back too
    assert elements(dom0) == {}


def test_offline_without_a_record_still_removes_every_element(ev, dom0, tmp_path):
    assert step(ev, tmp_path, ip="192.0.2.10 192.0.2.11").returncode == 0
    for record in records(tmp_path):
        record.unlink()
    # and offline's own values differ from online's: the listing decides
    assert step(ev, tmp_path, action="offline", ip="").returncode == 0
    assert elements(dom0) == {}
    assert "looking up what vif1.0 has" in ev.log()


def test_other_vifs_elements_stay(ev, dom0, tmp_path):
    ev.steps(f"""
        - antispoof.vif: {{action: online, dev: other0, mode: bridge, mac: "00:16:3e:00:02:00",
                          ip: 192.0.2.20, records: "{tmp_path}/records"}}
    """)
    assert ev.run().returncode == 0
    other = elements(dom0)
    assert step(ev, tmp_path).returncode == 0
    for record in (tmp_path / "records").glob("*vif1.0*"):
        record.unlink()                  # the fallback path must spare other0 too
    assert step(ev, tmp_path, action="offline").returncode == 0
    assert elements(dom0) == other


def test_after_nft_flush_ruleset_the_next_online_recreates_the_tables(ev, dom0, tmp_path):
    assert step(ev, tmp_path).returncode == 0
    subprocess.run(["ip", "netns", "exec", dom0.netns, "nft", "flush", "ruleset"], check=True)
    assert elements(dom0) == {}
    assert step(ev, tmp_path, action="offline").returncode == 0       # nothing to remove
    assert step(ev, tmp_path).returncode == 0
    assert "addr4" in elements(dom0)


def test_the_admins_tables_are_left_alone(ev, dom0, tmp_path):
    subprocess.run(["ip", "netns", "exec", dom0.netns, "nft", "add table bridge filter; "
                    "add chain bridge filter forward { type filter hook forward priority 0; }; "
                    "add rule bridge filter forward counter"], check=True)
    admin = nft_json(dom0, "list", "table", "bridge", "filter")
    assert step(ev, tmp_path).returncode == 0
    assert step(ev, tmp_path, action="offline").returncode == 0
    assert nft_json(dom0, "list", "table", "bridge", "filter") == admin


def test_unknown_action_fails(ev, dom0, tmp_path):
    proc = step(ev, tmp_path, action="online-ish")
    assert proc.returncode == 1
    assert "is none of online, add, offline, remove" in dom0.xs_read(BACK + "/hotplug-error")


def test_networks_go_to_the_interval_sets_and_leave_with_offline(ev, dom0, tmp_path):
    assert step(ev, tmp_path, ip="10.0.1.0/24 192.0.2.10 2001:db8:1::/64").returncode == 0
    got = elements(dom0)
    assert len(got["addr4"]) == 1 and len(got["addr4net"]) == 1 and len(got["addr6net"]) == 1
    assert len(got["ndtargetnet"]) == 1 and len(got["ndtarget"]) == 1     # the link-local
    assert step(ev, tmp_path, action="offline").returncode == 0
    assert elements(dom0) == {}


def test_shipped_vif_bridge_tap_rule_guards_the_emulated_nic(dom0, tmp_path):
    dom0.add_vif(1, 0, ip="192.0.2.10")
    dom0.add_tap(1, 0)
    env = dom0.hotplug_env(1, 0, type_if="tap")
    env.update(XENRULES_ANTISPOOF="on", XENRULES_ANTISPOOF_RECORDS=str(tmp_path / "as"))
    proc = dom0.run_xenrules("vif-bridge", ["add", "type_if=tap"], env)
    assert proc.returncode == 0, (proc.stderr, proc.hotplug_log)
    assert elements(dom0)["addr4"] == [{"concat": ["vif1.0-emu", "192.0.2.10"]}]
    proc = dom0.run_xenrules("vif-bridge", ["remove", "type_if=tap"], env)
    assert proc.returncode == 0, (proc.stderr, proc.hotplug_log)
    assert elements(dom0) == {}


def test_shipped_vif_openvswitch_rule_says_it_is_not_guarded(dom0, tmp_path):
    # the rule logs before anything else: no switch is needed to see it
    dom0.add_vif(1, 0, script="vif-openvswitch")
    env = dom0.hotplug_env(1, 0, script="vif-openvswitch")
    env.update(XENRULES_ANTISPOOF="on")
    proc = dom0.run_xenrules("vif-openvswitch", ["online", "type_if=vif"], env)
    assert "antispoof is on but not available on Open vSwitch: vif1.0 is not guarded" \
        in proc.hotplug_log + proc.stderr


def test_leftovers_in_one_of_the_routed_tables_only_are_removed_too(ev, dom0, tmp_path):
    assert step(ev, tmp_path, mode="route").returncode == 0
    for record in records(tmp_path):
        record.unlink()
    subprocess.run(["ip", "netns", "exec", dom0.netns, "nft", "delete", "element", "arp",
                    "xenrules_antispoof", "vifs", '{ "vif1.0" }'], check=True)
    assert "vifs" not in elements(dom0, "arp") and "vifs" in elements(dom0, "inet")
    assert step(ev, tmp_path, action="offline", mode="route").returncode == 0
    assert elements(dom0, "inet") == elements(dom0, "arp") == {}
    # and online again, then revert: back to nothing in both
    proc = step(ev, tmp_path, mode="route", then="- hotplug.error: {message: stop}\n")
    assert proc.returncode == 1
    assert elements(dom0, "inet") == elements(dom0, "arp") == {}


def test_restore_after_nft_flush_ruleset_puts_every_guarded_vif_back(ev, dom0, tmp_path):
    from xenrules.sandbox.dom0 import PYTHON, REPO_ROOT
    assert step(ev, tmp_path, ip="192.0.2.10 10.1.0.0/16").returncode == 0
    assert step(ev, tmp_path, mode="route", ip="192.0.2.10").returncode == 0
    before = elements(dom0), elements(dom0, "inet"), elements(dom0, "arp")
    (tmp_path / "records" / "bridge-gone0.json").write_text('{"vifs": ["gone0"]}')
    subprocess.run(["ip", "netns", "exec", dom0.netns, "nft", "flush", "ruleset"], check=True)

    def restore():
        return dom0.run([PYTHON, "-m", "xenrules.antispoof_restore", str(tmp_path / "records")],
                        {"PYTHONPATH": REPO_ROOT})
    proc = restore()
    assert proc.returncode == 0, proc.stderr
    assert "bridge: 1 vif(s) guarded again" in proc.stdout
    assert (elements(dom0), elements(dom0, "inet"), elements(dom0, "arp")) == before
    assert not (tmp_path / "records" / "bridge-gone0.json").exists()
    assert restore().returncode == 0                   # again: nothing changes
    assert (elements(dom0), elements(dom0, "inet"), elements(dom0, "arp")) == before


def test_repeated_and_overlapping_entries_are_merged(ev, dom0, tmp_path):
    ip = "10.0.0.0/16 10.0.1.0/24 10.0.1.7 192.0.2.10 192.0.2.10 2001:db8::/64 2001:db8::5"
    assert step(ev, tmp_path, ip=ip).returncode == 0
    got = elements(dom0)
    assert len(got["addr4net"]) == 1 and len(got["addr4"]) == 1 and len(got["addr6net"]) == 1
    assert step(ev, tmp_path, action="offline").returncode == 0
    assert elements(dom0) == {}
