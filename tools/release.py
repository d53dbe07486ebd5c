"""The Debian release the package is built and tested for: the one this
machine runs, so one source tree serves bookworm and trixie alike.

XENRULES_SUITE names another (e.g. to make a trixie piuparts chroot on a
bookworm host); otherwise VERSION_CODENAME of /etc/os-release.
"""
import os

OS_RELEASE = "/etc/os-release"


def codename(os_release=OS_RELEASE):
    suite = os.environ.get("XENRULES_SUITE", "").strip()
    if suite:
        return suite
    try:
        with open(os_release, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                if key == "VERSION_CODENAME" and value.strip('"'):
                    return value.strip('"')
    except OSError:
        pass
    raise SystemExit(f"cannot tell the Debian release: no VERSION_CODENAME in {os_release}; "
                     "set XENRULES_SUITE")
