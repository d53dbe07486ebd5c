"""`xenrules sandbox` / `make demo`: one guest's vif through online and offline.

Everything happens in a throw-away network namespace with a bridge and a
wire-protocol XenStore server, so it runs on a machine without Xen, and
everything is removed afterwards.
"""
import os
import shutil
import tempfile

from ..errors import XenrulesError
from .dom0 import REPO_ROOT, SimulatedDom0
from .xsserver import XenstoreServer

DOMID, DEVID = 1, 0


def _rules_path(env):
    if env.get("XENRULES_RULES_PATH"):
        return env["XENRULES_RULES_PATH"]
    checkout = os.path.join(REPO_ROOT, "rules.d")
    return checkout if os.path.isdir(checkout) else "/etc/xen/rules.d:/usr/lib/xenrules/rules.d"


def _show_state(dom0, out):
    state = dom0.state()
    for name, link in state["links"].items():
        if name.startswith("g"):
            continue   # the guest's end of the veth pair
        out.write(f"  link {name}: {'UP' if link['up'] else 'down'} mtu {link['mtu']} mac {link['mac']}"
                  f" master {link['master'] or '-'}\n")
    back = f"/local/domain/0/backend/vif/{DOMID}/{DEVID}"
    for key in ("hotplug-status", "hotplug-error"):
        if back + "/" + key in state["xenstore"]:
            out.write(f"  xenstore {back}/{key} = {state['xenstore'][back + '/' + key]!r}\n")
    front_mtu = f"/local/domain/{DOMID}/device/vif/{DEVID}/mtu"
    out.write(f"  xenstore {front_mtu} = {state['xenstore'].get(front_mtu)!r}\n")


def run_demo(env, script, out):
    if os.geteuid() != 0:
        raise XenrulesError("the sandbox needs root (network namespaces)")
    if not shutil.which("ip"):
        raise XenrulesError("the sandbox needs iproute2's `ip`")
    rules_path = _rules_path(env)
    tmp = tempfile.mkdtemp(prefix="xenrules-sandbox-")
    code = 0
    try:
        with XenstoreServer(os.path.join(tmp, "xenstored.sock")) as server, \
                SimulatedDom0(server.socket_path, prefix="xrdemo") as dom0:
            dom0.add_vif(DOMID, DEVID)
            out.write(f"simulated dom0: network namespace {dom0.netns}, bridge xenbr0, "
                      f"guest {DOMID} vif{DOMID}.{DEVID}; rules from {rules_path}\n")
            out.write("before:\n")
            _show_state(dom0, out)
            event_env = dict(dom0.hotplug_env(DOMID, DEVID, script=script),
                             XENRULES_LOG_LEVEL="debug", XENRULES_LOG_FILE=os.path.join(tmp, "log"),
                             XENRULES_LOCK_DIR=os.path.join(tmp, "locks"))
            for action in ("online", "offline"):
                out.write(f"\n$ {script} {action} type_if=vif   (XENBUS_PATH={event_env['XENBUS_PATH']}"
                          f" vif={event_env['vif']})\n")
                before = _log_size(tmp)
                done = dom0.run_xenrules(script, [action, "type_if=vif"], event_env,
                                         rules_path=rules_path, state_dir=os.path.join(tmp, "state"))
                out.write(_log_since(tmp, before))
                out.write(f"exit status {done.returncode}\nafter {action}:\n")
                _show_state(dom0, out)
                code = code or done.returncode
        out.write("\nsandbox removed (namespace, links, xenstore server).\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return code


def _log_size(tmp):
    try:
        return os.path.getsize(os.path.join(tmp, "log"))
    except OSError:
        return 0


def _log_since(tmp, offset):
    try:
        with open(os.path.join(tmp, "log"), encoding="utf-8") as f:
            f.seek(offset)
            lines = f.read().splitlines()
    except OSError:
        return ""
    # drop the timestamp and pid columns: the trace reads better without them
    return "".join("  " + line.split(" ", 3)[-1] + "\n" for line in lines)
