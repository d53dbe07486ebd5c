#!/usr/bin/python3
"""`make fuzz`: 10,000+ bad rule files through `xenrules check`'s compiler.

Byte-level mutants of the shipped rules.d files and rules hypothesis makes
over the schema's shape (tests/rulefuzz.py), run in worker processes under
RLIMIT_AS with a per-case alarm; a worker that dies is a finding too and is
replaced. Prints the figures and writes build/reliability/fuzz.json.

    /usr/bin/python3 tools/fuzz.py [--mutants N] [--generated N] [--seed S]
"""
import argparse
import json
import multiprocessing
import os
import resource
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO_ROOT, os.path.join(REPO_ROOT, "tests")]
MEMORY = 1 << 30   # bytes a worker may map: an alias bomb must fail, not eat the machine
BATCH = 250


def _limit():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def _mutant_batch(args):
    seed, count = args
    import rulefuzz
    return _run(rulefuzz, rulefuzz.mutants(count, seed))


def _generated_batch(args):
    seed, count = args
    import rulefuzz
    from hypothesis import HealthCheck, given, settings
    cases = []

    @settings(max_examples=count, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(rulefuzz.RULE_FILE)
    def collect(document):
        data = rulefuzz.dump(document)
        if data is not None:
            cases.append(("50-fuzz.yaml", data))
    import random
    random.seed(seed)
    collect()
    return _run(rulefuzz, cases)


def _run(rulefuzz, cases):
    counts = {"ok": 0, "problems": 0, "findings": []}
    for name, data in cases:
        try:
            counts[rulefuzz.check_case(data, name)[0]] += 1
        except rulefuzz.Finding as e:
            counts["findings"].append({"file": name, "finding": str(e), "bytes": data[:2000].hex()})
        except MemoryError:
            counts["findings"].append({"file": name, "finding": "memory: over the worker's limit",
                                       "bytes": data[:2000].hex()})
    return counts


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mutants", type=int, default=7000, help="byte-level mutants (7000)")
    p.add_argument("--generated", type=int, default=3000, help="hypothesis-made rule files (3000)")
    p.add_argument("--seed", type=int, default=int(time.time()),
                   help="seed of the mutants (default: the time); hypothesis picks its own")
    p.add_argument("--out", default=os.path.join(REPO_ROOT, "build", "reliability", "fuzz.json"))
    args = p.parse_args(argv)
    started = time.monotonic()
    jobs = [(_mutant_batch, (args.seed + i, min(BATCH, args.mutants - i * BATCH)))
            for i in range((args.mutants + BATCH - 1) // BATCH)]
    jobs += [(_generated_batch, (args.seed + 10 ** 6 + i, min(BATCH, args.generated - i * BATCH)))
             for i in range((args.generated + BATCH - 1) // BATCH)]
    total = {"ok": 0, "problems": 0, "findings": [], "workers_lost": 0}
    with multiprocessing.Pool(max(1, os.cpu_count() or 1), initializer=_limit,
                              maxtasksperchild=4) as pool:
        pending = [pool.apply_async(fn, (a,)) for fn, a in jobs]
        for job in pending:
            try:
                got = job.get(timeout=600)
            except Exception as e:   # noqa: BLE001 - a worker that died is a finding
                total["workers_lost"] += 1
                total["findings"].append({"file": "-", "finding": f"worker lost: {e!r}"})
                continue
            for key in ("ok", "problems"):
                total[key] += got[key]
            total["findings"].extend(got["findings"])
    seconds = time.monotonic() - started
    cases = total["ok"] + total["problems"] + len(total["findings"])
    summary = {"seed": args.seed, "cases": cases, "valid": total["ok"], "with_problems": total["problems"],
               "findings": total["findings"], "workers_lost": total["workers_lost"],
               "seconds": round(seconds, 1), "memory_limit_bytes": MEMORY}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1)
    print(f"fuzz: {cases} rule files (seed {args.seed}) in {seconds:.0f} s: {total['ok']} valid, "
          f"{total['problems']} with problems reported as file:line:col, "
          f"{len(total['findings'])} findings; {args.out}")
    for finding in total["findings"][:20]:
        print(f"  FINDING {finding['file']}: {finding['finding']}")
    return 1 if total["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
