"""How the benchmark runs one event with each implementation, and what it counts.

Implementations:
  original   Debian's bash script
  xenrules   the launcher (symlinked as the script's name), in-process
  helper     the same launcher, served by the warm helper (python3 -m xenrules.helper)

The launcher is the compiled one the package ships (launcher/xenrules-launcher.c,
built by `make launcher`); XENRULES_BENCH_LAUNCHER=python measures bin/xenrules-launcher.

Every run goes through `ip netns exec` like the sandbox's other runs (both
sides pay the wrapper; it is reported as a baseline). CPU is user+sys of the
launched process tree from wait4; for `helper` it also counts the helper
side: the event's worker (its rusage from wait4) and its supervisor (its
CPU since its previous event), which the helper appends to its --stats
file, plus the helper's main process (its own CPU over the series, spread
evenly over the events it served). Peak RSS is the
largest resident set of any process on the event's path: wait4's ru_maxrss
for the launched tree, the worker's and supervisor's from --stats, and the
helper's VmHWM.
"""
import os
import subprocess
import tempfile
import time

from scenarios import REPO_ROOT

PY_LAUNCHER = os.path.join(REPO_ROOT, "bin", "xenrules-launcher")
C_LAUNCHER = os.path.join(REPO_ROOT, "build", "launcher", "xenrules-launcher")


def launcher_path(kind=None):
    """The launcher to measure: "c" (default, built here) or "python"."""
    kind = kind or os.environ.get("XENRULES_BENCH_LAUNCHER") or "c"
    if kind == "python":
        return PY_LAUNCHER
    if kind != "c":
        raise BenchError(f"XENRULES_BENCH_LAUNCHER={kind!r}: c or python")
    done = subprocess.run(["make", "-s", "-C", REPO_ROOT, "launcher"], capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"make launcher failed:\n{done.stdout}{done.stderr}")
    return C_LAUNCHER
PYTHON = "/usr/bin/python3"
IMPLS = ("original", "xenrules", "helper")
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    pass


LAUNCHER = None   # set by the first Runner: launcher_path()


def proc_cpu(pid):
    """user+sys CPU seconds of a process itself, from /proc (clock ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_hwm_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


class Helper:
    """A warm helper in the sandbox's namespace, on a private socket."""

    def __init__(self, dom0, xenrules_env, workdir, extra=(), root=REPO_ROOT):
        self.dir = tempfile.mkdtemp(prefix="helper-", dir=workdir)   # 0700, root's
        self.socket = os.path.join(self.dir, "helper.sock")
        self.stats = os.path.join(self.dir, "stats")
        env = dict(dom0._base_env(), **xenrules_env)
        env["PYTHONPATH"] = root   # bench/phases.py --compare: another checkout's helper
        self.log = open(os.path.join(self.dir, "helper.log"), "wb")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", dom0.netns, PYTHON, "-m", "xenrules.helper",
             "--socket", self.socket, "--stats", self.stats, *extra],
            env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, cwd="/")
        deadline = time.monotonic() + 30
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError("the helper did not start: " + self.output())
            time.sleep(0.02)
        self._stats_read = 0
        self._pending = {}

    def output(self):
        with open(os.path.join(self.dir, "helper.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")[-2000:]

    def cpu(self):
        """The helper main process's own CPU so far (accepting nothing itself: it
        forks supervisors and keeps count). Supervisors and workers report theirs
        per event (--stats). In clock ticks: exact over a series, not per event."""
        return proc_cpu(self.proc.pid)

    def hwm_kb(self):
        return proc_hwm_kb(self.proc.pid)

    def side(self, pid, timeout=5.0):
        """(cpu s, peak RSS KB) of the helper side of the event whose launcher was pid."""
        deadline = time.monotonic() + timeout
        while pid not in self._pending:
            try:
                with open(self.stats) as f:
                    f.seek(self._stats_read)
                    chunk = f.read()
            except FileNotFoundError:
                chunk = ""
            complete = chunk[:chunk.rfind("\n") + 1]
            self._stats_read += len(complete)
            for line in complete.splitlines():
                p, wu, ws, wrss, cu, cs, crss = line.split()
                self._pending[int(p)] = (float(wu) + float(ws) + float(cu) + float(cs),
                                         max(int(wrss), int(crss)))
            if pid in self._pending:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"the helper reported nothing for launcher pid {pid} "
                                 "(the event ran in-process?)")
            time.sleep(0.002)
        return self._pending.pop(pid)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def run_in_ns(dom0, argv, env, timeout=40.0):
    """SimulatedDom0.run: `ip netns exec` execs the command, so the result's pid
    is the launcher's, the one the helper's --stats lines name."""
    return dom0.run(argv, env, timeout=timeout)


class Runner:
    """Runs events in one sandbox with each implementation."""

    def __init__(self, dom0, workdir, rules_path=None, with_helper=True, state_dir=None,
                 helper_args=(), root=REPO_ROOT):
        self.dom0 = dom0
        self.bindir = tempfile.mkdtemp(prefix="scripts-", dir=workdir)
        self.xr_env = dom0.xenrules_env(rules_path=rules_path, state_dir=state_dir)
        self.xr_env["XENRULES_PYTHONPATH"] = root
        self.xr_env["XENRULES_HELPER_TIMEOUT"] = "20"   # a burst queues for "ready"
        self.helper = Helper(dom0, self.xr_env, workdir, helper_args, root) if with_helper else None
        self.last_pid = None   # the launcher of the last run (the helper's lines name it)

    def launcher(self, script):
        global LAUNCHER
        if LAUNCHER is None:
            LAUNCHER = launcher_path()
        path = os.path.join(self.bindir, script)
        if not os.path.lexists(path):
            os.symlink(LAUNCHER, path)
        return path

    def env(self, impl, event_env):
        if impl == "original":
            return dict(event_env)
        env = dict(event_env, **self.xr_env)
        env["XENRULES_HELPER_SOCKET"] = self.helper.socket if impl == "helper" else ""
        return env

    def argv(self, impl, script, words):
        if impl == "original":
            from xenrules.sandbox.originals import originals_dir
            return [os.path.join(originals_dir(), script)] + list(words)
        return [self.launcher(script)] + list(words)

    def run(self, impl, event):
        """One event: (wall s, cpu s, peak RSS KB, helper-side cpu s). Raises BenchError
        on a wrong result. For `helper`, cpu includes what the worker and supervisor
        reported for this event; the helper main process's CPU is added per series
        by the caller (see Helper.cpu)."""
        proc = run_in_ns(self.dom0, self.argv(impl, event.script, event.words),
                         self.env(impl, event.env))
        cpu, rss, side_cpu = proc.cpu, proc.rusage.ru_maxrss, 0.0
        self.last_pid = proc.pid
        if impl == "helper":
            side_cpu, side_rss = self.helper.side(proc.pid)
            cpu += side_cpu
            rss = max(rss, side_rss)
        if proc.returncode != event.code:
            raise BenchError("%s %s exited %d, not %d\nstdout: %s\nstderr: %s\nlog: %s" % (
                impl, event.label, proc.returncode, event.code, proc.stdout[-2000:],
                proc.stderr[-2000:], proc.hotplug_log[-2000:]))
        why = event.check(self.dom0)
        if why:
            raise BenchError(f"{impl} {event.label} left a wrong state: {why}\n"
                             f"stderr: {proc.stderr[-2000:]}\nlog: {proc.hotplug_log[-2000:]}")
        if event.after:
            event.after(self.dom0)
        return proc.wall, cpu, rss, side_cpu

    def close(self):
        if self.helper:
            self.helper.stop()
