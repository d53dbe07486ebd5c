"""The event-wide deadline: every event ends, done or reverted, before libxl's 40 s.

libxl SIGKILLs a hotplug script that runs past 40 s; by then a revert that
never ran leaves the device half-done (the journal repairs it later, but the
guest start failed with no message). So each event gets one Budget
(`deadline` in the settings file, XENRULES_DEADLINE overrides; default 30 s),
and every wait of the event -- a XenStore request, a flock, a subprocess, a
hook -- waits at most min(its own timeout, what the budget has left).

The budget has three phases, so a stall in the steps still leaves time to
undo them and to tell libxl why:
  steps   until  end - reserve            (reserve: a sixth of the deadline, at most 5 s)
  revert  until  end - reserve / 4        (the engine calls reverting())
  report  until  end                      (hotplug-error and hotplug-status: reporting())
A wait cut short by the budget raises an error naming what it waited for
("... no reply; the event deadline of 30 s passed").

One budget per process, module-level: an event is one process (in-process,
or one warm-helper worker per event), and the XenStore clients, lock waits
and subprocess runs deep in the steps reach it without a parameter on every
call. Outside an event (xenrules recover, the helper's start) there is none,
and each wait keeps its own timeout.
"""
import os
import time

from .errors import DeadlineError

DEFAULT = 30
LOWEST, HIGHEST = 1, 39          # 40 is libxl's timeout: the event must end before it
ENV = "XENRULES_DEADLINE"
KEY = "deadline"

_current = None


class Budget:
    """The time one event has left; monotonic, so clock changes do not matter."""

    def __init__(self, seconds, clock=time.monotonic):
        self.seconds = seconds
        self.clock = clock
        self.started = clock()
        self.end = self.started + seconds
        reserve = min(5.0, seconds / 6)
        self._ends = {"steps": self.end - reserve, "revert": self.end - reserve / 4,
                      "report": self.end}
        self.phase = "steps"

    def phase_end(self):
        return self._ends[self.phase]

    def left(self):
        """Seconds left in the current phase (0 when it is over)."""
        return max(0.0, self.phase_end() - self.clock())

    def expired(self):
        return self.clock() >= self.phase_end()

    def reverting(self):
        """The steps failed: the revert gets the time up to its own end."""
        if self.phase == "steps":
            self.phase = "revert"

    def reporting(self):
        self.phase = "report"

    def why(self):
        if self.phase == "steps":
            return f"the event deadline of {self.seconds:g} s passed"
        return f"the event deadline of {self.seconds:g} s passed (in its {self.phase} reserve)"


def start(seconds):
    """Begin the budget of this process's event."""
    global _current
    _current = Budget(seconds)
    return _current


def stop():
    global _current
    _current = None


def current():
    return _current


def wait_until(own_deadline):
    """(when a wait must end, whether that is the event's budget rather than its own)."""
    if _current is None:
        return own_deadline, False
    end = _current.phase_end()
    return (end, True) if end < own_deadline else (own_deadline, False)


def seconds(own):
    """(seconds a wait may take, whether the budget cut it short)."""
    if _current is None:
        return own, False
    left = _current.left()
    return (left, True) if left < own else (own, False)


def check(what):
    """Refuse to begin `what` when the budget is used up."""
    if _current is not None and _current.expired():
        raise DeadlineError(f"{what}: not started, {_current.why()}")


def why():
    return _current.why() if _current is not None else "its time was up"


def parse(text, where):
    """The deadline from hostile text: a number of seconds in [LOWEST, HIGHEST]
    (no blanks or newlines around it: the settings file strips its own)."""
    try:
        if not (text.isascii() and text.replace(".", "", 1).isdigit()):
            raise ValueError
        value = float(text)
    except ValueError:
        raise DeadlineError(f"{where}: deadline {text[:40]!r} is not a number of seconds") from None
    if not LOWEST <= value <= HIGHEST:
        raise DeadlineError(f"{where}: deadline {text!r} is outside {LOWEST}..{HIGHEST} s "
                            f"(libxl kills a hotplug script after 40 s)")
    return value


def from_env(env):
    """XENRULES_DEADLINE, else the settings file's `deadline`, else 30. A bad
    environment value is refused (the caller made a mistake it must see); a
    bad settings-file value is the default (`xenrules check` warns about it)."""
    text = env.get(ENV)
    if text is not None and text != "":
        return parse(text, ENV)
    from .config import conf_value
    text = conf_value(env, KEY)
    if text:
        try:
            return parse(text, "settings file")
        except DeadlineError:
            pass
    return float(DEFAULT)


def kill_group(proc):
    """SIGKILL the process group of a child started with start_new_session, and
    reap the child: nothing it started keeps running, no zombie stays."""
    import signal   # not at the top: signal.py builds enums, and most events run nothing
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run(argv, what, timeout, input=None, env=None, stderr=None):
    """subprocess.run for the steps: its own session, at most min(timeout, the
    budget), the whole group killed when time is up. Raises DeadlineError when
    the budget ended it, subprocess.TimeoutExpired when its own timeout did."""
    import subprocess
    wait, cut = seconds(timeout)
    if cut and wait <= 0:
        raise DeadlineError(f"{what}: not started, {why()}")
    stdin = subprocess.PIPE if input is not None else subprocess.DEVNULL
    proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE if stderr is None else stderr,
                            text=True, errors="replace", env=env, start_new_session=True)
    try:
        out, err = proc.communicate(input, timeout=wait)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()   # a daemon that left the group may hold the other end
        if cut:
            raise DeadlineError(f"{what}: still running after {wait:.1f} s, killed; "
                                f"{why()}") from None
        raise
    except BaseException:
        kill_group(proc)
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)
