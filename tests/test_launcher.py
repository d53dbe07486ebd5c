"""bin/xenrules-launcher in-process (no helper): the event runs, fast imports.

With no helper listening (socket absent, or XENRULES_HELPER_SOCKET="") the
launcher runs the event itself, with the checkout XENRULES_PYTHONPATH
names first on sys.path. The helper's own behaviour: tests/test_helper.py.
"""
import os
import subprocess

import pytest

from launchers import C_LAUNCHER, C_SOURCE, build_c, launcher  # noqa: F401  (fixture)

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
def test_without_a_helper_the_event_runs_in_process(dom0, tmp_path, helper_socket, launcher):
    dom0.add_vif(1, 0)
    script = tmp_path / "vif-bridge"
    os.symlink(launcher, script)
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


# -- the compiled launcher (issue 10) ------------------------------------------------

def test_the_compiled_launcher_builds_without_a_warning_at_wall_wextra():
    path, output = build_c(force=True)
    assert "-Wall -Wextra -Werror" in output and "-D_FORTIFY_SOURCE=2" in output
    assert "-fstack-protector-strong" in output and "-z,now" in output
    assert "warning" not in output.lower(), output
    assert os.access(path, os.X_OK)


def test_the_compiled_launcher_carries_the_mark_fallback_py_looks_for():
    """fallback.py never execs a file with b"xenrules-launcher" in its first 4096
    bytes as "the original": an ELF note puts it there."""
    from xenrules.fallback import LAUNCHER_MARK, _is_launcher
    with open(build_c()[0], "rb") as f:
        assert LAUNCHER_MARK in f.read(4096)
    assert _is_launcher(C_LAUNCHER)


ECHO = "#!/bin/sh\necho \"original $0 $*\"\nexit 3\n"


def _event_dir(tmp_path):
    for sub in ("rules", "originals", "state", "bin"):
        (tmp_path / sub).mkdir()
    original = tmp_path / "originals" / "xr-val"
    original.write_text(ECHO)
    original.chmod(0o755)
    os.symlink(build_c()[0], tmp_path / "bin" / "xr-val")
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "XENRULES_PYTHONPATH": REPO,
            "XENRULES_RULES_PATH": str(tmp_path / "rules"),
            "XENRULES_STATE_DIR": str(tmp_path / "state"),
            "XENRULES_ORIGINALS_DIR": str(tmp_path / "originals"),
            "XENRULES_LOG_FILE": str(tmp_path / "hotplug.log")}


def _valgrind(argv, env):
    return subprocess.run(["valgrind", "-q", "--error-exitcode=99", "--leak-check=full",
                           "--errors-for-leak-kinds=definite,indirect", "--track-fds=no"] + argv,
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=300)


def test_the_compiled_launcher_is_clean_under_valgrind_when_it_falls_back(tmp_path):
    env = _event_dir(tmp_path)
    env["XENRULES_HELPER_SOCKET"] = str(tmp_path / "absent.sock")
    script = str(tmp_path / "bin" / "xr-val")
    proc = _valgrind([script, "online", "\xff"], env)
    # no rule for xr-val: the in-process path execs the original, argv intact
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == f"original {tmp_path}/originals/xr-val online \xff\n"


def test_the_compiled_launcher_is_clean_under_valgrind_when_the_helper_serves(tmp_path):
    """A minimal root helper: "ready", takes the token, checks the request, says exit 7."""
    import marshal
    import socket
    import threading
    env = _event_dir(tmp_path)
    path = str(tmp_path / "h.sock")
    env["XENRULES_HELPER_SOCKET"] = path
    env["XR_BYTES"] = "caf\u00e9"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(1)
    seen = {}

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.send(marshal.dumps(("ready",)))
            data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 8)
            seen["request"] = marshal.loads(data)
            seen["fds"] = len(fds)
            seen["token"] = os.read(fds[5], 1)
            for fd in fds:
                os.close(fd)
            conn.send(marshal.dumps(("exit", 7 << 8)))

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        script = str(tmp_path / "bin" / "xr-val")
        proc = _valgrind([script, "online", "x y"], env)
    finally:
        thread.join(timeout=60)
        listener.close()
    assert proc.returncode == 7, proc.stderr
    version, argv, got_env, umask = seen["request"]
    assert (version, argv, seen["fds"], seen["token"]) == (2, [script, "online", "x y"], 6, b"!")
    assert got_env["XR_BYTES"] == "caf\u00e9" and umask == os.umask(os.umask(0o22))
