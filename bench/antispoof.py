"""Bench of the antispoof switch: vif-bridge online+offline with antispoof off
and on, and on with 1, 100 and 1000 other guests' elements already in the
tables (the cost of an event must not grow with the number of guests).

    /usr/bin/python3 bench/antispoof.py [--rounds N] [--json FILE]

xenrules in-process (python3 -m xenrules.hotplug) in a simulated dom0, as
libxl runs it; the variants interleaved round by round so machine noise hits
all alike; medians of the wall time. Each event is checked (exit 0, the
vif's elements present after online and gone after offline).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

PYTHON = "/usr/bin/python3"
GUESTS = (1, 100, 1000)

# run inside the dom0's namespace: N other guests' elements, in a few transactions
LOADER = """
import sys
from xenrules import spoofguard as g
from xenrules.nft import Nft
n = Nft()
n.run_fixed_text(g.skeleton("bridge"))
cmds = []
for i in range(int(sys.argv[1])):
    mac = "00:16:3e:%02x:%02x:01" % (i >> 8, i & 255)
    nets = g.checked_networks("10.%d.%d.1 2001:db8:%x::1" % (i >> 8, i & 255, i))
    cmds += g.element_commands("add", "bridge", g.elements("bench%d" % i, mac, nets))
    if len(cmds) > 500:
        n.run(cmds); cmds = []
n.run(cmds)
"""


def vif_elements(dom0):
    out = subprocess.run(["ip", "netns", "exec", dom0.netns, "nft", "-j", "list", "set",
                          "bridge", "xenrules_antispoof", "vifs"], capture_output=True, text=True)
    if out.returncode != 0:
        return set()
    return {e for o in json.loads(out.stdout)["nftables"] if "set" in o
            for e in o["set"].get("elem", []) if isinstance(e, str)}


class Variant:
    def __init__(self, xs, workdir, name, antispoof, guests):
        from xenrules.sandbox.dom0 import SimulatedDom0
        self.name, self.antispoof = name, antispoof
        self.dom0 = SimulatedDom0(xs, prefix="xrbas")
        self.dom0.add_vif(1, 0, ip="192.0.2.10 2001:db8::10")
        self.env = self.dom0.hotplug_env(1, 0)
        self.env["XENRULES_ANTISPOOF"] = "on" if antispoof else "off"
        self.env["XENRULES_ANTISPOOF_RECORDS"] = os.path.join(workdir, name, "records")
        self.env["XENRULES_HELPER_SOCKET"] = ""
        self.rules = os.path.join(REPO_ROOT, "rules.d")
        self.state = os.path.join(workdir, name, "state")
        if guests:
            subprocess.run(["ip", "netns", "exec", self.dom0.netns, PYTHON, "-c", LOADER,
                            str(guests)], check=True, cwd=REPO_ROOT,
                           env={"PYTHONPATH": REPO_ROOT, "PATH": os.environ["PATH"]})
        self.walls = {"online": [], "offline": []}

    def event(self, action):
        proc = self.dom0.run_xenrules("vif-bridge", [action, "type_if=vif"], self.env,
                                      rules_path=self.rules, state_dir=self.state)
        if proc.returncode != 0:
            raise SystemExit(f"{self.name} {action}: exit {proc.returncode}: {proc.stderr}")
        guarded = "vif1.0" in vif_elements(self.dom0)
        if guarded != (self.antispoof and action == "online"):
            raise SystemExit(f"{self.name} {action}: vif1.0 guarded={guarded}")
        self.walls[action].append(proc.wall)
        if action == "offline":
            self.dom0.xs_write("/local/domain/0/backend/vif/1/0/hotplug-status", "")

    def close(self):
        self.dom0.destroy()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args(argv)
    from xenrules.sandbox.xsserver import XenstoreServer
    with tempfile.TemporaryDirectory(prefix="xr-bench-antispoof-") as workdir, \
            XenstoreServer(os.path.join(workdir, "xs.sock")) as xs:
        variants = [Variant(xs, workdir, "off", False, 0), Variant(xs, workdir, "on", True, 0)]
        variants += [Variant(xs, workdir, f"on+{n}", True, n) for n in GUESTS]
        try:
            for v in variants:                      # warm-up (rule cache, page cache)
                v.event("online"), v.event("offline")
                v.walls = {"online": [], "offline": []}
            for _ in range(args.rounds):
                for v in variants:
                    v.event("online")
                    v.event("offline")
        finally:
            for v in variants:
                v.close()
    figures = {v.name: {a: round(statistics.median(w) * 1000, 1) for a, w in v.walls.items()}
               for v in variants}
    base = figures["on+1"]
    print(f"vif-bridge, xenrules in-process, median wall ms over {args.rounds} rounds")
    print(f"{'variant':10} {'online':>8} {'offline':>8} {'vs on+1':>8}")
    for name, f in figures.items():
        growth = (f["online"] + f["offline"]) / (base["online"] + base["offline"]) - 1
        print(f"{name:10} {f['online']:8.1f} {f['offline']:8.1f} {growth:+8.1%}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"rounds": args.rounds, "median_ms": figures}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
