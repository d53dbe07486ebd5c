"""Where xenrules finds rules and keeps state; every path can be moved.

Environment variables (the CLI's --rules-path/--state-dir set the same), so
rules can be tried from a checkout before they are installed:
  XENRULES_RULES_PATH     rule directories, ':'-separated, highest priority
                          first (default /etc/xen/rules.d:/usr/lib/xenrules/rules.d)
  XENRULES_STATE_DIR      compiled rule cache (default /var/cache/xenrules)
  XENRULES_LOCK_DIR       hotplug locks, shared with locking.sh (/var/run/xen-hotplug)
  XENRULES_JOURNAL_DIR    per-device journals of events in flight, for crash-safe
                          revert (/run/xenrules/journal; root-only, see journal.py)
  XENRULES_LOG_FILE       log file (/var/log/xen/xen-hotplug.log)
  XENRULES_LOG_LEVEL      debug | info | warning | err (info)
  XENRULES_ORIGINALS_DIR  where the original scripts are when they are not
                          diverted by the package (default: ask dpkg-divert)
  XENRULES_SCRIPTS_DIR    the toolstack's script directory (/etc/xen/scripts)
  XENRULES_CAPTURE        write one capture file per event into this directory
                          (see docs/TROUBLESHOOTING.md); overrides the conf file
  XENRULES_CONF           the settings file (/etc/xen/xenrules.conf, key=value)
  XENRULES_DEADLINE       seconds every event ends within, reverted if need be
                          (1..39; overrides the conf file's `deadline`, 30)
Read by bin/xenrules-launcher itself, before anything is imported:
  XENRULES_HELPER_SOCKET  the warm helper's socket (/run/xenrules/helper.sock;
                          empty: always run in-process)
  XENRULES_HELPER_TIMEOUT seconds to wait for the helper's "ready" (10)
  XENRULES_PYTHONPATH     a checkout to import xenrules from (tests)
"""

DEFAULTS = {
    "XENRULES_RULES_PATH": "/etc/xen/rules.d:/usr/lib/xenrules/rules.d",
    "XENRULES_STATE_DIR": "/var/cache/xenrules",
    "XENRULES_LOCK_DIR": "/var/run/xen-hotplug",
    "XENRULES_JOURNAL_DIR": "/run/xenrules/journal",
    "XENRULES_LOG_FILE": "/var/log/xen/xen-hotplug.log",
    "XENRULES_LOG_LEVEL": "info",
    "XENRULES_ORIGINALS_DIR": "",
    "XENRULES_SCRIPTS_DIR": "/etc/xen/scripts",
}


class Config:
    def __init__(self, env):
        def get(key):
            return env.get(key) or DEFAULTS[key]
        self.rules_path = [d for d in get("XENRULES_RULES_PATH").split(":") if d]
        self.state_dir = get("XENRULES_STATE_DIR")
        self.lock_dir = get("XENRULES_LOCK_DIR")
        self.journal_dir = get("XENRULES_JOURNAL_DIR")
        self.log_file = get("XENRULES_LOG_FILE")
        self.log_level = get("XENRULES_LOG_LEVEL")
        self.originals_dir = get("XENRULES_ORIGINALS_DIR")
        self.scripts_dir = get("XENRULES_SCRIPTS_DIR")


CONF_FILE = "/etc/xen/xenrules.conf"
_conf_cache = {}   # path -> settings; filled once by the warm helper (load_conf)


def read_conf(path):
    """key=value lines of the settings file; '#' starts a comment. Never evaluated.
    A missing file is no settings; a line without '=' is ignored."""
    settings = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.split("#", 1)[0].strip()
                key, eq, value = line.partition("=")
                if eq and key.strip():
                    settings[key.strip()] = value.strip().strip('"').strip("'")
    except OSError:
        pass
    return settings


# The keys of the settings file, the single source of truth: the shipped
# etc/xen/xenrules.conf, the man page's SETTINGS and `xenrules check` come from here.
# name: (default, kind, meaning); kind is "path", "words", "count", "seconds" (deadline.py's
# range) or a tuple of choices.
SETTINGS = {
    "capture": ("", "path", "write one capture file per event into this directory "
                "(empty: capture off; XENRULES_CAPTURE overrides)"),
    "capture_scripts": ("", "words", "capture only these scripts, comma- or space-separated "
                        "(empty: every script)"),
    "capture_domains": ("", "words", "capture only these domain ids or names (empty: every domain)"),
    "capture_keep": ("100", "count", "keep at most this many capture files, the oldest removed first"),
    "capture_max_kb": ("1024", "count", "the largest capture file, in KiB"),
    "deadline": ("30", "seconds", "seconds every event ends within, done or reverted with "
                 "hotplug-error, whatever hangs (XenStore, a lock, a hook, a command); "
                 "1 to 39, below libxl's 40 s (XENRULES_DEADLINE overrides)"),
    "antispoof": ("off", ("on", "off"), "nftables anti-spoofing per vif (a guest's backend key "
                  "antispoof and XENRULES_ANTISPOOF win over it)"),
}


def _setting_problem(kind, value):
    """Why VALUE is no good for a key of KIND, or None."""
    if kind == "path":
        return None if value == "" or value.startswith("/") else "is not an absolute path"
    if kind == "count":
        return None if value.isdigit() and int(value) >= 1 else "is not a whole number of at least 1"
    if kind == "seconds":
        from .deadline import HIGHEST, LOWEST, parse
        from .errors import XenrulesError
        try:
            parse(value, "")
        except XenrulesError:
            return f"is not a number of seconds from {LOWEST} to {HIGHEST}"
        return None
    if isinstance(kind, tuple):
        return None if value in kind else f"is none of {', '.join(kind)}"
    return None


def conf_problems(path):
    """(line, message, fix) for each unknown key or bad value of the settings file;
    an unknown key's message names the closest known key (a typo, most often)."""
    import difflib
    found = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return found
    for number, line in enumerate(lines, 1):
        key, eq, value = line.split("#", 1)[0].strip().partition("=")
        key, value = key.strip(), value.strip().strip('"').strip("'")
        if not eq or not key:
            continue
        if key not in SETTINGS:
            close = difflib.get_close_matches(key, SETTINGS, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            fix = (f"rename {key} to {close[0]} on line {number}" if close
                   else f"remove line {number} (known: {', '.join(SETTINGS)})")
            found.append((number, f"unknown setting {key!r} (known: {', '.join(SETTINGS)}){hint}",
                          fix))
            continue
        default, kind, _ = SETTINGS[key]
        problem = _setting_problem(kind, value)
        if problem:
            want = {"path": "an absolute path, or nothing", "count": "a whole number, 1 or more"}
            wanted = " or ".join(kind) if isinstance(kind, tuple) else want.get(kind, kind)
            found.append((number, f"{key} = {value!r} {problem}; using the default {default!r}",
                          f"set {key} to {wanted} on line {number}"))
    return found


def check_conf(path):
    """Warnings "PATH:LINE: ..." for unknown keys and bad values of the settings file.
    Only warnings: the event ignores an unknown key and uses the default for a bad value."""
    return [f"{path}:{number}: {message}" for number, message, _ in conf_problems(path)]


def conf_file_text():
    """The shipped etc/xen/xenrules.conf: every key, commented out, at its default."""
    out = ["# xenrules settings: key = value, '#' starts a comment; read once per process",
           "# (restart xenrules-helper after an edit). `xenrules check` warns about unknown",
           "# keys and bad values. XENRULES_CONF names another file. See xenrules(8), SETTINGS.",
           "# Generated from xenrules/config.py (SETTINGS); tests/test_settings.py checks it."]
    for key, (default, kind, meaning) in SETTINGS.items():
        out += ["", f"# {meaning}", f"#{key} = {default}".rstrip()]
    return "\n".join(out) + "\n"


def load_conf(env):
    """Read the settings file once per process (the helper calls this at warm-up)."""
    path = env.get("XENRULES_CONF") or CONF_FILE
    _conf_cache[path] = read_conf(path)
    return _conf_cache[path]


def conf_value(env, key):
    """One key of the settings file (the rules' `conf:` source), '' when unset.
    Read once per process: the warm helper sees an edit after a restart."""
    path = env.get("XENRULES_CONF") or CONF_FILE
    conf = _conf_cache.get(path)
    if conf is None:
        conf = _conf_cache[path] = read_conf(path)
    return conf.get(key, "")


def capture_setting(env):
    """The capture settings {"dir":, "scripts":, "domains":, "keep":, "max_bytes":},
    or None when capture is off. The event path's only cost when off: this
    env lookup and (without the warm helper) reading the small settings file."""
    path = env.get("XENRULES_CONF") or CONF_FILE
    conf = _conf_cache.get(path)
    if conf is None:
        conf = read_conf(path)
    directory = conf.get("capture", "")
    if not directory.startswith("/"):
        directory = ""   # a bad value is the default, off (`xenrules check` warns)
    directory = env.get("XENRULES_CAPTURE", directory)
    if not directory:
        return None

    def words(key):
        value = env.get("XENRULES_" + key.upper(), conf.get(key, ""))
        return [w for w in value.replace(",", " ").split() if w]

    def number(key, default):
        try:
            value = int(env.get("XENRULES_" + key.upper(), conf.get(key, default)))
        except ValueError:
            return default
        return value if value >= 1 else default   # as `xenrules check` says
    return {"dir": directory, "scripts": words("capture_scripts"), "domains": words("capture_domains"),
            "keep": number("capture_keep", 100), "max_bytes": number("capture_max_kb", 1024) * 1024}
