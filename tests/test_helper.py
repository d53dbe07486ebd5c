"""The warm helper: same results as in-process, optional, safe, root only.

Each test starts a real helper (python3 -m xenrules.helper) on a private
socket and runs bin/xenrules-launcher, symlinked as a script name, against
a real XenStore server. Two scripts: `xr-write`, which has a rule (it
writes a xenstore key), and `xr-echo`, which has none, so xenrules execs
its "original" (a shell script of the test) that prints its argv,
environment, cwd and umask, counts its runs in a file, and exits, sleeps or
kills itself as asked. Whether the helper served an event is read from
its --stats file (one line per event, named by the launcher's pid).
"""
import marshal
import os
import signal
import socket
import stat
import subprocess
import tempfile
import time

import pytest

from launchers import C_LAUNCHER, launcher  # noqa: F401  (the fixture: each test runs with both)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(REPO, "bin", "xenrules-launcher")
PYTHON = "/usr/bin/python3"

RULES = """\
- rule: write
  match: {script: xr-write}
  actions:
    online:
      - xenstore.write: {path: "/test/{vif}", value: "%s"}
"""

ECHO = """#!/bin/bash
echo "argv: $0 $*"
echo "env: XR_A=${XR_A-unset} XR_B=${XR_B-unset} PATH=$PATH"
echo "cwd: $(pwd) umask: $(umask)"
echo "to stderr" >&2
[ -n "$XR_FDS" ] && echo "fds: $(ls /proc/$$/fd | sort -n | tr '\n' ' ')"
[ -n "$XR_COUNT" ] && echo "$$" >> "$XR_COUNT"
[ -n "$XR_SLEEP" ] && sleep "$XR_SLEEP"
[ -n "$XR_SIGNAL" ] && kill -"$XR_SIGNAL" $$
exit "${XR_CODE:-0}"
"""


def wait_for(predicate, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def session_members(sid):
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                out.append(int(name))
    return out


def kill_session(proc):
    for pid in session_members(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    wait_for(lambda: not session_members(proc.pid), "the helper's processes to go")


class Setup:
    """Rule, originals and launcher directories, a helper, and runs of the launcher."""

    def __init__(self, xs_server, launcher_path=LAUNCHER):
        self.dir = tempfile.mkdtemp(prefix="xr-h-", dir="/tmp")   # short: sun_path is 108 bytes
        for sub in ("rules", "state", "originals", "bin"):
            os.mkdir(os.path.join(self.dir, sub))
        self.set_rule("one")
        echo = os.path.join(self.dir, "originals", "xr-echo")
        with open(echo, "w") as f:
            f.write(ECHO)
        os.chmod(echo, 0o755)
        for name in ("xr-write", "xr-echo"):
            os.symlink(launcher_path, os.path.join(self.dir, "bin", name))
        self.socket = os.path.join(self.dir, "run", "helper.sock")
        self.stats = os.path.join(self.dir, "stats")
        self.count = os.path.join(self.dir, "count")
        self.xs = xs_server
        self.env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "XENSTORED_PATH": xs_server.socket_path,
            "XENRULES_PYTHONPATH": REPO,
            "XENRULES_RULES_PATH": os.path.join(self.dir, "rules"),
            "XENRULES_STATE_DIR": os.path.join(self.dir, "state"),
            "XENRULES_ORIGINALS_DIR": os.path.join(self.dir, "originals"),
            "XENRULES_LOG_FILE": os.path.join(self.dir, "hotplug.log"),
            "XENRULES_HELPER_SOCKET": self.socket,
        }
        self.helper = None

    def set_rule(self, value):
        path = os.path.join(self.dir, "rules", "50-test.yaml")
        with open(path + ".tmp", "w") as f:
            f.write(RULES % value)
        os.replace(path + ".tmp", path)

    def start_helper(self, *extra):
        env = dict(self.env, PYTHONPATH=REPO)
        self.helper_log = open(os.path.join(self.dir, "helper.log"), "wb")
        self.helper = subprocess.Popen(
            [PYTHON, "-m", "xenrules.helper", "--socket", self.socket, "--stats", self.stats,
             *extra], env=env, stdin=subprocess.DEVNULL, stdout=self.helper_log,
            stderr=subprocess.STDOUT, start_new_session=True, cwd="/")
        wait_for(lambda: os.path.exists(self.socket) or self.helper.poll() is not None,
                 "the helper's socket")
        assert self.helper.poll() is None, self.helper_output()
        return self.helper

    def helper_output(self):
        with open(os.path.join(self.dir, "helper.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop_helper(self):
        if self.helper is None:
            return
        kill_session(self.helper)   # main, spares, workers: all ours
        self.helper_log.close()
        self.helper = None

    def launch(self, script, words, helper=True, cwd=None, **env):
        full = dict(self.env, **env)
        if not helper:
            full["XENRULES_HELPER_SOCKET"] = ""
        return subprocess.Popen([os.path.join(self.dir, "bin", script)] + list(words), env=full,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=cwd or self.dir, text=True)

    def run(self, script, words, helper=True, cwd=None, **env):
        proc = self.launch(script, words, helper, cwd, **env)
        out, err = proc.communicate(timeout=60)
        return proc.pid, proc.returncode, out, err

    def served(self):
        """Launcher pids the helper served."""
        try:
            with open(self.stats) as f:
                return {int(line.split()[0]) for line in f if line.strip()}
        except FileNotFoundError:
            return set()

    def runs_counted(self):
        try:
            with open(self.count) as f:
                return len(f.read().split())
        except FileNotFoundError:
            return 0

    def close(self):
        self.stop_helper()
        import shutil
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def setup(xs_server, launcher):
    s = Setup(xs_server, launcher)
    try:
        yield s
    finally:
        s.close()


def xs_read(setup, path):
    from xenrules.xenstore import XenStore
    with XenStore(setup.xs.socket_path) as xs:
        return xs.read(path)


def wait_served(setup, pid):
    wait_for(lambda: pid in setup.served(), f"the helper's report on pid {pid}")


# -- served by the helper, exactly as in-process ---------------------------------

def test_rule_event_through_the_helper_does_what_in_process_does(setup):
    setup.start_helper()
    pid, code, out, err = setup.run("xr-write", ["online", "vif=a"])
    assert (code, out, err) == (0, "", "")
    wait_served(setup, pid)
    assert xs_read(setup, "/test/a") == "one"
    pid, code, out, err = setup.run("xr-write", ["online", "vif=b"], helper=False)
    assert (code, out, err) == (0, "", "")
    assert pid not in setup.served()
    assert xs_read(setup, "/test/b") == "one"


@pytest.mark.parametrize("env", [
    {"XR_CODE": "0"},
    {"XR_CODE": "7", "XR_A": "with space", "XR_B": "ünïcode"},
    {"XR_CODE": "3", "XR_A": ""},
])
def test_argv_env_cwd_umask_output_and_exit_code_are_the_in_process_ones(setup, env):
    setup.start_helper()
    cwd = os.path.join(setup.dir, "state")
    words = ["add", "type_if=tap", "x y", "--odd"]
    served_pid, *served = setup.run("xr-echo", words, cwd=cwd, **env)
    local_pid, *local = setup.run("xr-echo", words, helper=False, cwd=cwd, **env)
    wait_served(setup, served_pid)
    assert local_pid not in setup.served()
    assert served == local
    code, out, err = served
    assert code == int(env["XR_CODE"])
    assert f"argv: {os.path.join(setup.dir, 'originals', 'xr-echo')} add type_if=tap x y --odd" in out
    assert f"cwd: {cwd} umask: 0022" in out
    assert err == "to stderr\n"


def test_a_script_killed_by_a_signal_kills_the_launcher_with_it(setup):
    setup.start_helper()
    served_pid, *served = setup.run("xr-echo", ["online"], XR_SIGNAL="TERM")
    _, *local = setup.run("xr-echo", ["online"], helper=False, XR_SIGNAL="TERM")
    wait_served(setup, served_pid)
    assert served == local
    assert served[0] == -signal.SIGTERM


def test_umask_is_the_launchers(setup):
    setup.start_helper()
    proc = subprocess.run(["/bin/sh", "-c", 'umask 0077; exec "$0" online',
                           os.path.join(setup.dir, "bin", "xr-echo")],
                          env=setup.env, stdout=subprocess.PIPE, text=True, cwd="/")
    assert "cwd: / umask: 0077" in proc.stdout


def test_rule_changes_are_seen_at_once(setup):
    setup.start_helper()
    pid, code, _, _ = setup.run("xr-write", ["online", "vif=a"])
    assert code == 0 and xs_read(setup, "/test/a") == "one"
    setup.set_rule("two")
    pid, code, _, err = setup.run("xr-write", ["online", "vif=a"])
    assert code == 0, err
    wait_served(setup, pid)
    assert xs_read(setup, "/test/a") == "two"


def test_a_burst_is_served_without_failures(setup):
    setup.start_helper()
    procs = [setup.launch("xr-write", ["online", f"vif=v{i}"]) for i in range(24)]
    for p in procs:
        p.communicate(timeout=60)
    assert [p.returncode for p in procs] == [0] * 24
    for p in procs:
        wait_served(setup, p.pid)
    assert [xs_read(setup, f"/test/v{i}") for i in range(24)] == ["one"] * 24


# -- optional: absent, stopped, crashed, hung -> in-process, never twice ----------

def test_no_helper_runs_the_event_in_process(setup):
    assert not os.path.exists(setup.socket)
    pid, code, out, err = setup.run("xr-write", ["online", "vif=a"])
    assert (code, err) == (0, "")
    assert xs_read(setup, "/test/a") == "one"


def test_a_crashed_helper_leaves_events_to_the_launcher(setup):
    helper = setup.start_helper()
    os.kill(helper.pid, signal.SIGKILL)   # the spares follow it (PR_SET_PDEATHSIG)
    helper.wait()
    wait_for(lambda: not session_members(helper.pid), "the spares to exit")
    assert os.path.exists(setup.socket)   # stale: connections are refused
    pid, code, _, err = setup.run("xr-echo", ["online"], XR_COUNT=setup.count)
    assert (code, err) == (0, "to stderr\n")
    assert setup.runs_counted() == 1 and pid not in setup.served()


def test_a_hung_helper_times_out_and_the_event_runs_once_in_process(setup):
    helper = setup.start_helper("--spares", "1")
    wait_for(lambda: len(session_members(helper.pid)) >= 3, "a spare")   # main, supervisor, worker
    members = session_members(helper.pid)
    for pid in members:
        os.kill(pid, signal.SIGSTOP)
    try:
        pid, code, _, err = setup.run("xr-echo", ["online"], XR_COUNT=setup.count,
                                      XENRULES_HELPER_TIMEOUT="1")
        assert (code, err) == (0, "to stderr\n")
        assert setup.runs_counted() == 1
    finally:
        for p in members:
            os.kill(p, signal.SIGCONT)
    # the helper wakes up with the abandoned connection in its backlog: it must not run it
    pid2, code, _, _ = setup.run("xr-echo", ["online"], XR_COUNT=setup.count)
    assert code == 0
    wait_served(setup, pid2)
    assert setup.runs_counted() == 2 and pid not in setup.served()


def test_an_event_the_helper_started_is_never_run_again_by_the_launcher(setup):
    """The work outlasts the launcher's timeout for "ready": the launcher waits, no rerun."""
    setup.start_helper()
    pid, code, out, _ = setup.run("xr-echo", ["online"], XR_COUNT=setup.count, XR_SLEEP="2",
                                  XR_CODE="5", XENRULES_HELPER_TIMEOUT="0.2")
    assert code == 5
    wait_served(setup, pid)
    assert setup.runs_counted() == 1


def test_killing_the_launcher_stops_the_events_work(setup):
    setup.start_helper()
    proc = setup.launch("xr-echo", ["online"], XR_COUNT=setup.count, XR_SLEEP="60")
    wait_for(lambda: setup.runs_counted() == 1, "the script to start")
    with open(setup.count) as f:
        script_pid = int(f.read().split()[0])
    assert alive(script_pid)
    wait_for(lambda: open(f"/proc/{script_pid}/task/{script_pid}/children").read().split(),
             "the script's sleep")
    with open(f"/proc/{script_pid}/task/{script_pid}/children") as f:
        child = int(f.read().split()[0])
    proc.kill()   # what libxl does when its 40 s are up
    proc.communicate()
    wait_for(lambda: not alive(script_pid), "the script to be killed")
    wait_for(lambda: not alive(child), "the script's own child to be killed")
    assert setup.runs_counted() == 1


def test_stopping_the_helper_lets_a_running_event_finish(setup):
    helper = setup.start_helper()
    proc = setup.launch("xr-echo", ["online"], XR_COUNT=setup.count, XR_SLEEP="1", XR_CODE="4")
    wait_for(lambda: setup.runs_counted() == 1, "the script to start")
    os.kill(helper.pid, signal.SIGTERM)   # systemd stop (KillMode=mixed): the main process only
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 4 and err == "to stderr\n"
    assert setup.runs_counted() == 1


# -- root only -------------------------------------------------------------------------

def test_socket_and_directory_are_root_only(setup):
    setup.start_helper()
    st_dir, st_sock = os.stat(os.path.dirname(setup.socket)), os.stat(setup.socket)
    assert (st_dir.st_uid, stat.S_IMODE(st_dir.st_mode)) == (0, 0o700)
    assert (st_sock.st_uid, stat.S_IMODE(st_sock.st_mode)) == (0, 0o600)
    assert stat.S_ISSOCK(st_sock.st_mode)


def test_helper_refuses_a_directory_others_can_enter(setup):
    run = os.path.join(setup.dir, "run")
    os.mkdir(run, 0o755)
    os.chmod(run, 0o755)
    proc = subprocess.run([PYTHON, "-m", "xenrules.helper", "--socket", setup.socket],
                          env=dict(setup.env, PYTHONPATH=REPO), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0
    assert "owned by root with mode 0700" in proc.stderr
    assert not os.path.exists(setup.socket)


def _as_nobody(fn):
    """Run fn() in a child process with uid/gid 65534; returns what it wrote to a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            try:
                os.write(w, fn())
            except Exception as e:
                os.write(w, repr(e).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return data


def test_helper_refuses_a_peer_that_is_not_root(setup):
    setup.start_helper()
    # open the way on purpose, so that only the SO_PEERCRED check stands in between
    os.chmod(setup.dir, 0o711)
    os.chmod(os.path.dirname(setup.socket), 0o711)
    os.chmod(setup.socket, 0o666)

    def connect():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.settimeout(20)
        s.connect(setup.socket)
        return b"EOF" if s.recv(64) == b"" else b"answered"

    assert _as_nobody(connect) == b"EOF"
    wait_for(lambda: "refused a client with uid 65534" in setup.helper_output(), "the refusal")


def test_launcher_does_not_hand_its_event_to_a_helper_that_is_not_root(setup):
    """A socket whose listener is not root gets neither the request nor the fds."""
    os.chmod(setup.dir, 0o711)
    run = os.path.join(setup.dir, "fake")
    os.mkdir(run, 0o777)
    os.chmod(run, 0o777)
    path = os.path.join(run, "helper.sock")
    ready_r, ready_w = os.pipe()
    got_r, got_w = os.pipe()
    pid = os.fork()
    if pid == 0:   # a fake helper, listening as nobody
        try:
            os.close(ready_r)
            os.close(got_r)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.bind(path)
            os.chmod(path, 0o666)
            s.listen(4)
            os.write(ready_w, b"x")
            conn, _ = s.accept()
            conn.settimeout(20)
            try:   # the launcher may already have hung up: that is the point
                conn.send(marshal.dumps(("ready",)))
                got = conn.recv(65536)
            except OSError:
                got = b""
            os.write(got_w, b"request" if got else b"nothing")
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(got_w)
    os.read(ready_r, 1)
    _, code, _, err = setup.run("xr-echo", ["online"], XR_COUNT=setup.count,
                                XENRULES_HELPER_SOCKET=path)
    assert (code, err) == (0, "to stderr\n") and setup.runs_counted() == 1
    assert os.read(got_r, 16) == b"nothing"
    os.waitpid(pid, 0)


# -- namespaces, launcher name, CLI ---------------------------------------------

def test_an_event_from_another_network_namespace_runs_in_process(setup):
    setup.start_helper()
    ns = f"xr-helper-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        proc = subprocess.run(["ip", "netns", "exec", ns, os.path.join(setup.dir, "bin", "xr-write"),
                               "online", "vif=ns"], env=setup.env, capture_output=True, text=True,
                              timeout=60)
        assert (proc.returncode, proc.stderr) == (0, "")
        assert xs_read(setup, "/test/ns") == "one"
        # declined, so not served: the helper acts on its own namespace's devices only
        assert len(setup.served()) == 0
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)


def test_xenrules_helper_subcommand_serves_too(setup):
    env = dict(setup.env, PYTHONPATH=REPO)
    log = open(os.path.join(setup.dir, "cli.log"), "wb")
    proc = subprocess.Popen([PYTHON, "-m", "xenrules", "helper", "--socket", setup.socket,
                             "--stats", setup.stats], env=env, stdout=log, stderr=log,
                            start_new_session=True)
    try:
        wait_for(lambda: os.path.exists(setup.socket), "the socket")
        pid, code, _, _ = setup.run("xr-write", ["online", "vif=cli"])
        assert code == 0
        wait_served(setup, pid)
    finally:
        kill_session(proc)
        log.close()


def test_socket_activation_by_systemd(setup):
    """systemd-socket-activate passes the listening socket as fd 3 (LISTEN_FDS)."""
    os.mkdir(os.path.dirname(setup.socket), 0o700)
    env = dict(setup.env, PYTHONPATH=REPO)
    argv = ["systemd-socket-activate", "--seqpacket", "-l", setup.socket]
    for k, v in env.items():
        argv += ["-E", f"{k}={v}"]
    log = open(os.path.join(setup.dir, "activate.log"), "wb")
    proc = subprocess.Popen(argv + [PYTHON, "-m", "xenrules.helper", "--stats", setup.stats],
                            stdout=log, stderr=log, start_new_session=True)
    try:
        wait_for(lambda: os.path.exists(setup.socket), "the socket")
        pid, code, _, err = setup.run("xr-write", ["online", "vif=sd"])
        assert (code, err) == (0, "")
        wait_served(setup, pid)
        assert xs_read(setup, "/test/sd") == "one"
    finally:
        kill_session(proc)
        log.close()


def test_systemd_units_name_the_socket_the_launcher_uses():
    with open(os.path.join(REPO, "systemd", "xenrules-helper.socket")) as f:
        unit = f.read()
    with open(LAUNCHER) as f:
        launcher = f.read()
    assert "ListenSequentialPacket=/run/xenrules/helper.sock" in unit
    assert "SocketMode=0600" in unit and "DirectoryMode=0700" in unit
    assert 'HELPER_SOCKET = b"/run/xenrules/helper.sock"' in launcher
    with open(os.path.join(REPO, "launcher", "xenrules-launcher.c")) as f:
        assert '#define HELPER_SOCKET "/run/xenrules/helper.sock"' in f.read()
    with open(os.path.join(REPO, "systemd", "xenrules-helper.service")) as f:
        service = f.read()
    assert "xenrules helper" in service
    # "mixed" or "control-group" would SIGKILL events in flight when the helper restarts
    assert "\nKillMode=process\n" in service


MODULES_FROM_DISK = ("sorted(m for m, mod in sys.modules.items() "
                     "if getattr(mod, '__file__', None) and 'lib-dynload' not in mod.__file__ "
                     "and not mod.__file__.startswith('<'))")


def test_an_event_served_by_the_helper_loads_no_module_from_disk_in_the_launcher(setup):
    """The whole fast path, a served event included: builtins only."""
    setup.start_helper()
    script = os.path.join(setup.dir, "bin", "xr-write")
    code = ("import sys, atexit; atexit.register(lambda: print('modules', " + MODULES_FROM_DISK + ")); "
            f"sys.argv = [{script!r}, 'online', 'vif=imports']; exec(open({LAUNCHER!r}).read())")
    proc = subprocess.run([PYTHON, "-I", "-S", "-c", code], env=setup.env, capture_output=True,
                          text=True, timeout=60)
    assert (proc.returncode, proc.stderr) == (0, "")
    bare = subprocess.run([PYTHON, "-I", "-S", "-c", "import sys; print('modules', "
                           + MODULES_FROM_DISK + ")"], capture_output=True, text=True)
    assert proc.stdout == bare.stdout
    assert len(setup.served()) == 1 and xs_read(setup, "/test/imports") == "one"


def test_launcher_imports_nothing_but_builtins_before_choosing():
    """Before it knows it must run in-process, the launcher loads no module from disk."""
    listing = ("print(sorted(m for m, mod in sys.modules.items() "
               "if getattr(mod, '__file__', None) and 'lib-dynload' not in mod.__file__ "
               "and not mod.__file__.startswith('<')))")
    code = ("import sys; sys.argv = ['xr-none', 'online']; "
            f"src = open({LAUNCHER!r}).read().split('# In-process.')[0]; exec(src); " + listing)
    env = {"XENRULES_HELPER_SOCKET": "/nonexistent/helper.sock"}
    proc = subprocess.run([PYTHON, "-I", "-S", "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    bare = subprocess.run([PYTHON, "-I", "-S", "-c", "import sys; " + listing], env=env,
                          capture_output=True, text=True)
    assert proc.stdout == bare.stdout
    assert "'os'" not in proc.stdout


# -- review: hung after "ready", malformed requests, bytes, fds, many events ----------

def _fake_root_helper(path, take_token):
    """A root listener that says "ready", takes the request, then hangs (a stopped or
    wedged supervisor). take_token: it takes the event's token first (it started it);
    None: it hangs right after accepting, before "ready".
    Returns (pid, pipe): the pipe gets b"T" if it found the token, b"-" if not, once
    it is told to look (by closing the connection's other side: the launcher going)."""
    ready_r, ready_w = os.pipe()
    got_r, got_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            os.close(got_r)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.bind(path)
            s.listen(4)
            os.write(ready_w, b"x")
            conn, _ = s.accept()
            if take_token is None:   # accepted, then wedged before "ready"
                os.write(got_w, b"T" if conn.recv(16) else b"-")
                os._exit(0)
            conn.send(marshal.dumps(("ready",)))
            _data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 8)
            token = fds[-1]
            if take_token:
                os.write(got_w, b"T" if os.read(token, 1) else b"-")
                conn.recv(16)   # hangs until the launcher goes
            else:
                conn.recv(16)   # hangs until the launcher goes (it took the event back)
                os.write(got_w, b"T" if os.read(token, 1) else b"-")
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(got_w)
    os.read(ready_r, 1)
    os.close(ready_r)
    return pid, got_r


def test_a_helper_hung_after_ready_gives_the_event_back_and_it_runs_once(setup):
    path = os.path.join(setup.dir, "hung.sock")
    pid, got = _fake_root_helper(path, take_token=False)
    try:
        _, code, _, err = setup.run("xr-echo", ["online"], XR_COUNT=setup.count,
                                    XENRULES_HELPER_SOCKET=path, XENRULES_HELPER_TIMEOUT="0.5")
        assert (code, err) == (0, "to stderr\n")
        assert setup.runs_counted() == 1
        assert os.read(got, 1) == b"-"   # the helper side finds the token gone: it may not run it
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(got)


def test_a_helper_hung_after_accepting_times_out_and_the_event_runs_once(setup):
    path = os.path.join(setup.dir, "mute.sock")
    pid, got = _fake_root_helper(path, take_token=None)
    try:
        _, code, _, err = setup.run("xr-echo", ["online"], XR_COUNT=setup.count,
                                    XENRULES_HELPER_SOCKET=path, XENRULES_HELPER_TIMEOUT="0.5")
        assert (code, err) == (0, "to stderr\n")
        assert setup.runs_counted() == 1
        assert os.read(got, 1) == b"-"   # the launcher hung up without sending a request
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(got)


def test_an_event_the_helper_took_is_not_run_by_the_launcher_even_if_it_hangs(setup):
    path = os.path.join(setup.dir, "took.sock")
    pid, got = _fake_root_helper(path, take_token=True)
    try:
        proc = setup.launch("xr-echo", ["online"], XR_COUNT=setup.count,
                            XENRULES_HELPER_SOCKET=path, XENRULES_HELPER_TIMEOUT="0.2")
        assert os.read(got, 1) == b"T"
        with pytest.raises(subprocess.TimeoutExpired):
            proc.communicate(timeout=2)   # well past its timeout: still waiting, not running it
        assert setup.runs_counted() == 0
        os.kill(pid, signal.SIGKILL)   # the helper dies with the event: the launcher says so
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 1 and "not run again" in err
        assert setup.runs_counted() == 0
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        os.close(got)


def _request(setup, message, fds=None):
    """Send one raw request to the real helper as a root peer; the helper's answer."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(20)
    s.connect(setup.socket)
    assert marshal.loads(s.recv(64)) == ("ready",)
    r, w = os.pipe()
    os.write(w, b"!")
    os.close(w)
    own = [os.open("/dev/null", os.O_RDWR), os.open("/", os.O_RDONLY),
           os.open("/proc/self/ns/net", os.O_RDONLY), r]
    try:
        socket.send_fds(s, [message], fds or [own[0], own[0], own[0], own[1], own[2], own[3]])
        answer = s.recv(4096)
        return marshal.loads(answer) if answer else None, os.read(r, 1)
    finally:
        for fd in own:
            os.close(fd)
        s.close()


@pytest.mark.parametrize("message", [
    marshal.dumps(5),
    marshal.dumps((2, ["xr-echo", "online"], {"XR_A": 5}, 0o22)),
    marshal.dumps((2, ["xr-echo", "online"], {"BAD=KEY": "x"}, 0o22)),
    marshal.dumps((2, [], {}, 0o22)),
    marshal.dumps((1, ["xr-echo"], {}, 0o22)),
    b"\x00garbage",
], ids=["not-a-tuple", "non-str-env-value", "env-key-with-equals", "empty-argv", "old-protocol",
        "garbage"])
def test_a_malformed_request_is_declined_and_the_helper_keeps_serving(setup, message):
    setup.start_helper()
    answer, token = _request(setup, message)
    assert answer is not None and answer[0] == "decline", answer
    assert token == b"!"   # checked before the event was taken: the launcher may run it
    pid, code, _, err = setup.run("xr-write", ["online", "vif=after"])
    assert (code, err) == (0, "")
    wait_served(setup, pid)
    assert setup.helper.poll() is None


def _run_bytes(setup, argv, env, helper=True):
    full = {k.encode(): v.encode() for k, v in setup.env.items()}
    full.update(env)
    if not helper:
        full[b"XENRULES_HELPER_SOCKET"] = b""
    proc = subprocess.run([os.path.join(setup.dir, "bin", "xr-echo").encode()] + argv, env=full,
                          stdin=subprocess.DEVNULL, capture_output=True, cwd=setup.dir, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def test_non_utf8_bytes_empty_words_and_a_large_environment_are_passed_exactly(setup):
    setup.start_helper()
    argv = [b"online", b"", b"\xff\xfe name", b"", b"caf\xc3\xa9"]
    env = {b"XR_A": b"\x80\xff bytes", b"XR_B": b"", b"XR_FDS": b"1", b"XR_CODE": b"6",
           b"\xe9T\xe9": b"\xff", **{f"XR_BIG{i}".encode(): b"x" * 1000 for i in range(100)}}
    served = _run_bytes(setup, argv, env)
    local = _run_bytes(setup, argv, env, helper=False)
    assert served == local
    assert served[0] == 6
    assert b"argv: " + os.path.join(setup.dir, "originals", "xr-echo").encode() + \
        b" online  \xff\xfe name  caf\xc3\xa9\n" in served[1]
    assert b"XR_A=\x80\xff bytes XR_B= " in served[1]
    assert len(setup.served()) == 1   # the first one went through the helper


def test_an_environment_too_large_for_one_message_still_runs_once(setup):
    setup.start_helper()
    env = {f"XR_HUGE{i}".encode(): b"y" * 100000 for i in range(12)}
    env[b"XR_COUNT"] = setup.count.encode()
    served = _run_bytes(setup, [b"online"], env)
    local = _run_bytes(setup, [b"online"], env, helper=False)
    assert served == local and served[0] == 0
    assert setup.runs_counted() == 2


def test_the_original_inherits_no_helper_fd(setup):
    setup.start_helper()
    _, code, out, _ = setup.run("xr-echo", ["online"], XR_FDS="1")
    _, code2, out2, _ = setup.run("xr-echo", ["online"], helper=False, XR_FDS="1")
    assert (code, out) == (code2, out2)
    assert len(setup.served()) == 1


def _fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def _ppid(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_two_hundred_events_leak_no_fd_zombie_or_memory(setup):
    """Idle, the main process holds 0-2, the listener and two pipes (8 fds); an idle
    supervisor 0-2, the listener, its notify pipe and its worker's socket (6)."""
    helper = setup.start_helper("--spares", "1", "--max-events", "1")
    pid, code, _, _ = setup.run("xr-write", ["online", "vif=warm"])
    assert code == 0
    wait_served(setup, pid)
    supervisor = next(p for p in session_members(helper.pid) if p != helper.pid and _ppid(p) == helper.pid)
    wait_for(lambda: (_fds(helper.pid), _fds(supervisor)) == (8, 6), "an idle helper")
    rss = (_rss_kb(helper.pid), _rss_kb(supervisor))
    for i in range(150):   # a supervisor serves 200 events, then a fresh one takes over
        _, code, _, err = setup.run("xr-write", ["online", f"vif=l{i}"])
        assert (code, err) == (0, "")
    wait_for(lambda: (_fds(helper.pid), _fds(supervisor)) == (8, 6), "the helper idle again")
    growth = (_rss_kb(helper.pid) - rss[0], _rss_kb(supervisor) - rss[1])
    assert max(growth) < 2048, growth   # kB
    for i in range(60):
        _, code, _, _ = setup.run("xr-write", ["online", f"vif=m{i}"])
        assert code == 0
    wait_for(lambda: len(setup.served()) == 211, "every event reported")
    wait_for(lambda: not os.path.exists(f"/proc/{supervisor}"), "the retired supervisor reaped")
    wait_for(lambda: len(session_members(helper.pid)) == 3, "main, a supervisor, its worker")
    wait_for(lambda: not _zombie_children(session_members(helper.pid)), "no zombie")
    wait_for(lambda: _fds(helper.pid) == 8, "the main process's fds")


def _zombie_children(parents):
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z" and int(fields[1]) in parents:
                out.append(int(name))
    return out


def test_invalid_rules_fall_back_as_in_process_and_the_helper_recovers(setup):
    setup.start_helper()
    with open(os.path.join(setup.dir, "originals", "xr-write"), "w") as f:
        f.write('#!/bin/sh\necho "original xr-write $*"\nexit 3\n')
    os.chmod(os.path.join(setup.dir, "originals", "xr-write"), 0o755)
    path = os.path.join(setup.dir, "rules", "50-test.yaml")
    with open(path, "w") as f:
        f.write("- rule: [broken\n")
    served_pid, *served = setup.run("xr-write", ["online", "vif=bad"])
    _, *local = setup.run("xr-write", ["online", "vif=bad"], helper=False)
    wait_served(setup, served_pid)
    assert served == local
    assert served[:2] == [3, "original xr-write online vif=bad\n"]
    setup.set_rule("fixed")
    pid, code, _, err = setup.run("xr-write", ["online", "vif=good"])
    assert (code, err) == (0, "")
    wait_served(setup, pid)
    assert xs_read(setup, "/test/good") == "fixed"


def test_helper_refuses_a_symlinked_socket_directory(setup):
    real = os.path.join(setup.dir, "real")
    os.mkdir(real, 0o700)
    os.symlink(real, os.path.join(setup.dir, "run"))
    proc = subprocess.run([PYTHON, "-m", "xenrules.helper", "--socket", setup.socket],
                          env=dict(setup.env, PYTHONPATH=REPO), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0 and "owned by root with mode 0700" in proc.stderr
    assert os.listdir(real) == []


def test_helper_refuses_a_socket_directory_inside_one_others_can_write(setup):
    os.chmod(setup.dir, 0o777)   # anyone could rename run/ away and put their own in its place
    os.mkdir(os.path.dirname(setup.socket), 0o700)
    proc = subprocess.run([PYTHON, "-m", "xenrules.helper", "--socket", setup.socket],
                          env=dict(setup.env, PYTHONPATH=REPO), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0 and "writable by others than root" in proc.stderr
    assert not os.path.exists(setup.socket)


def test_a_socket_planted_at_the_path_is_replaced_by_the_helpers_own(setup):
    os.mkdir(os.path.dirname(setup.socket), 0o700)
    planted = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    planted.bind(setup.socket)
    os.chown(setup.socket, 65534, 65534)
    os.chmod(setup.socket, 0o666)
    try:
        setup.start_helper()
        wait_for(lambda: os.stat(setup.socket).st_uid == 0, "the helper's socket")
        st = os.stat(setup.socket)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)
        pid, code, _, _ = setup.run("xr-write", ["online", "vif=p"])
        assert code == 0
        wait_served(setup, pid)
    finally:
        planted.close()


def test_a_peer_that_sends_more_then_goes_still_has_its_event_stopped(setup):
    """Stray data after the request must not blind the supervisor to the peer's end."""
    setup.start_helper()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(20)
    s.connect(setup.socket)
    assert marshal.loads(s.recv(64)) == ("ready",)
    r, w = os.pipe()
    os.write(w, b"!")
    os.close(w)
    own = [os.open("/dev/null", os.O_RDWR), os.open(setup.dir, os.O_RDONLY),
           os.open("/proc/self/ns/net", os.O_RDONLY), r]
    env = dict(setup.env, XR_COUNT=setup.count, XR_SLEEP="60")
    request = marshal.dumps((2, [os.path.join(setup.dir, "bin", "xr-echo"), "online"], env, 0o22))
    try:
        socket.send_fds(s, [request], [own[0], own[0], own[0], own[1], own[2], own[3]])
        wait_for(lambda: setup.runs_counted() == 1, "the script to start")
        with open(setup.count) as f:
            script_pid = int(f.read().split()[0])
        s.send(b"stray")
        s.close()
        wait_for(lambda: not alive(script_pid), "the script to be killed")
    finally:
        for fd in own:
            os.close(fd)
        s.close()


def test_log_timestamps_use_the_launchers_time_zone(setup):
    setup.start_helper()
    log = setup.env["XENRULES_LOG_FILE"]
    before = time.gmtime()
    pid, code, _, _ = setup.run("xr-write", ["online", "vif=tz"], TZ="XRT-13",
                                XENRULES_LOG_LEVEL="debug")
    after = time.gmtime()
    assert code == 0
    wait_served(setup, pid)
    with open(log) as f:
        lines = [line for line in f if "xr-write" in line]   # this event's only
    assert lines
    hours = {f"{(t.tm_hour + 13) % 24:02d}" for t in (before, after)}
    assert {line.split()[1].split(":")[0] for line in lines} <= hours, (lines, hours)


@pytest.mark.parametrize("timeout", ["inf", "nan", "-1", "0", "1e400"])
def test_a_helper_timeout_that_is_not_a_usable_number_runs_the_event_in_process(setup, timeout):
    path = os.path.join(setup.dir, "mute-%s.sock" % timeout)
    pid, got = _fake_root_helper(path, take_token=None)
    try:
        _, code, _, err = setup.run("xr-echo", ["online"], XR_COUNT=setup.count,
                                    XENRULES_HELPER_SOCKET=path, XENRULES_HELPER_TIMEOUT=timeout)
        assert (code, err) == (0, "to stderr\n")   # no OverflowError traceback, no wait forever
        assert setup.runs_counted() == 1
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(got)


# -- --profile: where the helper's time goes (xenrules/phases.py) ------------------

def profile_lines(path):
    try:
        with open(path) as f:
            return [line for line in f.read().splitlines()]
    except FileNotFoundError:
        return []


def test_profile_writes_one_line_per_event_with_every_phase(setup):
    import json
    from xenrules.phases import PHASES
    profile = os.path.join(setup.dir, "phases-w10.jsonl")
    setup.start_helper("--profile", profile)
    pids = []
    for i in range(3):
        pid, code, _, err = setup.run("xr-write", ["online", f"vif=p{i}"])
        assert code == 0, err
        pids.append(pid)
    wait_for(lambda: len(profile_lines(profile)) >= 3, "three profile lines")
    lines = [json.loads(line) for line in profile_lines(profile)]
    assert sorted(line["pid"] for line in lines) == sorted(pids)
    for line in lines:
        assert line["script"] == "xr-write" and line["command"] == "online"
        assert sorted(line["phases"]) == sorted(PHASES)
        assert all(isinstance(v, float) and v >= 0 for v in line["phases"].values()), \
            json.dumps(line)
        assert line["phases"]["xenstore"] > 0, line   # the rule writes a key: timed
        assert line["served_ms"] >= line["phases"]["event_run"]


def test_without_profile_the_helper_writes_no_profile(setup):
    setup.start_helper()
    setup.run("xr-write", ["online", "vif=warm"])   # a first event: state files exist
    wait_for(lambda: len(setup.served()) == 1, "the first event")
    before = {os.path.join(d, f) for d, _, files in os.walk(setup.dir) for f in files}
    pid, code, _, err = setup.run("xr-write", ["online", "vif=q"])
    assert code == 0, err
    wait_served(setup, pid)
    after = {os.path.join(d, f) for d, _, files in os.walk(setup.dir) for f in files}
    assert after - before == set()
