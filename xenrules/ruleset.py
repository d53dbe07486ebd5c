"""Find the effective rule files and load the compiled rules, from cache.

Rule directories are searched highest priority first (/etc/xen/rules.d,
then /usr/lib/xenrules/rules.d). A file name in a higher directory hides the
same name below it; a symlink to /dev/null masks it. Effective files are
sorted by name. The compiled rules live in <state dir>/rules.cache and are
rebuilt, atomically, whenever any rule file changes: the event path reads
that cache with marshal and never imports yaml or jsonschema. The cache
keeps each rule marshalled on its own plus an index of the literal `match:`
values, so an event unmarshals and tests only the rules that may match it.
"""
import marshal
import os

from . import __version__
from .errors import RuleError

CACHE_NAME = "rules.cache"
CACHE_FORMAT = 3
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
    compiled = _compiled(config, log)
    rules = compiled.get("decoded")
    if rules is None:
        rules = compiled["decoded"] = [marshal.loads(b) for b in compiled["rules"]]
    return rules


def prime(config, log=None):
    """Check the rules and keep their cache in memory, decoding nothing (the helper)."""
    _compiled(config, log)


def candidates(config, lookup, log=None):
    """The rules that may match an event, in rule order (raises RuleError like load).

    Every rule left out has a literal `match:` value that differs from the
    event's (lookup(name) -> value), so the first match among these is the
    first match among all rules; only these rules are unmarshalled.
    """
    compiled = _compiled(config, log)
    index = compiled["index"]
    found = set(index["always"])
    for name, table in index["keys"].items():
        hit = table.get(lookup(name))
        if hit:
            found.update(hit)
    decoded = compiled.get("decoded")
    if decoded is not None:
        return [decoded[i] for i in sorted(found)]
    blobs = compiled["rules"]
    return [marshal.loads(blobs[i]) for i in sorted(found)]


# The last cache this process used: a warm helper (or `explain` after `list`)
# then pays one stat per rule file per event, no read and no unmarshal.
_memo = {}


def _compiled(config, log):
    files = discover(config.rules_path)
    print_ = fingerprint(files)
    cache_path = os.path.join(config.state_dir, CACHE_NAME)
    compiled = _memo.get(cache_path)
    if compiled is None or compiled["fingerprint"] != print_:
        compiled = _read_cache(cache_path)
    if compiled is None or compiled.get("fingerprint") != print_:
        if log:
            log("debug", f"rule files changed: compiling {len(files)} files into {cache_path}")
        from .compiler import compile_files
        rules, problems = compile_files(files)
        compiled = {"format": CACHE_FORMAT, "fingerprint": print_,
                    "rules": [marshal.dumps(r) for r in rules], "index": build_index(rules),
                    "problems": [str(p) for p in problems]}
        _write_cache(cache_path, compiled, log)
    _memo.clear()
    _memo[cache_path] = compiled
    if compiled["problems"]:
        raise RuleError(compiled["problems"])
    return compiled


def build_index(rules):
    """Where to look for the rules an event may match, without testing each.

    A rule is filed under one of its literal `match:` tests (name, values):
    the one the fewest rules share, so per-guest rules (vif: vif12.0) are
    found by their guest, not among every vif-bridge rule. A rule whose tests
    are all templates is a candidate for every event ("always").
    """
    from . import template
    literal = []
    counts = {}
    for rule in rules:
        tests = []
        for name, values in rule["match"].items():
            if any(template.names(v) for v in values):
                continue
            values = [template.expand(v, None) for v in values]
            tests.append((name, values))
            for v in values:
                counts[(name, v)] = counts.get((name, v), 0) + 1
        literal.append(tests)
    keys, always = {}, []
    for i, tests in enumerate(literal):
        if not tests:
            always.append(i)
            continue
        name, values = min(tests, key=lambda t: sum(counts[(t[0], v)] for v in t[1]))
        table = keys.setdefault(name, {})
        for v in values:
            table.setdefault(v, []).append(i)
    return {"keys": keys, "always": always}


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
