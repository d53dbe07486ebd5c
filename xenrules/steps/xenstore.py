"""XenStore steps: require a node, write a node, remove a node."""
from ..errors import StepError
from .base import Step

PATH = {"type": "string", "minLength": 1}
_PATH_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-/_@.")


def checked_path(path):
    # xenstored's own character set: a value with spaces, quotes or control
    # characters cannot turn into a path the rule did not mean.
    if not path or not set(path) <= _PATH_CHARS or "//" in path or path.endswith("/"):
        raise StepError(f"invalid xenstore path {path!r}")
    return path


class Read(Step):
    type_name = "xenstore.read"
    summary = "fail unless the node exists and is not empty (bash xenstore_read)"
    properties = {"path": PATH}
    required = ("path",)

    def apply(self, runtime):
        path = checked_path(self.args["path"])
        if not runtime.xenstore.read(path):
            raise StepError(f"xenstore-read {path} failed.")

    def describe(self):
        return f"require xenstore {self.args['path']}"


class Write(Step):
    type_name = "xenstore.write"
    summary = "write a value; revert restores the old value or removes what the write created"
    properties = {"path": PATH, "value": {"type": ["string", "integer"]}}
    required = ("path", "value")

    def apply(self, runtime):
        path = checked_path(self.args["path"])
        self.previous = runtime.xenstore.read(path)
        # A write creates missing parents; revert must remove the top one.
        self.created = path if self.previous is None else None
        while self.created and "/" in self.created.strip("/"):
            parent = self.created.rsplit("/", 1)[0]
            if runtime.xenstore.read(parent) is not None:
                break
            self.created = parent
        runtime.xenstore.write(path, str(self.args["value"]))

    def revert(self, runtime):
        if self.created:
            runtime.xenstore.remove(self.created)
        else:
            runtime.xenstore.write(self.args["path"], self.previous)

    def describe(self):
        return f"write xenstore {self.args['path']} = {self.args['value']!r}"


class Remove(Step):
    type_name = "xenstore.remove"
    summary = "remove a node and its children; revert restores the node's own value"
    properties = {"path": PATH}
    required = ("path",)

    def apply(self, runtime):
        path = checked_path(self.args["path"])
        self.previous = runtime.xenstore.read(path)
        runtime.xenstore.remove(path)

    def revert(self, runtime):
        if self.previous is not None:
            runtime.xenstore.write(self.args["path"], self.previous)

    def describe(self):
        return f"remove xenstore {self.args['path']}"
