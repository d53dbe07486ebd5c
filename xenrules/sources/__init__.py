"""Registry of the variable sources that are not built into the context.

The built-in kinds (xenstore, param, env, value, first_bridge, bridge_alias,
link_mtu) live in context.py. A source kind "prefix.name" lives in the module
xenrules.sources.<prefix>, as a VarSource subclass whose `kind` is
"prefix.name": adding a family of sources is adding a module.
"""
import importlib


class VarSource:
    #: The key used in rule files, e.g. "ip.address_of".
    kind = ""
    #: JSON Schema of the source's argument.
    schema = {"type": "string"}
    #: True: the argument is a template, expanded before `resolve` sees it.
    templated = True
    #: One line for docs and `xenrules schema`.
    summary = ""

    @staticmethod
    def resolve(context, arg):
        """Return (value, origin). An empty value lets the next source try."""
        raise NotImplementedError


def _module_name(kind):
    return f"{__name__}.{kind.split('.', 1)[0]}"


def _classes(module):
    for value in vars(module).values():
        if (isinstance(value, type) and issubclass(value, VarSource) and value.kind
                and value.__module__ == module.__name__):
            yield value


def source_class(kind):
    """Import and return the class of a source kind (KeyError if none)."""
    if "." not in kind:
        raise KeyError(kind)
    try:
        module = importlib.import_module(_module_name(kind))
    except ModuleNotFoundError as exc:
        if exc.name != _module_name(kind):
            raise
        raise KeyError(kind) from None
    for cls in _classes(module):
        if cls.kind == kind:
            return cls
    raise KeyError(kind)


def all_source_kinds():
    """Every plugged-in source: {kind: class}. Imports every module (not for the event path)."""
    import pkgutil   # 20 ms (it pulls in typing): never on the event path
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        for cls in _classes(importlib.import_module(f"{__name__}.{info.name}")):
            if _module_name(cls.kind) != cls.__module__:
                raise ImportError(f"source {cls.kind} must live in {_module_name(cls.kind)}")
            found[cls.kind] = cls
    return dict(sorted(found.items()))
