#!/usr/bin/python3
"""`make autopkgtest`: debian/tests on this machine (autopkgtest's null runner).

autopkgtest installs the .deb and its dependencies on the host and leaves
them. So xen-utils-common is installed first, with udev held at the
installed systemd's version (autopkgtest would otherwise pull the newest
udev and systemd with it), and everything is purged again afterwards as
tools/pkgtest.py does for the pytest run.

    /usr/bin/python3 tools/run_autopkgtest.py build/deb/xenrules_<v>_<arch>.deb
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pkgtest import ENV, Machine  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv):
    if len(argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    deb = os.path.abspath(argv[1])
    machine = Machine()
    code = 1
    try:
        machine.install_xuc()
        # debian/tests needs isolation-machine: bookworm's null runner (5.28)
        # offers it, trixie's (5.49) does not (and asserts if told to fake it).
        # It holds here: the test bed is this machine, put back by restore().
        code = subprocess.run(["autopkgtest", "--no-built-binaries",
                               "--ignore-restrictions=isolation-machine", deb, REPO_ROOT,
                               "--", "null"],
                              stdin=subprocess.DEVNULL, env=ENV).returncode
    finally:
        machine.restore()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
