"""Lock steps: the flock protocol of locking.sh (see xenrules.locking)."""
from .base import Step

NAME = {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"}


class Acquire(Step):
    type_name = "lock.acquire"
    summary = "take /var/run/xen-hotplug/NAME like claim_lock (held until released or the event ends)"
    properties = {"name": NAME}
    required = ("name",)

    def undo_record(self, runtime):
        return {}   # the name is in the arguments; a replay takes the lock again first

    def apply(self, runtime):
        runtime.lock(self.args["name"])

    @classmethod
    def retake(cls, runtime, args, record):
        runtime.lock(args["name"])

    @classmethod
    def undo(cls, runtime, args, record):
        runtime.unlock(args["name"])

    @classmethod
    def describe_undo(cls, args, record):
        return f"hold lock {args['name']} while undoing the later steps, then release it"

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
