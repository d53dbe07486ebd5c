"""Safe `{name}` templates: names only, no attribute access, no eval.

`{{` and `}}` stand for literal braces. A name is [A-Za-z_][A-Za-z0-9_]*.
"""
from .errors import TemplateError

_NAME_START = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
_NAME_CHARS = _NAME_START + "0123456789"


def parse(text):
    """Split a template into a list of literal strings and [name] lists."""
    parts, i, literal = [], 0, []
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "{":
            if text.startswith("{{", i):
                literal.append("{")
                i += 2
                continue
            end = text.find("}", i)
            if end < 0:
                raise TemplateError(f"unclosed '{{' in {text!r}")
            name = text[i + 1:end]
            if not is_name(name):
                raise TemplateError(f"{{{name}}} is not a variable name in {text!r}")
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append([name])
            i = end + 1
        elif ch == "}":
            if not text.startswith("}}", i):
                raise TemplateError(f"single '}}' in {text!r} (write '}}}}' for a brace)")
            literal.append("}")
            i += 2
        else:
            literal.append(ch)
            i += 1
    if literal:
        parts.append("".join(literal))
    return parts


def is_name(name):
    return bool(name) and name[0] in _NAME_START and all(c in _NAME_CHARS for c in name)


def names(text):
    """The variable names a template refers to."""
    return [p[0] for p in parse(text) if isinstance(p, list)]


def expand(text, lookup):
    """Expand a template; lookup(name) returns the variable's string value."""
    if "{" not in text and "}" not in text:
        return text
    return "".join(p if isinstance(p, str) else lookup(p[0]) for p in parse(text))


def expand_value(value, lookup):
    """Expand templates inside strings, lists and mappings; keep other scalars."""
    if isinstance(value, str):
        return expand(value, lookup)
    if isinstance(value, list):
        return [expand_value(v, lookup) for v in value]
    if isinstance(value, dict):
        return {k: expand_value(v, lookup) for k, v in value.items()}
    return value


def value_names(value):
    """Every variable name referred to by templates inside a value."""
    if isinstance(value, str):
        return names(value)
    if isinstance(value, list):
        return [n for v in value for n in value_names(v)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in value_names(v)]
    return []
