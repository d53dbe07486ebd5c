"""Where the warm helper's time goes, per event (xenrules helper --profile FILE).

The supervisor and its worker each stamp the moments an event passes
(CLOCK_MONOTONIC: one clock for both processes); the worker sends its stamps
with its "done", and the supervisor, once it reaped the worker, appends one
JSON line per event to FILE: {"pid": launcher pid, "script": ..., "phases":
{name: ms}}. Nothing here runs unless --profile is given: the event path
only tests `profile is None`.

The phases, in the order an event passes them:

    fork_worker   the supervisor forks the event's worker (before accept)
    accept        accept returned -> peer checked, helper told, "ready" sent
    receive       "ready" sent -> request and fds received (the launcher's send)
    hand_over     request checked (namespace, token)
    worker_wake   sent to the worker, which wakes and receives it
    worker_setup  the worker becomes the launcher's process: fds 0-2, cwd, environment
    event_run     the event itself, less the two below
    xenstore      its XenStore round trips
    log_write     its log records (syslog and the log file)
    status_send   flush, "done" to the supervisor, exit status to the launcher
    worker_exit   the worker's exit until the supervisor reaped it
"""
import marshal
import os
import time

PHASES = ("fork_worker", "accept", "receive", "hand_over", "worker_wake", "worker_setup",
          "event_run",
          "xenstore", "log_write", "status_send", "worker_exit")

now = time.monotonic_ns

# The worker's stamps and the time its event spent in XenStore and the log.
worker_marks = {}
_spent = {"xenstore": 0, "log_write": 0}


def _timed(function, key):
    def wrapper(*args, **kwargs):
        t0 = now()
        try:
            return function(*args, **kwargs)
        finally:
            _spent[key] += now() - t0
    return wrapper


def instrument():
    """In the worker, only when profiling: time XenStore requests and log records."""
    from .log import Log
    from .xenstore import XenStore
    XenStore._request = _timed(XenStore._request, "xenstore")
    Log.__call__ = _timed(Log.__call__, "log_write")


def worker_message():
    """What the profiling worker sends the supervisor as its "done"."""
    return b"done" + marshal.dumps((worker_marks, _spent))


def _ms(ns):
    return round(ns / 1e6, 4)


def record(path, marks, done, peer_pid, argv):
    """Append the event's line; marks: the supervisor's stamps, done: the worker's message."""
    try:
        w, spent = marshal.loads(done[4:]) if done and len(done) > 4 else ({}, {})
        m = {**marks, **w}
        inside = spent.get("xenstore", 0) + spent.get("log_write", 0)
        phases = {
            "fork_worker": m["forked"] - m["fork"],
            "accept": m["ready"] - m["accepted"],
            "receive": m["received"] - m["ready"],
            "hand_over": m["handed"] - m["received"],
            "worker_wake": m["w_recv"] - m["handed"],
            "worker_setup": m["w_start"] - m["w_recv"],
            "event_run": m["w_ran"] - m["w_start"] - inside,
            "xenstore": spent.get("xenstore", 0),
            "log_write": spent.get("log_write", 0),
            "status_send": m["w_sent"] - m["w_ran"],
            "worker_exit": m["reaped"] - m["w_sent"],
        }
    except (KeyError, ValueError, TypeError, EOFError):
        return   # the worker exec'd the original or died: no stamps of its own
    import json
    line = {"pid": peer_pid, "script": os.path.basename(argv[0]) if argv else "",
            "command": argv[1] if len(argv) > 1 else "",
            "phases": {k: _ms(v) for k, v in phases.items()},
            "served_ms": _ms(m["w_sent"] - m["accepted"])}
    try:   # one write(2) with O_APPEND: lines of concurrent events never interleave
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (json.dumps(line) + "\n").encode())
        finally:
            os.close(fd)
    except OSError:
        pass
