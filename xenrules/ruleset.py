"""Find the effective rule files and load the compiled rules, from cache.

Rule directories are searched highest priority first (/etc/xen/rules.d,
then /usr/lib/xenrules/rules.d). A file name in a higher directory hides the
same name below it; a symlink to /dev/null masks it. Effective files are
sorted by name. The compiled rules live in <state dir>/rules.cache and are
rebuilt, atomically, whenever any rule file changes: the event path reads
that cache with marshal and never imports yaml or jsonschema.
"""
import marshal
import os

from . import __version__
from .errors import RuleError

CACHE_NAME = "rules.cache"
CACHE_FORMAT = 2
SUFFIX = ".yaml"


class RuleFile:
    def __init__(self, name, path, hidden):
        self.name = name          # file name, e.g. 50-vif-bridge.yaml
        self.path = path          # the effective file
        self.hidden = hidden      # same-named files it overrides (lower priority)

    @property
    def masked(self):
        return os.path.islink(self.path) and os.path.realpath(self.path) == "/dev/null"


def discover(rules_path):
    """The effective rule files, sorted by name, masked ones included."""
    found = {}
    for directory in rules_path:
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            continue
        except OSError as e:
            raise RuleError([f"{directory}: cannot read the rule directory: {e.strerror}"]) from e
        for name in names:
            if not name.endswith(SUFFIX) or name.startswith("."):
                continue
            path = os.path.join(directory, name)
            if name in found:
                found[name].hidden.append(path)
            else:
                found[name] = RuleFile(name, path, [])
    return [found[n] for n in sorted(found)]


def fingerprint(files):
    """What a cache was built from: any change to a rule file changes it."""
    out = [__version__]
    for f in files:
        try:
            st = os.stat(f.path)
            out.append((f.path, f.masked, st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev))
        except OSError:
            out.append((f.path, "unreadable"))
    return out


def load(config, log=None):
    """Compiled rules for the current files; raises RuleError if they are invalid."""
    files = discover(config.rules_path)
    print_ = fingerprint(files)
    cache_path = os.path.join(config.state_dir, CACHE_NAME)
    compiled = _read_cache(cache_path)
    if compiled is None or compiled.get("fingerprint") != print_:
        if log:
            log("debug", f"rule files changed: compiling {len(files)} files into {cache_path}")
        from .compiler import compile_files
        rules, problems = compile_files(files)
        compiled = {"format": CACHE_FORMAT, "fingerprint": print_, "rules": rules,
                    "problems": [str(p) for p in problems]}
        _write_cache(cache_path, compiled, log)
    if compiled["problems"]:
        raise RuleError(compiled["problems"])
    return compiled["rules"]


def _read_cache(path):
    try:
        with open(path, "rb") as f:
            data = marshal.load(f)
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        return None
    return data


def _write_cache(path, compiled, log):
    import tempfile   # only a rebuild pays for it
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".rules.", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                marshal.dump(compiled, f)
            os.replace(tmp, path)   # readers see the old cache or the new one, never half
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        if log:
            log("debug", f"cannot write rule cache {path}: {e}; using rules from memory")
