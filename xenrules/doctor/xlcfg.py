"""Read the few settings doctor needs from xl.conf and a domU config, without evaluating them.

Values are a quoted string, a number or a [list of quoted strings]; a
device spec ("bridge=xenbr0,script=vif-route") splits into key=value pairs.
"""
import re

_SETTING = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*=\s*(\[.*?\]|\"[^\"]*\"|'[^']*'|[^#\n]*)", re.S | re.M)
_QUOTED = re.compile(r"\"([^\"]*)\"|'([^']*)'")


def read(path):
    """{key: str or [str]} of the file; OSError if it cannot be read."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = "\n".join(line.split("#", 1)[0] if "'" not in line and '"' not in line else line
                         for line in f.read().splitlines())
    out = {}
    for key, raw in _SETTING.findall(text):
        raw = raw.strip()
        if raw.startswith("["):
            out[key] = [a or b for a, b in _QUOTED.findall(raw)]
        else:
            q = _QUOTED.fullmatch(raw)
            out[key] = (q.group(1) if q.group(1) is not None else q.group(2)) if q else raw
    return out


def spec(text):
    """'bridge=xenbr0, script=vif-route' -> {'bridge': 'xenbr0', 'script': 'vif-route'}; bare words by position."""
    out = {}
    for i, part in enumerate(p.strip() for p in text.split(",")):
        key, eq, value = part.partition("=")
        if eq:
            out[key.strip()] = value.strip()
        elif part:
            out[f"#{i}"] = part
    return out
