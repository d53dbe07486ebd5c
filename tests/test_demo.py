"""`xenrules sandbox` (make demo): the embedded default works and cleans up."""
import re
import subprocess

import pytest

from conftest import REPO_ROOT, _netns_list

pytestmark = pytest.mark.netns


def test_sandbox_brings_a_vif_online_and_offline_and_removes_everything():
    done = subprocess.run(["/usr/bin/python3", "-m", "xenrules", "sandbox"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    online, offline = out.split("$ vif-bridge offline")
    assert "link vif1.0: UP mtu 1500 mac fe:ff:ff:ff:ff:ff master xenbr0" in online
    assert "hotplug-status = 'connected'" in online
    assert "rules.d/50-vif-bridge.yaml:" in online and ": vif1.0: link down, address fe:ff:ff:ff:ff:ff" in online
    assert "8 steps done, 3 skipped, ok" in online   # firewall and antispoof off, no vifname
    assert "link vif1.0: down mtu 1500 mac fe:ff:ff:ff:ff:ff master -" in offline
    assert "sandbox removed" in offline
    # other tests may be making namespaces meanwhile: look for the demo's own
    netns = re.search(r"network namespace (\S+),", out).group(1)
    assert netns not in _netns_list()
