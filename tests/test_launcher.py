"""bin/xenrules-launcher in-process (no helper): the event runs, fast imports.

With no helper listening (socket absent, or XENRULES_HELPER_SOCKET="") the
launcher runs the event itself, with the checkout XENRULES_PYTHONPATH
names first on sys.path. The helper's own behaviour: tests/test_helper.py.
"""
import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(REPO, "bin", "xenrules-launcher")
BACK = "/local/domain/0/backend/vif/1/0"

pytestmark = pytest.mark.netns


def test_launcher_is_a_tiny_isolated_python_script_that_says_what_it_is():
    with open(LAUNCHER) as f:
        text = f.read()
    assert text.startswith("#!/usr/bin/python3 -IS\n")
    assert "xenrules-launcher" in text   # fallback.py never runs it as "the original"
    assert os.access(LAUNCHER, os.X_OK)


@pytest.mark.parametrize("helper_socket", ["", "/nonexistent/xenrules/helper.sock"])
def test_without_a_helper_the_event_runs_in_process(dom0, tmp_path, helper_socket):
    dom0.add_vif(1, 0)
    script = tmp_path / "vif-bridge"
    os.symlink(LAUNCHER, script)
    env = dict(dom0.hotplug_env(1, 0), **dom0.xenrules_env())
    env.update(XENRULES_PYTHONPATH=REPO, XENRULES_HELPER_SOCKET=helper_socket)
    proc = dom0.run([str(script), "online", "type_if=vif"], env)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", ""), proc.hotplug_log
    link = dom0.links()["vif1.0"]
    assert link.get("master") == "xenbr0" and "UP" in link["flags"]
    assert dom0.xs_read(BACK + "/hotplug-status") == "connected"
    proc = dom0.run([str(script), "offline", "type_if=vif"], env)
    assert proc.returncode == 0, proc.hotplug_log
    assert dom0.links()["vif1.0"].get("master") is None


def test_netlink_loads_without_the_pyroute2_package_init():
    """The event path imports pyroute2.iproute.linux only (~150 ms and ~11 MB less);
    the package's own names still work for whoever asks for them."""
    code = ("import sys; from xenrules.runtime import iproute_class; ipr = iproute_class()(); "
            "print(ipr.link_lookup(ifname='lo'), 'pyroute2.ndb' in sys.modules); ipr.close(); "
            "from pyroute2 import IPRoute, NDB; print(IPRoute is iproute_class(), NDB.__name__)")
    proc = subprocess.run(["/usr/bin/python3", "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["[1] False", "True NDB"]


def test_netlink_reads_by_ioctl_give_what_pyroute2_gives(dom0):
    """steps/netlink.py reads flags, MTU and MAC with netdevice ioctls (no link
    dump to decode); the answers must be pyroute2's, in the device's namespace."""
    dom0.add_vif(1, 0, mtu=1400)
    dom0.ip("link", "set", "dev", "xenbr0", "down")
    code = ("from xenrules.runtime import iproute_class; from xenrules.steps import netlink\n"
            "class R:\n    ipr = iproute_class()()\n    def netlink(self): return self.ipr\n"
            "out = []\n"
            "for link in R.ipr.get_links():\n"
            "    i, fast = link['index'], netlink.link_attr(None, link['index'], 'IFLA_MTU')\n"
            "    out.append((link.get_attr('IFLA_IFNAME'),\n"
            "                (fast, netlink.link_attr(R(), i, 'IFLA_ADDRESS'), netlink.is_up(None, i)) ==\n"
            "                (link.get_attr('IFLA_MTU'), link.get_attr('IFLA_ADDRESS'), bool(link['flags'] & 1))))\n"
            "print(sorted(out))\n")
    proc = dom0.run(["/usr/bin/python3", "-c", code], {"PYTHONPATH": REPO})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(sorted([("g1.0", True), ("lo", True), ("vif1.0", True),
                                              ("xenbr0", True)]))
