"""A simulated dom0: a throw-away network namespace plus a XenStore.

The real hotplug scripts run against real kernel objects: a bridge, the
backend netdevs (veth pairs stand in for netback's ``vifD.N``, real tap
devices for qemu's ``vifD.N-emu``) in a private network namespace, and a
XenStore server speaking the wire protocol on a unix socket
(``xenrules.sandbox.xsserver``), reached through ``XENSTORED_PATH`` by Debian's
xenstore-utils, libxenstore, pyxs and xenrules alike.

    with XenstoreServer(sock) as xs, SimulatedDom0(xs) as dom0:
        dom0.add_vif(1, 0)
        env = dom0.hotplug_env(1, 0)
        dom0.run_original("vif-bridge", ["online", "type_if=vif"], env)
        print(dom0.state())

What is simulated and how faithfully:

* xenstore keys: those libxl (tools/libs/light/libxl_nic.c and
  libxl__device_generic_add) writes for a NIC: the backend directory, the
  frontend directory (with the read-only ``mtu`` libxl writes, default 1500),
  the ``/libxl/D/device/vif/N`` copy, and the domain's ``name``. Permissions
  are not modelled.
* netback's ``vifD.N`` is a veth whose peer ``gD.N`` stays down, so the vif has
  no carrier (as with a guest that has not connected yet). netback gives the
  device MAC fe:ff:ff:ff:ff:ff itself; the sandbox gives it a distinct
  deterministic MAC so that a test sees the script set it.
* Every MAC is deterministic (bridges too, so a bridge does not take the MAC
  of its lowest port), and IPv6 address autogeneration is off in the
  namespace, so that two sandboxes built alike end in comparable states.
* Commands run through ``ip netns exec``, which also remounts /sys for the
  namespace: ``/sys/class/net`` shows the namespace's links, as the originals'
  ``[ -e /sys/class/net/$bridge ]`` checks need.

Host side effects (outside the namespace): the originals append their stderr
to /var/log/xen/xen-hotplug.log and take locks in /var/run/xen-hotplug; the
first is created if missing (see HOST_DIRS_CREATED).
"""

import itertools
import json
import re
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from xenrules.sandbox.originals import originals_dir
from xenrules.xenstore import XenStore

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON = "/usr/bin/python3"
SCRIPT_DIR = "/etc/xen/scripts"          # where libxl says the scripts are
HOTPLUG_LOG = "/var/log/xen/xen-hotplug.log"
HOST_DIRS = ("/var/log/xen", "/var/run/xen-hotplug")
HOST_DIRS_CREATED = []                   # which of HOST_DIRS this process had to create
TIMEOUT = 40.0                           # libxl's hotplug timeout (4.6+)
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NETBACK_MAC = "fe:ff:ff:ff:ff:ff"

_counter = itertools.count()


class SandboxError(RuntimeError):
    """Setting up or inspecting the sandbox failed."""


def ensure_host_dirs():
    for d in HOST_DIRS:
        if not os.path.isdir(d):
            os.makedirs(d, exist_ok=True)
            HOST_DIRS_CREATED.append(d)


def _mac(kind, a, b):
    """Deterministic locally administered MAC 02:58:<kind>:<a hi>:<a lo>:<b>."""
    return "02:58:%02x:%02x:%02x:%02x" % (kind, (a >> 8) & 0xff, a & 0xff, b & 0xff)


def vif_name(domid, devid):
    return "vif%d.%d" % (domid, devid)


# --------------------------------------------------------------------------
# A minimal XenStore wire-protocol client (DIRECTORY, READ, WRITE, RM), so the
# sandbox needs nothing but the socket. Requests are answered in order.

# --------------------------------------------------------------------------

class SimulatedDom0:
    """A dom0 in a private network namespace. Use as a context manager."""

    def __init__(self, xenstore_socket, prefix="xr", bridges=("xenbr0",)):
        # Accept the server object itself (anything with .socket_path) too.
        if not isinstance(xenstore_socket, (str, bytes, os.PathLike)):
            xenstore_socket = xenstore_socket.socket_path
        self.xenstore_socket = os.fspath(xenstore_socket)
        self.netns = "%s-%d-%d" % (prefix, os.getpid(), next(_counter))
        self.nics = {}           # (domid, devid) -> {"nictype":, "gatewaydev":}
        self._bridge_count = 0
        self._created = False
        self._destroyed = False
        ensure_host_dirs()
        self.state_dir = tempfile.mkdtemp(prefix="xenrules-state-%s-" % self.netns)
        # the journals on a tmpfs, as a dom0's /run is (fsync costs nothing there)
        self.journal_dir = tempfile.mkdtemp(prefix="xenrules-journal-%s-" % self.netns,
                                            dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        try:
            self._ip("netns", "add", self.netns, netns=False)
            self._created = True
            self._ip("link", "set", "lo", "up")
            # No IPv6 link-local autoconfiguration: end states stay deterministic.
            self._check(["ip", "netns", "exec", self.netns, "sysctl", "-q", "-w",
                         "net.ipv6.conf.all.addr_gen_mode=1",
                         "net.ipv6.conf.default.addr_gen_mode=1"])
            with self._xs() as xs:
                xs.write("/local/domain/0/name", "Domain-0")
                xs.write("/local/domain/0/domid", "0")
            for b in bridges:
                self.add_bridge(b)
        except BaseException:
            self.destroy()
            raise

    # -- plumbing ----------------------------------------------------------

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.destroy()
        return False

    def __repr__(self):
        return "<SimulatedDom0 netns=%s xenstore=%s>" % (self.netns, self.xenstore_socket)

    @staticmethod
    def _check(argv):
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, check=False)
        if proc.returncode != 0:
            raise SandboxError("%s failed (exit %d): %s" % (
                " ".join(argv), proc.returncode, proc.stderr.strip()))
        return proc.stdout

    def _ip(self, *args, netns=True):
        argv = ["ip"] + (["-n", self.netns] if netns else []) + list(args)
        return self._check(argv)

    def ip(self, *args):
        """Run `ip -n <netns> ARGS...` (argv list); returns stdout, raises on failure."""
        return self._ip(*args)

    def _xs(self):
        return XenStore(self.xenstore_socket)

    def xs_write(self, path, value):
        with self._xs() as xs:
            xs.write(path, str(value))

    def xs_read(self, path):
        """Value at path, or None if absent."""
        with self._xs() as xs:
            return xs.read(path)

    def xs_rm(self, path):
        with self._xs() as xs:
            xs.remove(path)

    # -- building the dom0 -------------------------------------------------

    def add_bridge(self, name, mtu=None):
        """A Linux bridge as Debian's /etc/network/interfaces would make it:
        STP off, forward delay 0, up. Fixed MAC (see the module doc).

        An ``mtu`` is set after creation, as ifupdown does: the kernel then
        keeps it (BROPT_MTU_SET_BY_USER). A bridge created with an MTU
        instead follows its ports and falls back to 1500 when the last one
        leaves."""
        self._bridge_count += 1
        self._ip("link", "add", "name", name, "address", _mac(0x42, 0, self._bridge_count),
                 "type", "bridge", "stp_state", "0", "forward_delay", "0")
        if mtu is not None:
            self._ip("link", "set", "dev", name, "mtu", str(int(mtu)))
        self._ip("link", "set", "dev", name, "up")

    def del_link(self, name):
        self._ip("link", "del", "dev", name)

    def add_vif(self, domid, devid, bridge="xenbr0", mtu=None, vifname=None, ip=None,
                mac=None, nictype="vif", gatewaydev=None, script="vif-bridge",
                **extra_backend_keys):
        """netback's backend netdev vif<domid>.<devid> plus the xenstore keys
        libxl writes for the NIC (before it runs the hotplug script).

        ``bridge=None`` leaves the ``bridge`` key out (older libxl, or a
        toolstack that lets vif-bridge pick the first bridge). Extra backend
        keys with dashes can be given as ``**{"some-key": "v"}``.
        """
        domid, devid = int(domid), int(devid)
        dev = vif_name(domid, devid)
        peer = "g%d.%d" % (domid, devid)
        if len(dev) > 15 or len(peer) > 15:
            raise SandboxError("interface name too long: %s" % dev)
        self._ip("link", "add", "name", dev, "address", _mac(0x52, domid, devid),
                 "mtu", "1500", "type", "veth",
                 "peer", "name", peer, "address", _mac(0x53, domid, devid))
        mac = mac or "00:16:3e:%02x:%02x:%02x" % ((domid >> 8) & 0x7f, domid & 0xff, devid & 0xff)
        back_path = "/local/domain/0/backend/vif/%d/%d" % (domid, devid)
        front_path = "/local/domain/%d/device/vif/%d" % (domid, devid)
        libxl_path = "/libxl/%d/device/vif/%d" % (domid, devid)
        script_path = script if script.startswith("/") else os.path.join(SCRIPT_DIR, script)

        # libxl__device_generic_add + libxl__set_xenstore_nic, in their order.
        back = [("frontend", front_path), ("frontend-id", str(domid)), ("online", "1"),
                ("state", "1"), ("script", script_path)]
        if vifname is not None:
            back.append(("vifname", vifname))
        back.append(("mac", mac))
        if ip is not None:
            back.append(("ip", ip))
        if gatewaydev is not None:
            back.append(("gatewaydev", gatewaydev))
        if mtu is not None and int(mtu) != 1500:   # libxl writes it only when not default
            back.append(("mtu", str(int(mtu))))
        if bridge is not None:
            back.append(("bridge", bridge))
        back += [("handle", str(devid)), ("type", nictype), ("hotplug-status", "")]
        for k, v in extra_backend_keys.items():
            back = [(bk, bv) for bk, bv in back if bk != k] + [(k, str(v))]
        front = [("backend", back_path), ("backend-id", "0"), ("state", "1"),
                 ("handle", str(devid)), ("mac", mac),
                 ("mtu", str(int(mtu) if mtu is not None else 1500)),   # ro_front
                 ("trusted", "1")]
        with self._xs() as xs:
            xs.write("/local/domain/%d/name" % domid, "guest%d" % domid)
            xs.write("/local/domain/%d/domid" % domid, str(domid))
            xs.write(libxl_path + "/frontend", front_path)
            xs.write(libxl_path + "/backend", back_path)
            for k, v in front:
                xs.write(front_path + "/" + k, v)
            for k, v in back:
                xs.write(back_path + "/" + k, v)
                xs.write(libxl_path + "/" + k, v)
        self.nics[(domid, devid)] = {"nictype": nictype, "gatewaydev": gatewaydev}
        return dev

    def add_tap(self, domid, devid):
        """qemu's tap device vif<domid>.<devid>-emu for an HVM emulated NIC.
        The NIC becomes ``vif_ioemu`` (backend ``type``, as libxl writes for
        an HVM guest), so hotplug_env() sets INTERFACE like libxl."""
        domid, devid = int(domid), int(devid)
        dev = vif_name(domid, devid) + "-emu"
        if len(dev) > 15:
            raise SandboxError("interface name too long: %s" % dev)
        self._ip("tuntap", "add", "dev", dev, "mode", "tap")
        self._ip("link", "set", "dev", dev, "address", _mac(0x54, domid, devid))
        nic = self.nics.setdefault((domid, devid), {"nictype": "vif", "gatewaydev": None})
        if self.xs_read("/local/domain/0/backend/vif/%d/%d/type" % (domid, devid)) is not None:
            nic["nictype"] = "vif_ioemu"
            self.xs_write("/local/domain/0/backend/vif/%d/%d/type" % (domid, devid),
                          "vif_ioemu")
            self.xs_write("/libxl/%d/device/vif/%d/type" % (domid, devid), "vif_ioemu")
        return dev

    # -- running hotplug scripts ---------------------------------------------

    def hotplug_env(self, domid, devid, type_if="vif", script="vif-bridge"):
        """The environment libxl >= 4.2 gives a vif hotplug script
        (libxl_linux.c get_hotplug_env), plus XENSTORED_PATH."""
        domid, devid = int(domid), int(devid)
        nic = self.nics.get((domid, devid), {"nictype": "vif", "gatewaydev": None})
        env = {
            "script": script if script.startswith("/") else os.path.join(SCRIPT_DIR, script),
            "XENBUS_TYPE": "vif",
            "XENBUS_PATH": "backend/vif/%d/%d" % (domid, devid),
            "XENBUS_BASE_PATH": "backend",
            "netdev": nic.get("gatewaydev") or "",
        }
        if type_if == "tap" or nic.get("nictype") == "vif_ioemu":
            env["INTERFACE"] = vif_name(domid, devid) + "-emu"
        env["vif"] = vif_name(domid, devid)
        env["XENSTORED_PATH"] = self.xenstore_socket
        return env

    def _base_env(self):
        return {"PATH": BASE_PATH, "XENSTORED_PATH": self.xenstore_socket}

    def run(self, argv, env=None, timeout=TIMEOUT):
        """Run argv inside the namespace like libxl runs a hotplug script:
        stdin /dev/null, output captured, killed after ``timeout`` s.

        The result is a CompletedProcess with extra attributes: ``pid``, ``wall`` (s),
        ``cpu`` (user+sys of the whole process tree, s, from wait4),
        ``rusage``, ``timed_out`` and ``hotplug_log`` (what was appended to
        /var/log/xen/xen-hotplug.log meanwhile).
        """
        full_env = self._base_env()
        full_env.update(env or {})
        full_argv = ["ip", "netns", "exec", self.netns] + [os.fspath(a) for a in argv]
        try:
            log_start = os.path.getsize(HOTPLUG_LOG)
        except OSError:
            log_start = 0
        timed_out = []
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen(full_argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err, env=full_env, cwd="/",
                                    start_new_session=True)

            def _kill():
                timed_out.append(True)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass

            timer = threading.Timer(timeout, _kill)
            timer.start()
            try:
                while True:
                    try:
                        _pid, status, rusage = os.wait4(proc.pid, 0)
                        break
                    except InterruptedError:
                        continue
            finally:
                timer.cancel()
            wall = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode("utf-8", "replace")
            stderr = err.read().decode("utf-8", "replace")
        result = subprocess.CompletedProcess(full_argv, proc.returncode, stdout, stderr)
        result.pid = proc.pid   # `ip netns exec` execs argv: the command's own pid
        result.wall = wall
        result.rusage = rusage
        result.cpu = rusage.ru_utime + rusage.ru_stime
        result.timed_out = bool(timed_out)
        try:
            with open(HOTPLUG_LOG, "rb") as fh:
                fh.seek(log_start)
                result.hotplug_log = fh.read().decode("utf-8", "replace")
        except OSError:
            result.hotplug_log = ""
        return result

    def run_original(self, script, args, env):
        """Run Debian's original script (from originals_dir()) in the namespace."""
        path = os.path.join(originals_dir(), script)
        if not os.path.isfile(path):
            raise SandboxError("no original script %s" % path)
        return self.run([path] + list(args), env)

    def xenrules_env(self, rules_path=None, state_dir=None, fallback=False):
        """XENRULES_* for a run from this checkout. Unless ``fallback``, the
        originals directory is an empty one, so xenrules can never quietly
        hand an event to an original script (which would make a differential
        test compare the original with itself): it fails instead."""
        if fallback:
            originals = originals_dir()
        else:
            originals = os.path.join(self.state_dir, "no-originals")
            os.makedirs(originals, exist_ok=True)
        return {
            "PYTHONPATH": REPO_ROOT,
            "XENRULES_RULES_PATH": rules_path or os.path.join(REPO_ROOT, "rules.d"),
            "XENRULES_STATE_DIR": state_dir or self.state_dir,
            "XENRULES_ORIGINALS_DIR": originals,
            # a private journal directory: never the host's /run/xenrules
            "XENRULES_JOURNAL_DIR": self.journal_dir,
            # a private settings file (absent unless a test writes it): never
            # the host's /etc/xen/xenrules.conf
            "XENRULES_CONF": os.path.join(self.state_dir, "xenrules.conf"),
        }

    def run_xenrules(self, script, args, env, rules_path=None, state_dir=None,
                     fallback=False):
        """Run the same event through xenrules: python3 -m xenrules.hotplug."""
        full_env = dict(env)
        full_env.update(self.xenrules_env(rules_path, state_dir, fallback))
        if "XENRULES_CONF" in env:   # a test's own settings file
            full_env["XENRULES_CONF"] = env["XENRULES_CONF"]
        return self.run([PYTHON, "-m", "xenrules.hotplug", script] + list(args), full_env)

    # -- inspecting ----------------------------------------------------------

    def ip_json(self, *args):
        out = self._ip("-j", *args)
        return json.loads(out) if out.strip() else []

    def links(self):
        """{name: link dict from `ip -j -d link show`} (lo included)."""
        return {l["ifname"]: l for l in self.ip_json("-d", "link", "show")}

    def _links_settled(self, links):
        # linkwatch derives a veth's operstate from its flags asynchronously
        # (up to a second late on a busy machine). Waiting for it hides no
        # difference: the flags themselves are compared.
        for link in links:
            if (link.get("linkinfo") or {}).get("info_kind") != "veth":
                continue
            flags = link.get("flags", [])
            if "UP" not in flags:
                want = ("DOWN",)
            elif "LOWER_UP" in flags:
                want = ("UP",)
            else:
                want = ("LOWERLAYERDOWN", "DOWN")
            if link.get("operstate") not in want:
                return False
        return True

    def state(self, xenstore=True):
        """A deterministic, diff-friendly picture of the dom0: links (not lo),
        bridges, routes and (optionally) the whole xenstore. It first waits
        (up to 10 s) for link operstates to settle, then takes the picture
        anyway: a state that never settles shows up as a difference."""
        deadline = time.monotonic() + 10
        links = self.ip_json("-d", "link", "show")
        while not self._links_settled(links) and time.monotonic() < deadline:
            time.sleep(0.05)
            links = self.ip_json("-d", "link", "show")
        addrs = {a["ifname"]: a for a in self.ip_json("addr", "show")}
        out_links = {}
        bridges = {}
        for l in links:
            name = l["ifname"]
            if name == "lo":
                continue
            info = l.get("linkinfo") or {}
            entry = {
                "kind": info.get("info_kind"),
                "master": l.get("master"),
                "mtu": l.get("mtu"),
                "mac": l.get("address"),
                "up": "UP" in l.get("flags", []),
                "operstate": l.get("operstate"),
                "addresses": sorted(
                    "%s/%s" % (a["local"], a["prefixlen"])
                    for a in addrs.get(name, {}).get("addr_info", [])),
            }
            if info.get("info_slave_kind") == "bridge":
                entry["port_state"] = (info.get("info_slave_data") or {}).get("state")
            if info.get("info_kind") == "veth":
                entry["peer"] = l.get("link")
            out_links[name] = entry
            if info.get("info_kind") == "bridge":
                data = info.get("info_data") or {}
                bridges[name] = {"stp_state": data.get("stp_state"),
                                 "forward_delay": data.get("forward_delay"),
                                 "ports": []}
        for name, entry in out_links.items():
            if entry["master"] in bridges:
                bridges[entry["master"]]["ports"].append(name)
        for b in bridges.values():
            b["ports"].sort()
        routes = []
        for fam in ("-4", "-6"):
            for r in self.ip_json(fam, "route", "show", "table", "all"):
                if r.get("table") == "local":
                    continue
                r.pop("expires", None)
                routes.append(json.dumps(r, sort_keys=True))
        state = {
            "links": dict(sorted(out_links.items())),
            "bridges": dict(sorted(bridges.items())),
            "routes": sorted(routes),
            "sysctls": self.sysctls(),
            "firewall": self.firewall(),
        }
        if xenstore:
            state["xenstore"] = self.xenstore_snapshot()
        return state

    def sysctls(self):
        """{name: value} of the per-device and global forwarding/proxy sysctls
        the vif scripts touch (proxy_arp, forwarding, proxy_ndp)."""
        out = self._ip("netns", "exec", self.netns, "sysctl", "-a", "-r",
                       r"^net\.ipv[46]\.conf\..*\.(proxy_arp|forwarding|proxy_ndp)$",
                       netns=False)
        found = {}
        for line in out.splitlines():
            name, sep, value = line.partition(" = ")
            if sep:
                found[name.strip()] = value.strip()
        return dict(sorted(found.items()))

    def firewall(self):
        """The namespace's iptables/ip6tables rules (iptables-save, counters
        and comments dropped) and nftables ruleset, as sorted lines."""
        lines = []
        for tool in ("iptables-save", "ip6tables-save"):
            proc = subprocess.run(["ip", "netns", "exec", self.netns, tool],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
            if proc.returncode != 0:
                raise SandboxError(f"{tool} failed: {proc.stderr.strip()}")
            for line in proc.stdout.splitlines():
                if line.startswith("#"):
                    continue
                lines.append(f"{tool}: " + re.sub(r" \[\d+:\d+\]$", "", line))
        nft = self._ip("netns", "exec", self.netns, "nft", "list", "ruleset", netns=False)
        lines += ["nft: " + line.strip() for line in nft.splitlines() if line.strip()]
        return lines

    def xenstore_snapshot(self):
        """{abs path: value} of every node but the root, read over the wire
        protocol (the same picture as XenstoreServer.snapshot())."""
        snap = {}
        with self._xs() as xs:
            stack = [""]
            while stack:
                path = stack.pop()
                for child in xs.list(path or "/"):
                    node = f"{path}/{child}"
                    value = xs.read(node)
                    if value is not None:   # not removed while walking
                        snap[node] = value
                        stack.append(node)
        return dict(sorted(snap.items()))

    def exists(self):
        return os.path.exists(os.path.join("/run/netns", self.netns))

    # -- teardown --------------------------------------------------------------

    def destroy(self):
        """Delete the namespace (and with it every link in it). Idempotent."""
        if self._destroyed:
            return
        self._destroyed = True
        try:
            if self._created and self.exists():
                self._ip("netns", "del", self.netns, netns=False)
        finally:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            shutil.rmtree(self.journal_dir, ignore_errors=True)
