"""`make check-trixie` / `make check-bookworm`: the whole suite, autopkgtest and
piuparts in a container of another Debian release.

The root is made once by `debootstrap --variant=minbase SUITE` from the Debian
mirror this machine's apt uses (read from /etc/apt/sources.list(.d), never a
fixed host) and cached under /var/cache/xenrules-ci/SUITE/root. Every run
copies a fresh clone of this checkout's HEAD into it (never a bind mount of the
host's tree) and runs make targets there in turn (default `check`; the Makefile's
check-SUITE: check, autopkgtest, piuparts) inside a container made by unshare:
its own mount, PID, UTS and IPC namespaces, the root bound onto itself (the
self-bind `ip netns exec` needs), private /proc, /sys, /run and /dev/shm (the
root's own /tmp, emptied per run: a loop device's backing file on a tmpfs mounted
before pivot_root reads back as outside the root, and block.remove refuses it),
the host's /dev bound in (loop devices), then pivot_root. The network namespace
is the host's, so apt and piuparts' debootstrap reach the mirror; the tests make
their own. piuparts keeps its base tarball in the root (/var/cache/xenrules-piuparts).

Leaks are counted only where they can be this run's, since other test runs on
this machine make their own namespaces, mounts and loop devices meanwhile:
inside the container before it ends, its named network namespaces (its /run is
fresh per run), mounts beyond those it started with, and new loop devices backed
by a file in the root (same device and inode; a deleted one on the root's
filesystem when still attached 5 s later); on the host after, mounts naming the
root. Any of these fails the run; processes still running at the end are shown. Links the tests might make in the shared host network namespace cannot be
told apart from other runs' and are not counted.

  tools/container_check.py SUITE [--rebuild] [--make T1,T2 | --run CMD] [-- PYTEST_ARGS...]
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


def _lines(argv):
    return subprocess.run(argv, capture_output=True, text=True).stdout.splitlines()


def under(root, text):
    """Does TEXT (a mount line, a backing file) name ROOT or a path in it?"""
    root = root.rstrip("/")
    return any(w == root or root + "/" in w or "[" + root + "]" in w for w in text.split())


def host_state(root):
    """What on the host can only be this run's: mounts naming the root. Other
    sessions' mounts and network namespaces on this machine are never counted.
    (Loop devices are counted inside: see INSIDE.)"""
    mounts = _lines(["findmnt", "-rn", "-o", "TARGET,SOURCE"])
    return {"mounts": {m for m in mounts if under(root, m)}}


def leaks(before, after):
    return {k: sorted(after[k] - before.get(k, set())) for k in after if after[k] - before.get(k, set())}


def build_root(suite, root):
    tmp = root + ".new"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.dirname(root), exist_ok=True)
    subprocess.run(["debootstrap", "--variant=minbase", f"--include={INCLUDE}", suite, tmp,
                    mirror()], check=True)
    os.rename(tmp, root)


# Run by `unshare` as PID 1 of the new PID namespace, in the new mount namespace.
# After the targets it lists what the run left inside the container: its own
# named network namespaces (/run is the container's, fresh per run, so every
# one there is this run's), mounts beyond those it started with, and (shown,
# not failing) processes still running; the namespaces' end would hide them.
INSIDE = r"""
set -e
root=$1; seed=$2; ci=$3; mode=$4; shift 4
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
# the host's /dev/shm stays the host's: the journals the tests keep there are the container's
mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
mount -t tmpfs -o mode=755 tmpfs "$root/run"
mkdir -p "$root/run/lock" "$root/.oldroot"
cd "$root"
pivot_root . .oldroot
umount -l /.oldroot
rmdir /.oldroot
cd /root/xenrules
set +e
state=/run/xenrules-container
mkdir -p $state
findmnt -rn -o TARGET | sort >$state/mounts
loops() { losetup --raw -n -l -O NAME,BACK-INO,BACK-MAJ:MIN | sort; }
loops >$state/loops
rootdev=$(stat -c %Hd:%Ld /)
seed_glob=${seed:+$seed/*.txt}
run() {
    /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        XENRULES_SEED_GLOB="$seed_glob" ${ci:+XENRULES_CI=$ci} \
        XENRULES_PIUPARTS_DIR=/var/cache/xenrules-piuparts "$@" </dev/null
}
status=0
if [ "$mode" = run ]; then
    run sh -c "$1"; status=$?
else
    checkargs=$1; shift
    for target in "$@"; do
        t0=$(date +%s)
        if [ "$target" = check ] && [ -n "$checkargs" ]; then
            run make check "PYTEST_ARGS=$checkargs"
        else
            run make "$target"
        fi
        rc=$?
        echo "container_check: make $target: exit $rc, $(( $(date +%s) - t0 )) s" >&2
        [ $rc -eq 0 ] || status=1
    done
fi
left=""
for ns in /run/netns/*; do
    [ -e "$ns" ] && left="$left
  network namespace ${ns#/run/netns/}"
done
# `ip netns add` makes /run/netns a mount point of its own: not a leak
for m in $(findmnt -rn -o TARGET | sort | comm -13 $state/mounts - | grep -vx /run/netns); do
    left="$left
  mount $m"
done
# Loop devices are the kernel's, shared with every run on the machine: a new one
# is this run's when its backing file is a file in this root (same device and
# inode), or was deleted on the root's filesystem and is still attached 5 s
# later (another run's detach-then-delete is never that slow; nothing runs here).
loops | comm -13 $state/loops - >$state/loops.new
: >$state/loops.deleted
while read -r dev ino majmin; do
    back=$(cat /sys/block/${dev#/dev/}/loop/backing_file 2>/dev/null) || continue
    case $back in
    *" (deleted)") [ "$majmin" != "$rootdev" ] || echo "$dev $ino $majmin" >>$state/loops.deleted ;;
    *) [ "$(stat -c '%i %Hd:%Ld' "$back" 2>/dev/null)" != "$ino $majmin" ] || left="$left
  loop device $dev ($back)" ;;
    esac
done <$state/loops.new
if [ -s $state/loops.deleted ]; then
    sleep 5
    for dev in $(loops | comm -12 $state/loops.deleted - | cut -d' ' -f1); do
        left="$left
  loop device $dev ($(cat /sys/block/${dev#/dev/}/loop/backing_file 2>/dev/null))"
    done
fi
for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [ "$pid" = 1 ] && continue
    { read -r comm <"$p/comm"; } 2>/dev/null || continue
    echo "container_check: still running at the end: $pid $comm" >&2
done
if [ -n "$left" ]; then
    echo "container_check: left in the container:$left" >&2
    [ $status -ne 0 ] || status=3
fi
exit $status
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite")
    ap.add_argument("--rebuild", action="store_true", help="debootstrap the root again")
    ap.add_argument("--make", default="check", metavar="T1,T2",
                    help="make targets run in turn inside (default: check); each one's exit is shown")
    ap.add_argument("--run", metavar="CMD", help="run `sh -c CMD` inside instead of make")
    argv = sys.argv[1:] if argv is None else list(argv)
    # everything after `--` is make check's PYTEST_ARGS (argparse would give a
    # trailing positional nothing once an option follows the suite)
    pytest_args = argv[argv.index("--") + 1:] if "--" in argv else []
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.pytest_args = pytest_args
    if not re.fullmatch(r"[a-z]+", args.suite):
        raise SystemExit(f"not a Debian suite name: {args.suite!r}")
    targets = args.make.split(",")
    if not all(re.fullmatch(r"[a-z][a-z0-9-]*", t) for t in targets):
        raise SystemExit(f"not make targets: {args.make!r}")
    root = os.path.join(CACHE, args.suite, "root")
    source = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True,
                            text=True, check=True).stdout.strip()
    before = host_state(root)
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
    # CI's "a missing seed page fails" holds inside too (.ci/run exports it)
    ci = "1" if os.environ.get("XENRULES_CI") else ""
    if args.run is not None:
        work = ["run", args.run]
    else:
        work = ["make", " ".join(args.pytest_args)] + targets
    rc = subprocess.run(["unshare", "--mount", "--pid", "--fork", "--uts", "--ipc",
                         "--propagation", "private", "sh", "-c", INSIDE, "inside", root, seed, ci]
                        + work, stdin=subprocess.DEVNULL).returncode
    left = leaks(before, host_state(root))
    what = f"sh -c {args.run!r}" if args.run is not None else "make " + " ".join(targets)
    print(f"container_check {args.suite}: root {built - start:.0f} s, "
          f"{what} {time.monotonic() - built:.0f} s, exit {rc}", file=sys.stderr)
    if left:
        print(f"container_check: left on the host: {left}", file=sys.stderr)
        return rc or 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
