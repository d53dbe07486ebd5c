"""Logging like the originals' logging.sh, plus a per-event trace.

Records go to syslog (facility daemon, tag = the script name) and are
appended to /var/log/xen/xen-hotplug.log; if that file cannot be written they
go to stderr, like `logger ... || echo ... >&2`.
"""
import os
import syslog
import time

LEVELS = {"debug": syslog.LOG_DEBUG, "info": syslog.LOG_INFO,
          "warning": syslog.LOG_WARNING, "err": syslog.LOG_ERR}
_ALIASES = {"warn": "warning", "error": "err"}


class Log:
    def __init__(self, tag, level="info", path=None, echo=None):
        # the script's name comes from argv0 or udev's `script`: bytes that are
        # not UTF-8 made openlog raise before the event could report anything
        tag = tag.encode("utf-8", "backslashreplace").decode("utf-8")
        self.tag = tag
        self.threshold = LEVELS.get(_ALIASES.get(level, level), syslog.LOG_INFO)
        self.path = path
        self.echo = echo          # a stream that also gets every record (CLI)
        self._file = None
        syslog.openlog(tag, syslog.LOG_PID, syslog.LOG_DAEMON)

    def enabled(self, level):
        return LEVELS[level] <= self.threshold

    def __call__(self, level, message):
        if not self.enabled(level):
            return
        # argv/env bytes that are not UTF-8 arrive surrogate-escaped: show them, never crash
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        syslog.syslog(LEVELS[level], message)
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {self.tag}[{os.getpid()}] {level}: {message}\n"
        if self.echo is not None:
            self.echo.write(f"{level}: {message}\n")
        if not self._write_file(line) and self.echo is None:
            os.write(2, line.encode("utf-8", "replace"))

    def _write_file(self, line):
        if not self.path:
            return False
        # One write(2) per record on an O_APPEND fd: concurrent events' records
        # never interleave, and no buffered text file to set up (fstat, ioctl, lseek).
        try:
            if self._file is None:
                self._file = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            data = line.encode("utf-8", "replace")
            written = os.write(self._file, data)
            if written < len(data):   # a full disk: the rest, or OSError
                os.write(self._file, data[written:])
            return True
        except OSError:
            self.path = None
            return False


class NullLog:
    """For dry runs (explain): nothing to syslog, nothing to the log file."""

    def enabled(self, level):
        return False

    def __call__(self, level, message):
        pass
