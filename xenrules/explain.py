"""`xenrules explain`: which rule an event runs, why, and what each step would do."""
from . import engine, ruleset
from .compiler import compile_files
from .config import Config
from .context import Context
from .errors import XenstoreError
from .event import Event
from .log import NullLog
from .runtime import Runtime


class ReadOnlyStore:
    """Reads the live store if there is one; explain never writes."""

    def __init__(self):
        self.unreachable = None
        self._store = None

    def read(self, path):
        if self.unreachable:
            return None
        try:
            if self._store is None:
                from .xenstore import XenStore
                self._store = XenStore(timeout=3.0)
            return self._store.read(path)
        except XenstoreError as e:
            self.unreachable = str(e)
            return None

    def close(self):
        if self._store is not None:
            self._store.close()


def explain(script, words, env, out):
    config = Config(env)
    files = ruleset.discover(config.rules_path)
    rules, problems = compile_files(files)
    event = Event(script, words, env)
    out.write(f"event: {event.describe()}\n")
    for name, (value, origin) in event.builtins.items():
        if value:
            out.write(f"  {name} = {value!r}  ({origin})\n")
    if problems:
        out.write("\nthe rule files do not validate, so every event runs the original script:\n")
        for p in problems:
            out.write(f"{p}\n")
        return 1
    out.write(f"\nrules, in order ({len(files)} files; the first match that has action "
              f"{event.command!r} wins):\n")
    winner, verdicts = engine.choose(rules, event, every=True)
    for rule, matched, why in verdicts:
        mark = "MATCH" if matched else "no   "
        out.write(f"  [{mark}] {rule['name']}  {rule['file']}:{rule['line']}: {why}\n")
    if winner is None:
        out.write(f"\nno rule: the original {event.script} script would run\n")
        return 0
    store = ReadOnlyStore()
    runtime = Runtime(config, event, NullLog(), xenstore=store)
    context = Context(event, winner["vars"], runtime)
    runtime.context = context
    outcome = engine.execute(winner, context, runtime, dry_run=True)
    steps = winner["actions"][event.command] or []
    out.write(f"\nrule {winner['name']}, action {event.command}: {len(steps)} step(s)\n")
    for i, (spec, status, detail, _) in enumerate(outcome.trace, 1):
        extra = f", on_error: {spec['on_error']}" if spec["on_error"] != "fail" else ""
        out.write(f"  {i}. {engine.where(winner, spec)} {spec['type']}: {status}{extra}: {detail}\n")
    out.write("\nvariables of the rule:\n")
    for name in winner["vars"]:
        if name in context.values:
            value, origin = context.values[name]
            out.write(f"  {name} = {value!r}  ({origin})\n")
        else:
            out.write(f"  {name}: not needed\n")
    if store.unreachable:
        out.write(f"\nnote: xenstore was not reachable ({store.unreachable}); its values count as empty\n")
    store.close()
    return 0
