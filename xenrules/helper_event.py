"""One event in the warm helper: a pre-forked supervisor and its worker.

The helper keeps a few spares ready, each a supervisor blocked in accept()
with its worker already forked and waiting, so an event pays no fork on its
critical path. A supervisor serves events one after the other (a fresh
worker for each, forked before the next accept). For each event it:

1. accepts one connection, tells the helper (which forks a new spare),
   checks the peer is uid 0 (SO_PEERCRED) and says "ready";
2. receives the request; checks it is well formed and that the launcher is
   in the helper's network namespace, else declines (nothing ran); takes
   the event's token (if the launcher took it back, it runs the event and
   the supervisor does nothing);
3. hands argv, environment, umask, the fds 0/1/2, cwd and the connection to
   the worker, which runs the event and sends the exit status to the
   launcher itself (after telling the supervisor it is done);
4. if the worker exits without saying so (it exec'd the original script,
   or died), sends its wait status; if the connection ends first (libxl
   killed the launcher), kills the worker's process group.

The worker is its own process group and dies with its supervisor
(PR_SET_PDEATHSIG). See helper.py for the conversation.
"""
import marshal
import os
import signal
import socket
import struct
import sys
import time

from . import phases

PROTOCOL = 2
FDS = 6                    # stdin, stdout, stderr, cwd, network namespace, token
MAX_MESSAGE = 1 << 20      # argv + environment; a hotplug env is a few KB
REQUEST_TIMEOUT = 10.0     # a client that connects and says nothing
PR_SET_PDEATHSIG = 1

_prctl = None              # libc's prctl, looked up once by prepare()
_own_ns = None             # the helper's network namespace (dev, ino): it never changes


def prepare():
    """In the helper, before any fork: what spares need without paying per event."""
    global _prctl, _own_ns
    own = os.stat("/proc/self/ns/net")
    _own_ns = (own.st_dev, own.st_ino)
    import ctypes
    try:
        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        _prctl = None


def log(message):
    os.write(2, f"xenrules-helper[{os.getpid()}]: {message}\n".encode("utf-8", "replace"))


def die_with_parent(sig):
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


EVENTS_PER_SPARE = 200   # then a supervisor exits and the helper forks a fresh one


def spare(listener, notify_fd, stats, helper, profile=None):
    """A forked supervisor of the helper (pid `helper`): serve events one at a
    time, each with a worker forked in advance. Returns an exit code. Tells the
    helper (notify_fd) when it turns busy (its pid) and idle again (minus its pid).
    profile: the --profile file (phases.py), or None."""
    die_with_parent(signal.SIGTERM)   # the loop's getppid() check covers a death before this
    for _ in range(EVENTS_PER_SPARE):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)   # idle: a stopping helper ends us
        if os.getppid() != helper:
            return 0   # the helper is gone: take no new event
        marks = None
        if profile is not None:
            marks = {"fork": phases.now()}
        here, worker = _fork_worker(listener, notify_fd, profile)
        if marks is not None:
            marks["forked"] = phases.now()
        while True:
            try:
                conn, _ = listener.accept()
                if marks is not None:
                    marks["accepted"] = phases.now()
                break
            except InterruptedError:
                continue
            except OSError:
                return 1
        # Busy: an event in flight outlives a helper restart (systemd: KillMode=mixed).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.write(notify_fd, struct.pack("i", os.getpid()))
        try:
            supervise(conn, here, worker, stats, profile, marks)
        finally:
            conn.close()
            here.close()   # a worker still waiting for an event reads EOF and exits
            try:
                os.waitpid(worker, 0)
            except ChildProcessError:
                pass   # supervise reaped it
        os.write(notify_fd, struct.pack("i", -os.getpid()))
    return 0


def _fork_worker(listener, notify_fd, profile=None):
    here, there = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    supervisor = os.getpid()
    worker = os.fork()
    if worker == 0:
        code = 1
        try:
            here.close()
            listener.close()
            os.close(notify_fd)
            code = worker_main(there, supervisor, profile is not None)
        finally:
            os._exit(code)
    there.close()
    try:
        os.setpgid(worker, worker)   # the worker does it too: whoever runs first
    except OSError:
        pass
    return here, worker


def _decline(conn, why):
    try:
        conn.send(marshal.dumps(("decline", why)))
    except OSError:
        pass
    return 0


def supervise(conn, here, worker, stats, profile=None, marks=None):
    """Steps 1-4 above for the accepted connection (marks: phases.py's stamps, if profiling)."""
    _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    if uid != 0:
        log(f"refused a client with uid {uid} (pid {_pid}): root only")
        return 0
    conn.settimeout(REQUEST_TIMEOUT)
    fds = []
    try:
        conn.send(marshal.dumps(("ready",)))
        if marks is not None:
            marks["ready"] = phases.now()
        data, fds, _flags, _addr = socket.recv_fds(conn, MAX_MESSAGE, FDS)
        if marks is not None:
            marks["received"] = phases.now()
    except (OSError, ValueError):
        return 1   # the launcher went, or sent garbage: it has not committed
    try:
        if not data:
            return 0   # the launcher gave up waiting and runs the event itself
        why = _hand_over(data, fds, here, conn, marks)
        if why:
            return _decline(conn, why)
    except Exception as e:   # whatever went wrong, nothing ran: the launcher runs it
        return _decline(conn, f"cannot take the event: {e!r}")
    finally:
        for fd in fds:
            os.close(fd)
    status, usage, told = _wait(conn, worker, here)
    if status is None:
        return 0   # the launcher is gone: the worker is killed, nobody to tell
    if not told:
        _tell(conn, status)
    if stats:
        _record(stats, _pid, usage)
    if marks is not None:
        marks["reaped"] = _reaped
        try:   # the worker's second message: when the launcher had its status
            here.setblocking(False)
            marks["w_sent"], = struct.unpack("q", here.recv(8))
        except (OSError, struct.error):
            pass
        phases.record(profile, marks, told, _pid, marks.get("argv", []))
    return 0


def _c_string(value):
    return isinstance(value, str) and "\0" not in value


def _hand_over(data, fds, here, conn, marks=None):
    """Check the request and give it to the worker; a reason to decline, or None."""
    request = marshal.loads(data)
    if not (isinstance(request, tuple) and len(request) == 4 and request[0] == PROTOCOL
            and len(fds) == FDS):
        return f"not a protocol {PROTOCOL} request with {FDS} fds"
    _version, argv, env, umask = request
    if not (isinstance(argv, list) and argv and all(_c_string(a) for a in argv)
            and isinstance(env, dict) and isinstance(umask, int) and 0 <= umask <= 0o777
            and all(_c_string(k) and k and "=" not in k and _c_string(v) for k, v in env.items())):
        return "malformed request"   # what no exec'd launcher can have sent
    ns = os.fstat(fds[4])
    own = _own_ns
    if own is None:   # prepare() not called (a test driving supervise directly)
        st = os.stat("/proc/self/ns/net")
        own = (st.st_dev, st.st_ino)
    if (ns.st_dev, ns.st_ino) != own:
        return "another network namespace"
    os.set_blocking(fds[5], False)
    try:
        if os.read(fds[5], 1) == b"":
            return "the launcher took the event back"   # it runs it: not here too
    except BlockingIOError:
        return "the launcher took the event back"
    # Ours now: declining after this point still means "nothing ran".
    if marks is not None:   # before the send: the worker may run at once
        marks["argv"] = argv[:2]
        marks["handed"] = phases.now()
    socket.send_fds(here, [marshal.dumps((argv, env, umask))], fds[:4] + [conn.fileno()])
    return None


def _tell(conn, status):
    try:
        conn.send(marshal.dumps(("exit", status)))
    except OSError:
        pass


def _wait(conn, worker, here):
    """(wait status, rusage, told) of the worker; (None, None, False) if the launcher went first.

    `told`: the worker's "done" message (it has sent, or is sending, the
    status to the launcher; with --profile, its stamps follow): from then the
    connection's end means nothing.
    """
    global _reaped
    import select
    pidfd = os.pidfd_open(worker)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(here.fileno(), select.POLLIN)
    poller.register(conn.fileno(), select.POLLIN | select.POLLHUP)
    conn.setblocking(False)
    told = False
    try:
        while True:
            ready = dict(poller.poll())
            if here.fileno() in ready:   # first: "done" is sent before the launcher can go
                told = here.recv(65536) or False
                if told:
                    poller.unregister(conn.fileno())
                poller.unregister(here.fileno())
            if pidfd in ready:
                _, status, usage = os.wait4(worker, 0)
                _reaped = time.monotonic_ns()
                return status, usage, told
            if conn.fileno() in ready and not told:
                try:
                    gone = conn.recv(64) == b""
                except BlockingIOError:
                    gone = False
                except OSError:
                    gone = True
                if gone:
                    # libxl killed the launcher (timeout): stop the event's work too
                    try:
                        os.killpg(worker, signal.SIGKILL)
                    except OSError:
                        pass
                    os.wait4(worker, 0)
                    return None, None, False
                # stray data: read and ignored; its end (POLLHUP, EOF) still stops the event
    finally:
        os.close(pidfd)


_reaped = 0          # when _wait reaped the worker (phases.py)
_last_usage = None   # this supervisor's CPU at its previous report


def _record(path, peer_pid, usage):
    """One line per event for the benchmark: the helper side's CPU and peak RSS.

    The worker's rusage (from wait4), then the supervisor's own CPU since its
    previous report (forking this worker, accepting, supervising) and its
    peak RSS. With the helper main process's CPU, that is all the helper spends.
    """
    import resource
    global _last_usage
    me = resource.getrusage(resource.RUSAGE_SELF)
    u0, s0 = (_last_usage.ru_utime, _last_usage.ru_stime) if _last_usage else (0.0, 0.0)
    _last_usage = me
    line = (f"{peer_pid} {usage.ru_utime:.6f} {usage.ru_stime:.6f} {usage.ru_maxrss} "
            f"{me.ru_utime - u0:.6f} {me.ru_stime - s0:.6f} {me.ru_maxrss}\n")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError:
        pass


def worker_main(there, supervisor, profile=False):
    """The pre-forked worker: wait for the event from the supervisor, run it."""
    os.setpgid(0, 0)
    die_with_parent(signal.SIGKILL)
    if os.getppid() != supervisor:
        return 1   # it died before PR_SET_PDEATHSIG took effect
    # What no event changes, done now while idle rather than after the request:
    # the signal dispositions a fresh interpreter has.
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if profile:
        phases.instrument()
    try:
        data, fds, _flags, _addr = socket.recv_fds(there, MAX_MESSAGE, 5)
    except OSError:
        return 1
    if profile:
        phases.worker_marks["w_recv"] = phases.now()
    if not data or len(fds) != 5:
        for fd in fds:
            os.close(fd)
        return 0   # the supervisor ended without an event
    argv, env, umask = marshal.loads(data)
    conn = socket.socket(fileno=fds.pop())
    conn.set_inheritable(False)     # received fds are inheritable: not for the event's children
    run_event(argv, env, umask, fds, there, conn, profile)
    return 1


def run_event(argv, env, umask, fds, done, conn, profile=False):
    """Become the launcher's process, run the event, exit with its status.
    (worker_main has reset the signal dispositions while it waited.)"""
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
    os.fchdir(fds[3])
    for fd in fds:
        if fd > 2:
            os.close(fd)
    os.umask(umask)
    same_tz = env.get("TZ") == os.environ.get("TZ")
    # os.environ becomes env (putenv too: subprocesses and an exec'd original see
    # it), by difference: clear() is quadratic (popitem lists the keys each time).
    environ = os.environ
    for key in [k for k in environ if k not in env]:
        del environ[key]
    for key, value in env.items():
        if environ.get(key) != value:
            environ[key] = value
    if not same_tz:
        time.tzset()           # log timestamps in the launcher's TZ, as a fresh interpreter's
    sys.argv = list(argv)
    code = 1
    if profile:
        phases.worker_marks["w_start"] = phases.now()
    try:
        from .hotplug import handle
        code = handle(argv[0], argv[1:], dict(env))
    except SystemExit as e:   # what the launcher's sys.exit would have made of it
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            sys.stderr.write(f"{e.code}\n")
            code = 1
    except BaseException:
        import traceback
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    code = code if isinstance(code, int) else 1
    message = b"done"
    if profile:
        phases.worker_marks["w_ran"] = phases.now()
        message = phases.worker_message()
    try:   # the supervisor first: then the launcher's exit is no reason to kill us
        done.send(message)
    except OSError:
        pass
    try:
        conn.send(marshal.dumps(("exit", (code & 0xff) << 8)))   # a wait status
    except OSError:
        pass
    if profile:
        try:   # the moment the launcher has its status, for the supervisor's record
            done.send(struct.pack("q", phases.now()))
        except OSError:
            pass
    os._exit(code)
