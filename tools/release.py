"""The Debian release the package is built and tested for: the one this
machine runs, so one source tree serves bookworm and trixie alike.

XENRULES_SUITE names another (e.g. to make a trixie piuparts chroot on a
bookworm host); otherwise VERSION_CODENAME of /etc/os-release.

POLICY is the Debian Policy each release ships (its debian-policy package,
the newest version its lintian knows): the build's Standards-Version.
tests/test_release.py checks it against the running release's lintian data.
"""
import os

OS_RELEASE = "/etc/os-release"
# debian-policy 4.6.2.0 in bookworm, 4.7.2.0 in trixie (lintian 2.122: 4.7.2.1, editorial)
POLICY = {"bookworm": "4.6.2", "trixie": "4.7.2"}


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


def standards_version(suite):
    """The Standards-Version a build for SUITE declares; None for a release not in POLICY."""
    return POLICY.get(suite)
