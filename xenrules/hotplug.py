"""The hotplug entry point: what /etc/xen/scripts/<name> runs.

`python3 -m xenrules.hotplug SCRIPT WORDS...` with the toolstack's
environment; SCRIPT is the script's name or path (its basename picks the
rules, as the launcher's $0 does). Exit status and xenstore outcome are
those of the bash script it replaces.
"""
import os
import sys
import time

from . import engine, ruleset
from .config import Config
from .context import Context
from .errors import RuleError, XenrulesError
from .event import Event
from .fallback import run_original
from .journal import Journal
from .log import Log
from .runtime import Runtime


def handle(argv0, words, env, echo=None):
    started = time.monotonic()
    config = Config(env)
    event = Event(argv0, words, env)
    log = Log(event.script, config.log_level, config.log_file, echo)
    log("debug", f"event: {event.describe()} XENBUS_PATH={env.get('XENBUS_PATH', '')}")
    try:
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
            engine.report_failure(runtime, str(e), "error")
        finally:
            runtime.close()
        return 1
    try:
        return _run(config, event, log, journal, started)
    finally:
        if journal is not None:
            journal.release()   # still held here: the event did not complete (exec, exception)


def _run(config, event, log, journal, started):
    try:
        try:
            # only the rules the index says may match: 1000 rules cost about what 10 do
            rules = ruleset.candidates(config, engine.event_lookup(event), log)
            rule, _ = engine.choose(rules, event)
        except RuleError as e:
            log("err", f"rule files do not validate:\n{e}")
            if journal is not None:
                journal.finish()
            return run_original(config, event, log, "rules do not load")
        except Exception as e:   # whatever breaks in the rules, the original still serves
            log("err", f"rules cannot be loaded: {e!r}")
            if journal is not None:
                journal.finish()
            return run_original(config, event, log, "rules do not load")
        if rule is None:
            if journal is not None:
                journal.finish()
            return run_original(config, event, log, f"no rule for {event.describe()}")
    except XenrulesError as e:
        log("err", str(e))
        return 1
    runtime = Runtime(config, event, log, journal=journal)
    runtime.context = Context(event, rule["vars"], runtime)
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
        f"{ran} steps done, {skipped} skipped, {verdict} in {ms:.1f} ms")
    return outcome.code


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        sys.stderr.write("usage: python3 -m xenrules.hotplug SCRIPT [WORDS...]\n")
        return 2
    return handle(argv[0], argv[1:], dict(os.environ))


if __name__ == "__main__":
    sys.exit(main())
