"""Admins' hook snippets: /etc/xen/scripts/vif-post.d/*.hook, as the originals run them.

The originals' `call_hooks vif post` (xen-hotplug-common.sh) *sources* every
executable `*.hook` of the directory, in glob order, inside the running
script: a hook sees the script's shell variables (command, dev, vif, bridge,
ip, XENBUS_PATH...), its helper functions (log, xenstore_read, fatal,
claim_lock...), `$0` = the script, `$1 $2` = "vif" "post", `set -e` and the
ERR trap. hooks.run rebuilds that shell: one /bin/bash whose program is the
fixed PRELUDE below; everything else (directory, names and values of the
variables) reaches it as arguments, never as code. The prelude

1. defines the helpers a hook most often calls (log, fatal, success,
   do_or_die, do_without_error, xenstore_read[_default], xenstore_write),
2. then, when the originals' libraries are installed next to `$0`
   (xen-hotplug-common.sh, xen-network-common.sh), sources them, so hooks get
   the originals' own helpers (claim_lock, add_to_bridge...), PATH, LANG,
   `set -e`, the ERR trap and the stderr log, exactly as before,
3. redefines `fatal` to hand its message to xenrules (the engine writes
   hotplug-error / hotplug-status=error and reverts, as for any failed step),
4. sets the rule's variables (plain shell variables, not exported, as in
   the original), and sources the hooks from a function, as call_hooks does.

A hook that fails (a failing command under `set -e`, `exit 1`, `fatal`)
fails the step. Nothing to revert: what a hook did is its own business.
"""
import os

from ..errors import DeadlineError, StepError
from ..template import is_name
from .base import Step

# names the PRELUDE uses itself: a hook variable must not replace them
RESERVED_PREFIX = "__xr_"
DEFAULT_TIMEOUT = 20
# The originals' libraries that call_hooks' hooks had in scope, if installed.
LIBRARIES = ("xen-hotplug-common.sh", "xen-network-common.sh")

PRELUDE = r'''
__xr_errfile=$1 __xr_hookdir=$2 __xr_libdir=$3 __xr_runningfile=$4
shift 4
__xr_callargs=("$1" "$2")
shift 2
__xr_vars=("$@")
set --
dir=$(dirname "$0")
export LANG=POSIX
unset $(set | grep ^LC_ | cut -d= -f1)

log() {
  local level="$1"
  shift
  logger -p "daemon.$level" -- "$0:" "$@" || echo "$0 $@" >&2
}
xenstore_read() {
  local v=$(xenstore-read "$@" || true)
  [ "$v" != "" ] || fatal "xenstore-read $@ failed."
  echo "$v"
}
xenstore_read_default() {
  xenstore-read "$1" 2>/dev/null || echo "$2"
}
_xenstore_write() {
  log debug "Writing $@ to xenstore."
  xenstore-write "$@"
}
xenstore_write() {
  _xenstore_write "$@" || fatal "Writing $@ to xenstore failed."
}
success() {
  xenstore_write "$XENBUS_PATH/hotplug-status" connected
}
do_or_die() {
  "$@" || fatal "$@ failed"
}
do_without_error() {
  "$@" 2>/dev/null || log debug "$@ failed"
}

if [ -f "$__xr_libdir/xen-hotplug-common.sh" ] && [ -f "$__xr_libdir/xen-network-common.sh" ]; then
  . "$__xr_libdir/xen-hotplug-common.sh"
  . "$__xr_libdir/xen-network-common.sh"
else
  set -e
fi

fatal() {
  printf '%s' "$*" > "$__xr_errfile"
  log err "$@"
  exit 1
}
sigerr() {
  fatal "$0 failed; error detected."
}
trap sigerr ERR

while [ ${#__xr_vars[@]} -ge 2 ]; do
  printf -v "${__xr_vars[0]}" '%s' "${__xr_vars[1]}"
  __xr_vars=("${__xr_vars[@]:2}")
done
unset __xr_vars

call_hooks() {
  for f in "$__xr_hookdir"/*.hook; do
    # which hook was running when bash stopped, for the hotplug-error
    if [ -x "$f" ]; then printf '%s' "$f" > "$__xr_runningfile"; . "$f"; fi
  done
  : > "$__xr_runningfile"
}
call_hooks "${__xr_callargs[@]}"
'''


# What bash itself takes from its environment as code or as a change of its
# rules: BASH_ENV/ENV are sourced before the prelude, BASH_FUNC_x%% become
# functions (one named xenstore-read would replace the command), SHELLOPTS
# and BASHOPTS switch options (xtrace + PS4 runs command substitutions),
# GLOBIGNORE would hide hooks from the glob. A hook gets none of them: its
# variables come from the rule, as data.
BASH_CONTROL = ("BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "BASH_XTRACEFD", "PS4",
                "GLOBIGNORE", "BASH_COMPAT", "BASH_LOADABLES_PATH", "INPUTRC")


def hook_environment(env):
    """The event's environment without what would make bash run or skip code."""
    return {k: v for k, v in env.items()
            if k not in BASH_CONTROL and not k.startswith("BASH_FUNC_")}


def valid_var_name(name):
    """A shell identifier that is not one of the prelude's own variables."""
    return is_name(name) and name.isascii() and not name.startswith(RESERVED_PREFIX)


# bash's own complaints when `set -e` ends it inside a function: not the hook's words
_BASH_NOISE = ("pop_var_context:", "pop_scope:")


def failure_message(hook, stderr, status):
    """hotplug-error for a hook that stopped without `fatal`: which hook, and the
    last thing it said on stderr (the seed's "errors vanish": not any more)."""
    said = [line.strip() for line in stderr.splitlines()
            if line.strip() and not any(n in line for n in _BASH_NOISE)]
    why = said[-1][:300] if said else f"exit status {status}, nothing on stderr"
    return f"hook {hook} failed: {why}"


def executable_hooks(directory):
    """The hooks call_hooks would source: executable *.hook files, byte order;
    like bash's glob `*.hook`, names starting with '.' are not among them."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    paths = [os.path.join(directory, n) for n in names
             if n.endswith(".hook") and not n.startswith(".")]
    return [p for p in paths if os.access(p, os.X_OK) and not os.path.isdir(p)]


class Run(Step):
    type_name = "hooks.run"
    summary = ("source the executable *.hook snippets of a directory in bash, with the "
               "variables and helpers the original scripts gave them (call_hooks vif post)")
    properties = {
        "dir": {"type": "string", "minLength": 1,
                "description": "hook directory (the originals: /etc/xen/scripts/vif-post.d)"},
        "devtype": {"type": "string", "description": "$1 in the hooks (default vif)"},
        "hook": {"type": "string", "description": "$2 in the hooks (default post)"},
        "vars": {"type": "object", "propertyNames": {"pattern": "^(?!__xr_)[A-Za-z_][A-Za-z0-9_]*$"},
                 "additionalProperties": {"type": ["string", "integer"]},
                 "description": "shell variables the hooks see, name: value "
                                "(command, dev, vif, bridge, ip, XENBUS_PATH...)"},
        "scripts_dir": {"type": "string",
                        "description": "where $0 lives and the originals' helper libraries "
                                       "are sourced from (default XENRULES_SCRIPTS_DIR, "
                                       "/etc/xen/scripts)"},
        "timeout": {"type": "integer", "minimum": 1,
                    "description": "seconds the hooks may take together (default 20, so that "
                                   "the event ends within libxl's 40 s)"},
    }
    required = ("dir",)

    def argv(self, runtime, errfile, runningfile):
        scripts_dir = self.args.get("scripts_dir") or runtime.config.scripts_dir
        argv0 = os.path.join(scripts_dir, runtime.event.script)
        argv = ["/bin/bash", "-c", PRELUDE, argv0, errfile, self.args["dir"], scripts_dir, runningfile,
                str(self.args.get("devtype", "vif")), str(self.args.get("hook", "post"))]
        for name, value in (self.args.get("vars") or {}).items():
            if not valid_var_name(name):
                raise StepError(f"invalid hook variable name {name!r} (a shell identifier "
                                f"not starting with {RESERVED_PREFIX})")
            argv += [name, str(value)]
        return argv

    def apply(self, runtime):
        hooks = executable_hooks(self.args["dir"])
        if not hooks:
            runtime.log("debug", f"no executable hooks in {self.args['dir']}")
            return
        import subprocess   # only events with hooks pay for it
        import tempfile
        from .. import deadline
        own = int(self.args.get("timeout", DEFAULT_TIMEOUT))
        # the step's own timeout, or what is left of the event's budget if less
        timeout, cut = deadline.seconds(own)
        deadline.check(f"hooks in {self.args['dir']}")
        # Output goes to files, not pipes: a hook may leave a daemon behind
        # holding them, and only bash's exit is waited for (as libxl does).
        with tempfile.NamedTemporaryFile(prefix="xenrules-hook-", mode="r") as errfile, \
                tempfile.NamedTemporaryFile(prefix="xenrules-hook-", mode="r") as running, \
                tempfile.TemporaryFile(mode="w+", errors="replace") as out, \
                tempfile.TemporaryFile(mode="w+", errors="replace") as err:
            argv = self.argv(runtime, errfile.name, running.name)
            runtime.log("debug", "sourcing " + " ".join(hooks))
            # its own process group, so that a timeout stops what the hooks started too
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    env=hook_environment(runtime.event.env),
                                    start_new_session=True)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                deadline.kill_group(proc)
                hook = running.read().strip() or f"a hook in {self.args['dir']}"
                if cut:
                    raise DeadlineError(f"hook {hook} still running after {timeout:.1f} s, "
                                        f"killed; {deadline.why()}") from None
                raise StepError(f"hooks in {self.args['dir']} did not finish in {own} s "
                                f"({hook} killed)") from None
            message = errfile.read().strip()
            hook = running.read().strip()
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        for stream, text in (("stdout", stdout), ("stderr", stderr)):
            if text.strip():
                runtime.log("debug", f"hooks {stream}: {text.strip()}")
        if proc.returncode != 0:
            if not message:
                message = failure_message(hook or f"a hook in {self.args['dir']}", stderr,
                                          proc.returncode)
            raise StepError(message)

    def describe(self):
        names = ", ".join(sorted(self.args.get("vars") or {}))
        return f"source executable {self.args['dir']}/*.hook with {names or 'no variables'}"
