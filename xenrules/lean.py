"""Import a package's submodules without running the package's __init__.

pyroute2/__init__.py imports its whole world (ndb, sqlite3, asyncio,
importlib.metadata...: ~150 ms and ~11 MB), although a step that falls back
to pyroute2 needs only pyroute2.iproute.linux. bare(name) registers the package as an empty module, so
its submodules import alone; the first time anyone asks the package itself
for a name (`from pyroute2 import NDB`), its real __init__ runs then.
"""
import sys


def bare(name):
    """Register package `name` bare (once); False if it is not installed."""
    if name in sys.modules:
        return True
    import importlib
    import importlib.util
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return False
    package = importlib.util.module_from_spec(spec)

    def __getattr__(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        import os
        for base in spec.submodule_search_locations:   # `from pyroute2 import config`
            if os.path.exists(os.path.join(base, attr + ".py")) or \
                    os.path.exists(os.path.join(base, attr, "__init__.py")):
                return importlib.import_module(f"{name}.{attr}")
        del package.__getattr__          # run the real __init__ once
        spec.loader.exec_module(package)
        try:
            return package.__dict__[attr]
        except KeyError:
            raise AttributeError(f"module {name!r} has no attribute {attr!r}") from None

    package.__getattr__ = __getattr__
    sys.modules[name] = package
    return True
