"""A private Open vSwitch for tests: its own ovsdb-server, optionally ovs-vswitchd.

    with SimulatedDom0(xs, bridges=()) as dom0, OvsSandbox(dom0.netns) as ovs:
        ovs.add_bridge("xenbr0")
        env = dict(dom0.hotplug_env(1, 0, script="vif-openvswitch"), **ovs.env())
        dom0.run_original("vif-openvswitch", ["online", "type_if=vif"], env)
        print(ovs.state())

How both the original script and xenrules are pointed at it: ovs-vsctl
(and ovs-vswitchd) find the database at unix:$OVS_RUNDIR/db.sock when no
--db is given, so ``env()`` returns ``OVS_RUNDIR=<private dir>`` and the
scripts run unchanged. Nothing under /var/run/openvswitch is touched.

What is real and what is not: the database is Debian's ovsdb-server with the
packaged vswitch schema (``ovsdb-tool create``). There is no openvswitch
kernel module on these machines, so ovs-vswitchd runs (inside the sandbox's
network namespace, so it sees the vifs) only with the userspace datapath:
every bridge is made with ``datapath_type=netdev``. A bridge then is a tap
device, and vswitchd adds a tap ``ovs-netdev`` of its own. Without
``vswitchd=True`` only the database is there, and ovs-vsctl must be run
with ``--no-wait`` (the original script does not: it waits for vswitchd).
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
# The columns a comparison looks at: what a hotplug script sets or what
# vswitchd derives from it. Volatile ones (uuids, statistics, ifindex, link
# speed, status) are left out.
PORT_COLUMNS = ("name", "tag", "trunks", "vlan_mode", "external_ids", "other_config")
INTERFACE_COLUMNS = ("name", "type", "external_ids", "options", "ofport",
                     "mac_in_use", "mtu", "error")


class OvsError(RuntimeError):
    """The private Open vSwitch could not be started or queried."""


def _bridge_mac(n):
    return "02:58:4f:00:00:%02x" % (n & 0xff)


class OvsSandbox:
    def __init__(self, netns=None, vswitchd=True):
        """``netns``: where ovs-vswitchd runs (the dom0's namespace), required
        with ``vswitchd``. The database server itself needs no namespace."""
        for tool in ("ovsdb-tool", "ovsdb-server", "ovs-vsctl") + (("ovs-vswitchd",) if vswitchd else ()):
            if not shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin"):
                raise OvsError(f"{tool} not found: install openvswitch-switch")
        if vswitchd and not netns:
            raise OvsError("ovs-vswitchd needs the sandbox's network namespace")
        self.netns = netns
        self.with_vswitchd = vswitchd
        self.dir = tempfile.mkdtemp(prefix="xr-ovs-", dir="/tmp")   # short: sun_path is 108 bytes
        self.socket = os.path.join(self.dir, "db.sock")
        self._pids = {}
        self._bridges = 0
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    # -- lifecycle -------------------------------------------------------------

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def env(self):
        """What a script's environment needs to use this switch."""
        return {"OVS_RUNDIR": self.dir}

    def _run(self, argv, netns=False, check=True):
        if netns:
            argv = ["ip", "netns", "exec", self.netns] + argv
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "OVS_RUNDIR": self.dir})
        if check and proc.returncode != 0:
            raise OvsError("%s failed (exit %d): %s" % (" ".join(argv), proc.returncode,
                                                          proc.stderr.strip()))
        return proc

    def _daemon(self, name, argv, netns):
        pidfile = os.path.join(self.dir, name + ".pid")
        self._run(argv + ["--pidfile=" + pidfile, "--detach", "--no-chdir",
                          "--log-file=" + os.path.join(self.dir, name + ".log"),
                          "--unixctl=" + os.path.join(self.dir, name + ".ctl")], netns=netns)
        with open(pidfile) as fh:
            self._pids[name] = int(fh.read().strip())

    def _start(self):
        db = os.path.join(self.dir, "conf.db")
        self._run(["ovsdb-tool", "create", db, SCHEMA])
        self._daemon("ovsdb-server", ["ovsdb-server", db, "--remote=punix:" + self.socket], False)
        self.vsctl("--no-wait", "init")
        if self.with_vswitchd:
            self._daemon("ovs-vswitchd", ["ovs-vswitchd", "unix:" + self.socket], True)

    def stop(self):
        """Stop the daemons and remove the directory. Idempotent. vswitchd is
        killed outright (tidying a userspace datapath that the namespace's
        deletion removes anyway takes seconds), so neither waits on the other."""
        pids = []
        for name, sig in (("ovs-vswitchd", signal.SIGKILL), ("ovsdb-server", signal.SIGTERM)):
            pid = self._pids.pop(name, None)
            if pid is not None:
                try:
                    os.kill(pid, sig)
                    pids.append(pid)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.02)
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- building ----------------------------------------------------------------

    def vsctl(self, *args, check=True):
        """ovs-vsctl against this database; returns stdout."""
        return self._run(["ovs-vsctl", "--timeout=20", "--db=unix:" + self.socket] + list(args),
                         check=check).stdout

    def add_bridge(self, name):
        """An OVS bridge with the userspace datapath and a fixed MAC (so that
        two sandboxes built alike compare equal)."""
        self._bridges += 1
        wait = [] if self.with_vswitchd else ["--no-wait"]
        self.vsctl(*wait, "add-br", name, "--", "set", "bridge", name, "datapath_type=netdev",
                   "other-config:hwaddr=" + _bridge_mac(self._bridges))

    # -- inspecting --------------------------------------------------------------

    def table(self, table, columns):
        """[{column: value}] of a table, sorted by name; values in ovs-vsctl's
        JSON (sets and maps as ["set", [...]] / ["map", [...]])."""
        out = self.vsctl("--format=json", "--columns=" + ",".join(columns), "list", table)
        data = json.loads(out)
        rows = [dict(zip(data["headings"], row)) for row in data["data"]]
        return sorted((_plain(r) for r in rows), key=lambda r: r.get("name", ""))

    def state(self):
        """Bridges with their port names, ports and interfaces: uuids replaced by names."""
        names = {}
        for table in ("Port", "Interface"):
            out = json.loads(self.vsctl("--format=json", "--columns=_uuid,name", "list", table))
            for uuid, name in out["data"]:
                names[uuid[1]] = name
        bridges = []
        for row in self.table("Bridge", ("name", "ports", "datapath_type")):
            row["ports"] = sorted(names.get(u, u) for u in _as_list(row["ports"]))
            bridges.append(row)
        ports = []
        for row in self.table("Port", PORT_COLUMNS + ("interfaces",)):
            row["interfaces"] = sorted(names.get(u, u) for u in _as_list(row["interfaces"]))
            ports.append(row)
        interfaces = self.table("Interface", INTERFACE_COLUMNS)
        return {"bridges": bridges, "ports": ports, "interfaces": interfaces}


def _alive(pid):
    """True while the process runs; a zombie (a detached daemon waiting for
    init to reap it) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False


def _plain(value):
    """ovs-vsctl JSON -> plain Python: ["set", [...]] -> list, ["map", ...] -> dict,
    ["uuid", u] -> u."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        kind, body = value
        if kind == "set":
            return sorted((_plain(v) for v in body), key=str)
        if kind == "map":
            return {_plain(k): _plain(v) for k, v in body}
        if kind in ("uuid", "named-uuid"):
            return body
    return value


def _as_list(value):
    return value if isinstance(value, list) else [value]


def ovs_dom0(xenstore_socket, ovs_bridges=("xenbr0",), vswitchd=True, **kwargs):
    """A SimulatedDom0 (no Linux bridge unless asked) with its own Open vSwitch:
    events get OVS_RUNDIR, state() gains "ovs". See OvsDom0."""
    from xenrules.sandbox.dom0 import SimulatedDom0

    class OvsDom0(SimulatedDom0):
        def __init__(self):
            kwargs.setdefault("bridges", ())
            super().__init__(xenstore_socket, **kwargs)
            try:
                self.ovs = OvsSandbox(self.netns, vswitchd=vswitchd)
                for name in ovs_bridges:
                    self.ovs.add_bridge(name)
            except BaseException:
                self.destroy()
                raise

        def hotplug_env(self, *args, **kw):
            env = super().hotplug_env(*args, **kw)
            env.update(self.ovs.env())
            return env

        def state(self, xenstore=True):
            st = super().state(xenstore)
            # vswitchd's own datapath device gets a random MAC
            if "ovs-netdev" in st["links"]:
                st["links"]["ovs-netdev"]["mac"] = "<random>"
            st["ovs"] = self.ovs.state()
            return st

        def destroy(self):
            ovs = getattr(self, "ovs", None)
            if ovs is not None:
                ovs.stop()   # vswitchd runs in the namespace: stop it first
            super().destroy()

    return OvsDom0()
