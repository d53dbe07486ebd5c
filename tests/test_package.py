"""The real xenrules .deb on this machine, next to the real xen-utils-common.

Builds the package from this checkout, checks it with lintian, installs it
with xen-utils-common (--no-install-recommends, udev held at the installed
systemd's version), sends events through /etc/xen/scripts/vif-bridge in a
simulated dom0, upgrades and reinstalls both packages, removes and purges,
and checks every original script against dpkg's conffile hashes. The machine
is put back as found at the end (tools/pkgtest.py), even when a test fails.

Run alone with `pytest -m package`; debian/tests/package runs the same.
"""
import os
import re
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))

import build_deb  # noqa: E402
import diverted_scripts  # noqa: E402
from pkgtest import (LAUNCHER, SCRIPTS, SUFFIX, XUC, Machine, apt_versions, conffile_hashes,  # noqa: E402
                     diversions, installed_version, md5, run)

pytestmark = [pytest.mark.package, pytest.mark.netns]

REQUIRED_DEPENDS = ("python3", "python3-yaml", "python3-jsonschema", "python3-pyroute2",
                    "python3-pyxs", "iproute2", "xen-utils-common")
DOMID = 4242                       # vif4242.0: a name no other test uses
ADMIN_RULE = "/etc/xen/rules.d/99-xenrules-pkgtest-admin.yaml"
BROKEN_RULE = "/etc/xen/rules.d/00-xenrules-pkgtest-broken.yaml"


@pytest.fixture(scope="module")
def machine():
    m = Machine()
    try:
        m.deb = build_deb.build(out=os.path.join(m.tmp, "deb"))
        m.version = build_deb.changelog_version()
        versions = apt_versions(XUC)
        m.xuc_old, m.xuc_new = versions[0], versions[-1]
        yield m
    finally:
        for path in (ADMIN_RULE, BROKEN_RULE):
            if os.path.lexists(path):
                os.unlink(path)
        m.restore()


def ensure_installed(m, xuc_version=None):
    """xen-utils-common (the oldest archive version unless given) and xenrules, configured."""
    wanted = xuc_version or (installed_version(XUC) or m.xuc_old)
    if installed_version(XUC) != wanted:
        m.install_xuc(wanted)
    if installed_version("xenrules") != m.version:
        m.install_deb(m.deb)
    return m.diverted_names()


def event_env(dom0, tmp_path, **extra):
    """What libxl gives vif-bridge, plus a private log file; no XENRULES_PYTHONPATH
    (the installed package serves) and no warm helper."""
    env = dom0.hotplug_env(DOMID, 0)
    env.update(XENRULES_LOG_FILE=str(tmp_path / "hotplug.log"), XENRULES_HELPER_SOCKET="")
    env.update(extra)
    return env


def read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


# -- the .deb ---------------------------------------------------------------------


def test_build_makes_an_arch_deb_with_the_required_dependencies(machine):
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    assert os.path.basename(machine.deb) == f"xenrules_{machine.version}_{arch}.deb"
    fields = run(["dpkg-deb", "-f", machine.deb, "Architecture", "Depends", "Recommends", "Suggests"]).stdout
    assert f"Architecture: {arch}" in fields
    depends = fields.split("Depends:", 1)[1].splitlines()[0]
    names = {d.split()[0].split(":")[0] for d in depends.split(",") if d.strip()}
    assert set(REQUIRED_DEPENDS) <= names, depends
    assert names - set(REQUIRED_DEPENDS) <= {"python3", "libc6"}, f"more than Debian's own: {depends}"
    assert "iptables" in fields.split("Recommends:", 1)[1].splitlines()[0]
    assert "openvswitch-switch" in fields.split("Suggests:", 1)[1]


def test_deb_ships_launcher_rules_list_and_man_pages_but_nothing_in_etc_xen_scripts(machine):
    listing = run(["dpkg-deb", "-c", machine.deb]).stdout
    for path in (LAUNCHER, "/usr/share/xenrules/diverted", "/usr/lib/xenrules/rules.d/50-vif-bridge.yaml",
                 "/usr/share/man/man8/xenrules.8.gz", "/usr/share/man/man5/xenrules.rules.5.gz",
                 "/usr/share/doc/xenrules/README.Debian", "/usr/bin/xenrules"):
        assert f".{path}" in listing, path
    # the launcher is the compiled one (issue 10); its fallback, the Python in-process path
    assert "./usr/libexec/xenrules/xenrules-inprocess" in listing
    work = os.path.join(machine.tmp, "unpacked")
    run(["dpkg-deb", "-x", machine.deb, work])
    with open(work + LAUNCHER, "rb") as f:
        assert f.read(4) == b"\x7fELF"
    # the launchers are made by postinst after the diversions, never unpacked over an original
    assert "./etc/xen/scripts" not in listing
    # the optional warm helper's units, exactly when the source has them
    units = sorted(f for f in os.listdir(os.path.join(REPO_ROOT, "systemd"))
                   if f.endswith((".service", ".socket"))) if os.path.isdir(os.path.join(REPO_ROOT, "systemd")) else []
    shipped = sorted(line.rsplit("/", 1)[1] for line in listing.splitlines()
                     if re.search(r"\./(usr/)?lib/systemd/system/", line) and not line.endswith("/"))
    assert shipped == units


def test_lintian_reports_no_error_and_no_warning(machine):
    code, report = build_deb.lintian(machine.deb)
    tags = [line for line in report.splitlines() if line[:2] in ("E:", "W:")]
    assert code == 0 and not tags, report


# -- install --------------------------------------------------------------------------


def test_install_diverts_exactly_the_scripts_the_rules_serve(machine):
    names = ensure_installed(machine)
    assert names == diverted_scripts.diverted(os.path.join(REPO_ROOT, "rules.d"))
    assert "vif-bridge" in names
    assert not [n for n in names if n.endswith(".sh") or n == "vif-setup"]
    assert machine.diverted_problems(names) == []
    assert run(["dpkg", "--verify", XUC], check=False).stdout == ""


def test_helpers_stay_in_place_and_the_diverted_original_still_finds_them(machine):
    ensure_installed(machine)
    for helper in ("vif-common.sh", "xen-hotplug-common.sh", "locking.sh", "vif-setup"):
        path = f"{SCRIPTS}/{helper}"
        assert os.path.isfile(path) and not os.path.islink(path), path
        assert f"{SCRIPTS}/{helper}" not in diversions()


def test_event_through_the_installed_vif_bridge_does_what_the_rules_say(machine, dom0, tmp_path):
    ensure_installed(machine)
    dom0.add_vif(DOMID, 0, mtu=1400)
    env = event_env(dom0, tmp_path)
    assert not any(k.startswith("PYTHON") or k == "XENRULES_PYTHONPATH" for k in env)
    done = dom0.run([f"{SCRIPTS}/vif-bridge", "online", "type_if=vif"], env)
    log = read(tmp_path / "hotplug.log")
    assert done.returncode == 0, (done.stderr, log)
    # the installed engine and the installed rules served it, not the original
    assert "rule vif-bridge (/usr/lib/xenrules/rules.d/50-vif-bridge.yaml" in log, log
    assert "running the original" not in log
    state = dom0.state()
    vif = state["links"][f"vif{DOMID}.0"]
    assert (vif["master"], vif["mac"], vif["mtu"], vif["up"]) == ("xenbr0", "fe:ff:ff:ff:ff:ff", 1400, True)
    assert state["xenstore"][f"/local/domain/0/backend/vif/{DOMID}/0/hotplug-status"] == "connected"
    assert state["xenstore"][f"/local/domain/{DOMID}/device/vif/0/mtu"] == "1400"
    done = dom0.run([f"{SCRIPTS}/vif-bridge", "offline", "type_if=vif"], env)
    assert done.returncode == 0, (done.stderr, read(tmp_path / "hotplug.log"))
    assert dom0.state()["links"][f"vif{DOMID}.0"]["master"] is None


def test_event_with_no_rule_reaches_the_diverted_original(machine, dom0, tmp_path):
    ensure_installed(machine)
    dom0.add_vif(DOMID, 0)
    no_rules = tmp_path / "no-rules"
    no_rules.mkdir()
    env = event_env(dom0, tmp_path, XENRULES_RULES_PATH=str(no_rules),
                    XENRULES_STATE_DIR=str(tmp_path / "state"))
    done = dom0.run([f"{SCRIPTS}/vif-bridge", "online", "type_if=vif"], env)
    log = read(tmp_path / "hotplug.log")
    assert done.returncode == 0, (done.stderr, log)
    assert f"running the original {SCRIPTS}/vif-bridge{SUFFIX} online type_if=vif" in log, log
    # the original did its work: on the bridge, connected
    state = dom0.state()
    assert state["links"][f"vif{DOMID}.0"]["master"] == "xenbr0"
    assert state["xenstore"][f"/local/domain/0/backend/vif/{DOMID}/0/hotplug-status"] == "connected"


def test_rules_that_do_not_load_hand_the_event_to_the_original(machine, dom0, tmp_path):
    ensure_installed(machine)
    dom0.add_vif(DOMID, 0)
    broken = tmp_path / "broken-rules"
    broken.mkdir()
    (broken / "50-broken.yaml").write_text("- rule: broken\n  match: {script: vif-bridge}\n  actions: [\n")
    env = event_env(dom0, tmp_path, XENRULES_RULES_PATH=str(broken),
                    XENRULES_STATE_DIR=str(tmp_path / "state"))
    done = dom0.run([f"{SCRIPTS}/vif-bridge", "online", "type_if=vif"], env)
    log = read(tmp_path / "hotplug.log")
    assert done.returncode == 0, (done.stderr, log)
    assert "rules do not load (" in log and "): running the original" in log, log
    assert dom0.state()["links"][f"vif{DOMID}.0"]["master"] == "xenbr0"


def test_broken_admin_rule_is_reported_at_install_and_the_fallback_applies(machine, dom0, tmp_path):
    ensure_installed(machine)
    with open(BROKEN_RULE, "w") as f:
        f.write("- rule: pkgtest-broken\n  match: {script: vif-bridge}\n  actions: {online: [{no.such_step: {}}]}\n")
    try:
        hotplug_log = "/var/log/xen/xen-hotplug.log"
        start = os.path.getsize(hotplug_log) if os.path.exists(hotplug_log) else 0
        done = machine.install_deb(machine.deb, reinstall=True)   # fails the test if apt fails
        said = done.stdout + done.stderr
        assert "the hotplug rules do not validate" in said and BROKEN_RULE in said, said
        with open(hotplug_log, encoding="utf-8", errors="replace") as f:
            f.seek(start)
            assert BROKEN_RULE in f.read()
        assert machine.diverted_problems(machine.diverted_names()) == []
        dom0.add_vif(DOMID, 0)
        env = event_env(dom0, tmp_path)      # the default rule path: /etc/xen/rules.d is broken
        done = dom0.run([f"{SCRIPTS}/vif-bridge", "online", "type_if=vif"], env)
        log = read(tmp_path / "hotplug.log")
        assert done.returncode == 0, (done.stderr, log)
        assert "rules do not load (" in log and "): running the original" in log, log
        assert dom0.state()["links"][f"vif{DOMID}.0"]["master"] == "xenbr0"
    finally:
        os.unlink(BROKEN_RULE)


# -- upgrades and reinstalls ----------------------------------------------------------


def test_reinstalling_xen_utils_common_keeps_diversions_and_originals(machine):
    names = ensure_installed(machine)
    machine.install_xuc(installed_version(XUC), reinstall=True)
    assert machine.diverted_problems(names) == []


def test_upgrading_xen_utils_common_from_the_archive_keeps_the_diversions(machine):
    names = ensure_installed(machine, machine.xuc_old)
    # bookworm has two (point release and security); a single version is reinstalled
    machine.install_xuc(machine.xuc_new, reinstall=machine.xuc_new == machine.xuc_old)
    assert installed_version(XUC) == machine.xuc_new
    assert machine.diverted_problems(names) == []


def test_upgrade_of_xen_utils_common_changing_a_script_updates_the_diverted_original(machine):
    names = ensure_installed(machine)
    base = installed_version(XUC)
    new = f"{base}+xrtest1"
    deb = machine.repack_xuc(base, new, line="# xenrules package test: changed upstream\n")
    machine.dpkg("-i", deb)
    assert installed_version(XUC) == new
    orig = f"{SCRIPTS}/vif-bridge{SUFFIX}"
    assert read(orig).endswith("# xenrules package test: changed upstream\n")
    assert machine.diverted_problems(names) == []
    assert not [f for f in os.listdir(SCRIPTS) if f.endswith((".dpkg-new", ".dpkg-old", ".dpkg-dist"))]
    machine.install_xuc(base)             # back to the archive's version (a downgrade)
    assert machine.diverted_problems(names) == []


def test_conffile_prompt_for_an_edited_diverted_original_names_the_diverted_path(machine):
    names = ensure_installed(machine)
    base = installed_version(XUC)
    orig = f"{SCRIPTS}/vif-bridge{SUFFIX}"
    deb = machine.repack_xuc(base, f"{base}+xrtest2", line="# xenrules package test: new upstream\n")
    with open(orig, "a") as f:
        f.write("# edited by the admin\n")
    # no stdin, no --force-conf*: dpkg must ask, cannot, and fails naming the diverted file
    done = machine.dpkg("-i", deb, check=False)
    assert done.returncode != 0
    assert f"Configuration file '{orig}'" in done.stdout + done.stderr, done.stdout + done.stderr
    assert os.readlink(f"{SCRIPTS}/vif-bridge") == LAUNCHER
    # the admin's choice: keep the edited file
    machine.dpkg("--configure", "--force-confold", XUC)
    assert read(orig).endswith("# edited by the admin\n")
    assert os.readlink(f"{SCRIPTS}/vif-bridge") == LAUNCHER
    # back to the archive's version, with its scripts; dpkg keeps the edited
    # file as <diverted name>.dpkg-old, as it would for an undiverted conffile
    machine.apt("install", "--allow-downgrades", "-o", "Dpkg::Options::=--force-confnew",
                f"{XUC}={base}", *machine.pins)
    assert machine.diverted_problems(names) == []
    assert read(orig + ".dpkg-old").endswith("# edited by the admin\n")
    for name in os.listdir(SCRIPTS):
        if name.startswith(f"vif-bridge{SUFFIX}.dpkg-"):
            os.unlink(f"{SCRIPTS}/{name}")


def test_reinstalling_and_upgrading_xenrules_keeps_the_diversions(machine):
    names = ensure_installed(machine)
    machine.install_deb(machine.deb, reinstall=True)
    assert machine.diverted_problems(names) == []
    bumped = build_deb.build(version=f"{machine.version}+xrtest1", out=os.path.join(machine.tmp, "deb"))
    machine.install_deb(bumped)
    assert installed_version("xenrules") == f"{machine.version}+xrtest1"
    assert machine.diverted_problems(names) == []
    # and back down to this checkout's version
    machine.apt("install", "--allow-downgrades", machine.deb, *machine.pins)
    assert installed_version("xenrules") == machine.version
    assert machine.diverted_problems(names) == []


def test_upgrade_undiverts_a_script_the_new_version_has_no_rules_for(machine):
    """As if an older version had diverted block-nbd: configuring this one puts it back."""
    names = ensure_installed(machine)
    stale = f"{SCRIPTS}/block-nbd"
    assert "block-nbd" not in names
    run(["dpkg-divert", "--package", "xenrules", "--rename", "--divert", stale + SUFFIX, "--add", stale])
    os.symlink(LAUNCHER, stale)
    machine.install_deb(machine.deb, reinstall=True)
    assert stale not in diversions()
    assert not os.path.islink(stale) and md5(stale) == conffile_hashes()[stale]
    assert not os.path.exists(stale + SUFFIX)
    assert machine.diverted_problems(names) == []


# -- removal --------------------------------------------------------------------------


def _admin_rule():
    with open(ADMIN_RULE, "w") as f:
        f.write("# the admin's: no package may remove it\n[]\n")


@pytest.mark.parametrize("how", ["remove", "purge"])
def test_removal_restores_every_original_and_leaves_nothing_behind(machine, how, dom0, tmp_path):
    ensure_installed(machine)
    # an event first, so that there is a cache (and maybe locks) to clean up
    dom0.add_vif(DOMID, 0)
    done = dom0.run([f"{SCRIPTS}/vif-bridge", "online", "type_if=vif"], event_env(dom0, tmp_path))
    assert done.returncode == 0, done.stderr
    assert os.path.exists("/var/cache/xenrules/rules.cache")
    _admin_rule()
    # dpkg's copy of an edited original, left by an earlier upgrade of xen-utils-common
    with open(f"{SCRIPTS}/vif-bridge{SUFFIX}.dpkg-old", "w") as f:
        f.write("# the admin's edit\n")
    try:
        machine.apt(how, "xenrules")
        # follows the original back to the name dpkg knows (and purges with xen-utils-common)
        assert read(f"{SCRIPTS}/vif-bridge.dpkg-old") == "# the admin's edit\n"
        assert not os.path.exists(f"{SCRIPTS}/vif-bridge{SUFFIX}.dpkg-old")
        assert installed_version("xenrules") is None
        assert diversions() == {}
        assert machine.originals_problems() == []
        assert run(["dpkg", "--verify", XUC], check=False).stdout == ""
        assert machine.leftovers() == []
        assert os.path.isfile(ADMIN_RULE), f"{how} removed the admin's rule file"
        status = run(["dpkg-query", "-W", "-f=${db:Status-Status}", "xenrules"], check=False).stdout
        # after a purge dpkg forgets the package altogether
        assert status in (("config-files",) if how == "remove" else ("not-installed", ""))
    finally:
        os.unlink(ADMIN_RULE)
        for leftover in (f"{SCRIPTS}/vif-bridge.dpkg-old", f"{SCRIPTS}/vif-bridge{SUFFIX}.dpkg-old"):
            if os.path.exists(leftover):
                os.unlink(leftover)


def test_one_apt_run_installing_xen_utils_common_and_xenrules_keeps_every_original(machine):
    machine.purge("xenrules", XUC)
    assert installed_version(XUC) is None and not os.path.exists(f"{SCRIPTS}/vif-bridge")
    done = machine.apt("install", machine.deb, f"{XUC}={machine.xuc_new}", *machine.pins)
    # the trap's situation: both unpacked in this run, xen-utils-common configured first
    out = done.stdout
    assert "Unpacking xen-utils-common" in out and "Unpacking xenrules" in out, out
    assert out.index("Setting up xen-utils-common") < out.index("Setting up xenrules"), out
    names = machine.diverted_names()
    assert machine.diverted_problems(names) == []
    assert set(conffile_hashes()) >= {f"{SCRIPTS}/{n}" for n in names}
    machine.apt("purge", "xenrules")
    assert diversions() == {}
    assert machine.originals_problems() == []


def test_conffile_hashes_cover_every_hotplug_script_of_xen_utils_common(machine):
    """The byte-for-byte checks above compare against these: they must list the scripts."""
    ensure_installed(machine)
    hashes = conffile_hashes()
    assert {f"{SCRIPTS}/{n}" for n in diverted_scripts.XEN_417_HOTPLUG_SCRIPTS} <= set(hashes)
    assert all(len(h) == 32 for h in hashes.values())
    assert md5(f"{SCRIPTS}/vif-bridge{SUFFIX}") == hashes[f"{SCRIPTS}/vif-bridge"]
