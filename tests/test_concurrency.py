"""Many hotplug processes at once, as when a host boots: the first ones find
no cache (or a stale one), rebuild it concurrently, and all still succeed."""
import os
import subprocess

from conftest import REPO_ROOT

RULE = """\
rule: burst
match: {script: xr-burst}
actions:
  online:
    - lock.acquire: {name: xr-burst-test}
    - xenstore.write: {path: "{backend}/seen", value: "{domid}"}
    - lock.release: {name: xr-burst-test}
    - hotplug.success:
"""


def test_concurrent_events_with_a_cold_cache_all_succeed(tmp_path, xs_server):
    rules, state, locks = tmp_path / "rules", tmp_path / "state", tmp_path / "locks"
    rules.mkdir()
    (rules / "50-burst.yaml").write_text(RULE)
    n = 40
    procs = []
    for domid in range(1, n + 1):
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": REPO_ROOT,
               "XENSTORED_PATH": xs_server.socket_path, "XENBUS_PATH": f"backend/vif/{domid}/0",
               "XENRULES_RULES_PATH": str(rules), "XENRULES_STATE_DIR": str(state),
               "XENRULES_LOCK_DIR": str(locks), "XENRULES_LOG_FILE": str(tmp_path / "log"),
               "XENRULES_ORIGINALS_DIR": str(tmp_path / "none")}
        procs.append(subprocess.Popen(["/usr/bin/python3", "-m", "xenrules.hotplug", "xr-burst", "online"],
                                      env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE))
    codes = [p.wait(timeout=120) for p in procs]
    for p in procs:
        p.stdout.close(), p.stderr.close()
    assert codes == [0] * n
    snap = xs_server.snapshot()
    for domid in range(1, n + 1):
        back = f"/local/domain/0/backend/vif/{domid}/0"
        assert snap[back + "/seen"] == str(domid)
        assert snap[back + "/hotplug-status"] == "connected"
    assert sorted(os.listdir(state)) == ["rules.cache"]   # no temporary file left
    assert os.listdir(locks) == []                        # every lock released and unlinked
    with open(tmp_path / "log") as f:
        assert sum(" ok in " in line for line in f) == n
