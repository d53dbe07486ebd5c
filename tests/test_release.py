"""One source tree, both releases: tools/release.py names the release and its
policy, tools/build_deb.py writes them into its build copy of debian/."""
import json
import os
import shutil
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))

import build_deb  # noqa: E402
import release  # noqa: E402

LINTIAN_POLICY = "/usr/share/lintian/data/debian-policy/releases.json"


@pytest.fixture
def tree(tmp_path):
    os.mkdir(tmp_path / "debian")
    for name in ("changelog", "control"):
        shutil.copy(os.path.join(REPO_ROOT, "debian", name), tmp_path / "debian" / name)
    return tmp_path


def _field(path, prefix):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.startswith(prefix)]


@pytest.mark.parametrize("suite,policy", [("bookworm", "4.6.2"), ("trixie", "4.7.2")])
def test_the_build_copy_names_the_release_and_declares_its_policy(tree, suite, policy):
    build_deb.for_release(str(tree), suite)
    with open(tree / "debian" / "changelog", encoding="utf-8") as f:
        assert f.readline().startswith(f"xenrules ({build_deb.changelog_version()}) {suite}; ")
    assert _field(tree / "debian" / "control", "Standards-Version:") == [f"Standards-Version: {policy}"]


def test_only_the_newest_changelog_entry_changes_release(tree):
    path = tree / "debian" / "changelog"
    old = path.read_text(encoding="utf-8")
    path.write_text(old + "\nxenrules (0.0.9) bookworm; urgency=medium\n", encoding="utf-8")
    build_deb.for_release(str(tree), "trixie")
    assert path.read_text(encoding="utf-8").endswith("xenrules (0.0.9) bookworm; urgency=medium\n")


def test_a_release_without_a_known_policy_keeps_the_trees_standards_version(tree):
    before = _field(tree / "debian" / "control", "Standards-Version:")
    build_deb.for_release(str(tree), "forky")
    assert _field(tree / "debian" / "control", "Standards-Version:") == before
    with open(tree / "debian" / "changelog", encoding="utf-8") as f:
        assert " forky; " in f.readline()


@pytest.mark.parametrize("suite", ["", "Trixie", "trixie;rm", "../x", "tri xie"])
def test_a_suite_that_is_no_debian_name_stops_the_build(tree, suite):
    with pytest.raises(build_deb.BuildError):
        build_deb.for_release(str(tree), suite)


def test_the_source_tree_is_never_rewritten():
    # the build rewrites a copy: debian/ in the checkout stays bookworm's text
    with open(os.path.join(REPO_ROOT, "debian", "control"), encoding="utf-8") as f:
        assert "Standards-Version: 4.6.2\n" in f.read()


def test_xenrules_suite_overrides_the_running_release(monkeypatch, tmp_path):
    os_release = tmp_path / "os-release"
    os_release.write_text('ID=debian\nVERSION_CODENAME="bookworm"\n', encoding="utf-8")
    monkeypatch.delenv("XENRULES_SUITE", raising=False)
    assert release.codename(str(os_release)) == "bookworm"
    monkeypatch.setenv("XENRULES_SUITE", "trixie")
    assert release.codename(str(os_release)) == "trixie"


def test_the_policy_table_is_what_this_releases_lintian_knows_as_newest():
    """POLICY[this release] is the newest Policy version (x.y.z) in lintian's
    data here: 4.6.2 on bookworm, 4.7.2 on trixie (make check-trixie)."""
    suite = release.codename()
    if suite not in release.POLICY or not os.path.exists(LINTIAN_POLICY):
        pytest.skip(f"no lintian policy data or no POLICY entry for {suite}")
    with open(LINTIAN_POLICY, encoding="utf-8") as f:
        versions = [r["version"] for r in json.load(f)["releases"]]
    newest = max(tuple(int(p) for p in v.split(".")[:3]) for v in versions)
    assert release.standards_version(suite) == ".".join(map(str, newest))
