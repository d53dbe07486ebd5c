"""`xenrules monitor`: follow the hotplug log, one line per event start and end.

Reads only what events already write (log.py): the summary line each event
logs at its end, its "event:" line at its start (debug level), fallbacks to
the original and errors. Nothing is added to the event path.
"""
import os
import re
import time

LINE = re.compile(r"^(?P<date>\S+) (?P<time>\S+) (?P<tag>[^\[\s]+)\[(?P<pid>\d+)\] (?P<level>\w+): (?P<msg>.*)$")
SUMMARY = re.compile(r"^(?P<event>.*?): rule (?P<rule>\S+) \((?P<where>[^)]*)\): (?P<done>\d+) steps done, "
                     r"(?P<skipped>\d+) skipped, (?P<verdict>ok|FAILED \(.*\)) in (?P<ms>[\d.]+) ms"
                     r"(?:; device (?P<device>\S+))?$")
START = re.compile(r"^event: (?P<event>.*?) XENBUS_PATH=(?P<device>\S*)$")
FALLBACK = re.compile(r"^(?P<reason>.*): running the original (?P<path>\S+)(?P<words>.*)$")


def where(device):
    """backend/vif/3/0 -> 'vif dom 3 dev 0'."""
    parts = (device or "").strip("/").split("/")
    if len(parts) >= 4 and parts[-4] == "backend":
        return f"{parts[-3]} dom {parts[-2]} dev {parts[-1]}"
    return device or "-"


def describe(line, debug=False):
    """The monitor's line for one log line, or None when it says nothing about an event's start or end."""
    m = LINE.match(line.rstrip("\n"))
    if not m:
        return None
    stamp, msg, level = m["time"], m["msg"], m["level"]
    head = f"{stamp} {m['tag']}[{m['pid']}]"
    s = SUMMARY.match(msg)
    if s:
        verdict = "ok" if s["verdict"] == "ok" else s["verdict"]
        return (f"{head} END   {s['event']}  {where(s['device'])}  rule {s['rule']} ({s['where']})  "
                f"{verdict}  {s['ms']} ms")
    s = START.match(msg)
    if s:
        return f"{head} START {s['event']}  {where(s['device'])}"
    s = FALLBACK.match(msg)
    if s and level == "info":
        return f"{head} END   original {s['path']}{s['words']}  ({s['reason']})"
    if level == "err":
        return f"{head} ERROR {msg}"
    if debug and level == "debug":
        return f"{head}       {msg}"
    return None


def _open(path, from_start):
    f = open(path, encoding="utf-8", errors="replace")
    if not from_start:
        f.seek(0, os.SEEK_END)
    return f


def monitor(path, out, debug=False, from_start=False, follow=True, poll=0.2, stop=None):
    """Print event lines from the log at path; follows it across rotation."""
    out.write(f"monitoring {path} (Ctrl-C to stop)\n" if follow else "")
    out.flush()
    f = None
    pending = ""
    try:
        while True:
            if f is None:
                try:
                    f = _open(path, from_start)
                except OSError as e:
                    if not follow:
                        out.write(f"cannot read the hotplug log {path}: {e.strerror} "
                                  f"(XENRULES_LOG_FILE names another one)\n")
                        return 1
                    time.sleep(poll)
                    continue
                from_start = True   # a file that appears or replaces a rotated one: read all of it
            chunk = f.readline()
            if chunk:
                pending += chunk
                if pending.endswith("\n"):
                    shown = describe(pending, debug)
                    pending = ""
                    if shown:
                        out.write(shown + "\n")
                        out.flush()
                continue
            if not follow or (stop is not None and stop()):
                return 0
            try:
                rotated = os.stat(path).st_ino != os.fstat(f.fileno()).st_ino or \
                    os.stat(path).st_size < f.tell()
            except OSError:
                rotated = False
            if rotated:
                f.close()
                f = None
                continue
            time.sleep(poll)
    except KeyboardInterrupt:
        return 0
    finally:
        if f is not None:
            f.close()
