"""Variables of one event: built-ins from the event, then the rule's `vars`.

A rule variable is an ordered list of sources; the first that yields a
non-empty value wins. Values resolve lazily (a xenstore read happens only if
a step or condition needs it) and remember where they came from, for traces.

Sources:
  xenstore: PATH      the node's value (PATH is a template)
  param: NAME         key=value argument, else environment variable NAME
  env: NAME           environment variable NAME only
  conf: KEY           KEY of the settings file (/etc/xen/xenrules.conf, XENRULES_CONF)
  value: TEMPLATE     a fixed or composed value
  first_bridge: true  the first bridge on the host (by name)
  bridge_alias: NAME  NAME, or ethN when NAME is a missing xenbrN and ethN is a bridge
  link_mtu: DEV       the MTU of device DEV
Each source may carry `when:`, a condition, to be tried only when it holds.
Kinds with a dot ("ip.address_of") are plugged in from xenrules/sources/.
"""
from . import conditions, netinfo, template
from .errors import TemplateError


def _legacy_bridge(name):
    # Old configs say xenbrN; bridges set up without netloop are named ethN.
    if name and not netinfo.exists(name) and name.startswith("xenbr"):
        alias = "eth" + name[len("xenbr"):]
        if netinfo.is_bridge(alias):
            return alias, f"{name} is missing; {alias} is a bridge (xenbrN -> ethN)"
    return name, ""


class Context:
    def __init__(self, event, rule_vars, runtime):
        self.event = event
        self.rule_vars = rule_vars
        self.runtime = runtime
        self.values = dict(event.builtins)   # name -> (value, origin)
        self._resolving = set()

    def get(self, name):
        return self.resolve(name)[0]

    def origin(self, name):
        return self.resolve(name)[1]

    def resolve(self, name):
        if name in self.values:
            return self.values[name]
        if name not in self.rule_vars:
            raise TemplateError(f"unknown variable {name!r}")
        if name in self._resolving:
            raise TemplateError(f"variable {name!r} depends on itself")
        self._resolving.add(name)
        try:
            result = self._first_source(self.rule_vars[name])
        finally:
            self._resolving.discard(name)
        self.values[name] = result
        log = getattr(self.runtime, "log", None)
        if log is not None and log.enabled("debug"):
            log("debug", f"variable {name} = {result[0]!r} ({result[1]})")
        return result

    def _first_source(self, sources):
        for source in sources:
            when = source.get("when")
            if when and not conditions.check(when, self.get)[0]:
                continue
            kind = next(k for k in source if k != "when")
            if "." in kind:
                value, origin = self._plugged(kind, source[kind])
            else:
                value, origin = getattr(self, "_src_" + kind)(source[kind])
            if value:
                return value, origin
        return "", "no source had a value"

    def expand(self, value):
        return template.expand_value(value, self.get)

    def _plugged(self, kind, arg):
        from .sources import source_class
        cls = source_class(kind)
        if cls.templated:
            arg = template.expand(str(arg), self.get)
        return cls.resolve(self, arg)

    def _src_xenstore(self, path):
        path = template.expand(path, self.get)
        return self.runtime.xenstore.read(path) or "", f"xenstore {path}"

    def _src_param(self, name):
        return self.event.value(name), self.event.origin(name)

    def _src_env(self, name):
        return self.event.env.get(name, ""), f"environment {name}"

    def _src_conf(self, key):
        from .config import conf_value
        return conf_value(self.event.env, key), f"settings file key {key}"

    def _src_value(self, text):
        return template.expand(str(text), self.get), f"value {text!r}"

    def _src_first_bridge(self, _flag):
        found = netinfo.bridges()
        return (found[0] if found else ""), "first bridge on the host"

    def _src_bridge_alias(self, text):
        name = template.expand(text, self.get)
        alias, why = _legacy_bridge(name)
        return alias, why or f"bridge named {name!r}"

    def _src_link_mtu(self, text):
        dev = template.expand(text, self.get)
        return netinfo.mtu(dev), f"MTU of {dev}"


SOURCE_KINDS = ("xenstore", "param", "env", "conf", "value", "first_bridge", "bridge_alias", "link_mtu")
