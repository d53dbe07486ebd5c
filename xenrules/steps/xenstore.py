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


def restore_node(xenstore, path, previous):
    """Put a node back as an undo record saw it: its old value, or gone (None)."""
    if previous is None:
        xenstore.remove(path)
    else:
        xenstore.write(path, previous)


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

    def undo_record(self, runtime):
        path = checked_path(self.args["path"])
        previous = runtime.xenstore.read(path)
        # A write creates missing parents; undo must remove the top one.
        created = path if previous is None else None
        while created and "/" in created.strip("/"):
            parent = created.rsplit("/", 1)[0]
            if runtime.xenstore.read(parent) is not None:
                break
            created = parent
        return {"previous": previous, "created": created}

    def apply(self, runtime):
        runtime.xenstore.write(checked_path(self.args["path"]), str(self.args["value"]))

    @classmethod
    def undo(cls, runtime, args, record):
        if record["created"]:
            runtime.xenstore.remove(record["created"])
        else:
            runtime.xenstore.write(args["path"], record["previous"])

    @classmethod
    def describe_undo(cls, args, record):
        if record["created"]:
            return f"remove xenstore {record['created']} (created by the write of {args['path']})"
        return f"write xenstore {args['path']} = {record['previous']!r} again"

    def describe(self):
        return f"write xenstore {self.args['path']} = {self.args['value']!r}"


class Remove(Step):
    type_name = "xenstore.remove"
    summary = "remove a node and its children; revert restores the node's own value"
    properties = {"path": PATH}
    required = ("path",)

    def undo_record(self, runtime):
        previous = runtime.xenstore.read(checked_path(self.args["path"]))
        return None if previous is None else {"previous": previous}

    def apply(self, runtime):
        runtime.xenstore.remove(checked_path(self.args["path"]))

    @classmethod
    def undo(cls, runtime, args, record):
        runtime.xenstore.write(args["path"], record["previous"])

    def describe(self):
        return f"remove xenstore {self.args['path']}"
