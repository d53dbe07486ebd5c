#!/usr/bin/python3
"""Benchmark: Debian's original vif-bridge against xenrules on the same events.

    /usr/bin/python3 bench/bench.py [--runs 30] [--json FILE] [--original-only]

One simulated dom0 (network namespace + XenStore server), one vif. Each
round sends `online` then `offline` (so every online starts from an offline
vif) through the original and through xenrules; the order of the two
implementations alternates from round to round, so neither always runs
first. One unmeasured warm-up round per implementation fills the page cache
and xenrules' compiled-rule cache. Every run is checked (exit 0, and
hotplug-status=connected after online), a wrong result aborts the benchmark.

Reported per event: median wall time, median CPU time (user+sys of the whole
process tree, from wait4, including the `ip netns exec` wrapper both pay), and
the ratio xenrules/original. The baseline row is `ip netns exec /bin/true`,
the wrapper's own cost, included in both.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from xenrules.sandbox.dom0 import SimulatedDom0  # noqa: E402
from xenrules.sandbox.originals import originals_dir, source_package  # noqa: E402
from xenrules.sandbox.xsserver import XenstoreServer  # noqa: E402

BACK = "/local/domain/0/backend/vif/1/0"
EVENTS = ("online", "offline")
IMPLS = ("original", "xenrules")


class BenchError(RuntimeError):
    pass


def run_event(dom0, impl, event, env):
    args = [event, "type_if=vif"]
    if impl == "original":
        proc = dom0.run_original("vif-bridge", args, env)
    else:
        proc = dom0.run_xenrules("vif-bridge", args, env)
    if proc.returncode != 0:
        raise BenchError("%s vif-bridge %s exited %d\nstdout: %s\nstderr: %s\nlog: %s" % (
            impl, event, proc.returncode, proc.stdout, proc.stderr, proc.hotplug_log))
    link = dom0.links()["vif1.0"]
    if event == "online":
        ok = link.get("master") == "xenbr0" and "UP" in link["flags"] and \
            dom0.xs_read(BACK + "/hotplug-status") == "connected"
        dom0.xs_write(BACK + "/hotplug-status", "")   # as libxl leaves it for the next online
    else:
        ok = link.get("master") is None and "UP" not in link["flags"]
    if not ok:
        raise BenchError("%s vif-bridge %s left a wrong state: %r" % (impl, event, link))
    return proc


def summarize(samples):
    return {"median": statistics.median(samples), "min": min(samples),
            "max": max(samples), "samples": samples}


def bench(runs, impls):
    results = {ev: {impl: {"wall": [], "cpu": []} for impl in impls} for ev in EVENTS}
    baseline = {"wall": [], "cpu": []}
    sockdir = tempfile.mkdtemp(prefix="xr-bench-", dir="/tmp")
    sock = os.path.join(sockdir, "xs.sock")
    try:
        with XenstoreServer(sock) as xs, SimulatedDom0(xs.socket_path, prefix="xrb") as dom0:
            dom0.add_vif(1, 0)
            env = dom0.hotplug_env(1, 0)
            for impl in impls:                        # warm-up, not measured
                for ev in EVENTS:
                    run_event(dom0, impl, ev, env)
            for i in range(runs):
                order = impls if i % 2 == 0 else tuple(reversed(impls))
                for impl in order:
                    for ev in EVENTS:
                        proc = run_event(dom0, impl, ev, env)
                        results[ev][impl]["wall"].append(proc.wall)
                        results[ev][impl]["cpu"].append(proc.cpu)
                proc = dom0.run(["/bin/true"])
                baseline["wall"].append(proc.wall)
                baseline["cpu"].append(proc.cpu)
    finally:
        try:
            os.rmdir(sockdir)
        except OSError:
            pass
    out = {"runs": runs, "events": {}, "baseline_netns_exec_true": {
        "wall": summarize(baseline["wall"]), "cpu": summarize(baseline["cpu"])}}
    for ev in EVENTS:
        entry = {}
        for impl in impls:
            entry[impl] = {"wall": summarize(results[ev][impl]["wall"]),
                           "cpu": summarize(results[ev][impl]["cpu"])}
        if len(impls) == 2:
            o, x = entry["original"], entry["xenrules"]
            entry["ratio_wall"] = x["wall"]["median"] / o["wall"]["median"]
            entry["ratio_cpu"] = (x["cpu"]["median"] / o["cpu"]["median"]
                                  if o["cpu"]["median"] else None)
        out["events"][ev] = entry
    return out


def print_table(res):
    ms = lambda s: "%8.1f" % (s * 1000)   # noqa: E731
    print("vif-bridge, %d runs each, medians (ms); CPU = user+sys of the process tree"
          % res["runs"])
    print("%-8s %-9s %9s %9s %12s %12s" % ("event", "impl", "wall", "cpu",
                                           "ratio wall", "ratio cpu"))
    for ev, entry in res["events"].items():
        for impl in IMPLS:
            if impl not in entry:
                continue
            w, c = entry[impl]["wall"]["median"], entry[impl]["cpu"]["median"]
            ratio_w = ratio_c = ""
            if impl == "xenrules" and "ratio_wall" in entry:
                ratio_w = "%.2f" % entry["ratio_wall"]
                ratio_c = "%.2f" % entry["ratio_cpu"] if entry["ratio_cpu"] else "-"
            print("%-8s %-9s %s  %s %12s %12s" % (ev, impl, ms(w), ms(c), ratio_w, ratio_c))
    b = res["baseline_netns_exec_true"]
    print("%-8s %-9s %s  %s   (ip netns exec /bin/true, included above)" % (
        "baseline", "-", ms(b["wall"]["median"]), ms(b["cpu"]["median"])))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30, help="measured rounds (default 30)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--original-only", action="store_true",
                    help="measure only the original script")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    if os.geteuid() != 0:
        print("bench: needs root (network namespaces)", file=sys.stderr)
        return 1
    impls = ("original",) if args.original_only else IMPLS
    originals_dir()   # fetch before timing anything
    try:
        res = bench(args.runs, impls)
    except BenchError as exc:
        print("bench: %s" % exc, file=sys.stderr)
        return 1
    res["machine"] = {"kernel": platform.release(), "python": sys.version.split()[0],
                      "cpus": os.cpu_count(), "originals": source_package()}
    print_table(res)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2, sort_keys=True)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
