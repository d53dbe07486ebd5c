"""Put the antispoof tables back after `nft flush ruleset`, from the records.

    /usr/bin/python3 -m xenrules.antispoof_restore [RECORDS_DIR]

antispoof.vif records every guarded vif's elements in RECORDS_DIR (default
/run/xenrules/antispoof, XENRULES_ANTISPOOF_RECORDS). This re-creates the
tables (idempotently) and adds every record's elements back, one atomic
transaction per kind of vif; a record whose vif no longer exists is
dropped. Run it after anything that flushes the ruleset, e.g. as
`ExecStartPost=` of nftables.service (docs/rules/antispoof.md).
Exit status 0, or 1 with nftables' message on stderr.
"""
import os
import socket
import sys

from . import spoofguard as guard
from .errors import XenrulesError
from .nft import Nft
from .steps.antispoof import DEFAULT_RECORDS, read_record


def restore(directory):
    """{mode: number of vifs restored}; drops the records of vanished vifs."""
    found = {mode: [] for mode in guard.FAMILIES}
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        mode, dash, rest = name.partition("-")
        if mode not in guard.FAMILIES or not dash or not rest.endswith(".json"):
            continue
        path = os.path.join(directory, name)
        try:
            socket.if_nametoindex(rest[:-len(".json")])
        except OSError:
            os.unlink(path)                 # its vif is gone: nothing to guard
            continue
        elems = read_record(path)
        if elems:
            found[mode].append(elems)
    nft = Nft()
    done = {}
    for mode, records in found.items():
        if not records:
            continue
        cmds = []
        for family in guard.FAMILIES[mode]:
            nft.run_fixed_text(guard.skeleton(family))
            for elems in records:
                cmds += guard.element_commands("add", family, elems)
        nft.run(cmds)
        done[mode] = len(records)
    return done


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    directory = argv[0] if argv else os.environ.get("XENRULES_ANTISPOOF_RECORDS") or DEFAULT_RECORDS
    try:
        done = restore(directory)
    except (XenrulesError, OSError) as e:
        print(f"xenrules.antispoof_restore: {e}", file=sys.stderr)
        return 1
    for mode, count in done.items():
        print(f"{mode}: {count} vif(s) guarded again")
    return 0


if __name__ == "__main__":
    sys.exit(main())
