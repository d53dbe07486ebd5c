#!/usr/bin/python3
"""Which /etc/xen/scripts/<name> the package diverts: computed from the shipped rules.

Rule: a script is diverted exactly when a shipped rule matches on
`script: <name>` and Debian's xen-utils-common 4.17 (bookworm) and 4.20
(trixie) ship that script (the same set of hotplug scripts in both).
Scripts of other Xen versions (vtpm is Xen 4.1 only) have rules but nothing
to divert. Helpers (*.sh) and the vif-setup dispatcher (it execs $script)
are never diverted: the diverted originals still source and call them.

    /usr/bin/python3 tools/diverted_scripts.py [RULES_DIR]   # one name a line

debian/rules writes the list to /usr/share/xenrules/diverted, which the
maintainer scripts read.
"""
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The hotplug scripts in /etc/xen/scripts of xen-utils-common 4.17 (bookworm)
# and 4.20 (trixie: the same names)
# that the toolstack or udev runs by name. tests/test_package_lists.py checks
# this against the real package. Not listed: helpers sourced by the scripts
# (*.sh), vif-setup (a dispatcher), launch-xenstore (starts xenstored).
XEN_417_HOTPLUG_SCRIPTS = frozenset({
    "block", "block-drbd-probe", "block-dummy", "block-enbd", "block-iscsi", "block-nbd",
    "block-tap", "colo-proxy-setup", "external-device-migrate", "qemu-ifup",
    "vif-bridge", "vif-nat", "vif-openvswitch", "vif-route", "vscsi",
})
NEVER_DIVERTED = frozenset({"vif-setup", "launch-xenstore"})


class DivertListError(Exception):
    """The shipped rules do not say clearly which scripts they serve."""


def matched_scripts(rules_dir):
    """{script name: [rule names]} for every `script` value a shipped rule matches on."""
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    from xenrules import ruleset
    from xenrules.compiler import compile_files

    rules, problems = compile_files(ruleset.discover([rules_dir]))
    if problems:
        raise DivertListError("the shipped rules do not validate:\n" + "\n".join(map(str, problems)))
    found = {}
    for rule in rules:
        names = rule["match"].get("script")
        if not names:
            raise DivertListError(f"{rule['file']}:{rule['line']}: rule {rule['name']} does not match on "
                                  "`script`, so the package cannot tell which script it serves")
        for name in names:
            if name.endswith(".sh") or name in NEVER_DIVERTED or "/" in name:
                raise DivertListError(f"{rule['file']}:{rule['line']}: rule {rule['name']} matches "
                                      f"script {name!r}, which is not a hotplug script")
            found.setdefault(name, []).append(rule["name"])
    return found


def diverted(rules_dir):
    """Sorted names of the scripts to divert."""
    return sorted(n for n in matched_scripts(rules_dir) if n in XEN_417_HOTPLUG_SCRIPTS)


def main(argv):
    rules_dir = argv[1] if len(argv) > 1 else os.path.join(REPO_ROOT, "rules.d")
    try:
        names = diverted(rules_dir)
    except DivertListError as e:
        print(f"diverted_scripts: {e}", file=sys.stderr)
        return 1
    if not names:
        print(f"diverted_scripts: no rule in {rules_dir} serves a xen-utils-common script", file=sys.stderr)
        return 1
    sys.stdout.write("".join(n + "\n" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
