"""Lock steps: the flock protocol of locking.sh (see xenrules.locking)."""
from .base import Step

NAME = {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"}


class Acquire(Step):
    type_name = "lock.acquire"
    summary = "take /var/run/xen-hotplug/NAME like claim_lock (held until released or the event ends)"
    properties = {"name": NAME}
    required = ("name",)

    def apply(self, runtime):
        runtime.lock(self.args["name"])

    def revert(self, runtime):
        runtime.unlock(self.args["name"])

    def describe(self):
        return f"lock {self.args['name']}"


class Release(Step):
    type_name = "lock.release"
    summary = "release a lock taken by lock.acquire, like release_lock"
    properties = {"name": NAME}
    required = ("name",)

    def apply(self, runtime):
        runtime.unlock(self.args["name"])

    def describe(self):
        return f"unlock {self.args['name']}"
