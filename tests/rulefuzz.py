"""Bad rule files for `xenrules check` and the compiler: byte-level mutants of
the shipped rules.d files and hypothesis-made rules over the schema's shape.

The oracle (check_case): compiling never raises, never hangs; it gives
rules (which the cache's index accepts) or problems whose every first line
is `file:line:col: message`. Used by tests/test_rule_fuzz.py (a sample in
`make check`) and tools/fuzz.py (`make fuzz`, 10,000+ cases).
"""
import os
import random
import re
import signal
import tempfile

import yaml
from hypothesis import strategies as st

from xenrules import ruleset
from xenrules.compiler import compile_files
from xenrules.steps import all_step_types

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES_DIR = os.path.join(REPO_ROOT, "rules.d")
PLACE = re.compile(r"^.+:\d+:\d+: \S")
CASE_SECONDS = 10


class Finding(Exception):
    """A case broke the oracle: a traceback, a hang, or a problem without its place."""


def shipped():
    """{name: bytes} of the shipped rule files: the mutation corpus."""
    out = {}
    for name in sorted(os.listdir(RULES_DIR)):
        if name.endswith(".yaml"):
            with open(os.path.join(RULES_DIR, name), "rb") as f:
                out[name] = f.read()
    return out


# -- byte-level mutation ---------------------------------------------------------------

INTERESTING = [b"\x00", b"\xff", b"\t", b"\n", b"\r", b" ", b":", b"-", b"{", b"}", b"[", b"]",
               b"&a", b"*a", b"<<: ", b"!!python/object:os.system", b"'", b'"', b"{x", b"}}",
               b"#", b"%", b"|", b">", b"\xef\xbb\xbf", b"\xe2\x80\xa8", b"~", b"null", b"9" * 40]


def mutate(data, rng):
    """One to four random edits of data: flip, insert, delete, duplicate or
    swap lines, truncate, splice in a token YAML cares about."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        at = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            data[at:at] = rng.choice(INTERESTING)
        elif op == 2:
            del data[at:at + rng.randint(1, 16)]
        elif op == 3:
            data = data[:at]
        else:
            lines = bytes(data).split(b"\n")
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            if op == 4:
                lines.insert(j, lines[i])
            elif op == 5:
                lines[i], lines[j] = lines[j], lines[i]
            else:
                lines[i] = b" " * rng.randint(0, 8) + lines[i].lstrip()
            data = bytearray(b"\n".join(lines))
    return bytes(data)


# -- rules made by hypothesis over the schema's shape ---------------------------------------

STEP_TYPES = sorted(all_step_types())
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(),
                    st.text(max_size=20), st.sampled_from(["{vif}", "{backend}/x", "{nope}", "{",
                                                           "}", "{a.b}", "{{x}}", "on", "fail"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
KEYWORDS = st.sampled_from(["when", "on_error", "set", "unset", "equals", "matches", "not", "all",
                            "any", "xenstore", "param", "env", "value"])
ARGS = st.dictionaries(st.one_of(KEYWORDS, st.text(max_size=8)), VALUES, max_size=4)
STEP = st.dictionaries(st.sampled_from(STEP_TYPES + ["no.such", "log"]), st.one_of(ARGS, VALUES),
                       min_size=1, max_size=2)
RULE = st.fixed_dictionaries(
    {"rule": st.one_of(st.text(max_size=10), st.sampled_from(["r1", "r1", "r2"]))},
    optional={
        "match": st.dictionaries(st.sampled_from(["script", "type_if", "vif", "netdev", "x"]),
                                 st.one_of(SCALARS, st.lists(SCALARS, max_size=3)), max_size=3),
        "require": st.lists(st.sampled_from(["backend", "vif", "nope", ""]), max_size=3),
        "vars": st.dictionaries(st.sampled_from(["a", "b", "bridge", "vif"]),
                                st.one_of(VALUES, st.lists(ARGS, max_size=3)), max_size=3),
        "actions": st.dictionaries(st.sampled_from(["online", "offline", "add", "remove", "x"]),
                                   st.one_of(st.none(), st.lists(STEP, max_size=4), VALUES),
                                   max_size=3),
    })
RULE_FILE = st.one_of(RULE, st.lists(RULE, max_size=3), VALUES)


def dump(document):
    """YAML text of a generated document (a value yaml cannot write is skipped as None)."""
    try:
        return yaml.safe_dump(document, allow_unicode=True).encode("utf-8", "surrogatepass")
    except (yaml.YAMLError, UnicodeError):
        return None


# -- the oracle -------------------------------------------------------------------------------

def _timeout(signum, frame):
    raise TimeoutError


def check_case(data, name="50-fuzz.yaml"):
    """Compile one rule file's bytes as `xenrules check` does. Returns
    ("ok", n_rules) or ("problems", n); raises Finding when the oracle breaks."""
    with tempfile.TemporaryDirectory(prefix="xr-fuzz-") as directory:
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            f.write(data)
        old = signal.signal(signal.SIGALRM, _timeout)
        signal.alarm(CASE_SECONDS)
        try:
            files = ruleset.discover([directory])
            rules, problems = compile_files(files)
            if not problems:
                ruleset.build_index(rules)   # what the cache does with compiled rules
        except TimeoutError:
            raise Finding(f"hang: no answer within {CASE_SECONDS} s") from None
        except Exception as e:   # noqa: BLE001 - the finding is any exception at all
            raise Finding(f"traceback: {e!r}") from e
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
    if problems:
        for p in problems:
            first = str(p).split("\n", 1)[0]
            if not PLACE.match(first) or not first.startswith(path):
                raise Finding(f"problem without file:line:col: {first!r}")
        return "problems", len(problems)
    return "ok", len(rules)


def mutants(count, seed):
    """count (name, bytes) mutants of the shipped files, reproducible from seed."""
    rng = random.Random(seed)
    corpus = shipped()
    names = sorted(corpus)
    for _ in range(count):
        name = rng.choice(names)
        yield name, mutate(corpus[name], rng)
