#!/usr/bin/python3
"""The launcher's floor (issue 10, point 3): connect + token + exit, no work.

A trivial helper (a forked process of this script, root, the real protocol:
"ready", takes the token, answers ("exit", 0)) serves every event; each
launcher (the compiled one and bin/xenrules-launcher) is timed against
/bin/true and `python3 -IS -c pass`, wall time of spawn to reap, medians.
Writes its own section of docs/PERFORMANCE.md (between the markers below),
leaving the rest of the file alone.

    /usr/bin/python3 bench/launcher.py [--runs N] [--markdown FILE] [--json FILE]
"""
import argparse
import json
import marshal
import os
import platform
import socket
import statistics
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)
from runner import PY_LAUNCHER, launcher_path  # noqa: E402
from scenarios import REPO_ROOT  # noqa: E402

BEGIN = "<!-- bench/launcher.py: begin -->"
END = "<!-- bench/launcher.py: end -->"


def trivial_helper(path):
    """Fork a process serving every connection at once; returns its pid."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(64)
    pid = os.fork()
    if pid:
        listener.close()
        return pid
    try:
        while True:
            conn, _ = listener.accept()
            conn.send(marshal.dumps(("ready",)))
            data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 8)
            took = len(fds) == 6 and os.read(fds[5], 1) == b"!"
            for fd in fds:
                os.close(fd)
            conn.send(marshal.dumps(("exit", 0) if took and data else ("exit", 1 << 8)))
            conn.close()
    finally:
        os._exit(1)


def time_runs(argv, env, runs):
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, env)
        _, status = os.waitpid(pid, 0)
        out.append(time.perf_counter() - start)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"bench/launcher.py: {argv} exited {status >> 8}")
    return out


def measure(runs):
    work = tempfile.mkdtemp(prefix="xr-floor-")
    sock = os.path.join(work, "helper.sock")
    helper = trivial_helper(sock)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "XENRULES_HELPER_SOCKET": sock}
    cases = {"/bin/true": ["/bin/true"], "python3 -IS -c pass": ["/usr/bin/python3", "-IS", "-c", "pass"]}
    for kind, target in (("c", launcher_path("c")), ("python", PY_LAUNCHER)):
        link = os.path.join(work, f"xr-floor-{kind}")
        os.symlink(target, link)
        cases[f"{kind} launcher, served"] = [link, "online"]
    try:
        for argv in cases.values():   # warm the page cache
            time_runs(argv, env, 3)
        times = {name: [] for name in cases}
        for _ in range(runs):   # interleaved: a load change hits every case alike
            for name, argv in cases.items():
                times[name] += time_runs(argv, env, 1)
        res = {name: statistics.median(t) for name, t in times.items()}
    finally:
        os.kill(helper, 9)
        os.waitpid(helper, 0)
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    return res


def markdown(res, runs):
    true = res["/bin/true"]
    lines = [BEGIN, "## The launcher alone (bench/launcher.py)", "",
             f"Connect + token + exit through a trivial helper (no event work), {runs} runs each, "
             f"interleaved, medians of spawn-to-reap wall time; {platform.node()}, {os.cpu_count()} CPUs, "
             f"load {os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
             "", "| what | median ms | x /bin/true |", "|---|---:|---:|"]
    for name, s in res.items():
        lines.append(f"| {name} | {s * 1000:.2f} | {s / true:.2f} |")
    lines += ["", END]
    return "\n".join(lines) + "\n"


def write_section(path, text):
    try:
        with open(path) as f:
            old = f.read()
    except FileNotFoundError:
        old = ""
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        new = head + text.rstrip("\n") + rest.split(END, 1)[1]
    else:
        new = old.rstrip("\n") + ("\n\n" if old else "") + text
    with open(path + ".tmp", "w") as f:
        f.write(new)
    os.replace(path + ".tmp", path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--markdown", default=os.path.join(REPO_ROOT, "docs", "PERFORMANCE.md"))
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/launcher.py: needs root (the launchers hand events to root helpers only)",
              file=sys.stderr)
        return 1
    res = measure(args.runs)
    text = markdown(res, args.runs)
    sys.stdout.write(text)
    if args.markdown:
        write_section(args.markdown, text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
