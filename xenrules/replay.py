"""`xenrules replay FILE`: rebuild a captured dom0 in the sandbox and rerun its event.

The sandbox (sandbox/dom0.py, sandbox/xsserver.py) gets the captured
XenStore tree and the captured links (bridges, the vif as a veth, a tap for
an emulated NIC, anything else, uplinks too, as a veth) with their MAC, MTU, addresses,
masters and routes; then the event runs with the current rules, the
original script, or both (--compare), and the end state is diffed against
the one captured. No Xen needed; root is (network namespaces).
"""
import itertools
import json
import os
import shutil
import tempfile

from .capture import FORMAT, LINK_FIELDS, absolute, named, net_state, xenstore_state
from .errors import XenrulesError

_peers = itertools.count()
DROPPED_ENV = ("XENSTORED_PATH", "PYTHONPATH")


class ReplayError(XenrulesError):
    """The capture cannot be replayed."""


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ReplayError(f"cannot read capture {path}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("format"), str) \
            or not data["format"].startswith("xenrules-capture/"):
        raise ReplayError(f"{path} is not a xenrules capture ({FORMAT})")
    if data["format"] != FORMAT:
        raise ReplayError(f"{path} is a capture of format {data['format'][:40]!r}; this xenrules "
                          f"replays {FORMAT} only: replay it with the xenrules that wrote it")
    return data


def _kind(name, link):
    kind = link.get("kind")
    if kind in ("bridge", "tun"):
        return kind
    if name.endswith("-emu"):
        return "tun"
    # everything else (netback's vifs, uplinks, a captured dummy) becomes one end
    # of a veth pair: many dom0 kernels, this project's CI too, have no dummy module
    return "veth"


def build(dom0, net):
    """Create the captured links inside the sandbox's namespace."""
    links = net.get("links", {})
    order = sorted(links, key=lambda n: _kind(n, links[n]) != "bridge")
    for name in order:
        link, kind = links[name], _kind(name, links[name])
        if kind == "veth":
            dom0.ip("link", "add", "name", name, "type", "veth", "peer", "name", "rp%d-%d" % (os.getpid() % 10000, next(_peers)))
        elif kind == "tun":
            dom0.ip("tuntap", "add", "dev", name, "mode", "tap")
        elif kind == "bridge":
            dom0.ip("link", "add", "name", name, "type", "bridge", "stp_state", "0", "forward_delay", "0")
        if link.get("mac"):
            dom0.ip("link", "set", "dev", name, "address", link["mac"])
        if link.get("mtu"):
            dom0.ip("link", "set", "dev", name, "mtu", str(link["mtu"]))
    for name in order:
        link = links[name]
        if link.get("master") in links:
            dom0.ip("link", "set", "dev", name, "master", link["master"])
        for address in link.get("addresses", []):
            dom0.ip("addr", "add", address, "dev", name)
        if link.get("up"):
            dom0.ip("link", "set", "dev", name, "up")
    for route in net.get("routes", []):
        fields = dict(w.split("=", 1) for w in route.split())
        if "proto" in fields or fields.get("dst") in (None,):
            continue
        argv = ["route", "replace", fields["dst"], "dev", fields["dev"]]
        for key, word in (("gateway", "via"), ("prefsrc", "src"), ("metric", "metric"), ("table", "table")):
            if key in fields:
                argv += [word, fields[key]]
        try:
            dom0.ip(*argv)
        except Exception:
            pass   # the kernel made it already (a connected route)


def event_env(data, dom0, tmp, rules_path):
    env = {k: v for k, v in data["env"].items()
           if k not in DROPPED_ENV and not k.startswith("XENRULES_")}
    env.update(dom0.xenrules_env(rules_path=rules_path, state_dir=os.path.join(tmp, "state")))
    env.update({"XENSTORED_PATH": dom0.xenstore_socket, "XENRULES_LOG_LEVEL": "debug",
                "XENRULES_LOG_FILE": os.path.join(tmp, "log"),
                "XENRULES_LOCK_DIR": os.path.join(tmp, "locks"),
                "XENRULES_HELPER_SOCKET": ""})
    return env


def end_state(data, dom0):
    from .xenstore import XenStore
    with XenStore(dom0.xenstore_socket, timeout=5.0) as store:
        tree = xenstore_state(store, data.get("backend", ""),
                              [p for p in data.get("xenstore_read", {}) if p.startswith("/")])
    names = set(data.get("net_after", {}).get("links", {})) | set(data.get("net_before", {}).get("links", {}))
    return tree, named(net_state(("ip", "-n", dom0.netns)), names)


def diff(data, tree, net):
    """Lines saying how the replayed end state differs from the captured one."""
    lines = []
    want = data.get("xenstore_after", {})
    if isinstance(want, dict) and "error" not in want:
        for path in sorted(set(want) | set(tree)):
            if want.get(path) != tree.get(path):
                lines.append(f"xenstore {path}: captured {want.get(path)!r}, replay {tree.get(path)!r}")
    want_links = data.get("net_after", {}).get("links", {})
    for name in sorted(set(want_links) | set(net["links"])):
        a, b = want_links.get(name), net["links"].get(name)
        if a is None or b is None:
            lines.append(f"link {name}: captured {'present' if a else 'absent'}, replay {'present' if b else 'absent'}")
            continue
        for field in LINK_FIELDS:
            if field == "kind":
                continue   # netback's vif is a veth in the sandbox
            if a.get(field) != b.get(field):
                lines.append(f"link {name} {field}: captured {a.get(field)!r}, replay {b.get(field)!r}")
    routes_a, routes_b = set(data.get("net_after", {}).get("routes", [])), set(net["routes"])
    lines += [f"route only captured: {r}" for r in sorted(routes_a - routes_b)]
    lines += [f"route only in replay: {r}" for r in sorted(routes_b - routes_a)]
    return lines


def run_once(data, runner, rules_path, out, label):
    """Rebuild the dom0, run the event once with `runner`; (exit, diff lines)."""
    from .sandbox.dom0 import SimulatedDom0
    from .sandbox.xsserver import XenstoreServer
    tmp = tempfile.mkdtemp(prefix="xenrules-replay-")
    try:
        with XenstoreServer(os.path.join(tmp, "xenstored.sock")) as server, \
                SimulatedDom0(server.socket_path, prefix="xrrp", bridges=()) as dom0:
            before = data.get("xenstore_before", {})
            if isinstance(before, dict) and "error" not in before:
                server.load({absolute(p): v for p, v in before.items()})
            build(dom0, data.get("net_before", {}))
            env = event_env(data, dom0, tmp, rules_path)
            script = os.path.basename(data["argv"][0])
            words = data["argv"][1:]
            out.write(f"\n== {label}: {script} {' '.join(words)}\n")
            if runner == "original":
                done = dom0.run_original(script, words, env)
            else:
                done = dom0.run_xenrules(script, words, env, rules_path=rules_path,
                                         state_dir=os.path.join(tmp, "state"))
            for line in _read(os.path.join(tmp, "log")).splitlines():
                out.write("  " + line.split(" ", 3)[-1] + "\n")
            if done.stderr.strip():
                out.write("  stderr: " + done.stderr.strip().replace("\n", "\n  stderr: ") + "\n")
            tree, net = end_state(data, dom0)
            return done.returncode, diff(data, tree, net)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def replay(path, out, rules_path=None, original=False, compare=False):
    """Returns 0 when every run ends as the capture did, else 1."""
    if os.geteuid() != 0:
        raise ReplayError("replay needs root (network namespaces)")
    data = load(path)
    captured = data.get("outcome", {})
    rule = data.get("rule") or {}
    out.write(f"capture {path}: {' '.join(data['argv'])} on {data.get('host')} at {data.get('time')}\n"
              f"  captured: exit {captured.get('exit')}, {captured.get('verdict')}"
              f"{': ' + captured['message'] if captured.get('message') else ''}"
              f"{', rule ' + rule['name'] + ' (' + rule['file'] + ':' + str(rule['line']) + ')' if rule else ''}\n"
              f"  captured rules digest {data.get('rules', {}).get('digest', '?')[:16]}\n")
    for step in data.get("trace", []):
        out.write(f"  captured step line {step['line']} {step['type']}: {step['status']}: "
                  f"{step['detail']} ({step['ms']} ms)\n")
    runners = (["xenrules", "original"] if compare else ["original"] if original else ["xenrules"])
    code = 0
    for runner in runners:
        exit_code, lines = run_once(data, runner, rules_path, out, runner)
        same_exit = captured.get("exit") is None or exit_code == captured.get("exit")
        out.write(f"{runner}: exit {exit_code}" + ("" if same_exit else f" (captured {captured.get('exit')})") + "\n")
        if lines:
            out.write(f"{runner}: end state differs from the capture:\n")
            out.writelines(f"  {line}\n" for line in lines)
        else:
            out.write(f"{runner}: end state is the captured one\n")
        code = code or (0 if same_exit and not lines else 1)
    return code
