#!/usr/bin/python3
"""The warm helper's own share, per phase (issue 10): `make bench-profile`.

Runs a few kinds of event through the helper started with --profile
(xenrules/phases.py says what each phase is), in the benchmark's sandboxes,
and prints the median milliseconds of each phase per event kind; writes
bench/phases.json. With --compare CHECKOUT (e.g. a `git worktree add` of
main that has --profile), a second helper runs from that checkout in the
same sandbox and the rounds alternate which goes first, so load drifts hit
both alike.

    /usr/bin/python3 bench/phases.py [--runs N] [--only vif-bridge,tap] [--compare DIR]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)
from runner import BenchError, Runner  # noqa: E402
from scenarios import REPO_ROOT, all_scenarios  # noqa: E402

sys.path.insert(0, REPO_ROOT)
from xenrules.phases import PHASES  # noqa: E402

DEFAULT_ONLY = "vif-bridge,tap,error path"
COLUMNS = PHASES + ("served_ms", "wall_ms")
# The helper's own share: what the launcher waits for beyond the event's own
# work (on path; the sum of medians), and what it spends between events (off path).
ON_PATH = ("accept", "receive", "hand_over", "worker_wake", "worker_setup", "log_write",
           "status_send")
OFF_PATH = ("fork_worker", "worker_exit")


def read_profile(path):
    out = {}
    try:
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                out[rec["pid"]] = rec
    except FileNotFoundError:
        pass
    return out


def bench_scenario(scenario, runs, xs_socket, workdir, roots):
    """{root: {event label: {column: [ms, ...]}}} for one scenario."""
    from xenrules.sandbox.dom0 import SimulatedDom0
    with SimulatedDom0(xs_socket, prefix="xrph", bridges=scenario.bridges) as dom0:
        runners = {}
        try:
            events = scenario.setup(dom0)
            for root in roots:
                profile = os.path.join(tempfile.mkdtemp(prefix="phases-", dir=workdir), "p.jsonl")
                runners[root] = (Runner(dom0, workdir, helper_args=("--profile", profile),
                                        root=root), profile)
            for runner, _ in runners.values():   # warm-up: page cache, spares
                for e in events:
                    runner.run("helper", e)
            seen = {root: {e.label: [] for e in events} for root in roots}   # (pid, wall)
            for r in range(runs):
                order = roots if r % 2 == 0 else roots[::-1]
                for root in order:
                    runner = runners[root][0]
                    for e in events:
                        wall = runner.run("helper", e)[0]
                        seen[root][e.label].append((runner.last_pid, wall))
            time.sleep(0.2)   # the last records are written after the status
        finally:
            for runner, _ in runners.values():
                runner.close()
            scenario.cleanup()
    out = {}
    for root in roots:
        records = read_profile(runners[root][1])
        out[root] = {}
        for label, runs_ in seen[root].items():
            cols = {c: [] for c in COLUMNS}
            for pid, wall in runs_:
                rec = records.get(pid)
                if rec is None:
                    raise BenchError(f"{root}: no profile line for {label} (pid {pid})")
                for c in PHASES:
                    cols[c].append(rec["phases"][c])
                cols["served_ms"].append(rec["served_ms"])
                cols["wall_ms"].append(wall * 1000)
            out[root][label] = cols
    return out


def medians(cols):
    return {c: round(statistics.median(v), 3) for c, v in cols.items()}


def table(results, roots):
    names = {root: ("this" if root == REPO_ROOT else os.path.basename(root.rstrip("/")))
             for root in roots}
    head = "| event | checkout | " + " | ".join(COLUMNS) + " | on path | off path |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 4)]
    for label in results[roots[0]]:
        for root in roots:
            m = results[root][label]
            on = sum(m[c] for c in ON_PATH)
            off = sum(m[c] for c in OFF_PATH)
            lines.append(f"| {label} | {names[root]} | "
                         + " | ".join(f"{m[c]:.3f}" for c in COLUMNS) + f" | {on:.3f} | {off:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30, help="measured rounds per event (30)")
    ap.add_argument("--only", default=DEFAULT_ONLY, help=f"scenarios ({DEFAULT_ONLY!r})")
    ap.add_argument("--compare", metavar="CHECKOUT", help="also measure this checkout's helper")
    ap.add_argument("--json", default=os.path.join(BENCH_DIR, "phases.json"))
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/phases.py: needs root (network namespaces)", file=sys.stderr)
        return 1
    roots = [REPO_ROOT] + ([os.path.abspath(args.compare)] if args.compare else [])
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    from xenrules.sandbox.xsserver import XenstoreServer
    workdir = tempfile.mkdtemp(prefix="xr-phases-")
    raw = {root: {} for root in roots}
    try:
        with XenstoreServer(os.path.join(workdir, "xs.sock")) as xs:
            for scenario in all_scenarios():
                if scenario.name not in only or scenario.available():
                    continue
                print(f"bench/phases.py: {scenario.name}: {args.runs} rounds", file=sys.stderr)
                for root, events in bench_scenario(scenario, args.runs, xs.socket_path,
                                                   workdir, roots).items():
                    raw[root].update(events)
    finally:
        import shutil
        shutil.rmtree(workdir, ignore_errors=True)
    results = {root: {label: medians(cols) for label, cols in events.items()}
               for root, events in raw.items()}
    res = {"runs": args.runs, "nproc": os.cpu_count(), "loadavg": os.getloadavg()[0],
           "python": sys.version.split()[0], "checkouts": roots, "medians_ms": results}
    with open(args.json, "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{args.runs} runs, nproc {res['nproc']}, load {res['loadavg']:.2f}, "
          f"python {res['python']}; medians in ms")
    print(table(results, roots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
