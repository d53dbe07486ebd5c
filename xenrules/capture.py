"""Capture one hotplug event into a JSON file, for `xenrules replay`.

Only imported when capture is on (config.capture_setting). A capture holds
what is needed to rebuild that dom0 and rerun the event: argv, environment,
umask, the XenStore subtrees the event can touch (backend, frontend,
/vm/<uuid>, /libxl/<domid>) plus every node the rule read, before and after;
the links, addresses and routes it names, before and after; the rules'
digest, the rule chosen, the trace with expanded values and timings, and
the outcome (exit status, verdict, fallback). Files are root-only (0600 in
a 0700 directory), bounded in size and rotated (a count limit).
"""
import hashlib
import json
import os
import socket
import subprocess
import time

FORMAT = "xenrules-capture/1"
LINK_FIELDS = ("kind", "master", "mtu", "mac", "up", "addresses")


def absolute(path):
    """XENBUS_PATH is relative to dom0's home, as xenstored resolves it."""
    return path if path.startswith("/") else "/local/domain/0/" + path


def walk(store, root, into, limit=5000):
    """{path: value} of root and its subtree (at most `limit` nodes)."""
    stack = [root.rstrip("/") or "/"]
    while stack and len(into) < limit:
        path = stack.pop()
        value = store.read(path)
        if value is None:
            continue
        into[path] = value
        stack.extend(f"{path.rstrip('/')}/{child}" for child in reversed(store.list(path)))
    return into


def event_roots(store, backend):
    """The subtrees an event of this backend can touch."""
    roots = ["/local/domain/0/name", "/local/domain/0/domid"]
    if not backend:
        return roots
    backend = absolute(backend)
    roots.append(backend)
    parts = backend.strip("/").split("/")
    domid = parts[-2] if len(parts) >= 4 and parts[-4] == "backend" else ""
    frontend = store.read(backend + "/frontend")
    if frontend:
        roots.append(frontend)
    if domid.isdigit():
        roots += [f"/local/domain/{domid}/name", f"/local/domain/{domid}/domid",
                  f"/local/domain/{domid}/vm", f"/libxl/{domid}"]
        vm = store.read(f"/local/domain/{domid}/vm")
        if vm and vm.startswith("/vm/"):
            roots.append(vm)
    return roots


def xenstore_state(store, backend, extra=()):
    tree = {}
    for root in list(event_roots(store, backend)) + list(extra):
        walk(store, root, tree)
    return dict(sorted(tree.items()))


def _ip_json(prefix, *args):
    try:
        done = subprocess.run(list(prefix) + ["-j"] + list(args), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=10)
        return json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() else []
    except (OSError, ValueError, subprocess.SubprocessError):
        return []


def net_state(prefix=("ip",)):
    """{"links": {name: {...}}, "routes": [...]}: the whole of it; names() picks."""
    links = {}
    for link in _ip_json(prefix, "-d", "addr", "show"):
        name = link.get("ifname")
        if not name or name == "lo":
            continue
        info = link.get("linkinfo") or {}
        links[name] = {
            "kind": info.get("info_kind"), "master": link.get("master"),
            "mtu": link.get("mtu"), "mac": link.get("address"),
            "up": "UP" in link.get("flags", []),
            "addresses": sorted(f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
                                if a.get("scope") != "link"),
        }
    routes = []
    for family in ("-4", "-6"):
        for r in _ip_json(prefix, family, "route", "show", "table", "all"):
            if r.get("table") in ("local",) or r.get("protocol") == "kernel" and r.get("scope") == "link" \
                    and family == "-6":
                continue
            routes.append(" ".join(f"{k}={r[k]}" for k in ("dst", "dev", "gateway", "prefsrc", "metric", "table")
                                   if r.get(k) is not None))
    return {"links": links, "routes": sorted(routes)}


def named(net, names):
    """The part of a net_state that concerns the given names (and their bridges)."""
    keep = {n for n in names if n in net["links"]}
    keep |= {net["links"][n]["master"] for n in list(keep) if net["links"][n]["master"]}
    keep.discard(None)
    return {"links": {n: net["links"][n] for n in sorted(keep)},
            "routes": [r for r in net["routes"] if any(f"dev={n}" in r.split() for n in keep)]}


def rules_digest(config):
    """sha256 over the effective rule files (name, then content), and their paths."""
    from . import ruleset
    digest = hashlib.sha256()
    paths = []
    for f in ruleset.discover(config.rules_path):
        if f.masked:
            continue
        paths.append(f.path)
        digest.update(f.path.encode() + b"\0")
        try:
            with open(f.path, "rb") as fh:
                digest.update(fh.read())
        except OSError:
            pass
    return digest.hexdigest(), paths


class RecordingStore:
    """The event's XenStore connection, remembering what the rule read first."""

    def __init__(self, store):
        self.store = store
        self.reads = {}
        self.written = set()

    def read(self, path):
        value = self.store.read(path)
        if path not in self.reads and path not in self.written:
            self.reads[path] = value
        return value

    def list(self, path):
        return self.store.list(path)

    def write(self, path, value):
        self.written.add(path)
        return self.store.write(path, value)

    def remove(self, path):
        self.written.add(path)
        return self.store.remove(path)

    def close(self):
        self.store.close()


def wanted(settings, event, store):
    if settings["scripts"] and event.script not in settings["scripts"]:
        return False
    if settings["domains"]:
        domid = event.builtins.get("domid", ("", ""))[0]
        if domid in settings["domains"]:
            return True
        try:
            name = store.read(f"/local/domain/{domid}/name") if domid.isdigit() else None
        except Exception:
            name = None
        return bool(name) and name in settings["domains"]
    return True


class Recorder:
    """Collects one event; write() puts it on disk. Never fails the event."""

    def __init__(self, settings, event, config, log):
        from .xenstore import XenStore
        self.settings = settings
        self.event = event
        self.config = config
        self.log = log
        self.started = time.monotonic()
        self.store = RecordingStore(XenStore(timeout=5.0))
        self.enabled = wanted(settings, event, self.store.store)
        self.data = None
        if not self.enabled:
            return
        umask = os.umask(0o022)
        os.umask(umask)
        backend = event.builtins["backend"][0]
        self.data = {
            "format": FORMAT, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": socket.gethostname(), "argv": [event.argv0] + event.words, "env": event.env,
            "umask": "%04o" % umask, "uid": os.getuid(),
            "script": event.script, "action": event.command, "backend": backend,
        }
        try:
            digest, files = rules_digest(config)
        except Exception as e:
            digest, files = f"unavailable: {e!r}", []
        self.data["rules"] = {"digest": digest, "files": files, "path": config.rules_path}
        self.data["xenstore_before"] = self._xenstore()
        self.net_before = net_state()

    def _xenstore(self, extra=()):
        try:
            return xenstore_state(self.store.store, self.event.builtins["backend"][0], extra)
        except Exception as e:   # xenstore down: still say what we know
            return {"error": str(e)}

    def rule(self, rule):
        if self.data is not None:
            self.data["rule"] = {"name": rule["name"], "file": rule["file"], "line": rule["line"]}

    def finish(self, *args, **kw):
        """Record the outcome and write the file; returns its path or None."""
        if self.data is None:
            return None
        try:
            return self._finish(*args, **kw)
        except Exception as e:   # a capture never fails the event
            self.log("err", f"capture failed: {e!r}")
            return None

    def _finish(self, code, verdict, message="", outcome=None, context=None, fallback=None):
        d = self.data
        d.setdefault("rule", None)
        if outcome is not None:
            d["trace"] = [{"line": spec.get("line"), "type": spec.get("type"), "status": status,
                           "detail": str(detail)[:2000], "ms": round(seconds * 1000, 3)}
                          for spec, status, detail, seconds in outcome.trace]
        if context is not None:
            d["variables"] = {name: [str(v), str(o)] for name, (v, o) in context.values.items()}
        read_paths = [p for p in self.store.reads if p.startswith("/")]
        d["xenstore_read"] = {p: v for p, v in self.store.reads.items()}
        before = d["xenstore_before"]
        if isinstance(before, dict) and "error" not in before:
            for p, v in self.store.reads.items():   # what the sources read, as it was
                if v is not None and absolute(p) not in before:
                    before[absolute(p)] = v
        d["xenstore_after"] = self._xenstore(read_paths)
        net_after = net_state()
        names = self._names(d)
        d["net_before"] = named(self.net_before, names)
        d["net_after"] = named(net_after, names)
        d["outcome"] = {"exit": code, "verdict": verdict, "message": message, "fallback": fallback,
                        "ms": round((time.monotonic() - self.started) * 1000, 1)}
        return self._write()

    def _names(self, d):
        """Every word of the event's values that may name a link."""
        values = list(self.event.env.values()) + list(self.event.params.values())
        values += [v for v, _ in d.get("variables", {}).values()]
        for tree in (d["xenstore_before"], d.get("xenstore_after", {})):
            if isinstance(tree, dict):
                values += list(tree.values())
        return {w for v in values for w in str(v).replace(",", " ").split() if len(w) <= 15}

    def _write(self):
        directory = self.settings["dir"]
        d = self.data
        domid = self.event.builtins.get("domid", ("", ""))[0] or "x"
        devid = self.event.builtins.get("devid", ("", ""))[0] or "x"
        now = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(now)) + "%06d" % (now % 1 * 1e6)
        name = "%s-%s-%s-%s.%s-%d.json" % (stamp, _safe(self.event.script),
                                          _safe(self.event.command or "none"), _safe(domid),
                                          _safe(devid), os.getpid())
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            text = bounded(d, self.settings["max_bytes"])
            path = os.path.join(directory, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            rotate(directory, self.settings["keep"])
            self.log("debug", f"capture written to {path}")
            return path
        except OSError as e:
            self.log("err", f"cannot write the capture into {directory}: {e.strerror}")
            return None


def _safe(word):
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in word)[:40]


def bounded(data, max_bytes):
    """JSON of the capture, shrunk (long trace details, then link states) to fit max_bytes."""
    text = json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False,
                      default=str).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if len(text.encode()) <= max_bytes:
        return text
    data = dict(data, truncated=True)
    for entry in data.get("trace", []):
        entry["detail"] = entry["detail"][:200]
    data.pop("xenstore_read", None)
    text = json.dumps(data, indent=1, sort_keys=True, default=str)
    if len(text.encode()) <= max_bytes:
        return text
    data["env"] = {k: v for k, v in data["env"].items() if k.startswith(("XENBUS", "vif", "script"))}
    data["net_before"] = data["net_after"] = {"links": {}, "routes": [], "dropped": "too large"}
    return json.dumps(data, sort_keys=True, default=str)[:max_bytes]


def rotate(directory, keep):
    """Keep the newest `keep` capture files (names start with their time)."""
    files = sorted(f for f in os.listdir(directory) if f.endswith(".json"))
    for old in files[:-keep] if len(files) > keep else []:
        try:
            os.unlink(os.path.join(directory, old))
        except OSError:
            pass
