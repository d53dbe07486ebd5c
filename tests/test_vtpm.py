"""vtpm (legacy, Xen 4.1): the shipped rules against the 4.1 scripts' documented behaviour.

The 4.1 scripts (vtpm, vtpm-hotplug-common.sh, vtpm-common.sh) are not in
Debian bookworm, so there is no oracle to run: each test states what 4.1's
vtpm_create_instance / vtpm_remove_instance / vtpmdb_* do and checks
xenrules does that, through the real entry point (python3 -m
xenrules.hotplug vtpm ...) against the wire-protocol XenStore server, with
the database in a temporary directory and a fake vtpm manager command that
records its calls (and fails on request), or a fake vtpm_managerd serving
4.1 vtpm-impl's fifo protocol on real fifos.
"""
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from xenrules.locking import HotplugLock
from xenrules.sandbox.dom0 import PYTHON, REPO_ROOT
from xenrules.steps import vtpm
from xenrules.xenstore import XenStore

from events import wait_for

BACK = "/local/domain/0/backend/vtpm/%d/0"
UUID = "5f2c0e44-7d0e-4d5e-9a43-0c1a7e0ba001"
HEADER = vtpm.HEADER

FAKE_MANAGER = textwrap.dedent("""\
    #!%s
    # A vtpm manager stand-in: records "OP INSTANCE", fails the ops in $FAKE_VTPM_FAIL.
    import os, sys
    with open(os.environ["FAKE_VTPM_LOG"], "a") as fh:
        fh.write(" ".join(sys.argv[1:]) + "\\n")
    if sys.argv[1] in os.environ.get("FAKE_VTPM_FAIL", "").split(","):
        sys.stderr.write("manager says no\\n")
        sys.exit(3)
    """ % sys.executable)


class Vtpm:
    """A vTPM backend in a XenStore server, and xenrules events for it."""

    def __init__(self, server, tmp_path, manager=True):
        self.socket = server.socket_path
        self.tmp = tmp_path
        self.db = str(tmp_path / "var-vtpm" / "vtpm.db")
        self.calls_file = tmp_path / "manager-calls"
        self.lock_dir = tmp_path / "locks"
        self.log_file = tmp_path / "xen-hotplug.log"
        (tmp_path / "no-originals").mkdir()
        self.manager = ""
        if manager:
            path = tmp_path / "fake-vtpm-manager"
            path.write_text(FAKE_MANAGER)
            path.chmod(path.stat().st_mode | stat.S_IXUSR)
            self.manager = str(path)

    def xs(self):
        return XenStore(self.socket)

    def backend(self, domid=1, uuid=UUID, domain=None, resume="False", pref_instance=None):
        """The backend keys xend writes for a vTPM (a None value leaves the key out)."""
        back = BACK % domid
        keys = {"frontend": "/local/domain/%d/device/vtpm/0" % domid,
                "frontend-id": str(domid), "state": "1", "online": "1",
                "domain": domain if domain is not None else "guest%d" % domid,
                "uuid": uuid, "resume": resume, "pref_instance": pref_instance,
                "hotplug-status": ""}
        with self.xs() as xs:
            for k, v in keys.items():
                if v is not None:
                    xs.write("%s/%s" % (back, k), v)
        return back

    def read(self, path):
        with self.xs() as xs:
            return xs.read(path)

    def env(self, domid=1, **extra):
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONPATH": REPO_ROOT,
            "XENSTORED_PATH": self.socket,
            # what udev's xen-backend.rules passes on to `vtpm $ACTION`
            "XENBUS_TYPE": "vtpm",
            "XENBUS_PATH": "backend/vtpm/%d/0" % domid,
            "XENBUS_BASE_PATH": "backend",
            "XENRULES_RULES_PATH": os.path.join(REPO_ROOT, "rules.d"),
            "XENRULES_STATE_DIR": str(self.tmp / "state"),
            "XENRULES_LOCK_DIR": str(self.lock_dir),
            "XENRULES_LOG_FILE": str(self.log_file),
            "XENRULES_ORIGINALS_DIR": str(self.tmp / "no-originals"),
            "XENRULES_VTPM_DB": self.db,
            "XENRULES_VTPM_MANAGER": self.manager,
            "FAKE_VTPM_LOG": str(self.calls_file),
        }
        env.update(extra)
        return env

    def run(self, action, domid=1, script="vtpm", **extra):
        return subprocess.run([PYTHON, "-m", "xenrules.hotplug", script, action],
                              env=self.env(domid, **extra), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=60)

    def start(self, action, domid=1, **extra):
        return subprocess.Popen([PYTHON, "-m", "xenrules.hotplug", "vtpm", action],
                                env=self.env(domid, **extra), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def calls(self):
        try:
            return self.calls_file.read_text().splitlines()
        except FileNotFoundError:
            return []

    def db_text(self):
        try:
            with open(self.db) as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    def write_db(self, *lines):
        os.makedirs(os.path.dirname(self.db), exist_ok=True)
        with open(self.db, "w") as fh:
            fh.write(HEADER + "".join(line + "\n" for line in lines))

    def why(self, proc):
        try:
            log = self.log_file.read_text()
        except FileNotFoundError:
            log = ""
        return "exit %d\nstderr: %s\nlog: %s" % (proc.returncode, proc.stderr, log)


@pytest.fixture
def box(xs_server, tmp_path):
    return Vtpm(xs_server, tmp_path)


# -- the database functions (vtpmdb_*) -------------------------------------

def test_database_lookup_skips_comments_and_takes_the_first_line_of_a_name(tmp_path):
    db = tmp_path / "vtpm.db"
    db.write_text(HEADER + "#web 9\nweb 4\nmail 2\nweb 7\n\n")
    entries = vtpm.read_entries(str(db))
    assert entries == [("web", "4"), ("mail", "2"), ("web", "7")]
    assert vtpm.find_instance(entries, "web") == 4
    assert vtpm.find_instance(entries, "#web") == 0
    assert vtpm.find_instance(entries, "nobody") == 0
    assert vtpm.find_instance(entries, "") == 0


def test_missing_database_is_empty(tmp_path):
    assert vtpm.read_entries(str(tmp_path / "nope.db")) == []


@pytest.mark.parametrize("preferred, expected", [
    ("", 3), ("5", 5), ("2", 3), ("255", 255), ("256", 3), ("0", 3), ("-5", 3), ("abc", 3)])
def test_free_instance_takes_a_free_preferred_number_in_1_to_255_else_the_lowest_free(
        preferred, expected):
    entries = [("a", "1"), ("b", "2"), ("c", "4")]
    assert vtpm.free_instance(entries, preferred) == expected


def test_free_instance_of_an_empty_database_is_1():
    assert vtpm.free_instance([]) == 1


def test_new_database_gets_the_header_and_the_entry(tmp_path):
    db = str(tmp_path / "sub" / "vtpm.db")
    assert vtpm.add_entry(db, [], "web", 1)
    with open(db) as fh:
        assert fh.read() == HEADER + "web 1\n"


@pytest.mark.parametrize("name, instance", [("web", 9), ("other", 1)])
def test_entry_whose_name_or_number_is_taken_is_not_added(tmp_path, name, instance):
    db = str(tmp_path / "vtpm.db")
    vtpm.add_entry(db, [], "web", 1)
    assert not vtpm.add_entry(db, vtpm.read_entries(db), name, instance)
    assert vtpm.read_entries(db) == [("web", "1")]


def test_manager_argv_appends_op_and_instance_and_drops_empty_words():
    assert vtpm.manager_argv(["/usr/sbin/mgr", "", "--x"], "create", 3) == [
        "/usr/sbin/mgr", "--x", "create", "3"]
    assert vtpm.manager_argv([""], "create", 3) is None
    assert vtpm.manager_argv([], "start", 1) is None


# -- vtpm add -----------------------------------------------------------------

def test_add_of_a_new_vtpm_creates_instance_1_records_it_and_reports_success(box):
    back = box.backend()
    proc = box.run("add")
    assert proc.returncode == 0, box.why(proc)
    assert box.calls() == ["create 1"]
    assert box.db_text() == HEADER + UUID + " 1\n"
    assert box.read(back + "/instance") == "1"
    assert box.read(back + "/hotplug-status") == "connected"
    assert box.read(back + "/hotplug-error") is None
    assert not os.path.exists(box.lock_dir / "vtpmdb"), "the vtpmdb lock was left behind"


def test_add_takes_the_lowest_free_instance(box):
    box.write_db("aaaa 1", "bbbb 3")
    back = box.backend()
    proc = box.run("add")
    assert proc.returncode == 0, box.why(proc)
    assert box.calls() == ["create 2"]
    assert box.read(back + "/instance") == "2"
    assert box.db_text() == HEADER + "aaaa 1\nbbbb 3\n" + UUID + " 2\n"


@pytest.mark.parametrize("pref, expected", [("7", "7"), ("3", "2"), ("300", "2")])
def test_add_honours_a_free_preferred_instance(box, pref, expected):
    box.write_db("aaaa 1", "bbbb 3")
    back = box.backend(pref_instance=pref)
    proc = box.run("add")
    assert proc.returncode == 0, box.why(proc)
    assert box.calls() == ["create " + expected]
    assert box.read(back + "/instance") == expected


def test_add_of_a_known_uuid_starts_its_instance_and_adds_no_line(box):
    box.write_db("aaaa 1", UUID + " 4")
    back = box.backend()
    proc = box.run("add")
    assert proc.returncode == 0, box.why(proc)
    assert box.calls() == ["start 4"]
    assert box.db_text() == HEADER + "aaaa 1\n" + UUID + " 4\n"
    assert box.read(back + "/instance") == "4"
    assert box.read(back + "/hotplug-status") == "connected"


def test_add_on_resume_resumes_the_known_instance(box):
    box.write_db(UUID + " 4")
    back = box.backend(resume="True")
    proc = box.run("add")
    assert proc.returncode == 0, box.why(proc)
    assert box.calls() == ["resume 4"]
    assert box.read(back + "/instance") == "4"


def test_add_finds_an_instance_recorded_under_the_domain_name(box):
    box.write_db("web 6")
    back = box.backend(domain="web")
    proc = box.run("add")
    assert proc.returncode == 0, box.why(proc)
    assert box.calls() == ["start 6"]
    assert box.db_text() == HEADER + "web 6\n"       # no uuid line added
    assert box.read(back + "/instance") == "6"


def test_add_on_resume_of_an_unknown_vtpm_gives_no_instance_but_succeeds(box):
    back = box.backend(resume="True")
    proc = box.run("add")
    assert proc.returncode == 0, box.why(proc)
    assert box.calls() == []
    assert box.db_text() is None
    assert box.read(back + "/instance") is None
    assert box.read(back + "/hotplug-status") == "connected"


def test_add_without_a_manager_still_allocates_and_records(xs_server, tmp_path):
    box = Vtpm(xs_server, tmp_path, manager=False)
    back = box.backend()
    proc = box.run("add")
    assert proc.returncode == 0, box.why(proc)
    assert box.db_text() == HEADER + UUID + " 1\n"
    assert box.read(back + "/instance") == "1"


def test_add_fails_when_the_manager_refuses_and_records_nothing(box):
    back = box.backend()
    proc = box.run("add", FAKE_VTPM_FAIL="create")
    assert proc.returncode == 1, box.why(proc)
    assert box.calls() == ["create 1"]
    assert box.db_text() is None
    assert box.read(back + "/instance") is None
    assert box.read(back + "/hotplug-status") == "error"
    error = box.read(back + "/hotplug-error")
    assert "Error while executing vTPM operation 'add'" in error
    assert "vtpm_create 1" in error and "status 3" in error and "manager says no" in error
    assert not os.path.exists(box.lock_dir / "vtpmdb"), "the vtpmdb lock was left behind"


def test_add_fails_when_starting_a_known_instance_fails(box):
    box.write_db(UUID + " 2")
    back = box.backend()
    proc = box.run("add", FAKE_VTPM_FAIL="start")
    assert proc.returncode == 1, box.why(proc)
    assert box.read(back + "/hotplug-status") == "error"
    assert box.read(back + "/instance") is None
    assert box.db_text() == HEADER + UUID + " 2\n"


def test_add_without_uuid_fails_like_xenstore_read(box):
    back = box.backend(uuid=None)
    proc = box.run("add")
    assert proc.returncode == 1, box.why(proc)
    assert box.read(back + "/hotplug-error") == "xenstore-read backend/vtpm/1/0/uuid failed."
    assert box.read(back + "/hotplug-status") == "error"
    assert box.calls() == []
    assert box.db_text() is None


def test_add_with_an_unknown_uuid_and_no_domain_name_fails(box):
    back = box.backend(domain="")
    proc = box.run("add")
    assert proc.returncode == 1, box.why(proc)
    assert "no domain name" in box.read(back + "/hotplug-error")
    assert box.calls() == []


def test_add_without_xenbus_path_is_refused(box):
    box.backend()
    proc = box.run("add", XENBUS_PATH="")
    assert proc.returncode == 1, box.why(proc)
    assert box.calls() == []


def test_concurrent_adds_get_distinct_instances_under_the_vtpmdb_lock(box):
    guests = range(1, 6)
    for domid in guests:
        box.backend(domid, uuid="uuid-%d" % domid)
    procs = [box.start("add", domid) for domid in guests]
    for p in procs:
        _out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    instances = sorted(int(box.read(BACK % d + "/instance")) for d in guests)
    assert instances == [1, 2, 3, 4, 5]
    entries = vtpm.read_entries(box.db)
    assert sorted(entries) == sorted(("uuid-%d" % d, box.read(BACK % d + "/instance"))
                                     for d in guests)


def _blocked_in_flock(pid):
    """True once the process (a thread of it) sleeps in flock(2) (x86_64: syscall 73)."""
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/syscall" % (pid, tid)) as fh:
                if fh.read().split(" ", 1)[0] == "73":
                    return True
    except OSError:
        pass
    return False


def test_add_waits_for_a_vtpmdb_lock_held_by_a_bash_script(box):
    # the same lock file and protocol as locking.sh's claim_lock vtpmdb
    assert os.uname().machine == "x86_64", "flock's syscall number below is x86_64's"
    back = box.backend()
    lock = HotplugLock(str(box.lock_dir), "vtpmdb")
    lock.acquire()
    try:
        proc = box.start("add")
        assert wait_for(lambda: _blocked_in_flock(proc.pid) or proc.poll() is not None, 60)
        assert proc.poll() is None, "add did not wait for the lock"
        assert box.read(back + "/instance") is None
        assert box.db_text() is None
    finally:
        lock.release()
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert box.read(back + "/instance") == "1"


# -- vtpm remove --------------------------------------------------------------

def test_remove_suspends_the_instance_and_keeps_the_entry(box):
    box.write_db(UUID + " 3")
    back = box.backend()
    proc = box.run("remove")
    assert proc.returncode == 0, box.why(proc)
    assert box.calls() == ["suspend 3"]
    assert box.db_text() == HEADER + UUID + " 3\n"
    assert box.read(back + "/hotplug-status") == "connected"


def test_remove_finds_the_instance_by_domain_name(box):
    box.write_db("web 5")
    box.backend(domain="web")
    proc = box.run("remove")
    assert proc.returncode == 0, box.why(proc)
    assert box.calls() == ["suspend 5"]


def test_remove_of_an_unknown_vtpm_calls_nothing(box):
    back = box.backend()
    proc = box.run("remove")
    assert proc.returncode == 0, box.why(proc)
    assert box.calls() == []
    assert box.read(back + "/hotplug-status") == "connected"


def test_remove_after_the_backend_is_gone_does_nothing(box):
    back = box.backend(domain=None)
    with box.xs() as xs:
        xs.remove(back + "/domain")
    proc = box.run("remove")
    assert proc.returncode == 0, box.why(proc)
    assert box.calls() == []
    assert box.read(back + "/hotplug-status") == ""


def test_remove_fails_when_the_manager_cannot_suspend(box):
    box.write_db(UUID + " 3")
    back = box.backend()
    proc = box.run("remove", FAKE_VTPM_FAIL="suspend")
    assert proc.returncode == 1, box.why(proc)
    assert "Error while executing vTPM operation 'remove'" in box.read(back + "/hotplug-error")
    assert box.db_text() == HEADER + UUID + " 3\n"


@pytest.mark.parametrize("action", ["online", "offline"])
def test_online_and_offline_only_report_success(box, action):
    back = box.backend()
    proc = box.run(action)
    assert proc.returncode == 0, box.why(proc)
    assert box.calls() == []
    assert box.read(back + "/hotplug-status") == "connected"
    assert box.db_text() is None


# -- vtpm.delete_instance (the job of vtpm-delete) -----------------------------

DELETE_RULE = """\
- rule: xr-vtpm-delete
  match: {script: xr-vtpm-delete}
  vars:
    vtpm_db: {env: XENRULES_VTPM_DB}
    vtpm_manager: {env: XENRULES_VTPM_MANAGER}
    vtpm_fifos: {env: XENRULES_VTPM_FIFOS}
    name: {param: name}
  actions:
    delete:
      - lock.acquire: {name: vtpmdb}
      - vtpm.delete_instance: {db: "{vtpm_db}", name: "{name}", manager: ["{vtpm_manager}"],
                               fifos: "{vtpm_fifos}"}
      - lock.release: {name: vtpmdb}
      - xenstore.write: {path: "{backend}/deleted", value: "{name}"}
"""


@pytest.fixture
def delete_rules(tmp_path):
    rules = tmp_path / "delete-rules"
    rules.mkdir()
    (rules / "50-xr-vtpm-delete.yaml").write_text(DELETE_RULE)
    return str(rules)


def test_delete_drops_every_line_of_the_name_and_deletes_the_instance(box, delete_rules):
    box.write_db("web 2", "mail 3", "web 2")
    box.backend()
    proc = box.run("delete", script="xr-vtpm-delete", name="web", XENRULES_RULES_PATH=delete_rules)
    assert proc.returncode == 0, box.why(proc)
    assert box.calls() == ["delete 2"]
    assert box.db_text() == HEADER + "mail 3\n"


def test_delete_of_an_unknown_name_changes_nothing(box, delete_rules):
    box.write_db("mail 3")
    box.backend()
    proc = box.run("delete", script="xr-vtpm-delete", name="web", XENRULES_RULES_PATH=delete_rules)
    assert proc.returncode == 0, box.why(proc)
    assert box.calls() == []
    assert box.db_text() == HEADER + "mail 3\n"


def test_failed_delete_puts_the_database_back(box, delete_rules):
    box.write_db("web 2", "mail 3")
    before = box.db_text()
    back = box.backend()
    proc = box.run("delete", script="xr-vtpm-delete", name="web", XENRULES_RULES_PATH=delete_rules,
                   FAKE_VTPM_FAIL="delete")
    assert proc.returncode == 1, box.why(proc)
    assert box.calls() == ["delete 2"]
    assert box.db_text() == before
    assert "Error while executing vTPM operation 'delete'" in box.read(back + "/hotplug-error")


def test_a_later_failure_reverts_the_new_database_entry_and_instance(box, tmp_path):
    # a rule whose step after create_instance fails: the entry and the
    # xenstore instance it made are taken back
    rules = tmp_path / "revert-rules"
    rules.mkdir()
    (rules / "50-vtpm.yaml").write_text(textwrap.dedent("""\
        - rule: vtpm-revert
          match: {script: vtpm}
          vars:
            vtpm_db: {env: XENRULES_VTPM_DB}
            uuid: {xenstore: "{backend}/uuid"}
            domain: {xenstore: "{backend}/domain"}
          actions:
            add:
              - vtpm.create_instance: {db: "{vtpm_db}", uuid: "{uuid}", domain: "{domain}",
                                       instance_path: "{backend}/instance"}
              - hotplug.error: {message: later step failed}
        """))
    box.write_db("aaaa 1")
    back = box.backend()
    proc = box.run("add", XENRULES_RULES_PATH=str(rules))
    assert proc.returncode == 1, box.why(proc)
    assert box.db_text() == HEADER + "aaaa 1\n"
    assert box.read(back + "/instance") is None
    assert box.read(back + "/hotplug-error") == "later step failed"


# -- 4.1 vtpm-impl's fifo protocol to vtpm_managerd ------------------------------

class FakeManagerd:
    """vtpm_managerd's hotplug side: reads commands from from_console.fifo,
    answers on to_console.fifo with the result code it is told to give."""

    def __init__(self, root, results=None):
        import threading
        self.dir = root / "fifos"
        self.dir.mkdir(parents=True)
        self.commands = []
        self.results = dict(results or {})      # ordinal -> result code
        for name in (vtpm.TX_FIFO, vtpm.RX_FIFO):
            os.mkfifo(self.dir / name)
        # O_RDWR, as vtpmd opens them: neither open blocks
        self.rx = os.open(self.dir / vtpm.TX_FIFO, os.O_RDWR)
        self.tx = os.open(self.dir / vtpm.RX_FIFO, os.O_RDWR)
        self.stop_r, self.stop_w = os.pipe()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _read(self, n):
        import select
        data = b""
        while len(data) < n:
            ready = select.select([self.rx, self.stop_r], [], [])[0]
            if self.stop_r in ready:
                return None
            data += os.read(self.rx, n - len(data))
        return data

    def _serve(self):
        import struct
        while True:
            head = self._read(10)                 # source, tag, size
            if head is None:
                return
            _src, tag, size = struct.unpack(">IHI", head)
            rest = self._read(size - 6)
            if rest is None:
                return
            ordinal = struct.unpack(">I", rest[:4])[0]
            self.commands.append((tag, ordinal, rest[4:-4].hex(), struct.unpack(">I", rest[-4:])[0]))
            result = self.results.get(ordinal & 0xff, 0)
            os.write(self.tx, struct.pack(">IHII", 0, 0x01C1, 10, result))

    def close(self):
        os.write(self.stop_w, b"x")
        self.thread.join(10)
        for fd in (self.rx, self.tx, self.stop_r, self.stop_w):
            os.close(fd)


@pytest.fixture
def managerd(tmp_path):
    made = []

    def make(results=None):
        made.append(FakeManagerd(tmp_path / "var-vtpm-mgr", results))
        return made[-1]
    yield make
    for m in made:
        m.close()


def test_fifo_command_bytes_are_vtpm_impls():
    # vtpm-impl's TPM_CMD_OPEN / _RESM / _CLOS / _DELE, then the instance
    assert vtpm.fifo_command("create", 5).hex() == "0000000001c10000001001000001" "0101" "00000005"
    assert vtpm.fifo_command("start", 5) == vtpm.fifo_command("create", 5)
    assert vtpm.fifo_command("resume", 300).hex() == "0000000001c10000001001000001" "0102" "0000012c"
    assert vtpm.fifo_command("suspend", 5).hex() == "0000000001c10000000e01000002" "00000005"
    assert vtpm.fifo_command("delete", 5).hex() == "0000000001c10000000e01000003" "00000005"


def test_add_and_remove_talk_to_vtpm_managerd_over_its_fifos(xs_server, tmp_path, managerd):
    box = Vtpm(xs_server, tmp_path, manager=False)
    mgr = managerd()
    back = box.backend()
    fifos = {"XENRULES_VTPM_FIFOS": str(mgr.dir)}
    proc = box.run("add", **fifos)
    assert proc.returncode == 0, box.why(proc)
    assert box.read(back + "/instance") == "1"
    proc = box.run("remove", **fifos)
    assert proc.returncode == 0, box.why(proc)
    proc = box.run("add", **fifos)            # known now: started, not created
    assert proc.returncode == 0, box.why(proc)
    # (tag, ordinal, type+mode, instance): open new, close, open started
    assert mgr.commands == [(0x01C1, 0x01000001, "0101", 1), (0x01C1, 0x01000002, "", 1),
                            (0x01C1, 0x01000001, "0101", 1)]


def test_a_non_zero_answer_from_vtpm_managerd_fails_the_add(xs_server, tmp_path, managerd):
    box = Vtpm(xs_server, tmp_path, manager=False)
    mgr = managerd(results={1: 0x2A})
    back = box.backend()
    proc = box.run("add", XENRULES_VTPM_FIFOS=str(mgr.dir))
    assert proc.returncode == 1, box.why(proc)
    assert "vtpm_managerd answered 0000002a" in box.read(back + "/hotplug-error")
    assert box.db_text() is None
    assert box.read(back + "/instance") is None


def test_add_fails_at_once_when_no_vtpm_managerd_reads_the_fifo(xs_server, tmp_path):
    box = Vtpm(xs_server, tmp_path, manager=False)
    fifos = tmp_path / "dead-fifos"
    fifos.mkdir()
    for name in (vtpm.TX_FIFO, vtpm.RX_FIFO):
        os.mkfifo(fifos / name)
    back = box.backend()
    proc = box.run("add", XENRULES_VTPM_FIFOS=str(fifos))
    assert proc.returncode == 1, box.why(proc)
    assert "not running" in box.read(back + "/hotplug-error")


def test_add_fails_when_the_fifos_are_missing(xs_server, tmp_path):
    box = Vtpm(xs_server, tmp_path, manager=False)
    back = box.backend()
    proc = box.run("add", XENRULES_VTPM_FIFOS=str(tmp_path / "no-such-dir"))
    assert proc.returncode == 1, box.why(proc)
    assert "No such file" in box.read(back + "/hotplug-error")


def test_a_manager_command_wins_over_the_fifos(box, tmp_path):
    back = box.backend()
    proc = box.run("add", XENRULES_VTPM_FIFOS=str(tmp_path / "no-such-dir"))
    assert proc.returncode == 0, box.why(proc)
    assert box.calls() == ["create 1"]
    assert box.read(back + "/instance") == "1"


def test_delete_over_the_fifos_drops_the_saved_state(box, delete_rules, managerd):
    mgr = managerd()
    saved = mgr.dir.parent / "vtpm_dm_2.data"
    saved.write_text("state")
    box.write_db("web 2")
    box.backend()
    proc = box.run("delete", script="xr-vtpm-delete", name="web", XENRULES_RULES_PATH=delete_rules,
                   XENRULES_VTPM_MANAGER="", XENRULES_VTPM_FIFOS=str(mgr.dir))
    assert proc.returncode == 0, box.why(proc)
    assert mgr.commands == [(0x01C1, 0x01000003, "", 2)]
    assert not saved.exists()
    assert box.db_text() == HEADER
