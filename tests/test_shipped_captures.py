"""The example captures in docs/examples/captures/ (tools/make_captures.py,
from real sandbox events) replay with the current rules to the captured
outcome: the same exit status and the same end state."""
import glob
import json
import os
import re
import subprocess

import pytest

from xenrules.sandbox.dom0 import PYTHON, REPO_ROOT

pytestmark = pytest.mark.netns

CAPTURES = sorted(glob.glob(os.path.join(REPO_ROOT, "docs", "examples", "captures", "*.json")))


def test_the_examples_are_there_and_one_of_them_is_a_failed_event():
    assert len(CAPTURES) >= 2
    exits = [json.load(open(p))["outcome"]["exit"] for p in CAPTURES]
    assert 0 in exits and any(e != 0 for e in exits), exits


@pytest.mark.parametrize("path", CAPTURES, ids=os.path.basename)
def test_a_shipped_capture_replays_to_its_captured_outcome(path):
    captured = json.load(open(path))["outcome"]["exit"]
    done = subprocess.run([PYTHON, "-m", "xenrules", "--rules-path", os.path.join(REPO_ROOT, "rules.d"),
                           "replay", path], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=REPO_ROOT))
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(rf"^xenrules: exit {captured}$", done.stdout, re.M), done.stdout
    assert "xenrules: end state is the captured one" in done.stdout
