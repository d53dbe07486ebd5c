"""antispoof.vif: what a guest may send through its vif, in nftables sets.

online/add put the vif's elements (its MAC, its `ip` list, the link-local
from its MAC) into the package's own tables (xenrules/spoofguard.py), in one
libnftables transaction; offline/remove take out exactly what was put in.
What went in is also written to a small record file per vif, so that
offline knows it without listing the tables (a thousand guests' elements take
some 40 ms to list; the record makes an event cost the same at 1 or 1000
guests). When the record and the kernel disagree (`nft flush ruleset`, a
crash between the two, a record lost), the step falls back to listing the
vif's tables and removing every element keyed by its name: no element is
left behind, whatever addresses the vif had.

The MAC and every word of `ip` are checked before anything changes: a value
that is not a unicast MAC, or an IPv4/IPv6 address or network, fails the
event with hotplug-error naming it.
"""
import json
import os

from .. import spoofguard as guard
from ..errors import StepError
from ..nft import Nft, NftError
from .base import Step
from .firewall import INSERTING, REMOVING     # the same verbs as the original firewall
from .netlink import IFNAME, checked_name

DEFAULT_RECORDS = "/run/xenrules/antispoof"


class Vif(Step):
    type_name = "antispoof.vif"
    summary = ("anti-spoofing for a vif in nftables sets (MAC, IPv4, IPv6, ARP, ND; no RA or "
               "DHCP server): add its elements on online/add, remove them on offline/remove")
    properties = {
        "action": {"type": "string",
                   "description": "online/add guard the vif, offline/remove stop guarding it "
                                  "(usually \"{action}\")"},
        "dev": dict(IFNAME, description="the vif (or tap), as it is named now"),
        "mode": {"enum": list(guard.FAMILIES),
                 "description": "bridge: the vif is a bridge port (bridge table); route: "
                                "routed or NATed (inet + arp tables)"},
        "mac": {"type": "string",
                "description": "the guest's MAC (backend `mac`); needed by online/add"},
        "ip": {"type": "string",
               "description": "the guest's addresses/networks (backend `ip`), space-separated; "
                              "empty: MAC, ARP sender MAC, RA and DHCP-server guards only"},
        "records": {"type": "string", "minLength": 1,
                    "description": "directory of the per-vif record files (default "
                                   + DEFAULT_RECORDS + "; one per network namespace)"},
    }
    required = ("action", "dev", "mode")

    # -- apply / revert ------------------------------------------------------------

    def apply(self, runtime):
        # plain data: {"removed": {family: elems}, "added": elems, "record": elems or None}
        self.undo = None
        action = self.args["action"]
        if action not in INSERTING + REMOVING:
            raise StepError(f"antispoof.vif: action {action!r} is none of "
                            + ", ".join(INSERTING + REMOVING))
        dev = checked_name(self.args["dev"])
        if self.args["mode"] not in guard.FAMILIES:
            raise StepError(f"antispoof.vif: mode {self.args['mode']!r} is none of "
                            + ", ".join(guard.FAMILIES))
        families = guard.FAMILIES[self.args["mode"]]
        if action in INSERTING:
            # every check before the first change
            new = guard.elements(dev, guard.checked_mac(self.args.get("mac", "")),
                                 guard.checked_networks(self.args.get("ip", "")))
        else:
            new = {}
        nft = Nft()
        record = self._record_path(dev)
        old = read_record(record)
        if old is not None:
            quick = _commands("delete", families, old) + _commands("add", families, new)
        elif new:
            # no record: `create` fails if the kernel still has this vif (a leftover)
            quick = (_commands("create", families, {"vifs": [dev]})
                     + _commands("add", families, _without_vifs(new)))
        else:
            quick = None
        try:
            if quick is None:
                raise NftError("no record of what this vif has")
            nft.run(quick)
            removed = {family: old or {} for family in families}
        except NftError as e:
            runtime.log("debug", f"antispoof: {e}; looking up what {dev} has in the tables")
            removed = self._slow_path(runtime, nft, dev, families, new)
        self.undo = {"removed": removed, "added": new, "record": old}
        _write_record(record, new)
        runtime.log("debug", f"antispoof: {dev}: {self.describe()}")

    def _slow_path(self, runtime, nft, dev, families, new):
        """List the vif's tables (creating missing ones if elements go in) and
        replace whatever is keyed by dev with `new`, in one transaction.
        Returns what it removed, {family: elems}."""
        stale = {}
        for family in families:
            if new:
                # idempotent: creates a missing table, replaces an older
                # package's rules; the table's elements stay
                nft.run_fixed_text(guard.skeleton(family))
            listing = nft.list_table(family, guard.TABLE)
            if listing is None:
                continue
            stale[family] = guard.elements_of_dev(listing, dev)
        nft.run(_per_family("delete", stale) + _commands("add", families, new))
        if any(stale.values()):
            runtime.log("info", f"antispoof: removed elements {dev} had left behind")
        return stale

    def revert(self, runtime):
        undo = getattr(self, "undo", None)
        if not undo:
            return
        dev, families = self.args["dev"], guard.FAMILIES[self.args["mode"]]
        nft = Nft()
        try:
            nft.run(_commands("delete", families, undo["added"])
                    + _per_family("add", undo["removed"]))
        except NftError:
            # the kernel is not as this event left it: make it hold exactly
            # what the vif had before, table by table
            for family in families:
                self._slow_path(runtime, nft, dev, [family], undo["removed"].get(family, {}))
        _write_record(self._record_path(dev), undo["record"])
        self.undo = None

    # -- helpers -------------------------------------------------------------------

    def _record_path(self, dev):
        return os.path.join(self.args.get("records") or DEFAULT_RECORDS,
                            f"{self.args['mode']}-{dev}.json")

    def describe(self):
        verb = "guard" if self.args["action"] in INSERTING else "stop guarding"
        tables = ", ".join(f"{f} {guard.TABLE}" for f in guard.FAMILIES.get(self.args["mode"], []))
        what = f"MAC {self.args.get('mac') or '?'}, ip {self.args.get('ip') or '(none)'}"
        return f"antispoof: {verb} {self.args['dev']} ({what}) in {tables}"


def _without_vifs(elems):
    return {k: v for k, v in elems.items() if k != "vifs"}


def _commands(verb, families, elems):
    cmds = []
    for family in families:
        cmds += guard.element_commands(verb, family, elems)
    return cmds


def _per_family(verb, per_family):
    cmds = []
    for family, elems in per_family.items():
        cmds += guard.element_commands(verb, family, elems)
    return cmds


def read_record(path):
    """The elements the record says the vif has, or None (no record, unreadable)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()) \
            or not set(data) <= set(guard.SETS_OF["bridge"]):
        return None
    return data


def _write_record(path, elems):
    """Record what the vif has now (None/empty: remove the record)."""
    if not elems:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(elems, f)
    os.replace(tmp, path)
