#!/usr/bin/python3
"""Build xenrules_<version>_<dpkg arch>.deb from this checkout, outside it.

The source is copied (without .git, caches and build output) to
build/deb/xenrules-<version>/ and built there with dpkg-buildpackage, so the
checkout never collects debian/xenrules/, .pybuild/ or egg-info, and the
.deb lands in build/deb/ (dpkg-buildpackage writes to the parent directory).

    /usr/bin/python3 tools/build_deb.py [--version V] [--out DIR] [--lintian]

--version builds the same source as another version (a changelog entry on
top), which the package tests use to upgrade. Prints the .deb's path.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time

from release import codename, standards_version

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "build", "deb")
SKIP = {".git", ".cache", "build", ".pytest_cache", "__pycache__", ".pybuild", ".tox"}
# The build must see Debian's python3, never a pyenv or virtualenv one first on PATH.
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/root",
             "DEB_BUILD_OPTIONS": "nocheck"}


class BuildError(Exception):
    pass


def changelog_version(source=REPO_ROOT):
    with open(os.path.join(source, "debian", "changelog"), encoding="utf-8") as f:
        found = re.match(r"^xenrules \(([^)]+)\)", f.readline())
    if not found:
        raise BuildError("debian/changelog does not start with a xenrules entry")
    return found.group(1)


def _ignore(directory, names):
    return [n for n in names if n in SKIP or n.endswith((".pyc", ".egg-info"))]


def _rewrite(path, pattern, replacement):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    new, count = re.subn(pattern, replacement, text, count=1, flags=re.M)
    if count != 1:
        raise BuildError(f"{path}: no line matches {pattern!r}")
    with open(path, "w", encoding="utf-8") as f:
        f.write(new)


def for_release(tree, suite):
    """One tree, both releases: in the build copy the changelog's distribution
    becomes SUITE and debian/control's Standards-Version SUITE's policy (kept as
    written for a release tools/release.py does not know)."""
    if not re.fullmatch(r"[a-z][a-z-]*", suite):
        raise BuildError(f"not a Debian suite name: {suite!r}")
    _rewrite(os.path.join(tree, "debian", "changelog"), r"^(xenrules \([^)]*\)) [a-z-]+;",
             rf"\1 {suite};")
    policy = standards_version(suite)
    if policy:
        _rewrite(os.path.join(tree, "debian", "control"), r"^Standards-Version: .*$",
                 f"Standards-Version: {policy}")


def _add_changelog_entry(tree, version):
    path = os.path.join(tree, "debian", "changelog")
    with open(path, encoding="utf-8") as f:
        old = f.read()
    stamp = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
    maint = re.search(r"^ -- (.+?)  ", old, re.M).group(1)
    entry = (f"xenrules ({version}) {codename()}; urgency=medium\n\n"
             f"  * Rebuilt as {version} (package tests: upgrade).\n\n"
             f" -- {maint}  {stamp}\n\n")
    with open(path, "w", encoding="utf-8") as f:
        f.write(entry + old)


def build(version=None, out=DEFAULT_OUT, source=REPO_ROOT):
    """Build the package; return the .deb's absolute path."""
    version = version or changelog_version(source)
    tree = os.path.join(out, f"xenrules-{version}")
    shutil.rmtree(tree, ignore_errors=True)
    os.makedirs(out, exist_ok=True)
    shutil.copytree(source, tree, ignore=_ignore, symlinks=True)
    for_release(tree, codename())
    if version != changelog_version(source):
        _add_changelog_entry(tree, version)
    log = os.path.join(out, f"xenrules_{version}.build.log")
    with open(log, "w") as f:
        done = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=tree, env=CLEAN_ENV,
                              stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        with open(log) as f:
            tail = f.read()[-4000:]
        raise BuildError(f"dpkg-buildpackage failed (exit {done.returncode}), log {log}:\n{tail}")
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()
    deb = os.path.join(out, f"xenrules_{version}_{arch}.deb")
    if not os.path.isfile(deb):
        raise BuildError(f"dpkg-buildpackage did not make {deb}")
    shutil.rmtree(tree, ignore_errors=True)
    return deb


def lintian(deb):
    """(exit status, output) of lintian on the .deb, errors and warnings failing it."""
    import tempfile
    # lintian leaves its mldbm-elf-* cache files in TMPDIR: give it one we remove
    with tempfile.TemporaryDirectory(prefix="xr-lintian-") as tmp:
        done = subprocess.run(["lintian", "--fail-on", "error,warning", "--display-info", "--info", deb],
                              env=dict(CLEAN_ENV, TMPDIR=tmp), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--version", help="build as this version (default: debian/changelog's)")
    p.add_argument("--out", default=DEFAULT_OUT, help="where the .deb goes (build/deb)")
    p.add_argument("--lintian", action="store_true", help="run lintian on the result; fail on warnings")
    p.add_argument("--print-version", action="store_true", help="print debian/changelog's version, build nothing")
    args = p.parse_args(argv)
    if args.print_version:
        print(changelog_version())
        return 0
    try:
        deb = build(args.version, os.path.abspath(args.out))
    except BuildError as e:
        print(f"build_deb: {e}", file=sys.stderr)
        return 1
    print(deb)
    if args.lintian:
        code, report = lintian(deb)
        sys.stderr.write(report)
        if code:
            print("build_deb: lintian reports errors or warnings", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
