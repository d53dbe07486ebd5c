"""`xenrules doctor`: why didn't my guest's device come up? (the seed's checklist, automated)

Each check prints `ok` or `PROBLEM` with the fix; exit 1 on any problem.
Every path comes from the configuration (XENRULES_*, XENSTORED_PATH,
--xl-conf), so the same checks run in the sandbox.
"""
import os
import socket
import stat

from .. import engine, ruleset
from ..config import Config
from ..errors import XenrulesError
from ..event import Event
from ..fallback import LAUNCHER_MARK, original_path
from . import xlcfg

XL_CONF = "/etc/xen/xl.conf"
HELPER_SOCKET = "/run/xenrules/helper.sock"
STUCK_LOCK = 40      # seconds: libxl's hotplug timeout; a lock held longer is stuck


class Report:
    def __init__(self, out):
        self.out = out
        self.problems = 0

    def ok(self, message):
        self.out.write(f"ok       {message}\n")

    def problem(self, message, fix, details=()):
        self.problems += 1
        self.out.write(f"PROBLEM  {message}\n")
        for line in details:
            self.out.write(f"         | {line}\n")
        self.out.write(f"         fix: {fix}\n")


def _head(path, size=4096):
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError:
        return b""


def check_script(report, config, name):
    """A script as libxl resolves it: absolute as given, else under the script directory."""
    path = name if name.startswith("/") else os.path.join(config.scripts_dir, name)
    if not os.path.exists(path):
        report.problem(f"script {name}: {path} does not exist",
                       f"install it, or give script= its full path in the domain config "
                       f"(libxl looks relative names up in {config.scripts_dir})")
        return
    if not os.access(path, os.X_OK):
        report.problem(f"script {path} is not executable", f"chmod 755 {path}")
        return
    head = _head(path)
    interpreter = head.split(b"\n", 1)[0][2:].split()[0].decode(errors="replace") \
        if head.startswith(b"#!") and head[2:].split() else ""
    if interpreter and not os.access(interpreter, os.X_OK):
        report.problem(f"script {path}: its interpreter {interpreter} is missing",
                       f"install {interpreter} (for the launcher: python3)")
        return
    if LAUNCHER_MARK in head:
        orig = original_path(config, os.path.basename(path))
        if os.access(orig, os.X_OK) and LAUNCHER_MARK not in _head(orig):
            report.ok(f"script {path}: diverted to xenrules (launcher {interpreter}); original at {orig}")
        else:
            report.ok(f"script {path}: diverted to xenrules (launcher {interpreter}); no original to "
                      f"fall back to: an event no rule handles fails")
        return
    if interpreter.endswith("sh"):
        import subprocess
        done = subprocess.run([interpreter, "-n", path], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            report.problem(f"script {path} has a syntax error (the toolstack never reports it)",
                           f"fix the script, then check it with `{interpreter} -n {path}`",
                           done.stderr.strip().splitlines()[:5])
            return
    report.ok(f"script {path}: executable, not diverted (the script itself runs, not xenrules)")


def domain_devices(store, domain):
    """(domid, [(kind, backend path)]) of a running domain given by name or id."""
    domid = domain if domain.isdigit() else None
    if domid is None:
        for d in store.list("/local/domain"):
            if store.read(f"/local/domain/{d}/name") == domain:
                domid = d
                break
    if domid is None:
        return None, []
    devices = []
    for kind in store.list("/local/domain/0/backend"):
        for devid in store.list(f"/local/domain/0/backend/{kind}/{domid}"):
            devices.append((kind, f"backend/{kind}/{domid}/{devid}"))
    return domid, devices


def last_log_lines(config, needles, count=5):
    try:
        with open(config.log_file, encoding="utf-8", errors="replace") as f:
            lines = [l.rstrip("\n") for l in f if any(n in l for n in needles)]
    except OSError:
        return []
    return lines[-count:]


def check_device(report, config, store, rules, kind, backend):
    absolute = "/local/domain/0/" + backend
    domid, devid = backend.split("/")[-2:]
    script = store.read(absolute + "/script") or ""
    env = {"script": script, "XENBUS_TYPE": kind, "XENBUS_PATH": backend, "XENBUS_BASE_PATH": "backend"}
    words = ["add"]
    if kind == "vif":
        env["vif"] = f"vif{domid}.{devid}"
        words = ["online", "type_if=vif"]
    event = Event(script or kind, words, env)
    if rules is not None and script:
        winner, verdicts = engine.choose(rules, event, every=True)
        if winner:
            why = next(w for r, m, w in verdicts if r is winner)
            report.ok(f"device {backend}: script {script} runs rule {winner['name']} "
                      f"({winner['file']}:{winner['line']}): {why}")
        else:
            report.ok(f"device {backend}: no rule for {event.describe()}: the original {script} runs")
    status = store.read(absolute + "/hotplug-status")
    if status in ("error", "busy"):
        error = store.read(absolute + "/hotplug-error") or "(no hotplug-error)"
        report.problem(f"device {backend}: hotplug-status {status}: {error}",
                       f"act on the message, then `xenrules explain --env XENBUS_PATH={backend} "
                       f"{' '.join(f'--env {k}={v}' for k, v in env.items() if k == 'vif')} "
                       f"{os.path.basename(script)} {' '.join(words)}` and recreate the domain",
                       last_log_lines(config, [backend, env.get("vif", "\0")]))


def check_bridge(report, name, where):
    if os.path.isdir(f"/sys/class/net/{name}/bridge"):
        report.ok(f"bridge {name} ({where}) exists")
    elif os.path.exists(f"/sys/class/net/{name}"):
        report.problem(f"{name} ({where}) exists but is not a bridge",
                       f"give bridge= a bridge's name, or make {name} one")
    else:
        report.problem(f"bridge {name} ({where}) does not exist",
                       f"create it (`ip link add {name} type bridge && ip link set {name} up`, or "
                       f"in /etc/network/interfaces), or fix bridge= in the domain config")


def check_helper(report, env):
    path = env.get("XENRULES_HELPER_SOCKET", HELPER_SOCKET)
    if not path:
        report.ok("warm helper: turned off (XENRULES_HELPER_SOCKET=''); events run in the launcher")
        return
    try:
        st = os.stat(path)
    except OSError:
        report.ok(f"warm helper: no socket {path}; events run in the launcher (slower start)")
        return
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o077:
        report.problem(f"warm helper socket {path}: mode {st.st_mode & 0o7777:o} owner {st.st_uid}, "
                       f"want a root socket 0600", "systemctl restart xenrules-helper.socket")
        return
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(3)
    try:
        s.connect(path)
        report.ok(f"warm helper: {path} accepts connections")
    except OSError as e:
        report.problem(f"warm helper socket {path} does not answer: {e.strerror or e}",
                       "systemctl restart xenrules-helper.socket xenrules-helper (launchers "
                       "fall back to running events themselves meanwhile)")
    finally:
        s.close()


def held_inodes():
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            return {line.split()[5].rsplit(":", 1)[-1]: line.split()[4] for line in f
                    if len(line.split()) > 5}
    except OSError:
        return {}


def check_locks_and_journals(report, config):
    import time
    held = held_inodes()
    stuck = []
    try:
        names = sorted(os.listdir(config.lock_dir))
    except OSError:
        names = []
    for name in names:
        try:
            st = os.stat(os.path.join(config.lock_dir, name))
        except OSError:
            continue
        pid = held.get(str(st.st_ino))
        if pid and time.time() - st.st_mtime > STUCK_LOCK:
            stuck.append(f"{name} held by pid {pid} for {time.time() - st.st_mtime:.0f} s")
    if stuck:
        report.problem(f"hotplug locks in {config.lock_dir} held longer than libxl waits", 
                       "see what those processes wait for (`ps -o pid,etime,args -p PID`), kill them if hung",
                       stuck)
    else:
        report.ok(f"locks in {config.lock_dir}: {len(names)} file(s), none stuck")
    journal_dir = getattr(config, "journal_dir", None)
    if not journal_dir:
        return
    try:
        left = sorted(os.listdir(journal_dir))
    except OSError:
        left = []
    if left:
        report.problem(f"{len(left)} journal(s) of interrupted events in {journal_dir}",
                       "`xenrules recover --dry-run` shows what they undo; `xenrules recover` undoes it",
                       left[:5])
    else:
        report.ok(f"no journals of interrupted events in {journal_dir}")


def check_log(report, config):
    directory = os.path.dirname(config.log_file) or "."
    if os.path.exists(config.log_file) and not os.access(config.log_file, os.W_OK) or \
            not os.path.exists(config.log_file) and not os.access(directory, os.W_OK):
        report.problem(f"log {config.log_file} is not writable: events log to stderr only, "
                       f"which libxl may discard", f"mkdir -p {directory}; check its permissions")
    else:
        report.ok(f"log {config.log_file} is writable")


def check_settings(report, env):
    """The settings file: a typo there never stops an event, it is silently ignored."""
    from ..config import CONF_FILE, conf_problems
    path = env.get("XENRULES_CONF") or CONF_FILE
    if not os.path.exists(path):
        report.ok(f"settings file {path}: none (every setting at its default)")
        return
    found = conf_problems(path)
    for number, message, fix in found:
        report.problem(f"{path}:{number}: {message}",
                       f"{fix}; events ignore the line meanwhile (restart xenrules-helper after the edit)")
    if not found:
        report.ok(f"settings file {path}: every key known, every value good")


def _resolve(template, rule, env):
    """A hooks.run dir as the event would expand it, for the common case of a
    literal or a "{var}" whose sources are env/value; None when it needs XenStore."""
    if "{" not in template:
        return template
    name = template.strip()[1:-1] if template.strip().startswith("{") and template.strip().endswith("}") else ""
    for source in rule.get("vars", {}).get(name, []):
        if "when" in source:
            continue
        if "env" in source and env.get(source["env"]):
            return env[source["env"]]
        if "value" in source and "{" not in str(source["value"]):
            return str(source["value"])
    return None


def hook_dirs(rules, env):
    """{directory: [rule names]} of every hooks.run step of the rules."""
    dirs = {}
    for rule in rules:
        for steps in rule["actions"].values():
            for step in steps:
                if isinstance(step, dict) and step.get("type") == "hooks.run":
                    where = _resolve(str(step["args"].get("dir", "")), rule, env)
                    if where:
                        dirs.setdefault(where, [])
                        if rule["name"] not in dirs[where]:
                            dirs[where].append(rule["name"])
    return dirs


def check_hook(report, path):
    """One *.hook as call_hooks treats it: sourced by bash when executable, else skipped."""
    if not os.access(path, os.X_OK):
        report.problem(f"hook {path} is not executable: events skip it without a word",
                       f"chmod 755 {path} (or remove it if it is not meant to run)")
        return
    first = _head(path, 256).split(b"\n", 1)[0]
    words = first[2:].split() if first.startswith(b"#!") else []
    interpreter = words[0].decode(errors="replace") if words else ""
    if interpreter and not os.access(interpreter, os.X_OK):
        report.problem(f"hook {path}: its shebang's interpreter {interpreter} is missing",
                       f"hooks are sourced by bash: make the first line #!/bin/bash, or install {interpreter}")
        return
    shell = os.path.basename(interpreter) if interpreter else "sh"
    if shell not in ("sh", "bash", "dash", "env") or shell == "env" and words[1:2] != [b"bash"]:
        report.problem(f"hook {path} is a {os.path.basename(interpreter)} program, but hooks are "
                       f"sourced by bash, not run", f"write it in bash (#!/bin/bash), or make it a "
                       f"bash hook that runs the program")
        return
    import subprocess
    done = subprocess.run(["/bin/bash", "-n", path], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        report.problem(f"hook {path} has a bash syntax error: the event fails when it is sourced",
                       f"fix it, then check it with `bash -n {path}`",
                       done.stderr.strip().splitlines()[:5])
        return
    report.ok(f"hook {path}: executable, bash -n clean")


def check_hooks(report, rules, env):
    for directory, names in sorted(hook_dirs(rules, env).items()):
        try:
            entries = sorted(n for n in os.listdir(directory)
                             if n.endswith(".hook") and not n.startswith("."))
        except OSError:
            report.ok(f"hook directory {directory} (rules {', '.join(names)}): none, no hooks run")
            continue
        report.ok(f"hook directory {directory} (rules {', '.join(names)}): {len(entries)} hook(s)")
        for name in entries:
            path = os.path.join(directory, name)
            if not os.path.isdir(path):
                check_hook(report, path)


def run_doctor(env, out, domain=None, config_file=None, xl_conf=None):
    report = Report(out)
    config = Config(env)
    check_settings(report, env)
    if os.path.isdir(config.scripts_dir):
        report.ok(f"script directory {config.scripts_dir} exists")
    else:
        report.problem(f"script directory {config.scripts_dir} does not exist",
                       "reinstall xen-utils-common (and xenrules)")
    xl_path = xl_conf or env.get("XENRULES_XL_CONF") or XL_CONF
    try:
        xl = xlcfg.read(xl_path)
    except OSError:
        xl = {}
    scripts = {xl.get("vif.default.script") or "vif-bridge": f"{xl_path} vif.default.script"}
    bridges = {}
    domu = {}
    if config_file:
        try:
            domu = xlcfg.read(config_file)
            report.ok(f"domain config {config_file} read")
        except OSError as e:
            report.problem(f"domain config {config_file} cannot be read: {e.strerror}",
                           "give --config the file `xl create` uses")
    for i, vif in enumerate(domu.get("vif", []) if isinstance(domu.get("vif"), list) else []):
        s = xlcfg.spec(vif)
        scripts[s.get("script") or xl.get("vif.default.script") or "vif-bridge"] = f"vif {i}"
        bridge = s.get("bridge") or xl.get("vif.default.bridge")
        if bridge and "openvswitch" not in s.get("script", ""):
            bridges[bridge] = f"vif {i} of {config_file}"
    for i, disk in enumerate(domu.get("disk", []) if isinstance(domu.get("disk"), list) else []):
        s = xlcfg.spec(disk)
        if s.get("script"):
            scripts[s["script"]] = f"disk {i}"
    for name in scripts:
        check_script(report, config, name)
    rules = valid = None
    try:
        from ..compiler import compile_files
        files = ruleset.discover(config.rules_path)
        rules, problems = compile_files(files)
        valid = rules   # the rules that do validate still name hook directories
        if problems:
            report.problem(f"rule files do not validate: every event runs the original script, "
                           "or fails where there is none",
                           "fix them; `xenrules check` shows each problem",
                           [line for p in problems[:10] for line in str(p).splitlines()])
            rules = None
        else:
            report.ok(f"{len(files)} rule file(s), {len(rules)} rule(s) valid ({':'.join(config.rules_path)})")
    except XenrulesError as e:
        report.problem(f"rules cannot be read: {e}", "xenrules check")
    if valid:
        check_hooks(report, valid, env)
    check_helper(report, env)
    from ..xenstore import XenStore
    store = XenStore(timeout=3.0)
    try:
        store.read("/local/domain/0/name")
        report.ok(f"XenStore reachable ({store.where})")
        if domain:
            domid, devices = domain_devices(store, domain)
            if domid is None:
                report.problem(f"domain {domain} is not running (not in XenStore)",
                               "start it (`xl create`), then run doctor again; `xl list` shows the names")
            for kind, backend in devices:
                check_device(report, config, store, rules, kind, backend)
                if kind == "vif":
                    bridge = store.read(f"/local/domain/0/{backend}/bridge")
                    if bridge:
                        bridges.setdefault(bridge, f"{backend}/bridge")
    except XenrulesError as e:
        report.problem(f"XenStore not reachable: {e}",
                       "is xenstored running (`systemctl status xenstored`)? XENSTORED_PATH set wrong?")
    finally:
        store.close()
    for bridge, where in bridges.items():
        check_bridge(report, bridge, where)
    check_log(report, config)
    check_locks_and_journals(report, config)
    out.write(f"\n{report.problems} problem(s)\n" if report.problems else "\nno problem found\n")
    return 1 if report.problems else 0
