#!/usr/bin/python3
"""Make the example captures shipped in docs/examples/captures/ from real events.

Each event runs in a fresh simulated dom0 (network namespace, XenStore
server) with XENRULES_CAPTURE on, and the capture it writes is copied under
a name that says what happened. tests/test_shipped_captures.py replays each
and expects the captured outcome. Rerun after a change of the capture
format or of the rules the captures were made with:

    sudo /usr/bin/python3 tools/make_captures.py [--out DIR]

Needs root (network namespaces); removes everything it made.
"""
import argparse
import glob
import json
import os
import shutil
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from xenrules.sandbox.dom0 import PYTHON, SimulatedDom0  # noqa: E402
from xenrules.sandbox.xsserver import XenstoreServer  # noqa: E402

OUT = os.path.join(REPO, "docs", "examples", "captures")

# name: (bridge the vif names, the actions run in order; the last one is captured)
EXAMPLES = {
    "vif-bridge-online.json": ("xenbr0", ["online"]),
    "vif-bridge-online-missing-bridge.json": ("xenbr9", ["online"]),
    "vif-bridge-offline.json": ("xenbr0", ["online", "offline"]),
}


def capture_one(bridge, actions, out_path):
    tmp = tempfile.mkdtemp(prefix="xenrules-mkcap-")
    try:
        with XenstoreServer(os.path.join(tmp, "xs.sock")) as server, \
                SimulatedDom0(server.socket_path, prefix="xrmkcap", bridges=("xenbr0",)) as dom0:
            dom0.add_vif(1, 0, bridge=bridge)
            env = dict(dom0.hotplug_env(1, 0),
                       XENRULES_LOCK_DIR=os.path.join(tmp, "locks"),
                       XENRULES_LOG_FILE=os.path.join(tmp, "log"),
                       XENRULES_VIF_HOOKS_DIR=os.path.join(tmp, "no-hooks"),
                       XENRULES_CONF=os.path.join(tmp, "no.conf"),
                       XENRULES_HELPER_SOCKET="")
            state = os.path.join(tmp, "state")
            for i, action in enumerate(actions):
                last = i == len(actions) - 1
                if last:
                    env["XENRULES_CAPTURE"] = os.path.join(tmp, "cap")
                done = dom0.run_xenrules("vif-bridge", [action, "type_if=vif"], env, state_dir=state)
                if not last and done.returncode != 0:
                    raise SystemExit(f"make_captures: {action} before the captured event failed: "
                                     f"{done.stderr.strip()}")
            files = glob.glob(os.path.join(tmp, "cap", "*.json"))
            if len(files) != 1:
                raise SystemExit(f"make_captures: {len(files)} capture files for {out_path}, want 1")
            with open(files[0]) as f:
                capture = neutral(json.load(f), tmp)
            with open(out_path, "w") as f:
                json.dump(capture, f, indent=1, sort_keys=False)
                f.write("\n")
            os.chmod(out_path, 0o644)   # an example to read, not a root-only capture
            return done.returncode
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def neutral(capture, tmp):
    """The capture without what only this machine has: the checkout's paths
    become the installed package's, the temp dir a fixed one, the host name
    'dom0'; PYTHONPATH (the checkout) is dropped. Replay uses none of them."""
    places = [(os.path.join(REPO, "rules.d"), "/usr/lib/xenrules/rules.d"),
              (REPO, "/usr/lib/python3/dist-packages"), (tmp, "/run/xenrules-example")]

    def clean(value):
        if isinstance(value, str):
            for here, there in places:
                value = value.replace(here, there)
            return value
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    capture = clean(capture)
    capture.get("env", {}).pop("PYTHONPATH", None)
    if "host" in capture:
        capture["host"] = "dom0"
    return capture


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=OUT, help=f"where to write them ({OUT})")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces)")
    os.makedirs(args.out, exist_ok=True)
    for name, (bridge, actions) in EXAMPLES.items():
        code = capture_one(bridge, actions, os.path.join(args.out, name))
        print(f"{name}: vif-bridge {' then '.join(actions)} on bridge {bridge}: exit {code}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
