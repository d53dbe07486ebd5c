"""The simulated dom0 itself, and Debian's original vif-bridge running in it.

If these fail, no differential test means anything: they prove the sandbox is
real (kernel links in a private namespace, a XenStore that Debian's tools
talk to) and that the oracle, the original bash script, works inside it.
"""

import os
import subprocess

import pytest

from xenrules.sandbox.dom0 import NETBACK_MAC, SimulatedDom0

pytestmark = pytest.mark.netns

BACK = "/local/domain/0/backend/vif/1/0"
FRONT = "/local/domain/1/device/vif/0"


def xs_read(dom0, path):
    """Debian's xenstore-read, run inside the namespace."""
    proc = dom0.run(["xenstore-read", path])
    assert proc.returncode == 0, (path, proc.stderr)
    return proc.stdout.rstrip("\n")


def netns_names():
    out = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_namespace_links_and_isolation(dom0):
    assert dom0.netns in netns_names()
    dom0.add_vif(1, 0)
    links = dom0.links()
    assert set(links) == {"lo", "xenbr0", "vif1.0", "g1.0"}
    assert links["vif1.0"]["linkinfo"]["info_kind"] == "veth"
    assert links["vif1.0"]["link"] == "g1.0"
    assert "UP" not in links["vif1.0"]["flags"]
    assert "UP" not in links["g1.0"]["flags"]
    # /sys/class/net inside `ip netns exec` is the namespace's view
    proc = dom0.run(["ls", "/sys/class/net"])
    assert proc.returncode == 0, proc.stderr
    assert set(proc.stdout.split()) == {"lo", "xenbr0", "vif1.0", "g1.0"}
    # ... and the host's namespace does not see the sandbox's links
    host = subprocess.run(["ip", "-j", "link", "show"], stdout=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, text=True, check=True).stdout
    assert links["vif1.0"]["address"] not in host


def test_bridge_is_a_bridge(dom0):
    st = dom0.state(xenstore=False)
    assert st["bridges"] == {"xenbr0": {"stp_state": 0, "forward_delay": 0, "ports": []}}
    assert st["links"]["xenbr0"]["kind"] == "bridge"
    assert st["links"]["xenbr0"]["up"] is True
    assert st["links"]["xenbr0"]["mtu"] == 1500
    # the very tests the originals use
    assert dom0.run(["test", "-e", "/sys/class/net/xenbr0/bridge"]).returncode == 0
    assert dom0.run(["test", "-e", "/sys/class/net/xenbr1"]).returncode == 1
    proc = dom0.run(["brctl", "show"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1].split()[0] == "xenbr0"


def test_add_bridge_with_mtu(dom0):
    dom0.add_bridge("eth1", mtu=9000)
    st = dom0.state(xenstore=False)
    assert st["links"]["eth1"]["mtu"] == 9000
    assert set(st["bridges"]) == {"xenbr0", "eth1"}


def test_xenstore_keys_as_libxl_writes_them(dom0):
    dom0.add_vif(1, 0, mtu=1400, ip="192.0.2.10", vifname="web0")
    assert xs_read(dom0, BACK + "/frontend") == FRONT
    assert xs_read(dom0, BACK + "/frontend-id") == "1"
    assert xs_read(dom0, BACK + "/online") == "1"
    assert xs_read(dom0, BACK + "/state") == "1"
    assert xs_read(dom0, BACK + "/script") == "/etc/xen/scripts/vif-bridge"
    assert xs_read(dom0, BACK + "/mac") == "00:16:3e:00:01:00"
    assert xs_read(dom0, BACK + "/bridge") == "xenbr0"
    assert xs_read(dom0, BACK + "/handle") == "0"
    assert xs_read(dom0, BACK + "/type") == "vif"
    assert xs_read(dom0, BACK + "/hotplug-status") == ""
    assert xs_read(dom0, BACK + "/mtu") == "1400"
    assert xs_read(dom0, BACK + "/vifname") == "web0"
    assert xs_read(dom0, BACK + "/ip") == "192.0.2.10"
    # relative paths resolve under /local/domain/0, as the scripts rely on
    assert xs_read(dom0, "backend/vif/1/0/bridge") == "xenbr0"
    assert xs_read(dom0, FRONT + "/backend") == BACK
    assert xs_read(dom0, FRONT + "/backend-id") == "0"
    assert xs_read(dom0, FRONT + "/state") == "1"
    assert xs_read(dom0, FRONT + "/handle") == "0"
    assert xs_read(dom0, FRONT + "/mac") == "00:16:3e:00:01:00"
    assert xs_read(dom0, FRONT + "/mtu") == "1400"
    assert xs_read(dom0, "/local/domain/1/name") == "guest1"
    assert xs_read(dom0, "/libxl/1/device/vif/0/bridge") == "xenbr0"
    # a missing key is an error for xenstore-read, as with the real xenstored
    assert dom0.run(["xenstore-read", BACK + "/gatewaydev"]).returncode != 0
    snap = dom0.xenstore_snapshot()
    assert snap[BACK + "/bridge"] == "xenbr0"
    assert snap == dom0.xs_server.snapshot()


def test_hotplug_env_is_libxls(dom0):
    dom0.add_vif(3, 1)
    env = dom0.hotplug_env(3, 1)
    assert env == {
        "script": "/etc/xen/scripts/vif-bridge",
        "XENBUS_TYPE": "vif",
        "XENBUS_PATH": "backend/vif/3/1",
        "XENBUS_BASE_PATH": "backend",
        "netdev": "",
        "vif": "vif3.1",
        "XENSTORED_PATH": dom0.xenstore_socket,
    }
    dom0.add_tap(3, 1)
    env = dom0.hotplug_env(3, 1, type_if="tap")
    assert env["INTERFACE"] == "vif3.1-emu"
    assert xs_read(dom0, "/local/domain/0/backend/vif/3/1/type") == "vif_ioemu"


def test_tap_device(dom0):
    dom0.add_tap(2, 0)
    st = dom0.state(xenstore=False)
    assert st["links"]["vif2.0-emu"]["kind"] == "tun"
    proc = dom0.run(["cat", "/sys/class/net/vif2.0-emu/tun_flags"])
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout, 16) & 0x0002  # IFF_TAP


def test_destroy_leaves_nothing(xs_server):
    dom0 = SimulatedDom0(xs_server.socket_path, prefix="xrd")
    name = dom0.netns
    dom0.add_vif(4, 0)
    dom0.add_tap(4, 0)
    assert name in netns_names()
    dom0.destroy()
    assert name not in netns_names()
    assert not os.path.exists("/run/netns/" + name)
    assert not os.path.exists(dom0.state_dir)
    dom0.destroy()  # idempotent
    host = subprocess.run(["ip", "-o", "link", "show"], stdout=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, text=True, check=True).stdout
    assert "02:58:52:00:04:00" not in host and "vif4.0-emu" not in host


def test_context_manager_destroys_on_error(xs_server):
    with pytest.raises(RuntimeError):
        with SimulatedDom0(xs_server.socket_path, prefix="xrc") as dom0:
            name = dom0.netns
            raise RuntimeError("boom")
    assert name not in netns_names()


def test_names_are_unique(dom0_factory):
    a, b = dom0_factory(), dom0_factory()
    assert a.netns != b.netns
    assert a.netns.startswith("xr-%d-" % os.getpid())


# --------------------------------------------------------------------------
# The oracle: Debian's original vif-bridge, run as libxl runs it.

def test_original_vif_bridge_online_offline(dom0, originals):
    assert os.path.isfile(os.path.join(originals, "vif-bridge"))
    dom0.del_link("xenbr0")
    dom0.add_bridge("xenbr0", mtu=1400)   # the vif must take the bridge's MTU
    dom0.add_vif(1, 0)
    before = dom0.state()
    assert before["links"]["vif1.0"]["mac"] != NETBACK_MAC
    assert before["links"]["vif1.0"]["mtu"] == 1500
    assert before["xenstore"][FRONT + "/mtu"] == "1500"   # libxl's default

    env = dom0.hotplug_env(1, 0)
    proc = dom0.run_original("vif-bridge", ["online", "type_if=vif"], env)
    assert proc.returncode == 0, (proc.stdout, proc.stderr, proc.hotplug_log)
    st = dom0.state()
    vif = st["links"]["vif1.0"]
    assert vif["master"] == "xenbr0"
    assert vif["mac"] == NETBACK_MAC
    assert vif["mtu"] == 1400
    assert vif["up"] is True
    assert vif["addresses"] == []
    assert st["bridges"]["xenbr0"]["ports"] == ["vif1.0"]
    assert st["xenstore"][BACK + "/hotplug-status"] == "connected"
    assert st["xenstore"][FRONT + "/mtu"] == "1400"
    assert BACK + "/hotplug-error" not in st["xenstore"]
    # its stderr went to /var/log/xen/xen-hotplug.log (exec 2>>), not to us
    assert proc.stderr == ""

    proc = dom0.run_original("vif-bridge", ["offline", "type_if=vif"], env)
    assert proc.returncode == 0, (proc.stdout, proc.stderr, proc.hotplug_log)
    st = dom0.state()
    vif = st["links"]["vif1.0"]
    assert vif["master"] is None
    assert vif["up"] is False
    assert st["bridges"]["xenbr0"]["ports"] == []
    assert st["links"]["xenbr0"]["mtu"] == 1400
    # offline leaves hotplug-status alone (libxl removes the backend after)
    assert st["xenstore"][BACK + "/hotplug-status"] == "connected"


def test_original_vif_bridge_xenstore_mtu(dom0, originals):
    dom0.add_vif(1, 0, mtu=1400)
    proc = dom0.run_original("vif-bridge", ["online", "type_if=vif"], dom0.hotplug_env(1, 0))
    assert proc.returncode == 0, proc.hotplug_log
    st = dom0.state()
    assert st["links"]["vif1.0"]["mtu"] == 1400
    assert st["xenstore"][FRONT + "/mtu"] == "1400"


def test_original_vif_bridge_missing_bridge_fails(dom0_factory, originals):
    dom0 = dom0_factory(bridges=())
    dom0.add_vif(1, 0)
    proc = dom0.run_original("vif-bridge", ["online", "type_if=vif"], dom0.hotplug_env(1, 0))
    assert proc.returncode == 1
    snap = dom0.xenstore_snapshot()
    assert snap[BACK + "/hotplug-status"] == "error"
    assert "xenbr0" in snap[BACK + "/hotplug-error"]
