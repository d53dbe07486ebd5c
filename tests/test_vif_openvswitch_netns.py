"""vif-openvswitch through xenrules alone: every action and the error paths,
in a simulated dom0 with a private Open vSwitch (ovsdb-server + userspace
ovs-vswitchd in the namespace; see xenrules/sandbox/ovs.py)."""

import shutil
import textwrap

import pytest

from xenrules.errors import StepError
from xenrules.sandbox.ovs import ovs_dom0
from xenrules.steps.ovs import parse_bridge

pytestmark = pytest.mark.netns

SCRIPT = "vif-openvswitch"
BACK = "/local/domain/0/backend/vif/1/0"
VIF_MAC = "02:58:52:00:01:00"      # the sandbox's MAC for vif1.0


# -- the bridge spec, as vif-openvswitch's regex reads it -------------------------------

@pytest.mark.parametrize("spec, parsed", [
    ("xenbr0", ("xenbr0", "", "")),
    ("xenbr0.10", ("xenbr0", "10", "")),
    ("xenbr0:20", ("xenbr0", "", "20")),
    ("xenbr0:20:30:40", ("xenbr0", "", "20,30,40")),
    ("xenbr0.10:20:30", ("xenbr0", "10", "20,30")),
    ("br-ex_1", ("br-ex_1", "", "")),
    ("xenbr0.010", ("xenbr0", "010", "")),      # passed on as written, like bash
])
def test_bridge_spec_is_parsed_like_the_original(spec, parsed):
    assert parse_bridge(spec) == parsed


@pytest.mark.parametrize("spec", ["", "xenbr0.", "xenbr0.x", "xenbr0.1.2", "xenbr0:", "xenbr0::2",
                                  "xenbr0:2:", ":20", ".10", "xenbr0.10\n", "xen.br0"])
def test_bad_bridge_spec_is_refused_with_the_original_message(spec):
    with pytest.raises(StepError, match="^No valid bridge was specified$"):
        parse_bridge(spec)


# -- events in a sandbox ---------------------------------------------------------------

@pytest.fixture
def sw(xs_server, tmp_path):
    """A dom0 with OVS bridge xenbr0 and vif1.0 (plus the VM's name and uuid)."""
    dom0 = ovs_dom0(xs_server.socket_path)
    try:
        dom0.add_vif(1, 0, bridge="xenbr0.10:20", script=SCRIPT)
        dom0.xs_write("/local/domain/1/vm", "/vm/u-1")
        dom0.xs_write("/vm/u-1/name", "guest1")
        dom0.xs_write("/vm/u-1/uuid", "u-1")
        dom0.tmp = tmp_path
        yield dom0
    finally:
        dom0.destroy()


def run(dom0, words, type_if="vif", rules_path=None, **env):
    full = dom0.hotplug_env(1, 0, type_if=type_if, script=SCRIPT)
    full.update({"XENRULES_LOCK_DIR": str(dom0.tmp / "locks"),
                 "XENRULES_LOG_FILE": str(dom0.tmp / "xen-hotplug.log")})
    full.update(env)
    return dom0.run_xenrules(SCRIPT, list(words), full, rules_path=rules_path)


def why(proc, dom0):
    try:
        log = (dom0.tmp / "xen-hotplug.log").read_text()
    except FileNotFoundError:
        log = ""
    return "exit %d\nstderr: %s\nlog: %s" % (proc.returncode, proc.stderr, log)


def ports(dom0):
    return {p["name"]: p for p in dom0.ovs.state()["ports"]}


def ids(dom0, name="vif1.0"):
    return {i["name"]: i for i in dom0.ovs.state()["interfaces"]}[name]["external_ids"]


def test_online_adds_the_port_and_reports_connected(sw):
    proc = run(sw, ["online", "type_if=vif"])
    assert proc.returncode == 0, why(proc, sw)
    port = ports(sw)["vif1.0"]
    assert (port["tag"], port["trunks"]) == (10, 20)   # a one-element set is its element
    assert ids(sw) == {"xen-vm-name": "guest1", "xen-vm-uuid": "u-1",
                       "attached-mac": "00:16:3e:00:01:00"}
    link = sw.links()["vif1.0"]
    assert "UP" in link["flags"] and link["address"] == "fe:ff:ff:ff:ff:ff"
    assert sw.xs_read(BACK + "/hotplug-status") == "connected"


def test_offline_removes_the_port_and_downs_the_link(sw):
    assert run(sw, ["online", "type_if=vif"]).returncode == 0
    proc = run(sw, ["offline", "type_if=vif"])
    assert proc.returncode == 0, why(proc, sw)
    assert "vif1.0" not in ports(sw)
    assert "UP" not in sw.links()["vif1.0"]["flags"]


def test_tap_add_and_remove(sw):
    sw.add_tap(1, 0)
    proc = run(sw, ["add", "type_if=tap"], type_if="tap")
    assert proc.returncode == 0, why(proc, sw)
    assert ports(sw)["vif1.0-emu"]["tag"] == 10
    assert "UP" in sw.links()["vif1.0-emu"]["flags"]
    assert sw.xs_read(BACK + "/hotplug-status") == ""       # a tap reports nothing
    proc = run(sw, ["remove", "type_if=tap"], type_if="tap")
    assert proc.returncode == 0, why(proc, sw)
    assert "vif1.0-emu" not in ports(sw)
    assert "UP" not in sw.links()["vif1.0-emu"]["flags"]


@pytest.mark.parametrize("words", [["add", "type_if=vif"], ["remove", "type_if=vif"],
                                   ["online", "type_if=tap"]])
def test_actions_of_the_other_interface_type_do_nothing(sw, words):
    before = sw.state()
    proc = run(sw, words, type_if=words[1].split("=")[1], INTERFACE="vif1.0-emu")
    assert proc.returncode == 0, why(proc, sw)
    assert sw.state() == before


def assert_failed_and_reverted(sw, proc, message):
    assert proc.returncode == 1, why(proc, sw)
    assert sw.xs_read(BACK + "/hotplug-status") == "error"
    assert message in sw.xs_read(BACK + "/hotplug-error")
    assert "vif1.0" not in ports(sw)
    link = sw.links()["vif1.0"]
    assert link["address"] == VIF_MAC, "link.prepare_port was not reverted"


def test_unreachable_ovsdb_fails_and_reverts(sw, tmp_path):
    proc = run(sw, ["online", "type_if=vif"], OVS_RUNDIR=str(tmp_path))
    assert_failed_and_reverted(sw, proc, "database connection failed")


def test_missing_ovs_bridge_fails_and_reverts(sw):
    sw.xs_write(BACK + "/bridge", "xenbr7")
    proc = run(sw, ["online", "type_if=vif"])
    assert_failed_and_reverted(sw, proc, "no bridge named xenbr7")


def test_bad_vlan_spec_fails_before_ovs_vsctl(sw):
    sw.xs_write(BACK + "/bridge", "xenbr0.ten")
    proc = run(sw, ["online", "type_if=vif"])
    assert_failed_and_reverted(sw, proc, "No valid bridge was specified")
    assert "ovs-vsctl" not in why(proc, sw)     # never ran


def test_missing_ovs_vsctl_fails_like_check_tools(sw, tmp_path):
    bare = tmp_path / "bin"        # `ip` (to enter the namespace) and nothing else
    bare.mkdir()
    (bare / "ip").symlink_to(shutil.which("ip"))
    proc = run(sw, ["online", "type_if=vif"], PATH=str(bare))
    assert_failed_and_reverted(sw, proc, "Unable to find ovs-vsctl tool")


def test_offline_with_unreachable_ovsdb_still_downs_the_link(sw, tmp_path):
    assert run(sw, ["online", "type_if=vif"]).returncode == 0
    proc = run(sw, ["offline", "type_if=vif"], OVS_RUNDIR=str(tmp_path))
    assert proc.returncode == 0, why(proc, sw)     # teardown errors are ignored, as in bash
    assert "UP" not in sw.links()["vif1.0"]["flags"]
    assert "vif1.0" in ports(sw)                   # it could not be removed


def _rule(tmp_path, steps):
    rules = tmp_path / "rules"
    rules.mkdir()
    body = textwrap.indent(textwrap.dedent(steps).strip("\n"), " " * 6)
    (rules / "50-xr-ovs.yaml").write_text(
        "- rule: xr-ovs\n  match: {script: %s}\n  actions:\n    online:\n%s\n" % (SCRIPT, body))
    return str(rules)


def test_a_later_failure_removes_the_added_port(sw, tmp_path):
    rules = _rule(tmp_path, """
        - ovs.add_port: {bridge: "xenbr0.5", dev: "{vif}", external_ids: {xr-key: "a b"}}
        - hotplug.error: {message: stop here}
    """)
    proc = run(sw, ["online", "type_if=vif"], rules_path=rules)
    assert proc.returncode == 1, why(proc, sw)
    assert sw.xs_read(BACK + "/hotplug-error") == "stop here"
    assert "vif1.0" not in ports(sw)


def test_explicit_db_argument_wins_over_the_environment(sw, tmp_path):
    rules = _rule(tmp_path, """
        - ovs.add_port: {bridge: xenbr0, dev: "{vif}", db: "unix:%s", timeout: 10}
    """ % sw.ovs.socket)
    proc = run(sw, ["online", "type_if=vif"], rules_path=rules, OVS_RUNDIR=str(tmp_path))
    assert proc.returncode == 0, why(proc, sw)
    assert "vif1.0" in ports(sw)


def test_del_port_of_a_port_that_is_not_there_succeeds(sw, tmp_path):
    rules = _rule(tmp_path, """
        - ovs.del_port: {dev: "{vif}"}
    """)
    proc = run(sw, ["online", "type_if=vif"], rules_path=rules)
    assert proc.returncode == 0, why(proc, sw)


# -- names and values from xenstore cannot change the ovs-vsctl command -------------------

@pytest.mark.parametrize("spec", ["--", "--.10", "-x:20", "a-very-long-bridge-name"])
def test_bridge_name_ovs_vsctl_could_misread_is_refused(spec):
    # `--` is ovs-vsctl's command separator; names are interface names
    with pytest.raises(StepError, match="invalid (bridge|interface) name"):
        parse_bridge(spec)


@pytest.mark.parametrize("dev", ["--", "-x"])
def test_port_name_ovs_vsctl_could_misread_is_refused(dev):
    from xenrules.steps.ovs import AddPort, DelPort
    with pytest.raises(StepError, match="must not start with '-'"):
        AddPort({"bridge": "xenbr0", "dev": dev}).plan()
    with pytest.raises(StepError, match="must not start with '-'"):
        DelPort({"dev": dev}).apply(None)


def test_vm_name_and_uuid_that_look_like_ovs_vsctl_words_stay_data(sw):
    name = '--db=unix:/nowhere" -- del-br xenbr0 -- x=y,z "\\'
    sw.xs_write("/vm/u-1/name", name)
    sw.xs_write("/vm/u-1/uuid", "--")
    proc = run(sw, ["online", "type_if=vif"])
    assert proc.returncode == 0, why(proc, sw)
    assert ids(sw) == {"xen-vm-name": name, "xen-vm-uuid": "--",
                       "attached-mac": "00:16:3e:00:01:00"}
    assert [b["name"] for b in sw.ovs.state()["bridges"]] == ["xenbr0"]


@pytest.fixture
def sw_no_vswitchd(xs_server, tmp_path):
    """ovsdb-server without ovs-vswitchd: ovs-vsctl commits, then waits in vain."""
    dom0 = ovs_dom0(xs_server.socket_path, vswitchd=False)
    try:
        dom0.add_vif(1, 0, bridge="xenbr0", script=SCRIPT)
        dom0.tmp = tmp_path
        yield dom0
    finally:
        dom0.destroy()


def test_a_timeout_takes_the_committed_port_out_again(sw_no_vswitchd, tmp_path):
    # ovs-vsctl's transaction is in the database when its --timeout expires
    # waiting for ovs-vswitchd; the original leaves the port there, xenrules
    # removes it (--no-wait), as it reverts any other failure.
    sw = sw_no_vswitchd
    rules = _rule(tmp_path, """
        - ovs.add_port: {bridge: xenbr0, dev: "{vif}", timeout: 1}
    """)
    proc = run(sw, ["online", "type_if=vif"], rules_path=rules)
    assert proc.returncode == 1, why(proc, sw)
    assert "no answer from ovsdb-server or ovs-vswitchd in 1 s" in sw.xs_read(BACK + "/hotplug-error")
    assert "vif1.0" not in ports(sw)
