"""vif-post.d hooks: the hooks.run step against the originals' call_hooks.

The originals source /etc/xen/scripts/vif-post.d/*.hook: an absolute path,
not relative to the script's directory. So the differential tests give each
run a private /etc: the event runs under `unshare -m` with an overlay
mounted on /etc whose upper layer holds xen/scripts/vif-post.d/. The host's
/etc is never touched, and other tests running the originals at the same
time see no hook. xenrules runs with its default hook directory (the same
path) and with XENRULES_SCRIPTS_DIR at the originals, so that hooks get the
originals' helper libraries as on an installed system.

The recording hook writes what it sees (variables with their attributes,
$0 $1 $2, helper functions, errexit) into xenstore under
<backend>/xr-hook/, which the differential state compares.
"""

import os
import subprocess
import textwrap

import pytest

from differential import (assert_same, build, exits, normalize, offline, online, run_events,
                          Scenario, tap_add, tap_remove)
from events import BACK, wait_for, why
from xenrules.errors import StepError
from xenrules.sandbox.dom0 import PYTHON, REPO_ROOT

pytestmark = pytest.mark.netns

NAMES = ("command type_if dev vif vifname XENBUS_PATH ip bridge domid devid netdev script "
         "XENBUS_TYPE XENBUS_BASE_PATH INTERFACE LANG PATH dir")
HELPERS = ("log fatal success do_or_die do_without_error xenstore_read xenstore_read_default "
           "xenstore_write claim_lock release_lock add_to_bridge setup_virtual_bridge_port")
RECORDER = textwrap.dedent("""\
    # what a vif-post.d hook sees, into xenstore
    __rec() { xenstore-write "$XENBUS_PATH/xr-hook/$1" "$2"; }
    for __n in %s; do
      __rec "var-$__n" "$(declare -p $__n 2>/dev/null || echo unset)"
    done
    __rec args "$0 $1 $2"
    __rec hook "$f"
    case $- in *e*) __rec errexit on ;; *) __rec errexit off ;; esac
    __rec helpers "$(for __h in %s; do type -t $__h || echo none; done | tr '\\n' ' ')"
    __rec runs "$(( $(xenstore-read "$XENBUS_PATH/xr-hook/runs" 2>/dev/null || echo 0) + 1 ))"
    """) % (NAMES, HELPERS)
# mount an overlay on /etc in a private mount namespace, then run the event
OVERLAY = 'mount -t overlay xr-etc -o "lowerdir=/etc,upperdir=$1,workdir=$2" /etc && shift 2 && exec "$@"'


def write_hook(directory, name, text, executable=True):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o755 if executable else 0o644)
    return path


class PrivateEtc:
    """An /etc overlay whose upper layer holds xen/scripts/vif-post.d."""

    def __init__(self, root, name):
        self.upper = root / (name + "-upper")
        self.hooks = str(self.upper / "xen" / "scripts" / "vif-post.d")
        os.makedirs(self.hooks)
        self.root, self.name, self.runs = root, name, 0

    def argv(self, argv):
        self.runs += 1
        work = self.root / ("%s-work%d" % (self.name, self.runs))   # one per mount
        work.mkdir()
        return ["unshare", "-m", "--propagation", "private", "/bin/bash", "-c", OVERLAY,
                "xr-overlay", str(self.upper), str(work)] + list(argv)


def compare_with_hooks(dom0_factory, scenario, hooks, tmp_path, originals):
    """Like differential.compare_scenario, each side with a private /etc
    holding `hooks` ({name: text}; a name ending in '!' is not executable)."""
    sides = []
    for name in ("orig", "xr"):
        dom0 = build(dom0_factory, scenario)
        etc = PrivateEtc(tmp_path, name)
        for hook, text in hooks.items():
            write_hook(etc.hooks, hook.rstrip("!"), text, executable=not hook.endswith("!"))
        sides.append((dom0, etc))
    (orig_dom0, orig_etc), (xr_dom0, xr_etc) = sides

    def orig_runner(script, args, env):
        return orig_dom0.run(orig_etc.argv([os.path.join(originals, script)] + list(args)), env)

    def xr_runner(script, args, env):
        env = dict(env, **xr_dom0.xenrules_env(), XENRULES_SCRIPTS_DIR=originals)
        return xr_dom0.run(xr_etc.argv(["/usr/bin/python3", "-m", "xenrules.hotplug", script]
                                       + list(args)), env)

    out = []
    for dom0, runner in ((orig_dom0, orig_runner), (xr_dom0, xr_runner)):
        outcomes, results = run_events(dom0, scenario, runner)
        st = normalize(dom0.state(), dom0)
        st["outcomes"] = outcomes
        st["output"] = [{"stdout": r.stdout, "stderr": r.stderr, "log": r.hotplug_log}
                        for r in results]
        out.append(st)
    return out


def recorded(state):
    prefix = BACK + "/xr-hook/"
    return {k[len(prefix):]: v for k, v in state["xenstore"].items() if k.startswith(prefix)}


# -- differential: the hook sees the same things ---------------------------------------

@pytest.mark.parametrize("events", [[online()], [online(), offline()]],
                         ids=["online", "online-offline"])
def test_hook_sees_the_same_variables_and_helpers(dom0_factory, originals, tmp_path, events):
    scenario = Scenario("hooks", events, setup=lambda d: d.add_vif(1, 0, ip="192.0.2.10"))
    orig, xr = compare_with_hooks(dom0_factory, scenario, {"10-record.hook": RECORDER},
                                  tmp_path, originals)
    assert exits(orig) == [0] * len(events)
    seen = recorded(orig)
    assert seen["runs"] == str(len(events))
    assert seen["var-command"] == 'declare -- command="%s"' % events[-1].args[0]
    assert seen["var-dev"] == 'declare -- dev="vif1.0"'
    assert seen["var-bridge"] == 'declare -- bridge="xenbr0"'
    assert seen["var-ip"] == 'declare -- ip="192.0.2.10"'
    assert seen["var-XENBUS_PATH"] == 'declare -x XENBUS_PATH="backend/vif/1/0"'
    assert seen["var-domid"] == "unset"
    assert seen["args"].endswith("/vif-bridge vif post")
    assert seen["helpers"].split() == ["function"] * len(HELPERS.split())
    assert seen["errexit"] == "on"
    assert orig["xenstore"][BACK + "/hotplug-status"] == "connected"
    assert_same(orig, xr)


def test_hook_of_a_tap_sees_domid_and_devid(dom0_factory, originals, tmp_path):
    def setup(d):
        d.add_vif(1, 0)
        d.add_tap(1, 0)
    scenario = Scenario("hooks-tap", [tap_add(), tap_remove()], setup=setup)
    orig, xr = compare_with_hooks(dom0_factory, scenario, {"10-record.hook": RECORDER},
                                  tmp_path, originals)
    assert exits(orig) == [0, 0]
    seen = recorded(orig)
    assert seen["var-dev"] == 'declare -- dev="vif1.0-emu"'
    assert seen["var-domid"] == 'declare -- domid="1"'
    assert seen["var-XENBUS_PATH"] == 'declare -x XENBUS_PATH="/local/domain/0/backend/vif/1/0"'
    assert_same(orig, xr)


def test_hook_of_a_renamed_vif_sees_the_new_name(dom0_factory, originals, tmp_path):
    scenario = Scenario("hooks-vifname", [online()],
                        setup=lambda d: d.add_vif(1, 0, vifname="web0"))
    orig, xr = compare_with_hooks(dom0_factory, scenario, {"10-record.hook": RECORDER},
                                  tmp_path, originals)
    assert recorded(orig)["var-dev"] == 'declare -- dev="web0"'
    # the original's frontend-mtu bug with vifname (test_differential_vif_bridge.py)
    drop = ("/local/domain/web0/", "/local/domain/1/device/vif/0/mtu")
    assert_same(orig, xr, drop_xenstore=drop)


def test_only_executable_hooks_run_in_name_order(dom0_factory, originals, tmp_path):
    order = 'xenstore-write "$XENBUS_PATH/xr-hook/order" "$(xenstore-read "$XENBUS_PATH/xr-hook/order" 2>/dev/null)%s"\n'
    hooks = {"20-b.hook": order % "b", "10-a.hook": order % "a", "15-off.hook!": order % "x",
             "30-c.sh": order % "c", "Z.hook": order % "Z", "05-log.hook": 'log info "hook ran"\n'}
    orig, xr = compare_with_hooks(dom0_factory, Scenario("order", [online()]), hooks,
                                  tmp_path, originals)
    assert recorded(orig)["order"] == "abZ"
    assert_same(orig, xr)


def test_no_hook_directory_changes_nothing(dom0_factory, originals, tmp_path):
    orig, xr = compare_with_hooks(dom0_factory, Scenario("none", [online(), offline()]), {},
                                  tmp_path, originals)
    assert exits(orig) == [0, 0]
    assert_same(orig, xr)


# -- differential: failing hooks (intended differences) -----------------------------------

def test_hook_calling_fatal_fails_the_event(dom0_factory, originals, tmp_path):
    hooks = {"10-fatal.hook": 'fatal "no VLAN for $dev"\n'}
    orig, xr = compare_with_hooks(dom0_factory, Scenario("fatal", [online()]), hooks,
                                  tmp_path, originals)
    assert exits(orig) == [1] and exits(xr) == [1]
    for st in (orig, xr):
        assert st["xenstore"][BACK + "/hotplug-status"] == "error"
        assert st["xenstore"][BACK + "/hotplug-error"] == "no VLAN for vif1.0"
    # Intended difference: xenrules reverts the event (vif off the bridge, down,
    # its MAC back, frontend mtu removed); the original leaves it plugged in.
    assert orig["links"]["vif1.0"]["master"] == "xenbr0"
    assert xr["links"]["vif1.0"]["master"] is None
    assert xr["links"]["vif1.0"]["up"] is False


def test_hook_with_a_failing_command_fails_the_event(dom0_factory, originals, tmp_path):
    hooks = {"10-false.hook": "false\n"}
    orig, xr = compare_with_hooks(dom0_factory, Scenario("false", [online()]), hooks,
                                  tmp_path, originals)
    assert exits(orig) == [1] and exits(xr) == [1]
    # The original stops under `set -e` without a word: hotplug-status stays
    # empty. xenrules reports it (hotplug-error, status error) and reverts.
    assert orig["xenstore"][BACK + "/hotplug-status"] == ""
    assert BACK + "/hotplug-error" not in orig["xenstore"]
    assert xr["xenstore"][BACK + "/hotplug-status"] == "error"
    assert "failed" in xr["xenstore"][BACK + "/hotplug-error"]


def test_hook_failing_at_offline_does_not_undo_the_teardown(dom0_factory, originals, tmp_path):
    hooks = {"10-false.hook": '[ "$command" = online ] || false\n'}
    orig, xr = compare_with_hooks(dom0_factory, Scenario("false-off", [online(), offline()]),
                                  hooks, tmp_path, originals)
    assert exits(orig) == [0, 1]
    # Intended difference: xenrules ignores a hook's failure at teardown
    # (exit 0; the toolstack ignores teardown errors anyway)
    assert exits(xr) == [0, 0]
    for st in (orig, xr):
        assert st["links"]["vif1.0"]["master"] is None
    xr["outcomes"] = orig["outcomes"]
    assert_same(orig, xr)


# -- xenrules alone -----------------------------------------------------------------------

def test_hooks_dir_is_overridable_and_values_stay_data(ev, dom0, tmp_path):
    hooks = tmp_path / "hooks"
    marker = tmp_path / "injected"
    write_hook(str(hooks), "10-record.hook", RECORDER)
    write_hook(str(hooks), "20-raw.hook", 'xenstore-write "$XENBUS_PATH/xr-hook/raw-ip" "$ip"\n')
    evil = '$(touch %s)`touch %s`"; touch %s; "' % (marker, marker, marker)
    dom0.xs_write(BACK + "/ip", evil)
    # the shipped vif-bridge rules, with the hook directory moved
    proc = ev.run(script="vif-bridge", XENRULES_RULES_PATH=os.path.join(REPO_ROOT, "rules.d"),
                  XENRULES_VIF_HOOKS_DIR=str(hooks))
    assert proc.returncode == 0, why(proc, ev)
    assert dom0.xs_read(BACK + "/xr-hook/runs") == "1"
    assert dom0.xs_read(BACK + "/xr-hook/raw-ip") == evil
    assert not marker.exists()


def test_builtin_helpers_when_the_originals_libraries_are_missing(ev, dom0, tmp_path):
    hooks = tmp_path / "hooks"
    write_hook(str(hooks), "10-record.hook", RECORDER)
    write_hook(str(hooks), "20-fatal.hook",
               'fatal "mac $(xenstore_read "$XENBUS_PATH/mac") refused"\n')
    empty = tmp_path / "scripts"
    empty.mkdir()
    ev.steps("""
        - hooks.run: {dir: "%s", vars: {dev: "{vif}", command: "{action}"}}
    """ % hooks)
    proc = ev.run(XENRULES_SCRIPTS_DIR=str(empty))
    assert proc.returncode == 1, why(proc, ev)
    assert dom0.xs_read(BACK + "/hotplug-error") == "mac 00:16:3e:00:01:00 refused"
    helpers = dom0.xs_read(BACK + "/xr-hook/helpers").split()
    assert helpers[:8] == ["function"] * 8            # log ... xenstore_write
    assert helpers[8:] == ["none"] * 4                # claim_lock ... only with the libraries
    assert dom0.xs_read(BACK + "/xr-hook/errexit") == "on"
    assert dom0.xs_read(BACK + "/xr-hook/args") == "%s/xr-test vif post" % empty


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open("/proc/%d/stat" % pid) as fh:
        return fh.read().split(") ", 1)[1][0] != "Z"


def test_a_hook_that_hangs_is_stopped_with_what_it_started(ev, dom0, tmp_path):
    hooks = tmp_path / "hooks"
    pidfile = tmp_path / "sleep.pid"
    write_hook(str(hooks), "10-hang.hook", "sleep 600 & echo $! > %s; wait\n" % pidfile)
    ev.steps("""
        - hooks.run: {dir: "%s", timeout: 1}
    """ % hooks)
    proc = ev.run()
    assert proc.returncode == 1, why(proc, ev)
    assert "did not finish in 1 s" in dom0.xs_read(BACK + "/hotplug-error")
    pid = int(pidfile.read_text())
    assert wait_for(lambda: not _alive(pid)), "the hook's sleep survived"


def test_a_daemon_left_by_a_hook_does_not_hold_the_event(ev, dom0, tmp_path):
    hooks = tmp_path / "hooks"
    pidfile = tmp_path / "daemon.pid"
    write_hook(str(hooks), "10-daemon.hook", "sleep 600 & echo $! > %s\n" % pidfile)
    ev.steps("""
        - hooks.run: {dir: "%s", timeout: 30}
        - hotplug.success:
    """ % hooks)
    proc = ev.run()
    pid = int(pidfile.read_text())
    try:
        assert proc.returncode == 0, why(proc, ev)
        assert dom0.xs_read(BACK + "/hotplug-status") == "connected"
        assert _alive(pid)            # the event ended while the daemon still ran
    finally:
        os.kill(pid, 9)


def test_bad_variable_name_is_refused_by_check(ev):
    ev.steps("""
        - hooks.run: {dir: /nonexistent, vars: {"bad-name": x}}
    """)
    proc = subprocess.run([PYTHON, "-m", "xenrules", "--rules-path", str(ev.rules_dir), "check"],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 1
    assert "bad-name" in proc.stdout + proc.stderr


def test_openvswitch_runs_hooks_only_when_switched_on(xs_server, tmp_path):
    from xenrules.sandbox.ovs import ovs_dom0
    hooks = tmp_path / "hooks"
    write_hook(str(hooks), "10-record.hook", RECORDER)
    dom0 = ovs_dom0(xs_server.socket_path)
    try:
        dom0.add_vif(1, 0, bridge="xenbr0.3", script="vif-openvswitch")
        env = dict(dom0.hotplug_env(1, 0, script="vif-openvswitch"),
                   XENRULES_VIF_HOOKS_DIR=str(hooks), XENRULES_LOG_FILE=str(tmp_path / "log"),
                   XENRULES_LOCK_DIR=str(tmp_path / "locks"))
        proc = dom0.run_xenrules("vif-openvswitch", ["online", "type_if=vif"], env)
        assert proc.returncode == 0, proc.stderr
        assert dom0.xs_read(BACK + "/xr-hook/runs") is None     # like the original: no hooks
        env["XENRULES_OVS_HOOKS"] = "on"
        proc = dom0.run_xenrules("vif-openvswitch", ["offline", "type_if=vif"], env)
        assert proc.returncode == 0, proc.stderr
        assert dom0.xs_read(BACK + "/xr-hook/runs") == "1"
        assert dom0.xs_read(BACK + "/xr-hook/var-bridge") == 'declare -- bridge="xenbr0.3"'
    finally:
        dom0.destroy()


def test_no_bash_when_no_hook_would_be_sourced(ev, dom0, tmp_path):
    # a non-executable hook and a hidden one (bash's `*.hook` does not match
    # it) are no hooks: bash must not even start. If it did, the prelude
    # would source these libraries, which leave a marker.
    hooks = tmp_path / "hooks"
    write_hook(str(hooks), "10-off.hook", "true\n", executable=False)
    write_hook(str(hooks), ".20-hidden.hook", "true\n")
    scripts = tmp_path / "scripts"
    marker = tmp_path / "bash-started"
    for lib in ("xen-hotplug-common.sh", "xen-network-common.sh"):
        write_hook(str(scripts), lib, "touch %s\n" % marker)
    ev.steps("""
        - hooks.run: {dir: "%s", vars: {dev: "{vif}"}}
    """ % hooks)
    proc = ev.run(XENRULES_SCRIPTS_DIR=str(scripts))
    assert proc.returncode == 0, why(proc, ev)
    assert not marker.exists()
    # the same libraries, with a hook to source: bash runs and sources them
    write_hook(str(hooks), "30-on.hook", "true\n")
    proc = ev.run(XENRULES_SCRIPTS_DIR=str(scripts))
    assert proc.returncode == 0, why(proc, ev)
    assert marker.exists()


def test_a_variable_named_like_the_preludes_own_is_refused(ev, dom0, tmp_path):
    # __xr_hookdir would redirect which hooks are sourced
    hooks = tmp_path / "hooks"
    write_hook(str(hooks), "10-mark.hook", 'xenstore-write "$XENBUS_PATH/xr-hook/ran" yes\n')
    ev.steps("""
        - hooks.run: {dir: "%s", vars: {__xr_hookdir: /nonexistent}}
    """ % hooks)
    proc = subprocess.run([PYTHON, "-m", "xenrules", "--rules-path", str(ev.rules_dir), "check"],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 1 and "__xr_hookdir" in proc.stdout + proc.stderr
    # and the step itself refuses it, whatever loaded the rule
    from types import SimpleNamespace
    from xenrules.steps.hooks import Run
    runtime = SimpleNamespace(config=SimpleNamespace(scripts_dir=str(tmp_path)),
                              event=SimpleNamespace(script="vif-bridge"))
    with pytest.raises(StepError, match="invalid hook variable name '__xr_hookdir'"):
        Run({"dir": str(hooks), "vars": {"__xr_hookdir": "/x"}}).argv(runtime, "/dev/null", "/dev/null")


def test_step_modules_import_no_regex_or_subprocess_machinery():
    # hooks.run is in every vif-bridge/route/nat event: importing its module
    # must not cost the event `re` (about 6 ms) or subprocess
    code = ("import sys; import xenrules.steps.hooks, xenrules.steps.firewall, "
            "xenrules.steps.ovs; print(sorted(m for m in ('re', 'subprocess', 'json', "
            "'tempfile') if m in sys.modules))")
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
