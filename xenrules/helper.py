"""The warm helper: runs hotplug events for xenrules-launcher, pre-loaded.

A launcher process costs a bare interpreter start (~10 ms); importing
pyroute2 costs 150-300 ms more. The helper pays that once: it imports the
event path (pyroute2, every step module of the rules), keeps the
compiled rules in memory, and serves each event in pre-forked processes.

    python3 -m xenrules.helper [--socket PATH] [--stats FILE] [--profile FILE]
    xenrules helper ...           (the same)
    systemd: xenrules-helper.socket + xenrules-helper.service (socket activation)

The conversation (unix SOCK_SEQPACKET, each message marshal-encoded):

    helper -> launcher   ("ready",)               (a supervisor accepted)
    launcher -> helper   (PROTOCOL, argv, env, umask) + fds 0, 1, 2, cwd, netns, token
    helper -> launcher   ("decline", why)          (nothing ran)
                      or ("exit", wait status)     (the event ran)

"Never twice": the launcher waits for "ready" with a timeout; if none
comes (helper hung or overloaded), it closes the connection and runs the
event in-process, and the helper side, reading EOF instead of a request,
does nothing. The token (a pipe holding one byte) decides who runs an event
once requested: the supervisor reads it before handing the event to its
worker; the launcher reads it only if no answer comes in time (or the
helper goes), and runs the event itself only if it got the byte, or after a
"decline" (nothing ran). helper_event.py serves one event.

Safety: the socket lives in a root-only directory (0700) with mode 0600,
every peer must be uid 0 (SO_PEERCRED), and the launcher checks that the
helper is uid 0 as well. An event from another network namespace than the
helper's is declined (the launcher runs it in-process). The rules are never
stale: every event checks the rule files' fingerprint, as in-process.
"""
import os
import select
import signal
import socket
import struct
import sys

from . import helper_event
from .helper_event import log

DEFAULT_SOCKET = "/run/xenrules/helper.sock"
SPARES = 2          # idle supervisors: a burst's first events wait for no fork
MAX_EVENTS = 16     # supervisors at most (events at once); more wait in the listen backlog


def listener_from_systemd():
    """The socket systemd passed (LISTEN_FDS), or None."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return socket.socket(fileno=3)


def bind(path):
    """Listen on path, in a directory only root can enter; socket mode 0600."""
    import stat
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    st = os.lstat(directory)   # not a symlink: whoever owns the link's directory could swap it
    if st.st_uid != 0 or st.st_mode & 0o077 or not stat.S_ISDIR(st.st_mode):
        raise SystemExit(f"xenrules-helper: {directory} must be a directory owned by root with "
                         f"mode 0700 (is uid {st.st_uid}, mode {st.st_mode & 0o177777:o})")
    # Nobody but root may rename or replace it: every directory above is root's,
    # and writable by others only if sticky (/tmp).
    parent = os.path.dirname(directory)
    while True:
        st = os.stat(parent)
        if st.st_uid != 0 or (st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX):
            raise SystemExit(f"xenrules-helper: {parent} is writable by others than root "
                             f"(uid {st.st_uid}, mode {st.st_mode & 0o7777:o})")
        if parent == os.path.dirname(parent):
            break
        parent = os.path.dirname(parent)
    # Bound under a temporary name and renamed once listening: the path never
    # refuses connections, and a stale socket of a helper that died is replaced.
    tmp = f"{path}.{os.getpid()}"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    old = os.umask(0o177)
    try:
        sock.bind(tmp)
    finally:
        os.umask(old)
    os.chmod(tmp, 0o600)
    sock.listen(1024)   # a boot burst connects hundreds at once
    os.rename(tmp, path)
    return sock


def warm_up(env):
    """Import everything an event may need and prime the rule memo; returns the config."""
    from . import hotplug, ruleset   # noqa: F401  (the whole in-process path)
    from .config import Config, load_conf
    from .log import NullLog
    from .steps import all_step_types
    config = Config(env)
    load_conf(env)     # the settings file, read once: events then pay no read for it
    try:
        all_step_types()   # every step module, so no event imports one
    except Exception as e:   # a broken step module fails its events, not the helper
        log(f"cannot import every step module: {e!r}")
    try:
        ruleset.prime(config, NullLog())
    except Exception as e:   # invalid rules: events fall back, the helper still serves
        log(f"rules do not load yet: {e}")
    # What steps and the XenStore client import lazily: the point of the helper.
    from .runtime import iproute_class
    iproute_class()
    # pyxs: nothing on the event path imports it (xenstore.py speaks the protocol),
    # yet measured (bench/phases.py), dropping it made each worker's fork and exit
    # 0.15-0.3 ms slower and events no faster: kept until that is understood.
    import pyxs.connection, pyxs._internal, pyxs.exceptions, pyxs.helpers   # noqa: F401,E401
    import subprocess, tempfile, traceback   # noqa: F401,E401
    from . import locking, xenstore   # noqa: F401,E401
    helper_event.prepare()
    return config


def recover(config):
    """Before serving: undo what events killed while no helper ran left half-done."""
    from .log import Log
    from .recovery import recover_all
    try:
        replayed, left, failures = recover_all(
            config, dict(os.environ), Log("xenrules-helper", config.log_level, config.log_file),
            out=lambda line: log(f"recover: {line}"))
    except Exception as e:   # the journal is the events' business too: serve anyway
        log(f"cannot recover the journals: {e}")
        return
    if replayed or left or failures:
        log(f"recovered {replayed} journal(s), {left} left alone, {len(failures)} undo(s) failed")


class Pool:
    """Keeps SPARES idle supervisors (each with its worker), at most MAX_EVENTS in all.

    Supervisors are reused (helper_event.spare); after a burst up to
    MAX_EVENTS of them stay, idle, until the helper stops."""

    def __init__(self, listener, config, stats, spares=SPARES, max_events=MAX_EVENTS,
                 profile=None):
        self.listener = listener
        self.config = config
        self.stats = stats
        self.profile = profile
        self.spares = spares
        self.max_events = max_events
        self.state = {}   # pid -> "idle" | "busy"
        self.notify_r, self.notify_w = os.pipe()
        self.wake_r, self.wake_w = os.pipe()

    def idle(self):
        return sum(1 for s in self.state.values() if s == "idle")

    def refill(self):
        from . import ruleset
        from .log import NullLog
        while self.idle() < self.spares and len(self.state) < self.max_events:
            try:   # spares start with the current rules: a stat per file, no parse
                ruleset.prime(self.config, NullLog())
            except Exception:
                pass
            helper_pid = os.getpid()
            try:
                pid = os.fork()
            except OSError as e:
                log(f"cannot fork a spare: {e}")
                return
            if pid == 0:
                code = 1
                try:
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    for fd in (self.notify_r, self.wake_r, self.wake_w):
                        os.close(fd)
                    code = helper_event.spare(self.listener, self.notify_w, self.stats, helper_pid,
                                              self.profile)
                finally:
                    os._exit(code)
            self.state[pid] = "idle"

    def serve(self):
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)   # SIGCHLD wakes the poll below
        signal.signal(signal.SIGCHLD, lambda *_: None)
        import gc
        gc.freeze()   # forked children do not copy the warm heap on their first collection
        poller = select.poll()
        poller.register(self.notify_r, select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        while True:
            self.refill()
            for fd, _ in poller.poll():
                data = os.read(fd, 4096)
                if fd == self.notify_r:   # pid: busy; -pid: idle again
                    for (pid,) in struct.iter_unpack("i", data[:len(data) - len(data) % 4]):
                        if abs(pid) in self.state:
                            self.state[abs(pid)] = "busy" if pid > 0 else "idle"
            self.reap()

    def reap(self):
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.state.pop(pid, None)


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(prog="xenrules helper", description=__doc__.split("\n\n")[0])
    ap.add_argument("--socket", default=os.environ.get("XENRULES_HELPER_SOCKET") or DEFAULT_SOCKET,
                    help="the socket to listen on, unless systemd passes one (default "
                         f"$XENRULES_HELPER_SOCKET or {DEFAULT_SOCKET})")
    ap.add_argument("--spares", type=int, default=SPARES, help=f"idle pre-forked pairs ({SPARES})")
    ap.add_argument("--max-events", type=int, default=MAX_EVENTS,
                    help=f"events served at once ({MAX_EVENTS})")
    ap.add_argument("--stats", metavar="FILE",
                    help="append the CPU and peak RSS of each event's processes (benchmarks)")
    ap.add_argument("--profile", metavar="FILE",
                    help="append one JSON line per event: the milliseconds of each phase "
                         "(accept, receive, fork, worker setup, event, XenStore, log, "
                         "status, exit; see bench/phases.py)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        sys.stderr.write("xenrules-helper: must run as root\n")
        return 1
    if args.spares < 1 or args.max_events < args.spares:
        ap.error("need 1 <= --spares <= --max-events")
    config = warm_up(os.environ)
    recover(config)
    listener = listener_from_systemd()
    if listener is None:
        listener = bind(args.socket)
        log(f"serving on {args.socket}")   # getsockname() would give the name it was bound under
    else:
        log("serving on the socket systemd passed")
    try:
        Pool(listener, config, args.stats, args.spares, args.max_events,
             args.profile).serve()
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
