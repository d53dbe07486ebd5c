"""Replay journals: undo what a killed event did, newest step first.

The same function undoes an in-process failure (engine.py), a dead event's
journal found by the next event for the device (hotplug.py), every journal
of this network namespace when the warm helper starts (helper.py) or when
`xenrules recover` runs (at boot: xenrules-recover.service), and shows what
it would do (`xenrules recover --dry-run`). Each undo is marked in the
journal as it completes, so a recovery that is itself killed goes on where
it stopped; an undo that fails is logged and not retried (a journal must
never block its device for good).
"""
import os

from .errors import JournalError, XenrulesError
from .journal import Journal, check_dir, key_of, netns_id, pending_steps


def undo_steps(runtime, journal, steps, dry_run=False, out=None, live=None):
    """Undo steps [(n, type, args, undo, where)], newest first. Returns the failures.

    live: {n: step object} of an in-process revert, for the steps that have
    no undo record but a revert of their own (not crash-safe)."""
    from .steps import step_class
    log = runtime.log
    failures = []
    if not dry_run:
        # locks the dead event held (lock.acquire): taken again for the replay,
        # each released when its own record is undone
        for _n, type_name, args, record, _where in reversed(steps):
            try:
                step_class(type_name).retake(runtime, args, record)
            except KeyError:
                pass
    for n, type_name, args, record, where in steps:
        runtime.test_point(f"undo:{n}")
        try:
            cls = step_class(type_name)
        except KeyError:
            failures.append(f"{where}: unknown step type {type_name!r}")
            log("err", f"journal: {failures[-1]}")
            continue
        if record is None and live and n in live:
            try:
                live[n].revert(runtime)
                log("debug", f"{where}: reverted {type_name}")
            except Exception as e:
                failures.append(f"{where}: revert of {type_name} failed: {e}")
                log("err", failures[-1])
            if journal is not None:
                journal.undone(n)
            continue
        if record is None:
            message = f"{where}: {type_name} has no undo record: what it did is left as it is"
            if dry_run:
                out(f"  {message}")
            else:
                failures.append(message)
                log("err", f"journal: {message}")
                if journal is not None:
                    journal.undone(n)
            continue
        if dry_run:
            out(f"  {where}: {cls.describe_undo(args, record)}")
            continue
        try:
            cls.undo(runtime, args, record)
            log("debug", f"{where}: reverted {type_name}")
        except Exception as e:   # the other steps still get their undo
            failures.append(f"{where}: revert of {type_name} failed: {e}")
            log("err", failures[-1])
        if journal is not None:
            journal.undone(n)
    return failures


def replay(journal, config, event, log, dry_run=False, out=None):
    """Undo a dead event's journal, which the caller holds. Returns (replayed?, failures)."""
    from .runtime import Runtime
    records, torn = journal.read()
    header, steps = pending_steps(records)
    if torn:
        log("info", f"journal {journal.path}: torn last record ignored (it was never complete)")
    if not header and not steps:
        return False, []
    if header.get("v", 1) != 1:
        # written by another version of xenrules: its records are not ours to read
        raise JournalError(f"journal {journal.path} has format {header.get('v')!r}, not 1")
    what = header.get("event", "?")
    if dry_run:
        out(f"{journal.key}: killed event {what} (pid {header.get('pid', '?')}), "
            f"{len(steps)} step(s) to undo, newest first:")
    else:
        log("warning", f"journal: undoing {len(steps)} step(s) of the killed event {what} "
                       f"(pid {header.get('pid', '?')}) for {journal.key}")
    xenstore = None
    if header.get("xenstore"):
        from .xenstore import XenStore
        xenstore = XenStore(header["xenstore"])
    runtime = Runtime(config, event, log, xenstore=xenstore)
    if header.get("lock_dir"):
        runtime.lock_dir = header["lock_dir"]
    try:
        failures = undo_steps(runtime, journal, steps, dry_run, out)
    finally:
        runtime.close()
    return True, failures


def replay_for_event(journal, config, event, log):
    """Before an event does anything: a dead event's journal for its device is undone.
    Leaves the journal held (empty of pending work) for the event itself."""
    if not journal.acquire(create=False):
        return
    replayed, _ = replay(journal, config, event, log)
    if replayed:
        journal.clear()


def recover_all(config, env, log, dry_run=False, out=print):
    """Replay every journal of this network namespace; returns (replayed, left, failures)."""
    from .event import Event
    directory = config.journal_dir
    if not check_dir(directory, create=False):
        return 0, 0, []
    ours, replayed, left, failures = netns_id(), 0, 0, []
    event = Event("xenrules-recover", [], env)
    for name in sorted(os.listdir(directory)):
        parsed = key_of(name)
        if parsed is None:
            continue
        netns, key = parsed
        if netns != ours:
            out(f"{key}: journal of network namespace {netns}, not this one ({ours}): left alone")
            left += 1
            continue
        journal = Journal(directory, key)
        try:
            if not journal.acquire(wait=0, create=False):
                continue   # completed meanwhile
        except JournalError as e:
            out(f"{key}: {e}: left alone (its event is still running?)")
            left += 1
            continue
        try:
            done, failed = replay(journal, config, event, log, dry_run, out)
            failures += failed
            if dry_run:
                journal.release()
            else:
                journal.finish()
                replayed += done
                if done:
                    out(f"{key}: reverted" + (f" ({len(failed)} undo(s) failed)" if failed else ""))
        except XenrulesError:
            journal.release()
            raise
    return replayed, left, failures
