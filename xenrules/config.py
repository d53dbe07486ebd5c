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
