"""The machine side of the package tests: apt, dpkg, diversions, conffiles.

tests/test_package.py installs the real xenrules .deb next to the real
xen-utils-common, so everything here acts on the host's dpkg database. A
Machine records what the host had before (installed packages, xenrules'
diversions, lock files) and restore() puts it back: xenrules purged, and
xen-utils-common with what apt pulled in for it purged again if it was not
installed before (or reinstalled at its old version if it was). Nothing
global is left behind even when a test fails half-way.
"""
import hashlib
import os
import re
import shutil
import subprocess
import tempfile

SCRIPTS = "/etc/xen/scripts"
LAUNCHER = "/usr/libexec/xenrules/xenrules-launcher"
DIVERTED_LIST = "/usr/share/xenrules/diverted"
SUFFIX = ".xenrules-orig"
XUC = "xen-utils-common"
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/root",
       "DEBIAN_FRONTEND": "noninteractive"}
APT = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "-y", "--no-install-recommends"]
_SETTING_UP = re.compile(r"^Setting up ([^ :]+)(?::\S+)? \(", re.M)


class MachineError(AssertionError):
    """A dpkg/apt command failed (an assertion: the test that ran it fails)."""


def run(argv, check=True, env=None):
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=dict(ENV, **(env or {})))
    if check and done.returncode != 0:
        raise MachineError(f"{' '.join(argv)} failed (exit {done.returncode}):\n"
                           f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def md5(path):
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


def installed_version(package):
    done = run(["dpkg-query", "-W", "-f=${db:Status-Status} ${Version}", package], check=False)
    status, _, version = done.stdout.partition(" ")
    return version if done.returncode == 0 and status == "installed" else None


def installed_packages():
    out = run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n"]).stdout
    return {line.split()[0] for line in out.splitlines() if line.endswith(" installed")}


def conffile_hashes(package=XUC):
    """{path: md5} of the package's conffiles under /etc/xen/scripts, as dpkg recorded them."""
    out = run(["dpkg-query", "-W", "-f=${Conffiles}\n", package]).stdout
    found = {}
    for line in out.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0].startswith(SCRIPTS + "/"):
            found[words[0]] = words[1]
    return found


def diversions(package="xenrules"):
    """{diverted path: where it went} for the package's diversions."""
    out = run(["dpkg-divert", "--list"]).stdout
    found = {}
    for m in re.finditer(r"^diversion of (\S+) to (\S+) by (\S+)$", out, re.M):
        if m.group(3) == package:
            found[m.group(1)] = m.group(2)
    return found


def apt_versions(package):
    """Versions apt can install, oldest first."""
    out = run(["apt-cache", "madison", package]).stdout
    versions = sorted({line.split("|")[1].strip() for line in out.splitlines() if "|" in line},
                      key=_version_key)
    if not versions:
        raise MachineError(f"apt knows no version of {package}: run apt-get update")
    return versions


def _version_key(version):
    import functools

    def cmp(a, b):
        if run(["dpkg", "--compare-versions", a, "lt", b], check=False).returncode == 0:
            return -1
        return 0 if a == b else 1
    return functools.cmp_to_key(cmp)(version)


def _unheld(path):
    """True for a lock file nobody holds: a leftover. Other tests on this machine run
    Xen's locking.sh in the same directory; their held locks are not ours to judge."""
    import fcntl
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False          # gone meanwhile: released
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return os.path.exists(path)
    except OSError:
        return False
    finally:
        os.close(fd)


LOCK = "/run/lock/xenrules-package-tests.lock"


def _ancestors():
    pids, pid = set(), os.getppid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def machine_lock():
    """Serialise the package tests of every checkout on this host: two runs
    installing and purging the same packages would each restore the other's
    state. Held for the whole run; a run started by the holder (autopkgtest
    under tools/run_autopkgtest.py) goes on under its ancestor's lock.
    Returns the open file (keep it: closing releases), or None when inherited."""
    import fcntl
    os.makedirs(os.path.dirname(LOCK), exist_ok=True)
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if holder.isdigit() and int(holder) in _ancestors():
            os.close(fd)
            return None
        fcntl.flock(fd, fcntl.LOCK_EX)       # wait for the other run to finish
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


class Machine:
    """The host's package state around the package tests."""

    def __init__(self):
        self.lock = machine_lock()
        self.packages_before = installed_packages()
        self.xuc_before = installed_version(XUC)
        self.lock_dir_before = set(os.listdir("/var/run/xen-hotplug")) \
            if os.path.isdir("/var/run/xen-hotplug") else set()
        self.etc_xen_before = os.path.exists("/etc/xen")
        self.pulled = set()           # packages our apt runs set up
        self.tmp = tempfile.mkdtemp(prefix="xenrules-pkgtest-")

    # -- apt and dpkg ----------------------------------------------------------

    @property
    def pins(self):
        """xen-utils-common depends on udev; bookworm's newest udev would drag systemd
        along. Ask for the udev of the installed systemd instead, when udev is missing."""
        systemd = installed_version("systemd")
        return [f"udev={systemd}"] if systemd and not installed_version("udev") else []

    def apt(self, *args, check=True, env=None):
        done = run(APT + list(args), check=check, env=env)
        self.pulled |= set(_SETTING_UP.findall(done.stdout))
        return done

    def dpkg(self, *args, check=True):
        return run(["dpkg"] + list(args), check=check)

    def install_xuc(self, version=None, reinstall=False):
        wanted = f"{XUC}={version}" if version else XUC
        args = ["install", "--allow-downgrades"] + (["--reinstall"] if reinstall else [])
        return self.apt(*args, wanted, *self.pins)

    def install_deb(self, deb, *more, reinstall=False):
        return self.apt("install", *(["--reinstall"] if reinstall else []), deb, *more, *self.pins)

    def purge(self, *packages, check=True):
        """Purge the packages, and nothing else: when apt would also remove a package that
        depends on them (another user's), refuse (a failure unless check=False)."""
        present = [p for p in packages if installed_version(p)]
        if not present:
            return
        plan = run(APT + ["-s", "purge"] + present).stdout
        extra = set(re.findall(r"^(?:Purg|Remv) (\S+)", plan, re.M)) - set(present)
        if extra:
            if check:
                raise MachineError(f"purging {present} would also remove {sorted(extra)}")
            return
        self.apt("purge", *present)

    def download_xuc(self, version):
        """The archive's xen-utils-common .deb. apt-get download drops to the _apt user,
        which must reach and write the directory."""
        where = os.path.join(self.tmp, "download")
        os.makedirs(where, exist_ok=True)
        os.chmod(self.tmp, 0o711)
        os.chmod(where, 0o777)
        done = subprocess.run(["apt-get", "download", f"{XUC}={version}"], cwd=where,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, env=ENV)
        if done.returncode != 0:
            raise MachineError(f"apt-get download {XUC}={version} failed: {done.stderr}")
        debs = [f for f in os.listdir(where) if f.startswith(XUC + "_") and
                f.endswith(".deb") and version.split(":")[-1] in f]
        if len(debs) != 1:
            raise MachineError(f"apt-get download left {debs}")
        return os.path.join(where, debs[0])

    def repack_xuc(self, version, new_version, script="vif-bridge", line="# xenrules package test\n"):
        """The archive's xen-utils-common at another version, with one line appended to
        one hotplug script: a real dpkg upgrade that changes that conffile."""
        tree = os.path.join(self.tmp, f"repack-{new_version}")
        shutil.rmtree(tree, ignore_errors=True)
        run(["dpkg-deb", "-R", self.download_xuc(version), tree])
        control = os.path.join(tree, "DEBIAN", "control")
        with open(control) as f:
            text = f.read()
        with open(control, "w") as f:
            f.write(re.sub(r"^Version: .*$", f"Version: {new_version}", text, flags=re.M))
        with open(os.path.join(tree, SCRIPTS.lstrip("/"), script), "a") as f:
            f.write(line)
        out = os.path.join(self.tmp, f"{XUC}_{new_version}_repack.deb")
        run(["dpkg-deb", "--root-owner-group", "-b", tree, out])
        shutil.rmtree(tree, ignore_errors=True)
        return out

    # -- what the tests check ----------------------------------------------------

    @staticmethod
    def diverted_names():
        with open(DIVERTED_LIST) as f:
            return [line.strip() for line in f if line.strip()]

    @staticmethod
    def originals_problems():
        """Every way /etc/xen/scripts differs from xen-utils-common's conffiles,
        for the non-diverted state: [] when each original is back byte for byte."""
        problems = []
        for path, digest in sorted(conffile_hashes().items()):
            if os.path.islink(path) or not os.path.isfile(path):
                problems.append(f"{path} is not a regular file")
            elif md5(path) != digest:
                problems.append(f"{path}: md5 {md5(path)} != dpkg's {digest}")
            if os.path.lexists(path + SUFFIX):
                problems.append(f"{path + SUFFIX} is left behind")
        return problems

    @staticmethod
    def diverted_problems(names):
        """Every way the diversions of `names` are not as the package makes them."""
        problems = []
        hashes = conffile_hashes()
        found = diversions()
        expected = {f"{SCRIPTS}/{n}": f"{SCRIPTS}/{n}{SUFFIX}" for n in names}
        if found != expected:
            problems.append(f"xenrules diversions {found} != {expected}")
        for name in names:
            path = f"{SCRIPTS}/{name}"
            if not os.path.islink(path) or os.readlink(path) != LAUNCHER:
                problems.append(f"{path} is not a symlink to {LAUNCHER}")
            orig = path + SUFFIX
            if not os.path.isfile(orig) or os.path.islink(orig):
                problems.append(f"{orig} is missing")
            elif md5(orig) != hashes.get(path):
                problems.append(f"{orig}: md5 {md5(orig)} != dpkg's {hashes.get(path)}")
        for path, digest in hashes.items():   # the rest stays as shipped
            if path[len(SCRIPTS) + 1:] not in names and (not os.path.isfile(path) or md5(path) != digest):
                problems.append(f"{path} (not diverted) changed")
        return problems

    def leftovers(self):
        """State a removed xenrules must not leave: cache, helper dir, lock files."""
        left = [p for p in ("/var/cache/xenrules", "/run/xenrules") if os.path.lexists(p)]
        if os.path.isdir("/var/run/xen-hotplug"):
            for name in sorted(set(os.listdir("/var/run/xen-hotplug")) - self.lock_dir_before):
                if _unheld(f"/var/run/xen-hotplug/{name}"):
                    left.append(f"/var/run/xen-hotplug/{name}")
        return left

    # -- back as found -----------------------------------------------------------

    def restore(self):
        errors = []
        for step in (self._restore_xenrules, self._restore_xuc, self._restore_etc):
            try:
                step()
            except MachineError as e:
                errors.append(str(e))
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.lock is not None:
            os.close(self.lock)
            self.lock = None
        if diversions():
            errors.append(f"xenrules diversions left: {diversions()}")
        if errors:
            raise MachineError("restoring the machine failed:\n" + "\n".join(errors))

    def _restore_xenrules(self):
        # Purged even if it was installed before (autopkgtest installs it):
        # no diversion may outlive the tests.
        if run(["dpkg-query", "-W", "xenrules"], check=False).returncode == 0:
            run(["dpkg", "--purge", "xenrules"])

    def _restore_etc(self):
        """/etc/xen did not exist: what a failed test left in it goes (dpkg's purge
        does not know files named after a diversion)."""
        if self.etc_xen_before or not os.path.isdir(SCRIPTS):
            return
        for name in os.listdir(SCRIPTS):
            if ".dpkg-" in name or SUFFIX in name:
                os.unlink(os.path.join(SCRIPTS, name))
        for d in (SCRIPTS, "/etc/xen/rules.d", "/etc/xen"):
            try:
                os.rmdir(d)
            except OSError:
                pass

    def _restore_xuc(self):
        # a failed test may leave xen-utils-common unpacked but not configured
        run(["dpkg", "--configure", "--pending", "--force-confnew"], check=False)
        if self.xuc_before is None:
            self.purge(XUC)
            # what apt pulled in for it, only if nothing else needs it now
            new = sorted(self.pulled - self.packages_before - {"xenrules", XUC})
            self.purge(*new, check=False)
        elif installed_version(XUC) != self.xuc_before:
            self.apt("install", "--allow-downgrades", "-o", "Dpkg::Options::=--force-confnew",
                     f"{XUC}={self.xuc_before}", *self.pins)
