"""What steps act through: netlink, XenStore, locks and the log of one event.

Connections open on first use only: an event whose rule never touches a
link does not pay for importing pyroute2.
"""
import os

from .errors import StepError

# Test-only: stop points are honoured only with XENRULES_TEST_HOOKS=1 (see test_point).
TEST_SWITCH = "XENRULES_TEST_HOOKS"


class Runtime:
    def __init__(self, config, event, log, xenstore=None, journal=None):
        self.config = config
        self.event = event
        self.log = log
        self.context = None       # set by the engine once the rule is chosen
        self._xenstore = xenstore
        self._netlink = None
        self.locks = {}
        self.lock_dir = config.lock_dir
        self.journal = journal    # the device's journal.Journal (None: nothing to journal)
        self._step = None         # (n, step) being applied, for note()
        env = event.env if event is not None else {}
        self._test_points = {}
        if env.get(TEST_SWITCH) == "1":
            for verb in ("kill", "stop", "raise"):
                for point in env.get(f"XENRULES_TEST_{verb.upper()}_AT", "").split(","):
                    if point:
                        self._test_points[point] = verb

    def test_point(self, name):
        """TEST ONLY: with XENRULES_TEST_HOOKS=1, XENRULES_TEST_KILL_AT=POINT[,...]
        makes the event SIGKILL itself at POINT, XENRULES_TEST_STOP_AT SIGSTOP
        itself (for a test to kill it from outside), XENRULES_TEST_RAISE_AT raises
        a RuntimeError there (a bug in a step, as the error path sees it). Points: before:N (step N
        not begun), apply:N (its journal record written), after:N (applied),
        undo:N (a revert or replay about to undo step N), end (every step done,
        the journal not yet removed), and points inside steps (loop.attached)."""
        verb = self._test_points.get(name)
        if verb == "raise":
            raise RuntimeError(f"raised by XENRULES_TEST_RAISE_AT={name}")
        if verb:
            import signal
            os.kill(os.getpid(), signal.SIGKILL if verb == "kill" else signal.SIGSTOP)

    def journal_step(self, n, step, where):
        """Record step n (its type, arguments, undo record) before it applies."""
        self._step = (n, step)
        journal = self.journal
        if journal is None:
            return
        if not journal.started:
            journal.acquire()
            journal.start({"v": 1, "event": self.event.describe(), "pid": os.getpid(),
                           "key": journal.key, "xenstore": os.environ.get("XENSTORED_PATH", ""),
                           "lock_dir": self.lock_dir})
        journal.step(n, step.type_name, step.args, step.record, where)

    def note(self, step, **more):
        """What a step learnt while applying (the loop device it got), for its undo."""
        step.record.update(more)
        if self.journal is not None and self.journal.started and self._step and self._step[1] is step:
            self.journal.note(self._step[0], more)

    def finish_journal(self):
        """The event is complete as far as xenrules goes (also before an exec)."""
        if self.journal is not None:
            self.journal.finish()

    @property
    def xenstore(self):
        if self._xenstore is None:
            from .xenstore import XenStore
            self._xenstore = XenStore()
        return self._xenstore

    def netlink(self):
        """The netlink connection: xenrules.rtnl's raw requests, which hand
        anything they do not implement to pyroute2's IPRoute (imported then)."""
        if self._netlink is None:
            from .rtnl import RawRoute
            self._netlink = RawRoute(iproute_class)
        return self._netlink

    def backend_path(self):
        path = self.context.get("backend") if self.context else self.event.builtins["backend"][0]
        if not path:
            raise StepError("no backend path: XENBUS_PATH is not set")
        return path

    def lock(self, name):
        if name not in self.locks:
            from .locking import HotplugLock   # most events take no lock
            held = HotplugLock(self.lock_dir, name)
            held.acquire()
            self.locks[name] = held

    def unlock(self, name):
        held = self.locks.pop(name, None)
        if held:
            held.release()

    def close(self):
        for name in list(self.locks):
            self.unlock(name)
        if self._netlink is not None:
            self._netlink.close()
            self._netlink = None
        if self._xenstore is not None:
            self._xenstore.close()
            self._xenstore = None


def iproute_class():
    """pyroute2's IPRoute, imported without running the package's __init__ (lean.bare)."""
    from .lean import bare
    bare("pyroute2")
    from pyroute2.iproute.linux import IPRoute
    return IPRoute
