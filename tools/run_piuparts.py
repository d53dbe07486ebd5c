#!/usr/bin/python3
"""`make piuparts`: install, remove and purge the .deb in a clean chroot of this
machine's release (tools/release.py: bookworm, trixie; XENRULES_SUITE for another).

The chroot is made once with debootstrap (minbase) and kept as
build/piuparts/<suite>.tgz (XENRULES_PIUPARTS_DIR, an absolute path, keeps it
elsewhere: the release containers keep it in their cached root), made again
when older than a week. The mirror is the Debian one this machine's
apt already uses (read from /etc/apt/sources.list*), never a name written here.

    /usr/bin/python3 tools/run_piuparts.py build/deb/xenrules_<v>_<arch>.deb
"""
import glob
import os
import re
import subprocess
import sys
import time

from release import codename

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.environ.get("XENRULES_PIUPARTS_DIR") or os.path.join(REPO_ROOT, "build", "piuparts")
if not os.path.isabs(WORK) or ".." in WORK.split("/"):
    raise SystemExit(f"run_piuparts: XENRULES_PIUPARTS_DIR must be an absolute path: {WORK!r}")
MAX_AGE = 7 * 86400   # a base older than this is made again, close to the archive
SUITE = codename()
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/root"}


def debian_mirror():
    """The URI apt uses for SUITE (deb822 .sources or one-line format)."""
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        with open(path) as f:
            for stanza in re.split(r"\n\s*\n", f.read()):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
                if SUITE in fields.get("Suites", "").split() and "deb" in fields.get("Types", "").split():
                    return fields["URIs"].split()[0]
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
        try:
            with open(path) as f:
                for line in f:
                    words = re.sub(r"\[[^]]*\]", "", line).split()
                    if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                        return words[1]
        except OSError:
            continue
    raise SystemExit(f"run_piuparts: no apt source for {SUITE} on this machine")


def run(argv):
    print("+ " + " ".join(argv), flush=True)
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, env=ENV)
    if done.returncode != 0:
        raise SystemExit(f"run_piuparts: {argv[0]} failed (exit {done.returncode})")


def base_tgz(mirror):
    tgz = os.path.join(WORK, f"{SUITE}.tgz")
    if os.path.exists(tgz) and time.time() - os.path.getmtime(tgz) < MAX_AGE:
        return tgz
    os.makedirs(WORK, exist_ok=True)
    root = os.path.join(WORK, f"{SUITE}-root")
    run(["rm", "-rf", root])
    run(["debootstrap", "--variant=minbase", SUITE, root, mirror])
    run(["tar", "-C", root, "-czf", tgz + ".new", "."])
    run(["rm", "-rf", root])
    os.rename(tgz + ".new", tgz)
    return tgz


def main(argv):
    if len(argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    mirror = debian_mirror()
    tgz = base_tgz(mirror)
    run(["piuparts", "--basetgz", tgz, "--distribution", SUITE, "--mirror", f"{mirror} main",
         "--no-upgrade-test",
         # trixie: purging systemd before udev leaves /usr/lib/udev/, a
         # directory both own (dpkg: "not empty so not removed"); xenrules ships nothing there
         "--ignore=/usr/lib/udev/", os.path.abspath(argv[1])])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
