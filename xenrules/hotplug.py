"""The hotplug entry point: what /etc/xen/scripts/<name> runs.

`python3 -m xenrules.hotplug SCRIPT WORDS...` with the toolstack's
environment; SCRIPT is the script's name or path (its basename picks the
rules, as the launcher's $0 does). Exit status and xenstore outcome are
those of the bash script it replaces.
"""
import os
import sys
import time

from . import deadline, engine, ruleset
from .config import Config, capture_setting
from .context import Context
from .errors import RuleError, XenrulesError
from .event import Event
from .fallback import run_original
from .journal import Journal
from .log import Log
from .runtime import Runtime


def handle(argv0, words, env, echo=None):
    """Run one event within its deadline (deadline.py): one budget for every wait."""
    try:
        seconds, refused = deadline.from_env(env), None
    except XenrulesError as e:
        seconds, refused = deadline.DEFAULT, e   # refused below, with hotplug-error
    deadline.start(seconds)
    try:
        return _handle(argv0, words, env, echo, refused)
    finally:
        deadline.stop()


def _handle(argv0, words, env, echo, refused):
    started = time.monotonic()
    config = Config(env)
    event = Event(argv0, words, env)
    log = Log(event.script, config.log_level, config.log_file, echo)
    log("debug", f"event: {event.describe()} XENBUS_PATH={env.get('XENBUS_PATH', '')}")
    capture = capture_setting(env)
    if capture:   # the only work capture costs when it is off: that lookup
        capture = _recorder(capture, event, config, log)
    try:
        if refused is not None:
            raise refused
        journal = Journal.for_event(config, event)
        if journal is not None and journal.exists():
            # a killed event's journal for this device: undone before anything else
            from .recovery import replay_for_event
            replay_for_event(journal, config, event, log)
    except XenrulesError as e:
        # nothing done: refuse, like any failure before the first step
        log("err", f"{event.describe()}: {e}")
        runtime = Runtime(config, event, log)
        try:
            engine.report_within_budget(runtime, str(e), "error")
        finally:
            runtime.close()
        if capture:
            capture.finish(1, "error", str(e))
        return 1
    try:
        return _run(config, event, log, journal, started, capture)
    except XenrulesError as e:
        log("err", str(e))
        report_failure(config, event, log, str(e))
        if capture:
            capture.finish(1, "error", str(e))
        return 1
    finally:
        if journal is not None:
            journal.release()   # still held here: the event did not complete (exec, exception)


def _recorder(settings, event, config, log):
    try:
        from .capture import Recorder
        return Recorder(settings, event, config, log)
    except Exception as e:   # capture must never cost the event
        log("err", f"capture disabled for this event: {e!r}")
        return None


def _fall_back(config, event, log, journal, reason, capture):
    if journal is not None:
        journal.finish()   # nothing of ours ran: nothing to replay
    if capture:
        from .fallback import original_path
        capture.finish(None, "fallback", reason, fallback=original_path(config, event.script))
    return run_original(config, event, log, reason)


def _run(config, event, log, journal, started, capture):
    try:
        # only the rules the index says may match: 1000 rules cost about what 10 do
        rules = ruleset.candidates(config, engine.event_lookup(event), log)
        rule, _ = engine.choose(rules, event)
    except RuleError as e:
        log("err", f"rule files do not validate:\n{e}")
        return _fall_back(config, event, log, journal, f"rules do not load ({first_line(e)})",
                          capture)
    except Exception as e:   # whatever breaks in the rules, the original still serves
        log("err", f"rules cannot be loaded: {e!r}")
        return _fall_back(config, event, log, journal, f"rules do not load ({e!r})", capture)
    if rule is None:
        return _fall_back(config, event, log, journal, f"no rule for {event.describe()}", capture)
    runtime = Runtime(config, event, log, xenstore=capture.store if capture else None,
                      journal=journal)
    runtime.context = Context(event, rule["vars"], runtime)
    if capture:
        capture.rule(rule)
    try:
        outcome = engine.execute(rule, runtime.context, runtime)
        # done, or failed and reverted in-process: nothing left to replay
        if journal is not None:
            journal.finish()
    finally:
        runtime.close()
    ms = (time.monotonic() - started) * 1000
    ran = sum(1 for t in outcome.trace if t[1] == "done")
    skipped = sum(1 for t in outcome.trace if t[1] == "skipped")
    verdict = "ok" if outcome.code == 0 else f"FAILED ({outcome.failed[1]})"
    log("info" if outcome.code == 0 else "err",
        f"{event.describe()}: rule {rule['name']} ({rule['file']}:{rule['line']}): "
        f"{ran} steps done, {skipped} skipped, {verdict} in {ms:.1f} ms; "
        f"device {event.builtins['backend'][0] or '-'}")   # `xenrules monitor` parses this line
    if capture:
        capture.finish(outcome.code, "ok" if outcome.code == 0 else "failed",
                       outcome.failed[1] if outcome.failed else "", outcome, runtime.context)
    return outcome.code


def first_line(error):
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def report_failure(config, event, log, message):
    """A failure before any rule ran (no rules, no original): tell libxl why,
    as the bash fatal does, so `xl` shows it instead of a bare timeout."""
    backend = event.builtins["backend"][0]
    if not backend or event.command not in ("online", "add"):
        return
    budget = deadline.current()
    if budget is not None:
        budget.reporting()
    try:
        from .xenstore import XenStore
        with XenStore(timeout=5.0) as store:
            from .engine import fit_message
            store.write(backend + "/hotplug-error", fit_message(message))
            store.write(backend + "/hotplug-status", "error")
    except XenrulesError as e:
        log("err", f"cannot report the failure to xenstore: {e}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        sys.stderr.write("usage: python3 -m xenrules.hotplug SCRIPT [WORDS...]\n")
        return 2
    return handle(argv[0], argv[1:], dict(os.environ))


if __name__ == "__main__":
    sys.exit(main())
