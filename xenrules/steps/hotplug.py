"""Hotplug outcome steps: success, error, busy; and a log line."""
from ..errors import BusyError, StepError
from .base import Step

MESSAGE = {"type": "string"}


class Success(Step):
    type_name = "hotplug.success"
    summary = "write <backend>/hotplug-status = connected (the bash `success`)"

    def undo_record(self, runtime):
        node = runtime.backend_path() + "/hotplug-status"
        return {"node": node, "previous": runtime.xenstore.read(node)}

    def apply(self, runtime):
        runtime.xenstore.write(self.record["node"], "connected")

    @classmethod
    def undo(cls, runtime, args, record):
        # a killed event never connected: hotplug-status as it was before
        from .xenstore import restore_node
        restore_node(runtime.xenstore, record["node"], record["previous"])

    @classmethod
    def describe_undo(cls, args, record):
        return f"write {record['node']} = {record['previous']!r} again"

    def describe(self):
        return "write <backend>/hotplug-status = connected"


class Error(Step):
    type_name = "hotplug.error"
    summary = "fail the event with a message (the bash `fatal`): revert, hotplug-status=error"
    properties = {"message": MESSAGE}
    required = ("message",)

    def apply(self, runtime):
        raise StepError(self.args["message"])

    def describe(self):
        return f"fail: {self.args['message']}"


class Busy(Step):
    type_name = "hotplug.busy"
    summary = "fail the event as busy (the bash `ebusy`): revert, hotplug-status=busy"
    properties = {"message": MESSAGE}
    required = ("message",)

    def apply(self, runtime):
        raise BusyError(self.args["message"])

    def describe(self):
        return f"busy: {self.args['message']}"


class Log(Step):
    type_name = "log"
    summary = "write a line to the log"
    properties = {"level": {"enum": ["debug", "info", "warning", "err"]}, "message": MESSAGE}
    required = ("message",)

    def apply(self, runtime):
        runtime.log(self.args.get("level", "info"), self.args["message"])

    def describe(self):
        return f"log {self.args.get('level', 'info')}: {self.args['message']}"
