"""Find Debian's original Xen hotplug scripts, the reference behaviour.

Tests, the benchmark and the demo run the original bash scripts side by side
with xenrules. They come from Debian's ``xen-utils-common`` package and are
fetched on demand, never vendored:

1. ``$XENRULES_ORIGINALS_DIR`` if set (must contain ``vif-bridge``);
2. else a cache directory, by default ``<repo>/.cache/originals/etc/xen/scripts``
   (``$XENRULES_CACHE_DIR`` moves ``<repo>/.cache``), filled the first time by
   ``apt-get download xen-utils-common`` in a temporary directory and
   ``dpkg-deb -x`` of the downloaded package.

Usage: ``python3 -m xenrules.sandbox.originals`` fetches (if needed) and
prints the directory.
"""

import fcntl
import glob
import os
import shutil
import subprocess
import sys
import tempfile

PACKAGE = "xen-utils-common"
SCRIPTS_SUBDIR = os.path.join("etc", "xen", "scripts")
# A file that every supported version ships: proves the extraction worked.
MARKER = "vif-bridge"

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class OriginalsError(RuntimeError):
    """The original scripts could not be found or fetched."""


def cache_root():
    """Root of the originals cache: ``<repo>/.cache/originals`` by default."""
    base = os.environ.get("XENRULES_CACHE_DIR") or os.path.join(REPO_ROOT, ".cache")
    return os.path.join(base, "originals")


def _run(argv, cwd=None):
    proc = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, check=False)
    if proc.returncode != 0:
        raise OriginalsError("%s failed (exit %d): %s" % (
            " ".join(argv), proc.returncode, (proc.stderr or proc.stdout).strip()))
    return proc


def fetch(root):
    """Download and extract xen-utils-common into ``root``; return the scripts dir."""
    scripts = os.path.join(root, SCRIPTS_SUBDIR)
    os.makedirs(os.path.dirname(root) or ".", exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="xenrules-originals-") as tmp:
        # apt-get download writes into the current directory. As root, apt
        # drops privileges to _apt for the download, so the directory must be
        # writable by it; a private temp dir is mode 0700.
        os.chmod(tmp, 0o755)
        try:
            _run(["apt-get", "download", PACKAGE], cwd=tmp)
        except OriginalsError:
            # A fresh machine may have no package lists yet: update once, retry.
            _run(["apt-get", "update"])
            _run(["apt-get", "download", PACKAGE], cwd=tmp)
        debs = sorted(glob.glob(os.path.join(tmp, PACKAGE + "_*.deb")))
        if not debs:
            raise OriginalsError("apt-get download %s produced no .deb in %s" % (PACKAGE, tmp))
        staging = os.path.join(tmp, "x")
        _run(["dpkg-deb", "-x", debs[-1], staging])
        if not os.path.isfile(os.path.join(staging, SCRIPTS_SUBDIR, MARKER)):
            raise OriginalsError("%s has no %s/%s" % (debs[-1], SCRIPTS_SUBDIR, MARKER))
        with open(os.path.join(staging, "SOURCE"), "w") as fh:
            fh.write(os.path.basename(debs[-1]) + "\n")
        # Replace atomically-ish: never leave a half-extracted tree behind.
        if os.path.exists(root):
            shutil.rmtree(root)
        shutil.move(staging, root)
    return scripts


def originals_dir(fetch_missing=True):
    """Return the directory holding the original scripts (vif-bridge, block...).

    Raises OriginalsError when they are neither present nor fetchable.
    """
    env = os.environ.get("XENRULES_ORIGINALS_DIR")
    if env:
        if not os.path.isfile(os.path.join(env, MARKER)):
            raise OriginalsError("XENRULES_ORIGINALS_DIR=%s has no %s" % (env, MARKER))
        return os.path.abspath(env)
    root = cache_root()
    scripts = os.path.join(root, SCRIPTS_SUBDIR)
    if os.path.isfile(os.path.join(scripts, MARKER)):
        return scripts
    if not fetch_missing:
        raise OriginalsError("original scripts not cached in %s" % scripts)
    os.makedirs(os.path.dirname(root), exist_ok=True)
    # Several test processes may race to fill the cache: serialise them.
    with open(root + ".lock", "w") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)
        if not os.path.isfile(os.path.join(scripts, MARKER)):
            fetch(root)
    return scripts


def source_package():
    """Name of the .deb the cached originals came from, or None."""
    try:
        with open(os.path.join(cache_root(), "SOURCE")) as fh:
            return fh.read().strip()
    except OSError:
        return None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    try:
        print(originals_dir())
    except OriginalsError as exc:
        print("originals: %s" % exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
