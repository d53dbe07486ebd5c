"""Rule-set scaling: the vif-bridge event with 10, 100 and 1000 rules.

Each rule set is rules.d/50-vif-bridge.yaml plus filler rules spread over
ten files sorted before it (40-fill-0.yaml ... 40-fill-9.yaml), so every
filler comes first in rule order and would be tested before the real rule
by a linear scan. A filler is what an admin with many guests might write: a
per-guest vif-bridge rule (`match: {script: vif-bridge, vif: vif<N>.0}`).

Measured, per size: the event's wall time through the helper and
in-process (sizes interleaved round by round, so machine noise hits all
alike), the compile time (yaml + jsonschema, once per change), the cache
file size, and the cache load time of the event path (the marshal cache
read, fingerprint and index lookup: `ruleset.candidates`) and of a full
`ruleset.load`.
"""
import os
import shutil
import statistics
import time

from scenarios import RULES_D, VIF_BACK, link_check, status_is, both, Event

FILES = 10
REAL = "50-vif-bridge.yaml"


def make_rules(directory, total):
    """rules.d with `total` rules: the 2 real vif-bridge rules and total - 2 fillers."""
    os.makedirs(directory)
    shutil.copy(os.path.join(RULES_D, REAL), os.path.join(directory, REAL))
    fillers = total - 2
    per_file = [fillers // FILES + (1 if i < fillers % FILES else 0) for i in range(FILES)]
    n = 0
    for i, count in enumerate(per_file):
        lines = []
        for _ in range(count):
            n += 1
            lines.append(
                f"- rule: guest-{n}\n"
                f"  match: {{script: vif-bridge, vif: vif{1000 + n}.0}}\n"
                f"  actions:\n"
                f"    online:\n"
                f"      - xenstore.write: {{path: \"{{backend}}/bench-filler\", value: \"{n}\"}}\n"
                f"    offline: []\n")
        with open(os.path.join(directory, f"40-fill-{i}.yaml"), "w") as f:
            f.write("".join(lines))


def _median_ms(fn, n=15):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def cache_costs(rules_dir, state_dir):
    """Compile time, cache size, and the event path's cache load time (ms)."""
    from xenrules import engine, ruleset
    from xenrules.config import Config
    from xenrules.event import Event as XEvent
    config = Config({"XENRULES_RULES_PATH": rules_dir, "XENRULES_STATE_DIR": state_dir})
    t = time.perf_counter()
    count = len(ruleset.load(config))
    compile_ms = (time.perf_counter() - t) * 1000
    event = XEvent("/etc/xen/scripts/vif-bridge", ["online", "type_if=vif"],
                   {"XENBUS_PATH": "backend/vif/1/0", "vif": "vif1.0"})
    lookup = engine.event_lookup(event)

    def cold_candidates():   # a fresh process: no memo, the cache file is read
        ruleset._memo.clear()
        return ruleset.candidates(config, lookup)

    def cold_load():
        ruleset._memo.clear()
        return ruleset.load(config)

    out = {"rules": count, "compile_ms": compile_ms,
           "cache_bytes": os.path.getsize(os.path.join(state_dir, ruleset.CACHE_NAME)),
           "event_load_ms": _median_ms(cold_candidates),
           "full_load_ms": _median_ms(cold_load),
           "warm_event_load_ms": _median_ms(lambda: ruleset.candidates(config, lookup)),
           "candidates": len(ruleset.candidates(config, lookup))}
    ruleset._memo.clear()
    return out


def run_scaling(sizes, runs, inprocess_runs, xs_socket, workdir, log):
    from xenrules.sandbox.dom0 import SimulatedDom0
    from runner import Runner
    results = {}
    with SimulatedDom0(xs_socket, prefix="xrbs") as dom0:
        dom0.add_vif(1, 0)
        env = dom0.hotplug_env(1, 0)
        back = VIF_BACK % (1, 0)
        online = Event("vif-bridge online", "vif-bridge", ["online", "type_if=vif"], env,
                       both(status_is(back + "/hotplug-status", "connected"),
                            link_check("vif1.0", "xenbr0", True)))
        offline = Event("vif-bridge offline", "vif-bridge", ["offline", "type_if=vif"], env,
                        link_check("vif1.0", None, False))
        runners = {}
        try:
            for size in sizes:
                rules_dir = os.path.join(workdir, f"rules-{size}")
                make_rules(rules_dir, size)
                state_dir = os.path.join(workdir, f"state-{size}")
                log(f"scaling: compiling {size} rules")
                results[size] = {"cache": cache_costs(rules_dir, state_dir),
                                 "helper": [], "xenrules": []}
                runner = Runner(dom0, workdir, rules_path=rules_dir, state_dir=state_dir)
                runners[size] = runner
            for size in sizes:   # warm-up
                for impl in ("helper", "xenrules"):
                    runners[size].run(impl, online)
                    runners[size].run(impl, offline)
            log(f"scaling: {runs} rounds through the helper, {inprocess_runs} in-process")
            for i in range(max(runs, inprocess_runs)):
                order = sizes[i % len(sizes):] + sizes[:i % len(sizes)]
                for size in order:
                    for impl in ("helper", "xenrules"):
                        if impl == "xenrules" and i >= inprocess_runs or impl == "helper" and i >= runs:
                            continue
                        wall = runners[size].run(impl, online)[0]
                        results[size][impl].append(wall)
                        runners[size].run(impl, offline)
        finally:
            for runner in runners.values():
                runner.close()
    out = {}
    for size in sizes:
        r = results[size]
        out[size] = {"cache": r["cache"],
                     "helper_online_ms": statistics.median(r["helper"]) * 1000,
                     "xenrules_online_ms": statistics.median(r["xenrules"]) * 1000,
                     "helper_samples": r["helper"], "xenrules_samples": r["xenrules"]}
    base = sizes[0]
    for size in sizes:
        for impl in ("helper", "xenrules"):
            out[size][f"{impl}_vs_{base}"] = (out[size][f"{impl}_online_ms"]
                                             / out[base][f"{impl}_online_ms"])
    return out
