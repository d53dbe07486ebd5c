"""dhcpd.* steps: host entries in dhcpd.conf, interface lists, the restart.

Real files in a temporary directory, the real lock protocol (xenrules.locking)
in a temporary lock directory; the originals' way of writing (in place,
through symlinks) is what is checked.
"""

import os

import pytest

from xenrules.config import Config
from xenrules.errors import StepError
from xenrules.locking import HotplugLock
from xenrules.runtime import Runtime
from xenrules.steps import all_step_types, dhcpd, step_class

CONF = """\
subnet 10.0.0.0 netmask 255.255.0.0 {
}
host printer { hardware ethernet 00:11:22:33:44:55; fixed-address 10.0.9.9; }
host dom10 { hardware ethernet 00:16:3e:00:0a:00; fixed-address 10.0.10.1; option routers 10.0.10.128; option host-name "dom10"; }
host dom1-2 { hardware ethernet 00:16:3e:00:01:01; fixed-address 10.0.1.2; option routers 10.0.1.129; option host-name "dom1-2"; }
"""
ENTRY = ('host dom1 { hardware ethernet 00:16:3e:00:01:00; fixed-address 10.0.1.1; '
         'option routers 10.0.1.128; option host-name "dom1"; }\n')
HOST = {"name": "dom1", "mac": "00:16:3e:00:01:00", "address": "10.0.1.1", "router": "10.0.1.128"}
DEFAULTS = '# interfaces\nINTERFACES=""\n'


class Log:
    def __init__(self):
        self.lines = []

    def __call__(self, level, message):
        self.lines.append((level, message))


@pytest.fixture
def runtime(tmp_path):
    rt = Runtime(Config({"XENRULES_LOCK_DIR": str(tmp_path / "locks")}), None, Log())
    yield rt
    rt.close()


def step(type_name, **args):
    return step_class(type_name)(args)


def write(path, text):
    path.write_text(text)
    return path


def test_the_dhcpd_steps_are_registered():
    names = {n for n in all_step_types() if n.startswith("dhcpd.")}
    assert names == {"dhcpd.add_host", "dhcpd.remove_host", "dhcpd.add_interface",
                     "dhcpd.remove_interface", "dhcpd.restart"}
    for name in names:
        cls = step_class(name)
        assert cls.summary
        assert all("description" in p for p in cls.properties.values()), name


# -- host entries ------------------------------------------------------------

def test_add_host_appends_the_originals_line_and_leaves_other_hosts(runtime, tmp_path):
    conf = write(tmp_path / "dhcpd.conf", CONF)
    step("dhcpd.add_host", file=str(conf), **HOST).apply(runtime)
    assert conf.read_text() == CONF + ENTRY


def test_add_host_replaces_the_guests_old_entry_only(runtime, tmp_path):
    old = 'host dom1 { hardware ethernet 00:16:3e:00:00:99; fixed-address 10.9.9.9; }\n'
    conf = write(tmp_path / "dhcpd.conf", old + CONF)
    step("dhcpd.add_host", file=str(conf), **HOST).apply(runtime)
    assert conf.read_text() == CONF + ENTRY


def test_add_host_twice_gives_one_entry(runtime, tmp_path):
    conf = write(tmp_path / "dhcpd.conf", CONF)
    step("dhcpd.add_host", file=str(conf), **HOST).apply(runtime)
    step("dhcpd.add_host", file=str(conf), **HOST).apply(runtime)
    assert conf.read_text().count("host dom1 ") == 1


def test_add_host_on_a_file_without_final_newline_starts_a_new_line(runtime, tmp_path):
    conf = write(tmp_path / "dhcpd.conf", "subnet 10.0.0.0 netmask 255.255.0.0 { }")
    step("dhcpd.add_host", file=str(conf), **HOST).apply(runtime)
    assert conf.read_text() == "subnet 10.0.0.0 netmask 255.255.0.0 { }\n" + ENTRY


def test_add_host_on_an_empty_file(runtime, tmp_path):
    conf = write(tmp_path / "dhcpd.conf", "")
    step("dhcpd.add_host", file=str(conf), **HOST).apply(runtime)
    assert conf.read_text() == ENTRY


def test_add_host_through_a_symlink_edits_the_target_in_place(runtime, tmp_path):
    target = write(tmp_path / "real.conf", CONF)
    os.chmod(target, 0o640)
    inode = target.stat().st_ino
    link = tmp_path / "dhcpd.conf"
    link.symlink_to("real.conf")
    step("dhcpd.add_host", file=str(link), **HOST).apply(runtime)
    assert link.is_symlink() and os.readlink(link) == "real.conf"
    assert target.read_text() == CONF + ENTRY
    assert target.stat().st_ino == inode
    assert target.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("field,value", [("mac", ""), ("mac", "00:16:3e:00:01"),
                                         ("mac", "00:16:3e:00:01:00; }"), ("address", "10.0.1.1 10.0.2.1"),
                                         ("address", "10.0.1.300"), ("router", "10.0.1.1127"),
                                         ("name", "dom1 { }"), ("name", "")])
def test_add_host_refuses_values_that_would_break_dhcpd_conf(runtime, tmp_path, field, value):
    conf = write(tmp_path / "dhcpd.conf", CONF)
    with pytest.raises(StepError, match="invalid"):
        step("dhcpd.add_host", file=str(conf), **dict(HOST, **{field: value})).apply(runtime)
    assert conf.read_text() == CONF
    assert not runtime.locks


def test_add_host_on_a_missing_file_fails(runtime, tmp_path):
    with pytest.raises(StepError, match="does not exist"):
        step("dhcpd.add_host", file=str(tmp_path / "none.conf"), **HOST).apply(runtime)


def test_add_host_wants_an_absolute_path(runtime):
    with pytest.raises(StepError, match="absolute"):
        step("dhcpd.add_host", file="dhcpd.conf", **HOST).apply(runtime)


def test_remove_host_takes_only_that_host(runtime, tmp_path):
    conf = write(tmp_path / "dhcpd.conf", CONF + ENTRY)
    step("dhcpd.remove_host", file=str(conf), name="dom1").apply(runtime)
    # the original's grep -v "host dom1" would take dom10 and dom1-2 too
    assert conf.read_text() == CONF


def test_remove_host_of_an_absent_host_changes_nothing(runtime, tmp_path):
    conf = write(tmp_path / "dhcpd.conf", CONF)
    before = conf.stat().st_mtime_ns
    step("dhcpd.remove_host", file=str(conf), name="dom7").apply(runtime)
    assert conf.read_text() == CONF
    assert conf.stat().st_mtime_ns == before


def test_remove_host_ends_the_last_line_like_grep(runtime, tmp_path):
    conf = write(tmp_path / "dhcpd.conf", "a;\n" + ENTRY + "b;")
    step("dhcpd.remove_host", file=str(conf), name="dom1").apply(runtime)
    assert conf.read_text() == "a;\nb;\n"


def test_add_host_revert_restores_the_file_byte_for_byte(runtime, tmp_path):
    original = "x;\r\n" + CONF + "no final newline"
    conf = write(tmp_path / "dhcpd.conf", original)
    s = step("dhcpd.add_host", file=str(conf), **HOST)
    s.apply(runtime)
    s.revert(runtime)
    assert conf.read_bytes() == original.encode()


def test_add_host_revert_after_someone_else_edited_undoes_only_its_entry(runtime, tmp_path):
    conf = write(tmp_path / "dhcpd.conf", CONF)
    s = step("dhcpd.add_host", file=str(conf), **HOST)
    s.apply(runtime)
    other = 'host dom3 { hardware ethernet 00:16:3e:00:03:00; fixed-address 10.0.3.1; }\n'
    with open(conf, "a") as fh:
        fh.write(other)
    s.revert(runtime)
    assert conf.read_text() == CONF + other


def test_remove_host_revert_puts_the_entry_back(runtime, tmp_path):
    conf = write(tmp_path / "dhcpd.conf", CONF + ENTRY)
    s = step("dhcpd.remove_host", file=str(conf), name="dom1")
    s.apply(runtime)
    s.revert(runtime)
    assert conf.read_text() == CONF + ENTRY


# -- the lock ----------------------------------------------------------------

def test_edits_take_the_vif_nat_dhcp_lock_and_keep_it_for_lock_release(runtime, tmp_path):
    conf = write(tmp_path / "dhcpd.conf", CONF)
    step("dhcpd.add_host", file=str(conf), **HOST).apply(runtime)
    assert list(runtime.locks) == ["vif-nat-dhcp"]
    assert (tmp_path / "locks" / "vif-nat-dhcp").exists()
    step_class("lock.release")({"name": "vif-nat-dhcp"}).apply(runtime)
    assert not (tmp_path / "locks" / "vif-nat-dhcp").exists()


def test_revert_takes_the_lock_and_gives_it_back(runtime, tmp_path):
    conf = write(tmp_path / "dhcpd.conf", CONF)
    s = step("dhcpd.add_host", file=str(conf), lock="xr-test-dhcp", **HOST)
    s.apply(runtime)
    runtime.unlock("xr-test-dhcp")
    s.revert(runtime)
    assert conf.read_text() == CONF
    assert not runtime.locks
    assert not (tmp_path / "locks" / "xr-test-dhcp").exists()


def test_revert_keeps_a_lock_the_rule_still_holds(runtime, tmp_path):
    conf = write(tmp_path / "dhcpd.conf", CONF)
    s = step("dhcpd.add_host", file=str(conf), **HOST)
    s.apply(runtime)
    s.revert(runtime)
    assert list(runtime.locks) == ["vif-nat-dhcp"]


def test_an_edit_waits_for_the_lock(runtime, tmp_path):
    """Another holder (here a HotplugLock, locking.sh's protocol) keeps the
    step from editing: the step blocks in flock until the holder releases."""
    import threading
    conf = write(tmp_path / "dhcpd.conf", CONF)
    holder = HotplugLock(str(tmp_path / "locks"), "vif-nat-dhcp")
    holder.acquire()
    done = threading.Event()

    def edit():
        step("dhcpd.add_host", file=str(conf), **HOST).apply(runtime)
        done.set()

    thread = threading.Thread(target=edit, daemon=True)
    try:
        thread.start()
        assert wait_for_flock_waiter(tmp_path / "locks" / "vif-nat-dhcp")
        assert conf.read_text() == CONF and not done.is_set()
    finally:
        holder.release()
    thread.join(20)
    assert done.is_set()
    assert conf.read_text() == CONF + ENTRY


def wait_for_flock_waiter(path, timeout=20.0):
    """True once /proc/locks shows a blocked FLOCK request on path's inode."""
    from events import wait_for
    inode = os.stat(path).st_ino

    def blocked():
        with open("/proc/locks") as fh:
            for line in fh:
                words = line.split()
                if "->" in words and "FLOCK" in words:
                    dev_inode = words[words.index("FLOCK") + 4]
                    if dev_inode.rsplit(":", 1)[-1] == str(inode):
                        return True
        return False
    return wait_for(blocked, timeout)


# -- interface lists -----------------------------------------------------------

@pytest.mark.parametrize("before,after", [
    ('INTERFACES=""\n', 'INTERFACES="vif1.0 "\n'),
    ('INTERFACES="vif2.0 "\n', 'INTERFACES="vif2.0 vif1.0 "\n'),
    ('INTERFACES="vif1.0 vif2.0 "\n', 'INTERFACES="vif2.0 vif1.0 "\n'),
    # the original glues: "eth0vif1.0 "
    ('INTERFACES="eth0"\n', 'INTERFACES="eth0 vif1.0"\n'),
    ('INTERFACES=eth0 # uplink\n', 'INTERFACES="eth0 vif1.0" # uplink\n'),
    ('DHCPDARGS=""\n', 'DHCPDARGS="vif1.0 "\n'),
    ('DHCPD_INTERFACE=""\n', 'DHCPD_INTERFACE="vif1.0 "\n'),
    ('INTERFACESv4=""\nINTERFACESv6=""\n', 'INTERFACESv4="vif1.0 "\nINTERFACESv6=""\n'),
    ('# INTERFACES=""\nOPTIONS="-q"\n', '# INTERFACES=""\nOPTIONS="-q"\n'),
    ('INTERFACES=""', 'INTERFACES="vif1.0 "'),
])
def test_add_interface(runtime, tmp_path, before, after):
    f = write(tmp_path / "defaults", before)
    step("dhcpd.add_interface", file=str(f), dev="vif1.0").apply(runtime)
    assert f.read_text() == after


@pytest.mark.parametrize("start", ['INTERFACES=""\n', 'INTERFACES="eth0"\n', 'INTERFACES="eth0 "\n',
                                   'INTERFACES="vif2.0 "\n', 'INTERFACESv4=""\nINTERFACESv6=""\n',
                                   '# c\nINTERFACES=""'])
def test_remove_interface_gives_back_the_file_before_add(runtime, tmp_path, start):
    f = write(tmp_path / "defaults", start)
    step("dhcpd.add_interface", file=str(f), dev="vif1.0").apply(runtime)
    assert f.read_text() != start
    step("dhcpd.remove_interface", file=str(f), dev="vif1.0").apply(runtime)
    assert f.read_text() == start


def test_remove_interface_takes_the_whole_name_only(runtime, tmp_path):
    f = write(tmp_path / "defaults", 'INTERFACES="vif1.00 xvif1.0 vif1.0 "\n')
    step("dhcpd.remove_interface", file=str(f), dev="vif1.0").apply(runtime)
    assert f.read_text() == 'INTERFACES="vif1.00 xvif1.0 "\n'


def test_interface_keys_can_be_chosen(runtime, tmp_path):
    f = write(tmp_path / "defaults", 'INTERFACES=""\nMYLIST=""\n')
    step("dhcpd.add_interface", file=str(f), dev="vif1.0", keys="MYLIST").apply(runtime)
    assert f.read_text() == 'INTERFACES=""\nMYLIST="vif1.0 "\n'


def test_add_interface_revert(runtime, tmp_path):
    f = write(tmp_path / "defaults", DEFAULTS)
    s = step("dhcpd.add_interface", file=str(f), dev="vif1.0")
    s.apply(runtime)
    s.revert(runtime)
    assert f.read_text() == DEFAULTS


def test_remove_interface_revert(runtime, tmp_path):
    f = write(tmp_path / "defaults", 'INTERFACES="vif1.0 "\n')
    s = step("dhcpd.remove_interface", file=str(f), dev="vif1.0")
    s.apply(runtime)
    assert f.read_text() == 'INTERFACES=""\n'
    s.revert(runtime)
    assert f.read_text() == 'INTERFACES="vif1.0 "\n'


@pytest.mark.parametrize("dev", ['vif1.0"', "a b", "../x", "", "$(reboot)", "a`id`", "a\\b",
                                 "x;y", "x#y"])
def test_interface_names_that_would_break_the_file_are_refused(runtime, tmp_path, dev):
    f = write(tmp_path / "defaults", DEFAULTS)
    with pytest.raises(StepError, match="invalid"):
        step("dhcpd.add_interface", file=str(f), dev=dev).apply(runtime)
    assert f.read_text() == DEFAULTS


# -- the restart ---------------------------------------------------------------

def script(tmp_path, body, name="init"):
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    os.chmod(path, 0o755)
    return path


def test_restart_runs_the_command_with_its_words(runtime, tmp_path):
    record = tmp_path / "record"
    init = script(tmp_path, f'printf "%s|" "$@" > {record}\n')
    step("dhcpd.restart", command=f"{init} restart 'two words'").apply(runtime)
    assert record.read_text() == "restart|two words|"


def test_restart_failure_says_the_status_and_output(runtime, tmp_path):
    init = script(tmp_path, "echo 'dhcpd: no subnet for vif1.0' >&2\nexit 3\n")
    with pytest.raises(StepError, match=r"exited with status 3: dhcpd: no subnet for vif1.0"):
        step("dhcpd.restart", command=f"{init} restart").apply(runtime)


def test_restart_of_a_missing_program_fails(runtime, tmp_path):
    with pytest.raises(StepError, match="cannot run"):
        step("dhcpd.restart", command=f"{tmp_path}/none restart").apply(runtime)


def test_restart_that_hangs_is_killed_after_the_timeout(runtime, tmp_path):
    init = script(tmp_path, "exec sleep 600\n")
    with pytest.raises(StepError, match="did not finish in 1 s"):
        step("dhcpd.restart", command=f"{init} restart", timeout=1).apply(runtime)


@pytest.mark.parametrize("timeout", ["0", "x", "-1", "\u00b2"])
def test_restart_refuses_a_bad_timeout(runtime, tmp_path, timeout):
    init = script(tmp_path, "exit 0\n")
    with pytest.raises(StepError, match="invalid timeout"):
        step("dhcpd.restart", command=f"{init} restart", timeout=timeout).apply(runtime)


@pytest.mark.parametrize("command", ["", "   ", "'unclosed"])
def test_restart_refuses_a_command_it_cannot_split(runtime, command):
    with pytest.raises(StepError):
        step("dhcpd.restart", command=command).apply(runtime)


def test_describe_says_what_with_the_values(tmp_path):
    assert step("dhcpd.add_host", file="/etc/dhcp/dhcpd.conf", **HOST).describe() == (
        "/etc/dhcp/dhcpd.conf: host dom1 { hardware ethernet 00:16:3e:00:01:00; "
        "fixed-address 10.0.1.1; option routers 10.0.1.128; }")
    assert step("dhcpd.remove_interface", file="/f", dev="vif1.0").describe() == (
        "/f: remove vif1.0 from " + dhcpd.DEFAULT_KEYS)
    assert step("dhcpd.restart", command="/etc/init.d/x restart").describe() == "run /etc/init.d/x restart"
