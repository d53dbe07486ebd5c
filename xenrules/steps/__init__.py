"""Registry of step types.

A step type "prefix.name" lives in the module xenrules.steps.<prefix>, as a
Step subclass whose `type_name` is "prefix.name". So the event path imports
only the modules its rule actually uses (pyroute2 is heavy), and a new family
of steps is a new module: no table to edit.
"""
import importlib

# Step types whose name does not start with their module's name.
_ALIASES = {"log": "hotplug"}
# Modules of this package that hold helpers, not steps.
_NOT_STEPS = {"base", "netlink"}


def _module_name(type_name):
    prefix = _ALIASES.get(type_name, type_name.split(".", 1)[0])
    return f"{__name__}.{prefix}"


def _classes(module):
    from .base import Step
    for value in vars(module).values():
        if (isinstance(value, type) and issubclass(value, Step) and value.type_name
                and value.__module__ == module.__name__):
            yield value


def step_class(type_name):
    """Import and return the class implementing a step type (KeyError if none)."""
    try:
        module = importlib.import_module(_module_name(type_name))
    except ModuleNotFoundError as exc:
        if exc.name != _module_name(type_name):
            raise
        raise KeyError(type_name) from None
    for cls in _classes(module):
        if cls.type_name == type_name:
            return cls
    raise KeyError(type_name)


def all_step_types():
    """Every step type: {type_name: class}. Imports every step module (not for the event path)."""
    import pkgutil   # 20 ms (it pulls in typing): never on the event path
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in _NOT_STEPS:
            continue
        for cls in _classes(importlib.import_module(f"{__name__}.{info.name}")):
            if _module_name(cls.type_name) != cls.__module__:
                raise ImportError(f"step {cls.type_name} must live in {_module_name(cls.type_name)}")
            found[cls.type_name] = cls
    return dict(sorted(found.items()))
