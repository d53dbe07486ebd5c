#!/usr/bin/python3
"""Benchmark: Debian's original hotplug scripts against xenrules, same events.

    /usr/bin/python3 bench/bench.py [--runs 15] [--json FILE] [--markdown FILE]

In one invocation:
- per event (vif-bridge online/offline, tap add/remove, vif-route, vif-nat,
  block add/remove of a file and of a phy device, an error path): median
  and p90 wall time, median CPU (user+sys, children and helper side
  included), peak RSS, for the original, xenrules in-process (the
  launcher, no helper) and xenrules through the warm helper, with the
  ratios to the original. Rounds alternate the order of implementations;
  one unmeasured warm-up round first. Every run is checked (exit status,
  end state): a wrong result stops the benchmark.
- the burst: 64 and 256 vifs online at once on one bridge;
- the rule-set scaling run: vif-bridge with 10, 100 and 1000 rules;
- the targets of issue 5, each with PASS/FAIL;
- JSON (bench/results.json) and a Markdown summary (docs/PERFORMANCE.md).

Exit status: 0 if everything ran (targets missed are reported, not an
error), 1 if a run gave a wrong result twice in a row or a sandbox failed
(that part is reported as FAILED, the others still run).
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
sys.path[:0] = [BENCH_DIR, REPO_ROOT]

from burst import run_burst  # noqa: E402
from report import markdown, print_report, targets  # noqa: E402
from runner import IMPLS, BenchError, Runner, run_in_ns  # noqa: E402
from scaling import run_scaling  # noqa: E402
from scenarios import all_scenarios  # noqa: E402


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def p90(samples):
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]


def summarize(walls, cpus, rsses):
    return {"wall_median": statistics.median(walls), "wall_p90": p90(walls),
            "cpu_median": statistics.median(cpus), "peak_rss_kb": max(rsses),
            "wall": walls, "cpu": cpus}


def run_checked(runner, impl, event, retries):
    """runner.run, once more after a failure: loop devices are global and other
    users of this machine may take the one losetup -f just chose (EBUSY).
    Only a good run is measured; retries are counted and reported."""
    try:
        return runner.run(impl, event)
    except BenchError as first:
        retries.append(f"{impl} {event.label}: {str(first).splitlines()[0]}")
        time.sleep(0.2)
        return runner.run(impl, event)


def bench_scenario(scenario, runs, xs_socket, workdir, retries):
    from xenrules.sandbox.dom0 import SimulatedDom0
    with SimulatedDom0(xs_socket, prefix="xrbe", bridges=scenario.bridges) as dom0:
        runner = None
        try:
            events = scenario.setup(dom0)
            runner = Runner(dom0, workdir)
            samples = {e.label: {i: ([], [], []) for i in IMPLS} for e in events}
            for impl in IMPLS:   # warm-up: page cache, rule cache, helper spares
                for e in events:
                    run_checked(runner, impl, e, retries)
            helper_cpu0 = runner.helper.cpu()
            for r in range(runs):
                order = IMPLS[r % len(IMPLS):] + IMPLS[:r % len(IMPLS)]
                for impl in order:
                    for e in events:
                        wall, cpu, rss, _ = run_checked(runner, impl, e, retries)
                        for lst, v in zip(samples[e.label][impl], (wall, cpu, rss)):
                            lst.append(v)
            # the helper main process's CPU (forking supervisors), spread over its events
            share = (runner.helper.cpu() - helper_cpu0) / (runs * len(events))
            hwm = runner.helper.hwm_kb()
            base = [run_in_ns(dom0, ["/bin/true"], {}) for _ in range(5)]
        finally:
            if runner:
                runner.close()
            scenario.cleanup()
    out = {}
    for label, per_impl in samples.items():
        entry = {}
        for impl, (walls, cpus, rsses) in per_impl.items():
            if impl == "helper":
                cpus = [c + share for c in cpus]
                rsses = rsses + [hwm]
            entry[impl] = summarize(walls, cpus, rsses)
        for impl in ("xenrules", "helper"):
            o, x = entry["original"], entry[impl]
            entry[f"{impl}_ratio_wall"] = x["wall_median"] / o["wall_median"]
            entry[f"{impl}_ratio_cpu"] = x["cpu_median"] / o["cpu_median"] if o["cpu_median"] else None
        out[label] = entry
    baseline = statistics.median(p.wall for p in base)
    return out, baseline


# The "Helper phases" section comes from bench/phases.py runs (make bench-profile),
# not from this one: a rewrite of the file keeps it.
PHASES_BEGIN = "<!-- bench/phases.py: begin -->"
PHASES_END = "<!-- bench/phases.py: end -->"


def kept_section(path, begin, end):
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return ""
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        return ""
    return "\n" + text[start:stop + len(end)] + "\n"


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        from importlib.metadata import version
        pyroute2 = version("pyroute2")
    except Exception:
        pyroute2 = "?"
    from xenrules.sandbox.originals import source_package
    return {"cpu": model, "cpus": os.cpu_count(), "kernel": platform.release(),
            "python": sys.version.split()[0], "pyroute2": pyroute2,
            "originals": source_package(), "loadavg_at_start": os.getloadavg()[0]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=15, help="measured rounds per event (15)")
    ap.add_argument("--bursts", default="64,256", help="burst sizes, comma-separated ('' for none)")
    ap.add_argument("--burst-inprocess", default="64",
                    help="burst sizes also run in-process without the helper (64; each of those "
                         "processes imports pyroute2: 256 at once need ~9 GB)")
    ap.add_argument("--scaling", default="10,100,1000", help="rule counts ('' for none)")
    ap.add_argument("--scaling-runs", type=int, default=20, help="helper rounds per size (20)")
    ap.add_argument("--scaling-inprocess-runs", type=int, default=6,
                    help="in-process rounds per size (6)")
    ap.add_argument("--only", help="comma-separated scenario names (vif-bridge, tap, vif-route, "
                                   "vif-nat, block file, block phy, error path)")
    ap.add_argument("--json", default=os.path.join(BENCH_DIR, "results.json"), help="JSON output")
    ap.add_argument("--markdown", default=os.path.join(REPO_ROOT, "docs", "PERFORMANCE.md"),
                    help="Markdown summary ('' for none)")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    if os.geteuid() != 0:
        print("bench: needs root (network namespaces, loop devices)", file=sys.stderr)
        return 1
    from xenrules.sandbox.originals import originals_dir
    from xenrules.sandbox.xsserver import XenstoreServer
    originals_dir()   # fetch before timing anything
    sizes = [int(x) for x in args.bursts.split(",") if x.strip()]
    inproc_sizes = {int(x) for x in args.burst_inprocess.split(",") if x.strip()}
    rule_counts = [int(x) for x in args.scaling.split(",") if x.strip()]
    only = {x.strip() for x in args.only.split(",")} if args.only else None
    res = {"machine": machine(), "runs": args.runs, "events": {}, "not_available": {},
           "bursts": {}, "scaling": {}, "errors": {}, "retries": []}
    started = time.time()
    workdir = tempfile.mkdtemp(prefix="xr-bench-")
    try:
        with XenstoreServer(os.path.join(workdir, "xs.sock")) as xs:
            for scenario in all_scenarios():
                if only and scenario.name not in only:
                    continue
                why = scenario.available()
                if why:
                    log(f"{scenario.name}: not available: {why}")
                    res["not_available"][scenario.name] = why
                    continue
                log(f"{scenario.name}: {args.runs} rounds")
                try:
                    events, baseline = bench_scenario(scenario, args.runs, xs.socket_path,
                                                      workdir, res["retries"])
                except BenchError as exc:   # reported, and the exit status says so
                    log(f"{scenario.name}: FAILED: {exc}")
                    res["errors"][scenario.name] = str(exc)
                    continue
                res["events"].update(events)
                res["baseline_netns_exec_true_s"] = baseline
            for n in sizes:
                impls = ["original", "helper"] + (["xenrules"] if n in inproc_sizes else [])
                try:
                    res["bursts"][str(n)] = run_burst(n, impls, xs.socket_path, workdir, log)
                except BenchError as exc:
                    log(f"burst {n}: FAILED: {exc}")
                    res["errors"][f"burst {n}"] = str(exc)
            if rule_counts:
                try:
                    res["scaling"] = {str(k): v for k, v in run_scaling(
                        rule_counts, args.scaling_runs, args.scaling_inprocess_runs,
                        xs.socket_path, workdir, log).items()}
                except BenchError as exc:
                    log(f"scaling: FAILED: {exc}")
                    res["errors"]["scaling"] = str(exc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    res["seconds"] = time.time() - started
    res["targets"] = targets(res)
    print_report(res)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1, sort_keys=True)
            fh.write("\n")
        log(f"wrote {args.json}")
    if args.markdown:
        kept = kept_section(args.markdown, PHASES_BEGIN, PHASES_END)
        with open(args.markdown, "w") as fh:
            fh.write(markdown(res) + kept)
        log(f"wrote {args.markdown}")
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
