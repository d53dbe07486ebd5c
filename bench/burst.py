"""The burst: N guests' vifs brought online at once, as when a host boots.

N veth pairs (vif<d>.0, d = 1..N) on one bridge in one namespace, each with
libxl's xenstore keys; every implementation fires N `vif-bridge online`
processes at once (posix_spawn, no waiting between them), then waits for
all. Reported: total wall time (first spawn to last exit), total CPU
(the processes' rusage, plus the helper side for `helper`), the largest
peak RSS, and failures (exit status not 0, or a vif not on the bridge or
without hotplug-status=connected). An offline burst (not reported) puts
every vif back before the next implementation.
"""
import os
import shutil
import tempfile
import time

from runner import BenchError

VIF_BACK = "/local/domain/0/backend/vif/%d/0"


def _spawn(ip, dom0, argv, env, out):
    full_env = dict(dom0._base_env(), **env)
    actions = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
               (os.POSIX_SPAWN_OPEN, 1, out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
               (os.POSIX_SPAWN_DUP2, 1, 2)]
    return os.posix_spawn(ip, ["ip", "netns", "exec", dom0.netns] + argv, full_env,
                          file_actions=actions, setsid=True)


def fire(runner, impl, domids, command, workdir):
    """Run `vif-bridge <command>` for every domid at once. Returns the measurements."""
    ip = shutil.which("ip")
    outdir = tempfile.mkdtemp(prefix=f"burst-{impl}-", dir=workdir)
    jobs = []
    for d in domids:
        env = runner.env(impl, runner.dom0.hotplug_env(d, 0))
        jobs.append((d, runner.argv(impl, "vif-bridge", [command, "type_if=vif"]), env))
    helper_cpu0 = runner.helper.cpu() if impl == "helper" else 0.0
    started = time.perf_counter()
    pids = {}
    for d, argv, env in jobs:
        pids[_spawn(ip, runner.dom0, argv, env, os.path.join(outdir, str(d)))] = d
    cpu, rss, codes = 0.0, 0, {}
    for pid, d in pids.items():
        _, status, usage = os.wait4(pid, 0)
        codes[d] = os.waitstatus_to_exitcode(status)
        cpu += usage.ru_utime + usage.ru_stime
        rss = max(rss, usage.ru_maxrss)
    wall = time.perf_counter() - started
    if impl == "helper":
        for pid, d in pids.items():
            if codes[d] == 0:   # each event's worker and supervisor
                side_cpu, side_rss = runner.helper.side(pid, timeout=30)
                cpu += side_cpu
                rss = max(rss, side_rss)
        cpu += runner.helper.cpu() - helper_cpu0   # the helper's main process
        rss = max(rss, runner.helper.hwm_kb())
    failed = {d: f"exit {c}" for d, c in codes.items() if c != 0}
    failed.update(_check(runner.dom0, domids, command, failed))
    sample = ""
    if failed:
        d = sorted(failed)[0]
        with open(os.path.join(outdir, str(d)), errors="replace") as f:
            sample = f"vif{d}.0: {failed[d]}: {f.read()[-1500:]}"
    shutil.rmtree(outdir, ignore_errors=True)
    return {"n": len(domids), "wall": wall, "cpu": cpu, "peak_rss_kb": rss,
            "failures": len(failed), "first_failure": sample}


def _check(dom0, domids, command, known):
    links = dom0.links()
    bad = {}
    for d in domids:
        if d in known:
            continue
        link = links.get(f"vif{d}.0", {})
        if command == "online":
            status = dom0.xs_read(VIF_BACK % d + "/hotplug-status")
            if link.get("master") != "xenbr0" or status != "connected":
                bad[d] = f"master {link.get('master')}, hotplug-status {status!r}"
            dom0.xs_write(VIF_BACK % d + "/hotplug-status", "")
        elif link.get("master") is not None:
            bad[d] = f"still on {link.get('master')}"
    return bad


def run_burst(n, impls, xs_socket, workdir, log):
    from xenrules.sandbox.dom0 import SimulatedDom0
    from runner import Runner
    out = {}
    with SimulatedDom0(xs_socket, prefix="xrbb") as dom0:
        log(f"burst {n}: creating {n} vifs")
        domids = list(range(1, n + 1))
        for d in domids:
            dom0.add_vif(d, 0)
        runner = Runner(dom0, workdir, with_helper="helper" in impls)
        try:
            for impl in impls:
                log(f"burst {n}: {impl}")
                out[impl] = fire(runner, impl, domids, "online", workdir)
                back = fire(runner, impl, domids, "offline", workdir)
                if back["failures"]:
                    raise BenchError(f"burst {n} {impl}: offline failed: {back['first_failure']}")
        finally:
            runner.close()
    return out
