"""`when:` conditions and `match:` tests, with the reason for the verdict.

A condition is a mapping; several keys must all hold:
  set: NAME | [NAMES]        every variable is non-empty
  unset: NAME | [NAMES]      every variable is empty
  equals: {NAME: VALUE | [VALUES]}   the variable is one of the values
  matches: {NAME: REGEX}     the whole value matches the regular expression
  not: COND / all: [COND...] / any: [COND...]
A rule's `match:` is an `equals:` mapping.
"""
from . import template


def _as_list(value):
    return value if isinstance(value, list) else [value]


def check(cond, lookup):
    """Evaluate a condition: (holds, reason). lookup(name) -> str."""
    for key, arg in cond.items():
        ok, why = _CHECKS[key](arg, lookup)
        if not ok:
            return False, why
    return True, "; ".join(_CHECKS[k](a, lookup)[1] for k, a in cond.items()) or "always"


def _set(arg, lookup):
    for name in _as_list(arg):
        if not lookup(name):
            return False, f"{name} is empty"
    return True, " and ".join(f"{n} is set" for n in _as_list(arg))


def _unset(arg, lookup):
    for name in _as_list(arg):
        if lookup(name):
            return False, f"{name} is {lookup(name)!r}"
    return True, " and ".join(f"{n} is empty" for n in _as_list(arg))


def equals(mapping, lookup):
    for name, wanted in mapping.items():
        have = lookup(name)
        choices = [template.expand(str(w), lookup) for w in _as_list(wanted)]
        if have not in choices:
            shown = choices[0] if len(choices) == 1 else choices
            return False, f"{name} is {have!r}, not {shown!r}"
    return True, ", ".join(f"{n}={lookup(n)!r}" for n in mapping)


def matches(mapping, lookup):
    import re   # only rules that use `matches` pay for it
    for name, pattern in mapping.items():
        have = lookup(name)
        if not re.fullmatch(pattern, have):
            return False, f"{name} {have!r} does not match {pattern!r}"
    return True, ", ".join(f"{n}={lookup(n)!r} matches {p!r}" for n, p in mapping.items())


def _not(arg, lookup):
    ok, why = check(arg, lookup)
    return (not ok), (f"not ({why})")


def _all(arg, lookup):
    reasons = []
    for cond in arg:
        ok, why = check(cond, lookup)
        if not ok:
            return False, why
        reasons.append(why)
    return True, " and ".join(reasons)


def _any(arg, lookup):
    reasons = []
    for cond in arg:
        ok, why = check(cond, lookup)
        if ok:
            return True, why
        reasons.append(why)
    return False, " and ".join(reasons)


_CHECKS = {"set": _set, "unset": _unset, "equals": equals, "matches": matches,
           "not": _not, "all": _all, "any": _any}


def names(cond):
    """Every variable a condition reads (for validation)."""
    out = []
    for key, arg in cond.items():
        if key in ("set", "unset"):
            out.extend(_as_list(arg))
        elif key in ("equals", "matches"):
            out.extend(arg)
            out.extend(n for w in arg.values() for v in _as_list(w) for n in template.names(str(v)))
        elif key == "not":
            out.extend(names(arg))
        else:
            for sub in arg:
                out.extend(names(sub))
    return out
