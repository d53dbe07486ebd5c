"""xenrules: check, list and explain hotplug rules; run or simulate hotplug events."""
import argparse
import json
import os
import sys

from . import __version__, ruleset
from .config import Config
from .errors import RuleError, XenrulesError

EPILOG = """\
rule directories (highest priority first): XENRULES_RULES_PATH or --rules-path,
default /etc/xen/rules.d:/usr/lib/xenrules/rules.d. Rule format and steps:
README.md ("Writing rules"); `xenrules schema` prints the JSON Schema."""


def _global_options(p, default=None, shown=True):
    def help_(text):
        return text if shown else argparse.SUPPRESS   # documented once, on `xenrules --help`
    p.add_argument("--rules-path", metavar="DIRS", default=default,
                   help=help_("':'-separated rule directories, highest priority first (try rules from a checkout)"))
    p.add_argument("--state-dir", metavar="DIR", default=default,
                   help=help_("where the compiled rule cache is kept"))
    p.add_argument("--debug", action="store_true", default=default or False,
                   help=help_("log every step with its arguments and duration"))


def _parser():
    p = argparse.ArgumentParser(prog="xenrules", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"xenrules {__version__}")
    _global_options(p)
    # The same options after the subcommand (`xenrules check --rules-path rules.d`);
    # SUPPRESS keeps a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, default=argparse.SUPPRESS, shown=False)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    h = sub.add_parser("hotplug", help="handle a hotplug event, as /etc/xen/scripts/<name> does",
                       description="Handle one event with the toolstack's environment: "
                       "xenrules hotplug vif-bridge online type_if=vif")
    h.add_argument("script", help="script name or path (its basename selects the rules)")
    h.add_argument("words", nargs=argparse.REMAINDER, help="the script's arguments")

    c = sub.add_parser("check", parents=[common], help="validate rule files; exit 1 on any problem",
                       description="Validate the effective rule files (or the FILES given) and report every "
                       "problem as file:line:col with the source line.")
    c.add_argument("files", nargs="*", help="rule files to check instead of the rule directories")

    sub.add_parser("list", parents=[common], help="show the effective rule files and rules, and where each comes from",
                   description="Effective rule files in order, with overridden and masked files "
                   "(like systemd-delta), and the rules each holds.")

    e = sub.add_parser("explain", parents=[common], help="show which rule an event would run and every step, changing nothing",
                       description="Describe an event like the toolstack would send it, then show why each "
                       "rule did or did not match, the variables and every step with its expanded values. "
                       "Reads xenstore (XENSTORED_PATH) if reachable; changes nothing.",
                       epilog="example: xenrules explain --env XENBUS_PATH=backend/vif/1/0 --env vif=vif1.0 "
                       "vif-bridge online type_if=vif")
    e.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="set an environment variable of the event (repeatable)")
    e.add_argument("script", help="script name, e.g. vif-bridge")
    e.add_argument("words", nargs=argparse.REMAINDER, help="the script's arguments, e.g. online type_if=vif")

    sub.add_parser("schema", parents=[common], help="print the JSON Schema of rule files")

    w = sub.add_parser("helper", help="serve hotplug events warm, for the launchers (systemd: xenrules-helper)",
                       description="The warm helper: imports the event path once and runs each event the "
                       "launchers send it (see docs/performance-design.md). Options after `helper`: "
                       "--socket PATH, --spares N, --max-events N, --stats FILE, --profile FILE "
                       "(one JSON line per event: the milliseconds of each phase).", add_help=False)
    w.add_argument("options", nargs=argparse.REMAINDER, help="the helper's options (helper --help)")

    r = sub.add_parser("recover", parents=[common],
                       help="undo what killed hotplug events left half-done (their journals)",
                       description="Every hotplug event journals, before each step changes "
                       "anything, what its revert needs (XENRULES_JOURNAL_DIR, default "
                       "/run/xenrules/journal). An event killed half-way (libxl's timeout, "
                       "SIGKILL, a crash) leaves its journal; the next event for the same device "
                       "undoes it first, and so do the warm helper when it starts and this "
                       "command (xenrules-recover.service runs it at boot). Each device is put "
                       "back as it was before the killed event. Journals of events still "
                       "running, or of other network namespaces, are left alone. "
                       "Exit status: 0 when nothing is left to undo, 1 when an undo failed or a "
                       "journal was left.",
                       epilog="example: xenrules recover --dry-run")
    r.add_argument("--dry-run", action="store_true",
                   help="show each killed event and the undo of each of its steps, newest "
                        "first; change nothing")

    s = sub.add_parser("sandbox", parents=[common], help="run a guest's vif through online and offline in a simulated dom0",
                       description="Start a XenStore server and a throw-away network namespace with a bridge, "
                       "bring a guest's vif online and offline with the rules, show the trace and the "
                       "resulting state, then clean up. Needs root; no Xen needed.")
    s.add_argument("--script", default="vif-bridge", help="the script whose rules to run (vif-bridge)")

    r = sub.add_parser("replay", parents=[common], help="rerun a captured event in a simulated dom0 and diff the end state",
                       description="Rebuild the dom0 of a capture file (XENRULES_CAPTURE, see "
                       "docs/TROUBLESHOOTING.md) in a throw-away namespace with its XenStore tree, run the "
                       "event with the current rules (or the original script, or both), show the trace "
                       "and how the end state differs from the captured one. Needs root; no Xen needed.")
    r.add_argument("file", help="a capture file")
    how = r.add_mutually_exclusive_group()
    how.add_argument("--original", action="store_true", help="run the original script instead of the rules")
    how.add_argument("--compare", action="store_true", help="run both, one after the other, each on a fresh copy")

    m = sub.add_parser("monitor", parents=[common], help="follow hotplug events live: one line as each starts and ends",
                       description="Follow the hotplug log (XENRULES_LOG_FILE, /var/log/xen/xen-hotplug.log) "
                       "and print one line per event start and end: time, script, action, device, "
                       "domain, rule, verdict, duration. Start lines and --debug step traces need "
                       "events logged at debug level (XENRULES_LOG_LEVEL=debug).")
    m.add_argument("--from-start", action="store_true", help="read the log from its beginning, not its end")
    m.add_argument("--once", action="store_true", help="stop at the end of the log instead of following it")

    d = sub.add_parser("doctor", parents=[common], help="find why a guest's devices do not come up; exit 1 on a problem",
                       description="Check what hotplug needs, each check printing ok or PROBLEM with the fix: "
                       "the script directory and every script xl.conf and the domain's config name "
                       "(exists, executable, resolvable, diverted to xenrules), the rule files, which rule "
                       "each device of the domain runs and why, the settings file (each unknown key or bad "
                       "value as file:line, with the closest known key), the hooks the rules source (each "
                       "*.hook executable, its interpreter a shell, bash -n clean), the warm helper's socket, XenStore, the "
                       "bridges the config names, the log, stale locks and journals, and a failed "
                       "device's hotplug-error with its last log lines.")
    d.add_argument("--domain", metavar="NAME|ID", help="the guest to check (running: its XenStore devices)")
    d.add_argument("--config", metavar="FILE", help="the guest's xl config (/etc/xen/NAME.cfg)")
    d.add_argument("--xl-conf", metavar="FILE", default=None, help="xl.conf to read (/etc/xen/xl.conf)")

    return p


def main(argv=None):
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "helper":
        args.options = extra + args.options   # its own options: the helper parses them
    elif extra:
        parser.error("unrecognized arguments: " + " ".join(extra))
    env = dict(os.environ)
    if args.rules_path:
        env["XENRULES_RULES_PATH"] = args.rules_path
    if args.state_dir:
        env["XENRULES_STATE_DIR"] = args.state_dir
    if args.debug:
        env["XENRULES_LOG_LEVEL"] = "debug"
    try:
        return COMMANDS[args.command](args, env)
    except RuleError as e:
        print(e, file=sys.stderr)
        return 1
    except XenrulesError as e:
        print(f"xenrules: {e}", file=sys.stderr)
        return 1


def cmd_hotplug(args, env):
    from .hotplug import handle
    return handle(args.script, args.words, env, echo=sys.stderr if env.get("XENRULES_LOG_LEVEL") == "debug" else None)


def cmd_helper(args, env):
    from . import helper
    os.environ.update(env)   # --rules-path, --state-dir, --debug: the helper reads its environment
    return helper.main(args.options)


def cmd_check(args, env):
    from .compiler import compile_files
    from .config import CONF_FILE, check_conf
    config = Config(env)
    for warning in check_conf(env.get("XENRULES_CONF") or CONF_FILE):
        print(f"warning: {warning}", file=sys.stderr)   # the settings file: warnings, not problems
    if args.files:
        files = [ruleset.RuleFile(os.path.basename(f), f, []) for f in args.files]
    else:
        files = ruleset.discover(config.rules_path)
    rules, problems = compile_files(files)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) in {len(files)} rule file(s)", file=sys.stderr)
        return 1
    print(f"{len(files)} rule file(s), {len(rules)} rule(s): OK")
    return 0


def cmd_list(args, env):
    from .compiler import compile_files
    config = Config(env)
    files = ruleset.discover(config.rules_path)
    rules, problems = compile_files(files)
    print("rule directories, highest priority first: " + ":".join(config.rules_path))
    for f in files:
        state = "[MASKED]" if f.masked else ("[OVERRIDDEN]" if f.hidden else "")
        print(f"{f.path} {state}".rstrip())
        for hidden in f.hidden:
            print(f"    overrides {hidden}")
        for rule in (r for r in rules if r["file"] == f.path):
            match = " ".join(f"{k}={'|'.join(v)}" for k, v in rule["match"].items())
            actions = ", ".join(rule["actions"])
            print(f"    {rule['line']}: {rule['name']}  match {match}  actions {actions}")
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


def cmd_explain(args, env):
    from .explain import explain
    for item in args.env:
        name, eq, value = item.partition("=")
        if not eq:
            raise XenrulesError(f"--env takes NAME=VALUE, not {item!r}")
        env[name] = value
    return explain(args.script, args.words, env, sys.stdout)


def cmd_schema(args, env):
    from .schema import build
    json.dump(build(), sys.stdout, indent=2)
    print()
    return 0


def cmd_recover(args, env):
    from .log import Log
    from .recovery import recover_all
    config = Config(env)
    log = Log("xenrules-recover", config.log_level, config.log_file,
              echo=sys.stderr if config.log_level == "debug" else None)
    replayed, left, failures = recover_all(config, env, log, dry_run=args.dry_run)
    if not args.dry_run:
        print(f"{replayed} journal(s) undone, {left} left alone, {len(failures)} undo(s) failed")
    return 1 if failures or left else 0


def cmd_sandbox(args, env):
    from .sandbox.demo import run_demo
    return run_demo(env, args.script, sys.stdout)


def cmd_replay(args, env):
    from .replay import replay
    return replay(args.file, sys.stdout, rules_path=env.get("XENRULES_RULES_PATH"),
                  original=args.original, compare=args.compare)


def cmd_monitor(args, env):
    from .monitor import monitor
    return monitor(Config(env).log_file, sys.stdout, debug=args.debug,
                   from_start=args.from_start, follow=not args.once)


def cmd_doctor(args, env):
    from .doctor import run_doctor
    return run_doctor(env, sys.stdout, domain=args.domain, config_file=args.config, xl_conf=args.xl_conf)


COMMANDS = {"hotplug": cmd_hotplug, "check": cmd_check, "list": cmd_list, "explain": cmd_explain,
            "schema": cmd_schema, "sandbox": cmd_sandbox, "helper": cmd_helper,
            "recover": cmd_recover, "replay": cmd_replay,
            "monitor": cmd_monitor, "doctor": cmd_doctor}

if __name__ == "__main__":
    sys.exit(main())
