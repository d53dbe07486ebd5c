"""Run the original bash script when no rule applies.

The package diverts /etc/xen/scripts/<name> to <name>.xenrules-orig (issue
#3); `dpkg-divert --truename` says where it went, so no name is hard-coded
here. Without the package, XENRULES_ORIGINALS_DIR names a directory holding
the originals.
"""
import os

from .errors import XenrulesError

# Launchers carry this string, so a script that is not diverted is never
# "run as the original" into an endless loop.
LAUNCHER_MARK = b"xenrules-launcher"

# Set in the environment of every original xenrules execs. An event that
# finds it there came back into xenrules from "the original" (a wrapper
# script, a symlink the package did not make): falling back again would
# exec the same thing forever, so it is refused instead.
FALLBACK_MARK = "XENRULES_FALLBACK_FROM"


def original_path(config, script):
    if config.originals_dir:
        return os.path.join(config.originals_dir, script)
    import subprocess   # only a fallback pays for it
    installed = os.path.join(config.scripts_dir, script)
    try:
        done = subprocess.run(["dpkg-divert", "--truename", installed], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=10)
        return done.stdout.strip() or installed
    except (OSError, subprocess.SubprocessError):
        return installed


def _is_launcher(path):
    try:
        with open(path, "rb") as f:
            return LAUNCHER_MARK in f.read(4096)
    except OSError:
        return False


def run_original(config, event, log, reason):
    """exec the original script with the same argv and environment. Never returns."""
    if event.script in (".", "..") or not event.script.isprintable():
        # udev's `script` (vif-setup) names it: '..' would be the scripts' parent
        # directory, a newline no file the package diverts
        raise XenrulesError(f"{reason}, and {event.script!r} names no script to fall back to")
    path = original_path(config, event.script)
    came_from = event.env.get(FALLBACK_MARK)
    if came_from is not None:
        raise XenrulesError(
            f"{reason}, and this event already fell back to {came_from!r}, which led back "
            f"into xenrules (a wrapper that runs xenrules?): refusing to loop; point "
            f"XENRULES_ORIGINALS_DIR or the diversion at the real bash script")
    if not os.access(path, os.X_OK) or _is_launcher(path):
        raise XenrulesError(f"{reason}, and there is no original script {path} to fall back to")
    log("info", f"{reason}: running the original {path} {' '.join(event.words)}".rstrip())
    try:
        os.execve(path, [path] + event.words, dict(event.env, **{FALLBACK_MARK: path}))
    except OSError as e:
        raise XenrulesError(f"{reason}, and the original {path} cannot be run: {e.strerror}") from e
