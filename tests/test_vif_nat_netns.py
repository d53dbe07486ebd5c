"""vif-nat through xenrules alone, in a simulated dom0: every action, the
error paths, the dhcp lock and the reverts.

The dom0 is a xenrules.sandbox.dhcp.DhcpDom0 (network namespace, XenStore,
private /etc with the dhcpd files and an init stub); locks and the log live
under tmp_path.
"""

import json
import os
import threading

import pytest

from events import wait_for
from test_steps_dhcpd import wait_for_flock_waiter
from xenrules.locking import HotplugLock
from xenrules.sandbox.dhcp import SAMPLE_CONF, SAMPLE_DHCP3_DEFAULTS, DhcpDom0
from xenrules.sandbox.dom0 import PYTHON, REPO_ROOT

pytestmark = pytest.mark.netns

BACK = "/local/domain/0/backend/vif/1/0"
CONF = "/etc/dhcp/dhcpd.conf"
ARGS = "/etc/default/dhcp3-server"
INIT = "/etc/init.d/isc-dhcp-server"
RULES = os.path.join(REPO_ROOT, "rules.d", "50-vif-nat.yaml")
DOM1 = ('host dom1 { hardware ethernet 00:16:3e:00:01:00; fixed-address 10.0.1.1; '
        'option routers 10.0.1.128; option host-name "dom1"; }\n')


class Nat:
    """vif-nat events through xenrules, everything XENRULES_* under tmp_path."""

    def __init__(self, dom0, tmp_path):
        self.dom0 = dom0
        self.tmp = tmp_path
        self.lock_dir = tmp_path / "locks"
        self.log_file = tmp_path / "xen-hotplug.log"
        self.rules_dir = os.path.dirname(RULES)
        (tmp_path / "originals").mkdir()

    def rules(self, old, new):
        """Use a copy of the shipped vif-nat rules with `old` replaced by `new`."""
        text = open(RULES).read()
        assert text.count(old) == 1, old
        d = self.tmp / "rules"
        d.mkdir(exist_ok=True)
        (d / "50-vif-nat.yaml").write_text(text.replace(old, new))
        self.rules_dir = str(d)

    def run(self, action, domid=1, devid=0, words=(), **extra):
        type_if = "tap" if action in ("add", "remove") else "vif"
        env = self.dom0.hotplug_env(domid, devid, type_if=type_if, script="vif-nat")
        env.update({
            "PYTHONPATH": REPO_ROOT,
            "XENRULES_RULES_PATH": self.rules_dir,
            "XENRULES_STATE_DIR": str(self.tmp / "state"),
            "XENRULES_LOCK_DIR": str(self.lock_dir),
            "XENRULES_JOURNAL_DIR": str(self.tmp / "journal"),
            "XENRULES_LOG_FILE": str(self.log_file),
            "XENRULES_LOG_LEVEL": "debug",
            "XENRULES_ORIGINALS_DIR": str(self.tmp / "originals"),   # empty: no fallback
        })
        env.update(extra)
        argv = [PYTHON, "-m", "xenrules.hotplug", "vif-nat", action, "type_if=" + type_if] + list(words)
        return self.dom0.run(argv, env)

    def log(self):
        return self.log_file.read_text() if self.log_file.exists() else ""

    def why(self, proc):
        return "exit %d\nstderr: %s\nlog: %s" % (proc.returncode, proc.stderr, self.log())

    def ok(self, *args, **kw):
        proc = self.run(*args, **kw)
        assert proc.returncode == 0, self.why(proc)
        return proc

    def fails(self, *args, **kw):
        proc = self.run(*args, **kw)
        assert proc.returncode == 1, self.why(proc)
        return proc

    # what the dom0 looks like
    def link(self, name):
        return self.dom0.state(xenstore=False)["links"].get(name)

    def routes(self):
        return [(r["dst"], r["dev"], r.get("prefsrc"))
                for r in map(json.loads, self.dom0.state(xenstore=False)["routes"])]

    def proxy_arp(self, dev):
        return self.dom0.sysctls().get("net.ipv4.conf.%s.proxy_arp" % dev.replace(".", "/"))

    def status(self, back=BACK):
        return self.dom0.xs_read(back + "/hotplug-status")

    def error(self, back=BACK):
        return self.dom0.xs_read(back + "/hotplug-error")

    def dhcp_on(self, conf=SAMPLE_CONF, args=SAMPLE_DHCP3_DEFAULTS, init_exit=0):
        self.dom0.put_file(CONF, conf)
        self.dom0.put_file(ARGS, args)
        self.dom0.put_init_stub(INIT, exit_code=init_exit)


@pytest.fixture
def dom0(xs_server):
    d = DhcpDom0(xs_server.socket_path)
    try:
        d.add_vif(1, 0, script="vif-nat")
        yield d
    finally:
        d.destroy()
    assert not d.exists()


@pytest.fixture
def nat(dom0, tmp_path):
    return Nat(dom0, tmp_path)


def assert_untouched(nat, dev="vif1.0"):
    link = nat.link(dev)
    assert link["up"] is False and link["addresses"] == []
    assert nat.routes() == []
    assert nat.proxy_arp(dev) == "0"


# -- dhcp off ------------------------------------------------------------------

def test_online_routes_the_guest_through_the_vif(nat):
    nat.ok("online")
    link = nat.link("vif1.0")
    assert link["up"] and link["addresses"] == ["10.0.1.128/32"]
    assert nat.routes() == [("10.0.1.1", "vif1.0", "10.0.1.128")]
    assert nat.proxy_arp("vif1.0") == "1"
    assert nat.status() == "connected"
    assert "rule vif-nat " in nat.log()


def test_offline_takes_the_link_down_and_the_route_with_it(nat):
    nat.ok("online")
    nat.ok("offline")
    link = nat.link("vif1.0")
    assert not link["up"] and link["addresses"] == ["10.0.1.128/32"]
    assert nat.routes() == []


def test_online_of_a_routed_vif_does_nothing(nat):
    nat.ok("online")
    nat.dom0.xs_write(BACK + "/hotplug-status", "")
    nat.ok("online")
    assert "vif1.0 already up" in nat.log()
    assert nat.status() == ""
    assert nat.routes() == [("10.0.1.1", "vif1.0", "10.0.1.128")]


def test_online_again_after_offline(nat):
    nat.ok("online")
    nat.ok("offline")
    nat.ok("online")
    assert nat.routes() == [("10.0.1.1", "vif1.0", "10.0.1.128")]


def test_derived_address_for_a_big_domid_and_a_second_vif(nat):
    nat.dom0.add_vif(300, 2, script="vif-nat")
    nat.ok("online", 300, 2)
    assert nat.link("vif300.2")["addresses"] == ["10.1.44.130/32"]
    assert ("10.1.44.3", "vif300.2", "10.1.44.130") in nat.routes()


def test_ip_argument_is_used_when_xenstore_has_none(nat):
    nat.ok("online", words=["ip=192.168.50.7/24"])
    assert nat.routes() == [("192.168.50.7", "vif1.0", "192.168.50.134")]


def test_ip_from_the_environment(nat):
    nat.ok("online", ip="192.168.50.7")
    assert nat.routes() == [("192.168.50.7", "vif1.0", "192.168.50.134")]


def test_vifname_renames_then_configures(nat):
    nat.dom0.xs_write(BACK + "/vifname", "nat0")
    nat.ok("online")
    assert nat.link("vif1.0") is None
    assert nat.link("nat0")["addresses"] == ["10.0.1.128/32"]
    nat.ok("offline")
    assert not nat.link("nat0")["up"]


def test_offline_of_a_vanished_vif_is_fine(nat):
    nat.dom0.del_link("vif1.0")
    nat.ok("offline")


def test_add_and_remove_of_a_paravirtual_vif_do_nothing(nat):
    for action in ("add", "remove"):
        proc = nat.run(action, words=["type_if=vif"])
        assert proc.returncode == 0, nat.why(proc)
    assert_untouched(nat)


# -- errors ----------------------------------------------------------------------

@pytest.mark.parametrize("key,value", [("frontend-id", None), ("handle", None), ("handle", "x")])
@pytest.mark.parametrize("action", ["online", "offline"])
def test_unreadable_frontend_id_or_handle_fails_before_anything(nat, key, value, action):
    if value is None:
        nat.dom0.xs_rm(BACK + "/" + key)
    else:
        nat.dom0.xs_write(BACK + "/" + key, value)
    nat.fails(action)
    assert nat.status() == "error"
    assert "required variable(s) not set" in nat.error()
    assert_untouched(nat)


def test_missing_vif_fails(nat):
    nat.dom0.del_link("vif1.0")
    nat.fails("online")
    assert nat.status() == "error"
    assert "vif1.0" in nat.error()


def test_taken_vifname_fails(nat):
    nat.dom0.add_vif(2, 0, script="vif-nat")
    nat.dom0.xs_write(BACK + "/vifname", "vif2.0")
    nat.fails("online")
    assert "already exists" in nat.error()
    assert nat.link("vif1.0") is not None
    assert nat.link("vif2.0")["addresses"] == []


def test_two_addresses_without_prefix_fail_and_revert(nat):
    nat.dom0.xs_write(BACK + "/ip", "192.168.1.5 192.168.1.6")
    nat.fails("online")
    assert nat.error() == "ip route add 192.168.1.5 192.168.1.6 dev vif1.0 src 192.168.1.132 failed"
    assert_untouched(nat)


def test_router_address_that_is_no_address_fails(nat):
    nat.dom0.xs_write(BACK + "/ip", "10.0.0.200")      # 200 + 127 = 327
    nat.fails("online")
    assert "10.0.0.200 + 127 is 327, not an octet" in nat.error()
    assert_untouched(nat)


# -- dhcp on ---------------------------------------------------------------------

def test_dhcp_online_writes_the_entry_and_the_interface_then_restarts(nat):
    nat.dhcp_on()
    nat.ok("online", dhcp="yes")
    assert nat.dom0.read_file(CONF) == SAMPLE_CONF + DOM1
    assert 'INTERFACES="vif1.0 "' in nat.dom0.read_file(ARGS)
    assert nat.dom0.restarts() == [INIT + " restart"]
    assert nat.status() == "connected"
    # released before the restart, like release_lock: no lock file left
    assert not (nat.lock_dir / "vif-nat-dhcp").exists()


def test_dhcp_offline_takes_them_out(nat):
    nat.dhcp_on()
    nat.ok("online", dhcp="yes")
    nat.ok("offline", dhcp="yes")
    assert nat.dom0.read_file(CONF) == SAMPLE_CONF
    assert nat.dom0.read_file(ARGS) == SAMPLE_DHCP3_DEFAULTS
    assert nat.dom0.restarts() == [INIT + " restart"] * 2
    assert not nat.link("vif1.0")["up"]


def test_dhcp_host_name_of_a_second_vif(nat):
    nat.dhcp_on()
    nat.dom0.add_vif(300, 2, script="vif-nat")
    nat.ok("online", 300, 2, dhcp="yes")
    assert ('host dom300-3 { hardware ethernet 00:16:3e:01:2c:02; fixed-address 10.1.44.3; '
            'option routers 10.1.44.130; option host-name "dom300-3"; }\n') in nat.dom0.read_file(CONF)
    assert 'INTERFACES="vif300.2 "' in nat.dom0.read_file(ARGS)


def test_dhcp_is_on_when_the_legacy_dhcpd_conf_exists(nat):
    nat.dom0.put_file("/etc/dhcpd.conf", SAMPLE_CONF)
    nat.dom0.put_file(ARGS, SAMPLE_DHCP3_DEFAULTS)
    nat.dom0.put_init_stub()
    nat.ok("online")
    assert nat.dom0.read_file("/etc/dhcpd.conf") == SAMPLE_CONF + DOM1


def test_dhcp_off_by_default_without_the_legacy_file(nat):
    nat.dhcp_on()
    nat.ok("online")
    assert nat.dom0.read_file(CONF) == SAMPLE_CONF
    assert nat.dom0.restarts() == []


@pytest.mark.parametrize("action", ["online", "offline"])
def test_dhcp_on_without_the_dhcpd_files_fails(nat, action):
    nat.dom0.put_file(CONF, SAMPLE_CONF)           # no defaults file, no init script
    nat.fails(action, dhcp="yes")
    assert nat.error() == "Failed to find dhcpd configuration or init or args file."
    assert nat.status() == "error"
    assert_untouched(nat)


def test_dhcp_files_missing_reverts_the_rename(nat):
    nat.dom0.xs_write(BACK + "/vifname", "nat0")
    nat.fails("online", dhcp="yes")
    assert nat.link("vif1.0") is not None and nat.link("nat0") is None


def test_missing_mac_fails_and_reverts_everything(nat):
    nat.dhcp_on()
    nat.dom0.xs_rm(BACK + "/mac")
    nat.fails("online", dhcp="yes")
    assert "mac" in nat.error()
    assert_untouched(nat)
    assert nat.dom0.read_file(CONF) == SAMPLE_CONF
    assert nat.dom0.restarts() == []
    assert not (nat.lock_dir / "vif-nat-dhcp").exists()


def test_a_later_failure_reverts_the_dhcpd_files(nat):
    # a rule whose online fails after the restart: the files come back
    # byte for byte and the vif is as before
    nat.rules("      - hotplug.success: {when: *fresh}\n",
              "      - hotplug.error: {message: late failure}\n")
    nat.dhcp_on()
    nat.fails("online", dhcp="yes")
    assert nat.error() == "late failure"
    assert nat.dom0.read_file(CONF) == SAMPLE_CONF
    assert nat.dom0.read_file(ARGS) == SAMPLE_DHCP3_DEFAULTS
    assert_untouched(nat)
    assert not (nat.lock_dir / "vif-nat-dhcp").exists()


def test_a_failing_restart_is_ignored(nat):
    nat.dhcp_on(init_exit=3)
    nat.ok("online", dhcp="yes")
    assert nat.dom0.restarts() == [INIT + " restart"]
    assert nat.dom0.read_file(CONF) == SAMPLE_CONF + DOM1
    assert "exited with status 3" in nat.log()
    assert nat.status() == "connected"


def test_the_restart_command_is_a_rule_variable(nat):
    nat.rules('dhcpd_restart: {value: "{dhcpd_init} restart"}',
              'dhcpd_restart: {value: "/etc/init.d/my-dhcpd force-reload"}')
    nat.dhcp_on()
    nat.dom0.put_init_stub("/etc/init.d/my-dhcpd")
    nat.ok("online", dhcp="yes")
    assert nat.dom0.restarts() == ["/etc/init.d/my-dhcpd force-reload"]


def test_dhcp_edits_wait_for_the_vif_nat_dhcp_lock(nat):
    """A holder of vif-nat-dhcp (locking.sh's protocol: a bash vif-nat of
    another guest, say) keeps the event from editing until it lets go."""
    nat.dhcp_on()
    nat.lock_dir.mkdir()
    holder = HotplugLock(str(nat.lock_dir), "vif-nat-dhcp")
    holder.acquire()
    result = []
    thread = threading.Thread(target=lambda: result.append(nat.run("online", dhcp="yes")), daemon=True)
    try:
        thread.start()
        assert wait_for_flock_waiter(nat.lock_dir / "vif-nat-dhcp"), nat.log()
        assert nat.dom0.read_file(CONF) == SAMPLE_CONF
        assert nat.dom0.restarts() == []
    finally:
        holder.release()
    thread.join(60)
    assert result and result[0].returncode == 0, nat.why(result[0]) if result else "no result"
    assert nat.dom0.read_file(CONF) == SAMPLE_CONF + DOM1
    assert wait_for(lambda: not (nat.lock_dir / "vif-nat-dhcp").exists())


# -- the emulated NIC ---------------------------------------------------------

def test_tap_add_renames_and_configures_nothing(nat):
    nat.dom0.add_tap(1, 0)
    nat.dom0.xs_write(BACK + "/vifname", "nat0")
    nat.ok("add")
    tap = nat.link("nat0-emu")
    assert tap is not None and tap["addresses"] == [] and not tap["up"]
    nat.ok("remove")
    assert nat.status() == ""


def test_tap_add_with_missing_frontend_id_fails_on_the_vifs_backend(nat):
    nat.dom0.add_tap(1, 0)
    nat.dom0.xs_rm(BACK + "/frontend-id")
    nat.fails("add")
    assert nat.status() == "error"


def test_tap_online_does_nothing(nat):
    nat.dom0.add_tap(1, 0)
    proc = nat.run("online", words=["type_if=tap"])
    assert proc.returncode == 0, nat.why(proc)
    assert_untouched(nat)


# -- the sandbox itself ------------------------------------------------------

def test_sandbox_hides_host_files_and_keeps_its_writes_to_itself(dom0):
    import uuid
    probe = "/etc/xenrules-nat-probe-%s" % uuid.uuid4().hex[:8]
    with open("/etc/hostname") as fh:
        hostname = fh.read()
    dom0.hide("/etc/hostname")
    assert dom0.run(["cat", "/etc/hostname"]).returncode != 0
    assert dom0.run(["cp", "/dev/null", probe]).returncode == 0
    assert dom0.run(["cat", probe]).returncode == 0
    assert not os.path.lexists(probe)                 # never on the host
    assert os.path.exists(dom0.upper_path(probe))
    with open("/etc/hostname") as fh:
        assert fh.read() == hostname


# -- antispoof (docs/rules/antispoof.md) -------------------------------------------

def test_antispoof_on_guards_the_guests_derived_address_in_the_inet_table(nat, tmp_path):
    from test_antispoof import elements
    on = {"XENRULES_ANTISPOOF": "on", "XENRULES_ANTISPOOF_RECORDS": str(tmp_path / "as")}
    nat.ok("online", **on)
    assert elements(nat.dom0, "inet")["addr4"] == [{"concat": ["vif1.0", "10.0.1.1"]}]
    assert elements(nat.dom0, "arp")["vifmac"] == [{"concat": ["vif1.0", "00:16:3e:00:01:00"]}]
    nat.ok("offline", **on)
    assert elements(nat.dom0, "inet") == elements(nat.dom0, "arp") == {}


@pytest.mark.parametrize("ip", ["1.2.3.inf", "1.2.3.1e3", "1.2.3.2147483521", "a.b.c.d"])
def test_a_guest_address_awk_would_misprint_is_refused_on_every_release(nat, ip):
    # the original's awk prints 2147483647 / 2.14748e+09 / inf depending on mawk
    nat.dom0.xs_write(BACK + "/ip", ip)
    nat.fails("online")
    assert "is not an IPv4 address" in nat.error()
    assert_untouched(nat)
