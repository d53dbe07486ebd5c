"""What steps act through: netlink, XenStore, locks and the log of one event.

Connections open on first use only: an event whose rule never touches a
link does not pay for importing pyroute2.
"""
from .errors import StepError


class Runtime:
    def __init__(self, config, event, log, xenstore=None):
        self.config = config
        self.event = event
        self.log = log
        self.context = None       # set by the engine once the rule is chosen
        self._xenstore = xenstore
        self._netlink = None
        self.locks = {}

    @property
    def xenstore(self):
        if self._xenstore is None:
            from .xenstore import XenStore
            self._xenstore = XenStore()
        return self._xenstore

    def netlink(self):
        if self._netlink is None:
            # The submodule, not the package: pyroute2's __init__ imports far more.
            from pyroute2.iproute.linux import IPRoute
            self._netlink = IPRoute()
        return self._netlink

    def backend_path(self):
        path = self.context.get("backend") if self.context else self.event.builtins["backend"][0]
        if not path:
            raise StepError("no backend path: XENBUS_PATH is not set")
        return path

    def lock(self, name):
        if name not in self.locks:
            from .locking import HotplugLock   # most events take no lock
            held = HotplugLock(self.config.lock_dir, name)
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
