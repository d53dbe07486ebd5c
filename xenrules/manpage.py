"""Build the man pages from their hand-written prose and the code.

The prose lives in man/xenrules.8.in and man/xenrules.rules.5.in; a line
`.\\" @NAME@` there is replaced by a section generated here, so the reference
parts always list what the code has: every subcommand and its options
and every key of the settings file (xenrules(8)), every step type with its arguments, every variable source
and every built-in variable (xenrules.rules(5)).

    python3 -m xenrules.manpage rules man/xenrules.rules.5.in > xenrules.rules.5
    python3 -m xenrules.manpage command man/xenrules.8.in > xenrules.8

Not on the event path: it imports every step module and argparse.
"""
import re
import sys

from . import __version__

# What each built-in variable holds (event.py computes them). A name in
# event.BUILTIN_NAMES without a line here fails the build, not the reader.
BUILTIN_DESCRIPTIONS = {
    "script": "the script's name: the basename of argv[0] (for the vif-setup dispatcher, of $script)",
    "action": "the command word: online, offline, add, remove, ...",
    "device": "the device class, XENBUS_TYPE (vif, vbd, vscsi, vtpm)",
    "type_if": "vif or tap; vif when not given and the script is a vif script",
    "backend": "the backend's xenstore path, XENBUS_PATH (for a tap: its vif's backend)",
    "backend_base": "XENBUS_BASE_PATH",
    "vif": "the backend network device, vif (vifD.N)",
    "interface": "INTERFACE, the tap device of an emulated NIC (vifD.N-emu)",
    "netdev": "netdev: the physical device of vif-route/vif-nat (libxl's gatewaydev)",
    "domid": "the guest's domain id, taken from the backend path",
    "devid": "the device number, taken from the backend path",
}

# The sources context.py implements itself (context.SOURCE_KINDS).
BUILTIN_SOURCE_DESCRIPTIONS = {
    "xenstore": ("PATH", "the value of a xenstore node (relative paths are under /local/domain/0)"),
    "param": ("NAME", "a NAME=value argument of the event, else the environment variable NAME"),
    "env": ("NAME", "the environment variable NAME"),
    "conf": ("KEY", "the key KEY of the settings file /etc/xen/xenrules.conf (XENRULES_CONF names "
                    "another; read once per process)"),
    "value": ("TEMPLATE", "the template, expanded"),
    "first_bridge": ("true", "the first bridge found in /sys/class/net (vif-bridge's default)"),
    "bridge_alias": ("NAME", "NAME if that bridge exists; for a missing xenbrN, the bridge ethN "
                             "if it exists (Debian's legacy naming)"),
    "link_mtu": ("DEV", "the MTU of the device DEV"),
}

MARKER = re.compile(r'^\.\\" @([A-Z_]+)@\s*$')


def esc(text):
    """Text for a roff line: backslashes and hyphens escaped, no control character first."""
    text = str(text).replace("\\", "\\e").replace("-", "\\-")
    if text[:1] in (".", "'"):
        text = "\\&" + text
    return text


def _type_words(spec):
    if "enum" in spec:
        return "one of " + ", ".join(str(v) for v in spec["enum"])
    if "const" in spec:
        return f"always {spec['const']}"
    kind = spec.get("type")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    if kind == "array":
        item = spec.get("items", {}).get("type", "value")
        return f"a list of {item}s"
    return kind or ""


def _argument(name, spec, required):
    about = [spec["description"]] if spec.get("description") else []
    kind = _type_words(spec)
    if kind:
        about.append(kind)
    if "default" in spec:
        about.append(f"default {spec['default']}")
    if "pattern" in spec:
        about.append(f"matching {spec['pattern']}")
    about.append("required" if required else "optional")
    return [".TP", f".I {esc(name)}", esc("; ".join(about) + ".")]


def steps_section():
    """Every step type: its summary and its arguments."""
    from .steps import all_step_types
    out = []
    for name, cls in all_step_types().items():
        out += [".TP", f".B {esc(name)}", esc(cls.summary or "(no summary)")]
        if cls.properties:
            out.append(".RS")
            for arg, spec in cls.properties.items():
                out += _argument(arg, spec, arg in cls.required)
            out.append(".RE")
        else:
            out += [".br", "No arguments: write it as", f".BI \"- {esc(name)}:\""]
    return out


def sources_section():
    """Every variable source: the built-in kinds, then the plugged-in ones."""
    from .context import SOURCE_KINDS
    from .sources import all_source_kinds
    missing = [k for k in SOURCE_KINDS if k not in BUILTIN_SOURCE_DESCRIPTIONS]
    if missing:
        raise SystemExit(f"manpage: no description of the source kind(s) {', '.join(missing)}")
    out = []
    for kind in SOURCE_KINDS:
        arg, about = BUILTIN_SOURCE_DESCRIPTIONS[kind]
        out += [".TP", f".BI \"{esc(kind)}: \" {esc(arg)}", esc(about)]
    for kind, cls in all_source_kinds().items():
        arg = "TEMPLATE" if cls.templated else _type_words(cls.schema).upper() or "VALUE"
        out += [".TP", f".BI \"{esc(kind)}: \" {esc(arg)}", esc(cls.summary or "(no summary)")]
    return out


def builtins_section():
    from .event import BUILTIN_NAMES
    missing = [n for n in BUILTIN_NAMES if n not in BUILTIN_DESCRIPTIONS]
    if missing:
        raise SystemExit(f"manpage: no description of the built-in variable(s) {', '.join(missing)}")
    out = []
    for name in BUILTIN_NAMES:
        out += [".TP", f".B {esc(name)}", esc(BUILTIN_DESCRIPTIONS[name])]
    return out


def commands_section():
    """Every subcommand of xenrules(8), from the argument parser itself."""
    import argparse
    from .cli import _parser
    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    out = []
    for name, cmd in sub.choices.items():
        usage = cmd.format_usage().split(":", 1)[1].strip()
        usage = " ".join(w for w in usage.split() if w != "[-h]")
        out += [".TP", f".B {esc(usage)}", esc(cmd.description or helps.get(name, ""))]
        options = [a for a in cmd._actions if a.help and a.help != argparse.SUPPRESS
                   and not isinstance(a, argparse._HelpAction)]
        if options:
            out.append(".RS")
            for a in options:
                label = ", ".join(a.option_strings) or a.dest.upper()
                if a.option_strings and a.nargs != 0:
                    label += f" {a.metavar or a.dest.upper()}"
                out += [".TP", f".B {esc(label)}", esc(a.help)]
            out.append(".RE")
    return out


def global_options_section():
    import argparse
    from .cli import _parser
    out = []
    for a in _parser()._actions:
        if not a.option_strings or isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        label = ", ".join(a.option_strings)
        if a.nargs != 0:
            label += f" {a.metavar or a.dest.upper()}"
        out += [".TP", f".B {esc(label)}", esc(a.help or "print the version and exit")]
    return out


def settings_section():
    """Every key of the settings file (config.SETTINGS) with its default."""
    from .config import SETTINGS
    out = []
    for key, (default, kind, meaning) in SETTINGS.items():
        label = f"{key} = {default}" if default else f"{key} ="
        out += [".TP", f".B {esc(label)}", esc(meaning)]
    return out


SECTIONS = {
    "rules": {"STEPS": steps_section, "SOURCES": sources_section, "BUILTINS": builtins_section},
    "command": {"COMMANDS": commands_section, "OPTIONS": global_options_section,
                "SETTINGS": settings_section},
}


def render(page, template_text):
    generators = SECTIONS[page]
    out = []
    for line in template_text.splitlines():
        found = MARKER.match(line)
        if found and found.group(1) in generators:
            out += generators[found.group(1)]()
        elif found:
            raise SystemExit(f"manpage: unknown section @{found.group(1)}@ for the {page} page")
        else:
            out.append(line.replace("@VERSION@", __version__))
    return "\n".join(out) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in SECTIONS:
        sys.stderr.write("usage: python3 -m xenrules.manpage rules|command TEMPLATE\n")
        return 2
    with open(argv[1], encoding="utf-8") as f:
        sys.stdout.write(render(argv[0], f.read()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
