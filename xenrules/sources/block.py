"""Variable sources for block devices (rules.d/50-block.yaml).

    vars:
      access: {block.mode: "{mode}"}       # canonicalise_mode: r, w or !
      truetype: {block.kind: "{params}"}   # phy, file, or empty
      dev: {block.device: "{params}"}      # the phy branch's device path
      file: {block.file: "{params}"}       # readlink -f
"""
from ..steps.block import canonical_mode, params_kind, readlink_f, resolve_phy
from . import VarSource


class Mode(VarSource):
    kind = "block.mode"
    summary = "the backend mode made canonical like canonicalise_mode: r (no w), w (w, no !), ! (w and !)"

    @staticmethod
    def resolve(context, mode):
        return canonical_mode(mode), f"canonical form of mode {mode!r}"


class Kind(VarSource):
    kind = "block.kind"
    summary = ("what a path really is, links followed: phy (a block device), file (a regular "
               "file) or empty (missing, or anything else), as block's [ -b ] / [ -f ] tests")

    @staticmethod
    def resolve(context, path):
        return params_kind(path), f"what {path!r} is"


class Device(VarSource):
    kind = "block.device"
    summary = "a device path as block's phy branch uses it: under /dev unless absolute, links resolved"

    @staticmethod
    def resolve(context, params):
        if not params:
            return "", "no device named"
        return resolve_phy(params), f"device {params!r}, links resolved"


class File(VarSource):
    kind = "block.file"
    summary = "a file's canonical path, like readlink -f (empty when a directory on the way is missing)"

    @staticmethod
    def resolve(context, path):
        if not path:
            return "", "no file named"
        return readlink_f(path) or "", f"readlink -f {path!r}"
