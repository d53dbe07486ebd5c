"""`make check-trixie` / `make check-bookworm`: the whole suite in a container
of another Debian release.

The root is made once by `debootstrap --variant=minbase SUITE` from the Debian
mirror this machine's apt uses (read from /etc/apt/sources.list(.d), never a
fixed host) and cached under /var/cache/xenrules-ci/SUITE/root. Every run
copies a fresh clone of this checkout's HEAD into it (never a bind mount of the
host's tree) and runs `make check` there inside a container made by unshare:
its own mount, PID, UTS and IPC namespaces, the root bound onto itself (the
self-bind `ip netns exec` needs), private /proc, /sys and /run (the root's own /tmp,
emptied per run: a loop device's backing file on a tmpfs mounted before
pivot_root reads back as outside the root, and block.remove refuses it), the
host's /dev bound in (loop devices), then pivot_root. The network namespace
is the host's, so apt reaches the mirror; the tests make their own.

Mounts made inside die with the mount namespace: nothing stays mounted on the
host. Before and after, the host's mounts, loop devices and named network
namespaces are compared; a difference fails the run.

  tools/container_check.py SUITE [--rebuild] [-- PYTEST_ARGS...]
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import time

CACHE = "/var/cache/xenrules-ci"
CHECKOUT = "/root/xenrules"
# make for the Makefile, git for tools that ask it; build-essential for a
# compiled part of the package.
INCLUDE = "make,git,ca-certificates,build-essential"
# tests/test_functions_doc.py's default: the seed page, outside the checkout.
SEED_GLOB = "/work/shared/seed/*.txt"


def mirror():
    """The Debian archive URI of this machine's apt sources."""
    found = []
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        with open(path, encoding="utf-8") as f:
            for stanza in f.read().split("\n\n"):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
                suites = fields.get("Suites", "").split()
                if "deb" in fields.get("Types", "").split() and any("-" not in s for s in suites):
                    found += fields.get("URIs", "").split()
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+([^\s-]+)\s", line)
                    if m:
                        found.append(m.group(1))
        except OSError:
            pass
    for uri in found:
        if "security" not in uri:
            return uri
    raise SystemExit("no Debian archive in /etc/apt/sources.list(.d)")


def host_state():
    mounts = subprocess.run(["findmnt", "-rn", "-o", "TARGET,SOURCE"], capture_output=True,
                            text=True, check=True).stdout.splitlines()
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.splitlines()
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n")
    return {"mounts": set(mounts), "loop devices": set(loops),
            "network namespaces": {line.split()[0] for line in netns if line.strip()}}


def build_root(suite, root):
    tmp = root + ".new"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.dirname(root), exist_ok=True)
    subprocess.run(["debootstrap", "--variant=minbase", f"--include={INCLUDE}", suite, tmp,
                    mirror()], check=True)
    os.rename(tmp, root)


# Run by `unshare` as PID 1 of the new PID namespace, in the new mount namespace.
INSIDE = r"""
set -e
root=$1; seed=$2; shift 2
mount --make-rprivate /
mount --bind "$root" "$root"
if [ -n "$seed" ]; then
    mkdir -p "$root$seed"
    mount --bind "$seed" "$root$seed"
    mount -o remount,bind,ro "$root$seed"
fi
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=755 tmpfs "$root/run"
mkdir -p "$root/run/lock" "$root/.oldroot"
cd "$root"
pivot_root . .oldroot
umount -l /.oldroot
rmdir /.oldroot
cd /root/xenrules
seed_glob=${seed:+$seed/*.txt}
exec /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    XENRULES_SEED_GLOB="$seed_glob" "$@"
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite")
    ap.add_argument("--rebuild", action="store_true", help="debootstrap the root again")
    ap.add_argument("pytest_args", nargs="*")
    args = ap.parse_args(argv)
    if not re.fullmatch(r"[a-z]+", args.suite):
        raise SystemExit(f"not a Debian suite name: {args.suite!r}")
    root = os.path.join(CACHE, args.suite, "root")
    source = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True,
                            text=True, check=True).stdout.strip()
    before = host_state()
    start = time.monotonic()
    if args.rebuild:
        shutil.rmtree(root, ignore_errors=True)
    if not os.path.isdir(root):
        build_root(args.suite, root)
    built = time.monotonic()
    checkout = root + CHECKOUT
    shutil.rmtree(checkout, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", "--no-local", source, checkout], check=True)
    shutil.rmtree(os.path.join(root, "tmp"), ignore_errors=True)
    os.mkdir(os.path.join(root, "tmp"))
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    shutil.copyfile("/etc/resolv.conf", os.path.join(root, "etc/resolv.conf"))
    # The seed page tests/test_functions_doc.py reads lives outside the
    # checkout: bound in read-only at the same path when the host has it.
    seed = os.path.dirname(os.environ.get("XENRULES_SEED_GLOB", SEED_GLOB))
    seed = os.path.realpath(seed) if os.path.isdir(seed) else ""
    make = ["make", "check"]
    if args.pytest_args:
        make.append("PYTEST_ARGS=" + " ".join(args.pytest_args))
    rc = subprocess.run(["unshare", "--mount", "--pid", "--fork", "--uts", "--ipc",
                         "--propagation", "private", "sh", "-c", INSIDE, "inside", root, seed] + make
                        ).returncode
    after = host_state()
    leaks = {k: sorted(after[k] - before[k]) for k in after if after[k] - before[k]}
    print(f"container_check {args.suite}: root {built - start:.0f} s, "
          f"make check {time.monotonic() - built:.0f} s, exit {rc}", file=sys.stderr)
    if leaks:
        print(f"container_check: left on the host: {leaks}", file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
