"""Validate rule files and compile them into the cache's plain form.

Runs on `check`, `list`, `explain` and when the cache is stale; never on a
warm event path (it imports yaml and jsonschema).
"""
import difflib
import re

import jsonschema

from . import conditions, schema, template
from .errors import TemplateError
from .event import BUILTIN_NAMES
from .yamlsrc import Problem, read_source

TEMPLATED_SOURCES = ("xenstore", "value", "bridge_alias", "link_mtu")


def _plugged_templated(kind):
    # Only reached for kinds the schema accepted, so the module exists.
    from .sources import source_class
    try:
        return source_class(kind).templated
    except KeyError:
        return False


def compile_files(files):
    """(rules, problems) for the effective rule files, in order."""
    validator = jsonschema.Draft7Validator(schema.build())
    rules, problems, seen = [], [], {}
    for rule_file in files:
        if rule_file.masked:
            continue
        try:
            src = read_source(rule_file.path)
        except (OSError, UnicodeDecodeError) as e:
            problems.append(Problem(rule_file.path, 0, 0, f"cannot read: {e}"))
            continue
        problems.extend(src.problems)
        if src.problems:
            continue
        for where, item in _items(src, problems):
            found = [src.problem(where + _location(e), _message(e, where), key=_at_key(e))
                     for e in sorted(validator.iter_errors(item), key=lambda e: list(map(str, e.absolute_path)))]
            if found:
                _more_problems(src, where, item, found)
            else:
                rule = _compile_rule(src, where, item, found)
                if not found:
                    first = seen.get(rule["name"])
                    if first:
                        found.append(src.problem(where + ("rule",), f"duplicate rule name {rule['name']!r}"
                                                 f" (first defined at {first})"))
                    else:
                        seen[rule["name"]] = f"{rule['file']}:{rule['line']}"
                        rules.append(rule)
            problems.extend(found)
    return rules, _unique(problems)


def _items(src, problems):
    """A file holds one rule (a mapping) or a list of rules."""
    if src.data is None:
        return []
    if isinstance(src.data, dict):
        return [((), src.data)]
    if isinstance(src.data, list):
        return [((i,), item) for i, item in enumerate(src.data)]
    problems.append(src.problem((), "a rule file holds a rule (a mapping) or a list of rules"))
    return []


def _unique(problems):
    seen, out = set(), []
    for p in problems:
        if p.key() not in seen:
            seen.add(p.key())
            out.append(p)
    return out


def _location(error):
    """Where to point: an unexpected key itself, else the offending value."""
    path = tuple(error.absolute_path)
    if error.validator == "additionalProperties":
        return path + (_extra_keys(error)[0],)
    return path


def _extra_keys(error):
    return sorted(set(error.instance) - set(error.schema.get("properties", {})))


def _suggest(word, choices):
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _at_key(error):
    return error.validator in ("additionalProperties", "propertyNames", "maxProperties")


def _message(error, where):
    path = list(error.absolute_path)
    in_step = len(path) >= 3 and path[0] == "actions"
    if error.validator == "additionalProperties":
        extra = _extra_keys(error)
        known = list(error.schema.get("properties", {}))
        if in_step and len(path) == 3:
            return f"unknown step type {extra[0]!r}" + _suggest(extra[0], known)
        return f"unknown key {extra[0]!r}" + _suggest(extra[0], known)
    if error.validator == "maxProperties" and in_step and len(path) == 3:
        return "one step per list item: " + ", ".join(sorted(error.instance)) + " are in the same item"
    if error.validator == "required":
        return error.message.replace("is a required property", "is required")
    if in_step and len(path) >= 4:
        return f"step {path[3]}: " + (f"argument {path[4]}: " if len(path) > 4 else "") + error.message
    return error.message


def _more_problems(src, where, item, problems):
    """Template and variable checks of a rule the schema rejected: best effort,
    so one run of `check` shows every problem it can."""
    try:
        _compile_rule(src, where, item, problems)
    except (AttributeError, KeyError, TypeError, ValueError):
        pass   # the shape is wrong where the schema said; nothing more to learn


def _compile_rule(src, where, item, problems):
    known = set(BUILTIN_NAMES) | set(item.get("vars") or {})

    def check_template(text, at):
        try:
            for name in template.names(text):
                if name not in known:
                    problems.append(src.problem(where + at, f"unknown variable {name!r} in template {text!r}"))
        except TemplateError as e:
            problems.append(src.problem(where + at, str(e)))

    def check_value(value, at):
        if isinstance(value, str):
            check_template(value, at)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                check_value(v, at + (i,))
        elif isinstance(value, dict):
            for k, v in value.items():
                check_value(v, at + (k,))

    def template_error(text, at):
        try:
            template.names(text)
        except TemplateError as e:
            problems.append(src.problem(where + at, str(e)))

    def check_condition(cond, at, top=True):
        try:
            read = conditions.names(cond) if top else ()   # names() already recurses
        except TemplateError:
            read = ()   # reported below, at the value that holds it (make fuzz found this)
        for name in read:
            if name not in known:
                problems.append(src.problem(where + at, f"unknown variable {name!r} in condition"))
        check_value(cond.get("equals") or {}, at + ("equals",))
        for name, pattern in (cond.get("matches") or {}).items():
            template_error(str(pattern), at + ("matches", name))
            try:
                re.compile(pattern)
            except re.error as e:
                problems.append(src.problem(where + at + ("matches", name), f"bad regular expression: {e}"))
        for key in ("not",):
            if key in cond:
                check_condition(cond[key], at + (key,), top=False)
        for key in ("all", "any"):
            for i, sub in enumerate(cond.get(key) or []):
                check_condition(sub, at + (key, i), top=False)

    require = item.get("require") or []
    require = [require] if isinstance(require, str) else require
    for i, name in enumerate(require):
        if name not in known:
            problems.append(src.problem(where + ("require",), f"unknown variable {name!r} in require"))

    for name, wanted in item["match"].items():
        if name in (item.get("vars") or {}):
            problems.append(src.problem(where + ("match", name), f"match: sees the event's variables and "
                                        f"arguments, not the rule's own `vars:` ({name!r} is one)", key=True))
        check_value(wanted, ("match", name))

    rule_vars = {}
    for name, spec in (item.get("vars") or {}).items():
        at = ("vars", name)
        sources = spec if isinstance(spec, list) else [spec] if isinstance(spec, dict) else [{"value": spec}]
        for i, source in enumerate(sources):
            here = at + (i,) if isinstance(spec, list) else at
            kinds = [k for k in source if k != "when"]
            if len(kinds) != 1:
                problems.append(src.problem(here, f"a source has one kind, found {kinds or 'none'}"))
                continue
            if kinds[0] in TEMPLATED_SOURCES or _plugged_templated(kinds[0]):
                check_template(str(source[kinds[0]]), here + (kinds[0],))
            if "when" in source:
                check_condition(source["when"], here + ("when",))
        rule_vars[name] = [dict(s, value=str(s["value"])) if "value" in s else s for s in sources]

    actions = {}
    for action, steps in item["actions"].items():
        compiled = []
        for i, step in enumerate(steps or []):
            (type_name, args), = step.items()
            args = dict(args or {})
            at = ("actions", action, i, type_name)
            when = args.pop("when", None)
            on_error = args.pop("on_error", "fail")
            if when:
                check_condition(when, at + ("when",))
            check_value(args, at)
            line, col = src.mark(where + ("actions", action, i))
            compiled.append({"type": type_name, "args": args, "when": when,
                             "on_error": on_error, "line": line, "col": col})
        actions[action] = compiled
    line = src.marks.get(where, (1, 1))[0]
    match = {k: [str(x) for x in (v if isinstance(v, list) else [v])] for k, v in item["match"].items()}
    return {"name": item["rule"], "file": src.path, "line": line, "match": match,
            "require": require, "vars": rule_vars, "actions": actions, "description": item.get("description", "")}

