"""`make torture` in small: one quick round passes, and the leak checker
catches each kind of leak it is there for (made deliberately, then cleaned)."""
import os
import subprocess
import sys
import tempfile

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
import torture  # noqa: E402


def test_one_quick_round_with_a_kill_loses_no_state_and_leaks_nothing():
    result = torture.run(rounds=1, events=16, seed=1, kill_share=1 / 16, report=False,
                         stall_share=0)
    f = result["torture"]
    assert f["events"] == 16 and f["rounds"] == 1
    assert (f["failures"], f["leaks"], f["state_lost"]) == (0, 0, 0), result["findings"]


def test_a_round_under_a_xenstore_stall_ends_every_event_done_or_reverted_then_converges():
    result = torture.run(rounds=1, events=8, seed=2, kill_share=1 / 8, report=False,
                         stall_share=1)
    f = result["torture"]
    assert f["faults"]["xs_stall"] == 1 and f["events"] == 8
    assert (f["failures"], f["leaks"], f["state_lost"]) == (0, 0, 0), result["findings"]


@pytest.fixture
def run_dir():
    d = tempfile.mkdtemp(prefix="xr-w9t-leak-", dir="/tmp")
    yield d
    subprocess.run(["rm", "-rf", d])


def test_the_checker_reports_a_leaked_loop_device(run_dir):
    base = torture.Baseline(os.path.join(run_dir, "none"), [])
    image = os.path.join(run_dir, "w9t-image")
    with open(image, "wb") as f:
        f.truncate(1 << 20)
    dev = subprocess.run(["losetup", "-f", "--show", image], capture_output=True,
                         text=True, check=True).stdout.strip()
    try:
        assert any(dev in leak for leak in base.check())
    finally:
        subprocess.run(["losetup", "-d", dev], check=True)
    assert base.check() == []


def test_the_checker_reports_a_stale_journal_or_lock_file(run_dir):
    base = torture.Baseline(run_dir, [run_dir])
    open(os.path.join(run_dir, "vif-1-0.lock"), "w").close()
    assert any("vif-1-0.lock" in leak for leak in base.check())


def test_the_checker_reports_a_lock_still_held(run_dir):
    lock_dir = os.path.join(run_dir, "locks")
    os.mkdir(lock_dir)
    base = torture.Baseline(os.path.join(run_dir, "none"), [lock_dir])
    path = os.path.join(lock_dir, "held")
    holder = subprocess.Popen([sys.executable, "-c",
                               "import fcntl,sys,time;f=open(sys.argv[1],'w');"
                               "fcntl.flock(f,fcntl.LOCK_EX);print(flush=True);time.sleep(60)", path],
                              stdout=subprocess.PIPE)
    try:
        holder.stdout.readline()
        assert any("lock still held" in leak for leak in base.check())
    finally:
        holder.kill()
        holder.wait()


def test_the_checker_reports_a_leaked_network_namespace(run_dir):
    base = torture.Baseline(run_dir, [run_dir])
    name = "xr-w9t-leak-%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert any(name in leak for leak in base.check())
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)
    assert base.check() == []


def test_the_checker_reports_a_process_left_in_an_event_session(run_dir):
    base = torture.Baseline(run_dir, [run_dir])
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        assert any(str(child.pid) in leak for leak in base.check({child.pid}))
    finally:
        child.kill()
        child.wait()


def test_events_caught_in_a_stall_longer_than_the_deadline_end_reverted_then_converge(monkeypatch):
    monkeypatch.setattr(torture, "DEADLINE", 3)   # 4 events: a short deadline is enough
    monkeypatch.setattr(torture, "STALL_SECONDS", (5, 5))
    result = torture.run(rounds=1, events=4, seed=3, kill_share=0, report=False, stall_share=1,
                         log=lambda *a: None)
    f = result["torture"]
    assert f["stall_reverted"] > 0
    assert (f["failures"], f["leaks"], f["state_lost"]) == (0, 0, 0), result["findings"]
