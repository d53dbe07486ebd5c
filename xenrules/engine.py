"""Choose the rule for an event, run its steps, revert on failure, report.

Matching: rules are taken in order (files sorted by name, rules in file
order); the first rule whose `match:` holds AND that lists the event's
action wins. An action listed with no steps is a deliberate no-op. No
winner: the original script runs (see fallback.py).
"""
import time

from . import conditions, deadline
from .errors import BusyError, XenrulesError
from .steps import step_class
from .steps.base import Step


def event_lookup(event):
    """Variables a `match:` may test: built-ins, then arguments/environment."""
    def lookup(name):
        if name in event.builtins:
            return event.builtins[name][0]
        return event.value(name)
    return lookup


def choose(rules, event, every=False):
    """(winning rule or None, [(rule, matched, reason)]).

    The event path stops at the first match; `every` (explain) goes on to
    say, for each later rule, whether it would have matched too.
    """
    lookup = event_lookup(event)
    verdicts = []
    winner = None
    for rule in rules:
        ok, why = conditions.equals(rule["match"], lookup)
        if ok and event.command not in rule["actions"]:
            ok, why = False, f"matches ({why}) but has no action {event.command!r}"
        if winner is not None:
            why = f"matches too, but {winner['name']} comes first" if ok else why
            verdicts.append((rule, False, why))
            continue
        verdicts.append((rule, ok, why))
        if ok:
            winner = rule
            if not every:
                break
    return winner, verdicts


def where(rule, spec):
    return f"{rule['file']}:{spec['line']}"


class Outcome:
    def __init__(self):
        self.trace = []        # (spec, status, detail, seconds)
        self.failed = None     # (spec, message, status) of the failing step
        self.code = 0


def execute(rule, context, runtime, dry_run=False):
    """Run the rule's steps for the event's action. Returns an Outcome."""
    log = runtime.log
    out = Outcome()
    steps = rule["actions"][context.event.command] or []
    if not steps:
        return out   # a deliberate no-op needs no variables
    try:
        missing = [name for name in rule["require"] if not context.get(name)]
        message = "required variable(s) not set: " + ", ".join(
            f"{n} ({context.origin(n)})" for n in missing)
    except XenrulesError as e:
        missing, message = True, f"cannot resolve the required variables: {e}"
    if missing:
        # the bash ${XENBUS_PATH:?}: refuse before touching anything
        spec = {"type": "require", "line": rule["line"], "on_error": "fail"}
        out.trace.append((spec, "failed", message, 0.0))
        out.failed, out.code = (spec, message, "error"), 1
        log("err", f"{where(rule, spec)}: rule {rule['name']}: {message}")
        if not dry_run:
            report_within_budget(runtime, message, "error")
        return out
    journal = None if dry_run else runtime.journal
    if journal is not None:
        try:
            # this device's journal, held for the whole event: a second event
            # for the device waits; a dead one's journal is undone first
            journal.acquire()
            if journal.size():   # it appeared after hotplug.py looked: a dead event's
                from .recovery import replay
                if replay(journal, runtime.config, runtime.event, log)[0]:
                    journal.clear()
        except XenrulesError as e:
            spec = {"type": "journal", "line": rule["line"], "on_error": "fail"}
            out.trace.append((spec, "failed", str(e), 0.0))
            out.failed, out.code = (spec, str(e), "error"), 1
            log("err", f"{where(rule, spec)}: rule {rule['name']}: {e}")
            report_within_budget(runtime, str(e), "error")
            return out
    applied = []     # (n, spec, step) journaled or revertable, in order
    for n, spec in enumerate(steps):
        runtime.test_point(f"before:{n}")
        started = time.monotonic()
        journaled = None
        try:
            # a step that would begin after the budget's steps phase never begins
            deadline.check(f"{spec['type']} ({where(rule, spec)})")
            if spec["when"]:
                ok, why = conditions.check(spec["when"], context.get)
                if not ok:
                    out.trace.append((spec, "skipped", why, 0.0))
                    log("debug", f"{where(rule, spec)}: {spec['type']} skipped: {why}")
                    continue
            step = step_class(spec["type"])(context.expand(spec["args"]))
            detail = step.describe()
            if not dry_run:
                step.record = step.undo_record(runtime)
                if step.record is not None or type(step).revert is not Step.revert:
                    # written (and fsync'd) before the step changes anything
                    runtime.journal_step(n, step, where(rule, spec))
                    journaled = (n, spec, step)
                runtime.test_point(f"apply:{n}")
                step.apply(runtime)
                runtime.test_point(f"after:{n}")
        except Exception as e:   # a step failing for any reason must not leave things half-done
            message = str(e) if isinstance(e, XenrulesError) else \
                f"internal error in {spec['type']}: {e!r} (a xenrules bug: the traceback is in the log)"
            if not isinstance(e, XenrulesError):
                import traceback   # only a bug pays for it; at err, so it never vanishes
                log("err", f"{where(rule, spec)}: {spec['type']} raised:\n{traceback.format_exc()}")
            elapsed = time.monotonic() - started
            budget = deadline.current()
            out_of_time = budget is not None and budget.expired()
            if out_of_time and not dry_run:
                budget.reverting()   # what is left, and the reserve, is the revert's
            # a failing step may have done part of its work: undone now, from its record
            if journaled and journaled[2].undo_failed(runtime) and runtime.journal is not None:
                runtime.journal.undone(n)
            if spec["on_error"] == "ignore" and not out_of_time:   # no time left to go on with
                out.trace.append((spec, "failed, ignored", message, elapsed))
                log("debug", f"{where(rule, spec)}: {spec['type']} failed (ignored): {message}")
                continue
            busy = isinstance(e, BusyError) or spec["on_error"] == "busy"
            out.trace.append((spec, "failed", message, elapsed))
            out.failed = (spec, message, "busy" if busy else "error")
            out.code = 1
            # hotplug-error keeps the original's words (libxl users and the differential
            # tests know them); the log also says where each quoted value came from
            log("err", f"{where(rule, spec)}: rule {rule['name']}: {spec['type']} failed: "
                       f"{message}{_origins(message, spec, context)}")
            if not dry_run:
                if budget is not None:
                    budget.reverting()
                _revert(rule, applied, runtime)
                report_within_budget(runtime, message, "busy" if busy else "error")
            return out
        elapsed = time.monotonic() - started
        out.trace.append((spec, "would run" if dry_run else "done", detail, elapsed))
        log("debug", f"{where(rule, spec)}: {detail} ({elapsed * 1000:.1f} ms)")
        if journaled:
            applied.append(journaled)
    if not dry_run:
        runtime.test_point("end")
    return out


def _revert(rule, applied, runtime):
    """Undo the applied steps, newest first, with the code that replays a journal."""
    from .recovery import undo_steps
    steps = [(n, spec["type"], step.args, step.record, where(rule, spec))
             for n, spec, step in reversed(applied)]
    undo_steps(runtime, runtime.journal, steps, live={n: step for n, _, step in applied})


def report_within_budget(runtime, message, status):
    budget = deadline.current()
    if budget is not None:
        budget.reporting()   # the last share of the budget: tell libxl why
    report_failure(runtime, message, status)


def fit_message(message, limit=1500):
    """A message short enough for one xenstored write (4096 bytes with the
    path): a quoted hostile value of 4 KiB made the write fail, so libxl saw
    no hotplug-error at all. Head and tail are kept: the tail names the key.
    Bytes of argv/env that are not UTF-8 are written escaped (\\udcff): a
    reader of hotplug-error (ours refuses them) gets text."""
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(message) <= limit:
        return message
    cut = len(message) - limit
    return message[:limit - 400] + f" [... {cut} characters cut ...] " + message[-400:]


def report_failure(runtime, message, status):
    """Tell libxl, like the bash fatal/ebusy: hotplug-error, then hotplug-status."""
    try:
        backend = runtime.backend_path()
        runtime.xenstore.write(backend + "/hotplug-error", fit_message(message))
        runtime.xenstore.write(backend + "/hotplug-status", status)
    except XenrulesError as e:
        runtime.log("err", f"cannot report the failure to xenstore: {e}")


def _origins(message, spec, context):
    """Where each value the message quotes came from (` (bridge: xenstore
    .../bridge)`), so the log names the key that held a refused hostile value."""
    from . import template
    seen = []
    for name in template.value_names(spec["args"]):
        value, origin = context.values.get(name, ("", ""))
        if value and (value in message or repr(value) in message) and origin:
            seen.append(f"{name}: {origin}")
    return f" ({'; '.join(seen)})" if seen else ""
