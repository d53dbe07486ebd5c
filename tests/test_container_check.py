"""tools/container_check.py counts on the host only what names its own root:
other test runs on this machine mount and attach things meanwhile."""
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))

import container_check  # noqa: E402

ROOT = "/var/cache/xenrules-ci/trixie/root"


def test_a_mount_inside_or_of_the_root_is_the_runs():
    assert container_check.under(ROOT, f"{ROOT}/proc proc")
    assert container_check.under(ROOT, f"{ROOT} /dev/vda[{ROOT}]")
    assert container_check.under(ROOT, f"/mnt/x /dev/vda[{ROOT}/tmp/img]")


def test_another_runs_mount_or_a_sibling_path_is_not():
    assert not container_check.under(ROOT, "/run/netns/xr-w13b-1 nsfs[net:[4026532]]")
    assert not container_check.under(ROOT, "/tmp/xr-blk-x /dev/loop3")
    assert not container_check.under(ROOT, f"{ROOT}2/proc proc")
    assert not container_check.under(ROOT, "/var/cache/xenrules-ci/bookworm/root/proc proc")


def test_only_what_appeared_during_the_run_is_a_leak():
    before = {"mounts": {"a", "b"}}
    assert container_check.leaks(before, {"mounts": {"a", "b"}}) == {}
    assert container_check.leaks(before, {"mounts": {"a", "c"}}) == {"mounts": ["c"]}
