"""A simulated dom0 whose /etc holds private ISC dhcpd files.

vif-nat (the original and xenrules alike) edits /etc/dhcp/dhcpd.conf and a
dhcpd defaults file and restarts dhcpd through /etc/init.d. The host's files
must never be touched, so every event of a DhcpDom0 runs in a private mount
namespace whose /etc is an overlay: the host's /etc below, a per-sandbox
directory above. The sandbox puts its dhcpd files, symlinks and a stub init
script (which only records that it was called) in the upper directory and
hides (whiteouts) every other file vif-nat looks for, so what the host has
installed never matters. Edits land in the upper directory, where state()
reads them.

    with XenstoreServer(sock) as xs, DhcpDom0(xs) as dom0:
        dom0.put_file("/etc/dhcp/dhcpd.conf", "subnet ...\\n")
        dom0.put_file("/etc/default/dhcp3-server", 'INTERFACES=""\\n')
        dom0.put_init_stub()
        dom0.add_vif(1, 0, script="vif-nat")
        dom0.run_original("vif-nat", ["online", "type_if=vif"],
                          dict(dom0.hotplug_env(1, 0, script="vif-nat"), dhcp="yes"))
        print(dom0.state()["dhcp"])

Run by path (``python3 dhcp.py UPPER WORK -- COMMAND...``) inside a fresh
mount namespace, the module mounts the overlay over /etc and execs COMMAND.
"""
import os
import stat
import subprocess
import sys

if __name__ == "__main__" and not __package__:   # run by path inside the namespace
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from xenrules.sandbox.dom0 import PYTHON, TIMEOUT, SandboxError, SimulatedDom0  # noqa: E402

# Every file vif-nat (xen-network-common.sh's find_dhcpd_*_file and the
# /etc/dhcpd.conf test) or xenrules' rule looks at, in their order.
CONF_FILES = ("/etc/dhcp/dhcpd.conf", "/etc/dhcp3/dhcpd.conf", "/etc/dhcpd.conf")
INIT_FILES = tuple("/etc/init.d/" + n for n in
                   ("isc-dhcp-server", "dhcp-server", "dhcp3-server", "dhcp", "dhcpd"))
ARGS_FILES = ("/etc/sysconfig/dhcpd", "/etc/defaults/dhcp", "/etc/default/dhcp-server",
              "/etc/default/dhcp3-server", "/etc/default/isc-dhcp-server")
PROBED = CONF_FILES + INIT_FILES + ARGS_FILES

# A dhcpd.conf with a subnet for the guests and an admin's own host entry.
SAMPLE_CONF = """\
# dhcpd.conf of a dom0 routing its guests (xenrules sandbox)
ddns-update-style none;
default-lease-time 600;
max-lease-time 7200;
authoritative;

subnet 10.0.0.0 netmask 255.255.0.0 {
  option broadcast-address 10.0.255.255;
}

host printer { hardware ethernet 00:11:22:33:44:55; fixed-address 10.0.9.9; }
"""
# /etc/default/dhcp3-server of Debian's dhcp3-server (lenny/squeeze): a file
# the original finds.
SAMPLE_DHCP3_DEFAULTS = """\
# Defaults for dhcp initscript
# sourced by /etc/init.d/dhcp
# installed at /etc/default/dhcp3-server by the maintainer scripts

# On what interfaces should the DHCP server (dhcpd) serve DHCP requests?
#       Separate multiple interfaces with spaces, e.g. "eth0 eth1".
INTERFACES=""
"""
# /etc/default/isc-dhcp-server of Debian's isc-dhcp-server (bookworm): a file
# the original does not look for.
SAMPLE_ISC_DEFAULTS = """\
# Defaults for isc-dhcp-server (sourced by /etc/init.d/isc-dhcp-server)

# Path to dhcpd's config file (default: /etc/dhcp/dhcpd.conf).
#DHCPDv4_CONF=/etc/dhcp/dhcpd.conf

# On what interfaces should the DHCP server (dhcpd) serve DHCP requests?
#       Separate multiple interfaces with spaces, e.g. "eth0 eth1".
INTERFACESv4=""
INTERFACESv6=""
"""


def _mount_and_exec(argv):
    """Inside a private mount namespace: overlay UPPER over /etc, exec the command."""
    if len(argv) < 4 or argv[2] != "--":
        print("usage: dhcp.py UPPER WORK -- COMMAND...", file=sys.stderr)
        return 2
    upper, work, command = argv[0], argv[1], argv[3:]
    options = f"lowerdir=/etc,upperdir={upper},workdir={work}"
    proc = subprocess.run(["mount", "-t", "overlay", "xenrules-etc", "-o", options, "/etc"],
                          stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        print(f"dhcp sandbox: cannot mount the /etc overlay ({options})", file=sys.stderr)
        return 125
    os.execvp(command[0], command)


class DhcpDom0(SimulatedDom0):
    """A SimulatedDom0 whose events see a private /etc (see the module doc)."""

    def __init__(self, xenstore_socket, prefix="xrnat", bridges=("xenbr0",)):
        super().__init__(xenstore_socket, prefix=prefix, bridges=bridges)
        try:
            self.etc_upper = os.path.join(self.state_dir, "etc-upper")
            self.etc_work = os.path.join(self.state_dir, "etc-work")
            self.restart_log = os.path.join(self.state_dir, "dhcpd-restarts")
            os.mkdir(self.etc_upper)
            os.mkdir(self.etc_work)
            self.inodes = {}
            for path in PROBED:
                self.hide(path)
        except BaseException:
            self.destroy()
            raise

    # -- the private /etc ----------------------------------------------------

    def upper_path(self, path):
        """Where a path under /etc lives in the upper directory."""
        norm = os.path.normpath(path)
        if not norm.startswith("/etc/"):
            raise SandboxError(f"{path} is not under /etc")
        return os.path.join(self.etc_upper, norm[len("/etc/"):])

    def _prepare(self, path):
        upper = self.upper_path(path)
        os.makedirs(os.path.dirname(upper), exist_ok=True)
        if os.path.lexists(upper):
            os.unlink(upper)
        return upper

    def hide(self, path):
        """Make path absent in the sandbox (an overlay whiteout over the host's file)."""
        upper = self._prepare(path)
        if os.path.lexists(path):
            os.mknod(upper, stat.S_IFCHR | 0o600, os.makedev(0, 0))

    def put_file(self, path, text, mode=0o644):
        upper = self._prepare(path)
        with open(upper, "w") as fh:
            fh.write(text)
        os.chmod(upper, mode)
        self.inodes[path] = os.stat(upper).st_ino

    def put_symlink(self, path, target):
        """A symlink; an absolute target under /etc is the sandbox's."""
        os.symlink(target, self._prepare(path))

    def put_init_stub(self, path=INIT_FILES[0], exit_code=0):
        """An executable init script that records each call ("$0 $*") and exits exit_code."""
        self.put_file(path, "#!/bin/sh\n"
                      f"printf '%s\\n' \"$0 $*\" >> '{self.restart_log}'\n"
                      f"exit {int(exit_code)}\n", mode=0o755)

    def resolve(self, path, depth=0):
        """(upper path, symlink chain) of a sandbox path, following symlinks."""
        upper = self.upper_path(path)
        if os.path.islink(upper):
            if depth > 8:
                raise SandboxError(f"symlink loop at {path}")
            target = os.readlink(upper)
            if not target.startswith("/"):
                target = os.path.join(os.path.dirname(path), target)
            found, chain = self.resolve(target, depth + 1)
            return found, [path] + chain
        return upper, [path]

    def read_file(self, path):
        """The text of a sandbox file (through symlinks), or None if it is absent."""
        upper, _ = self.resolve(path)
        if not os.path.exists(upper) or stat.S_ISCHR(os.lstat(upper).st_mode):
            return None
        with open(upper) as fh:
            return fh.read()

    def describe_file(self, path):
        """A comparable picture of one probed path."""
        upper = self.upper_path(path)
        if os.path.islink(upper):
            real, chain = self.resolve(path)
            return {"symlink": os.readlink(upper), "target": chain[-1],
                    "content": self.read_file(path)}
        if not os.path.lexists(upper) or stat.S_ISCHR(os.lstat(upper).st_mode):
            return None
        st = os.stat(upper)
        return {"content": self.read_file(path), "mode": oct(st.st_mode & 0o7777),
                "same_inode": self.inodes.get(path) == st.st_ino}

    def dhcp_files(self):
        """{path: picture} of every file vif-nat looks at that exists, plus the
        targets of symlinks among them."""
        out = {}
        for path in PROBED:
            found = self.describe_file(path)
            if found is not None:
                out[path] = found
                if "target" in found and found["target"] not in out:
                    out[found["target"]] = self.describe_file(found["target"])
        return dict(sorted(out.items()))

    def restarts(self):
        """The calls of the init stub, in order ("PATH ARGS")."""
        try:
            with open(self.restart_log) as fh:
                return fh.read().splitlines()
        except FileNotFoundError:
            return []

    # -- SimulatedDom0 overrides --------------------------------------------

    def run(self, argv, env=None, timeout=TIMEOUT):
        """Like SimulatedDom0.run, in a private mount namespace with the /etc overlay."""
        wrapper = ["unshare", "--mount", "--propagation", "private",
                   PYTHON, os.path.abspath(__file__), self.etc_upper, self.etc_work, "--"]
        return super().run(wrapper + [os.fspath(a) for a in argv], env, timeout)

    def state(self, xenstore=True):
        st = super().state(xenstore)
        st["dhcp"] = self.dhcp_files()
        st["dhcp_restarts"] = self.restarts()
        return st


if __name__ == "__main__":
    sys.exit(_mount_and_exec(sys.argv[1:]))
