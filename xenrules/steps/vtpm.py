"""vTPM steps (legacy, Xen 4.1 with xend): the instance database and the manager.

Xen 4.1's `vtpm` hotplug script (vtpm-common.sh) keeps /var/vtpm/vtpm.db, a
text file of "NAME INSTANCE" lines (NAME: the vTPM's uuid, or the domain's
name; lines whose first word starts with '#' are comments), gives each new
vTPM the lowest free instance number (or its `pref_instance` when that is
free and within 1..255), writes the number to `<backend>/instance`, and tells
the vtpm manager to create, start, resume, suspend or delete an instance.

The manager is reached through an external command given by the rule:
`manager: [ARGV...]` runs `ARGV... OP INSTANCE` with OP one of create,
start, resume, suspend, delete (the vtpm-impl functions vtpm_<OP>); a non-zero
exit fails the step. Or, with `fifos: DIR` (and no `manager`), over 4.1
vtpm-impl's own protocol to vtpm_managerd: a binary command written to
DIR/from_console.fifo, a 14-byte answer read from DIR/to_console.fifo whose
last 4 bytes are the result (0: success). Neither: nothing is called, which
is what 4.1 does when no vtpm-impl is installed (every vtpm_<OP> is `true`).

The database is only read and written under the `vtpmdb` lock, which the
rule takes with lock.acquire (claim_lock vtpmdb in the original).
"""
import os

from ..errors import StepError
from .base import Step

PATH = {"type": "string", "minLength": 1, "description": "the instance database file"}
TEXT = {"type": "string"}
MANAGER = {"type": "array", "items": {"type": "string"},
           "description": "argv of the vtpm manager command; OP and INSTANCE are appended; "
                          "empty words are dropped, and an empty list calls nothing"}
FIFOS = {"type": "string",
         "description": "directory of vtpm_managerd's fifos (4.1: /var/vtpm/fifos), used when "
                        "`manager` is empty; empty: no fifo protocol"}
MANAGER_TIMEOUT = 30.0       # below libxl's 40 s hotplug timeout
MAX_PREFERRED = 255          # vtpmdb_is_free_instancenum's allowed range is 1..255
HEADER = ("#Database for VM to vTPM association\n"
          "#1st column: domain name\n"
          "#2nd column: TPM instance number\n")


# -- the database --------------------------------------------------------

def read_entries(db):
    """[(name, instance word)] of the non-comment lines, in file order.
    A missing file is an empty database."""
    try:
        with open(db, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise StepError(f"cannot read the vTPM database {db}: {e.strerror}") from e
    entries = []
    for line in lines:
        words = line.split()
        if words and not words[0].startswith("#"):
            entries.append((words[0], words[1] if len(words) > 1 else ""))
    return entries


def find_instance(entries, name):
    """The instance of the first line for `name`, else 0 (vtpmdb_find_instance)."""
    if not name:
        return 0
    for entry_name, instance in entries:
        if entry_name == name:
            return _number(instance) or 0
    return 0


def used_numbers(entries):
    return {n for n in (_number(inst) for _, inst in entries) if n is not None}


def free_instance(entries, preferred=""):
    """`preferred` if it is a number in 1..255 not in use, else the lowest
    unused number from 1 (vtpmdb_is_free_instancenum, vtpmdb_get_free_instancenum)."""
    used = used_numbers(entries)
    wanted = _number(preferred)
    if wanted is not None and 1 <= wanted <= MAX_PREFERRED and wanted not in used:
        return wanted
    number = 1
    while number in used:
        number += 1
    return number


def add_entry(db, entries, name, instance):
    """Append "name instance" unless the name or the number is already there
    (vtpmdb_validate_entry != 0). Returns True if a line was added."""
    if any(n == name or _number(i) == instance for n, i in entries):
        return False
    try:
        os.makedirs(os.path.dirname(db) or ".", exist_ok=True)
        fresh = not os.path.exists(db)
        with open(db, "a", encoding="utf-8") as fh:
            if fresh:
                fh.write(HEADER)
            fh.write(f"{name} {instance}\n")
    except OSError as e:
        raise StepError(f"cannot write the vTPM database {db}: {e.strerror}") from e
    return True


def remove_lines(db, keep):
    """Rewrite the database with only the lines keep(line) accepts (via a
    temporary file renamed over it, as vtpmdb_remove_entry). Returns the old text."""
    try:
        with open(db, encoding="utf-8", errors="replace") as fh:
            old = fh.read()
        tmp = db + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(line for line in old.splitlines(keepends=True) if keep(line))
        os.replace(tmp, db)
    except OSError as e:
        raise StepError(f"cannot rewrite the vTPM database {db}: {e.strerror}") from e
    return old


def restore_text(db, text):
    tmp = db + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, db)


def _number(word):
    word = (word or "").strip()
    return int(word) if word.isdigit() else None


# -- the manager -----------------------------------------------------------

def manager_argv(manager, op, instance):
    """The command for one vtpm_<op> call, or None when no manager is configured."""
    words = [w for w in (manager or []) if w]
    if not words:
        return None
    return words + [op, str(instance)]


def call_manager(runtime, args, op, instance, operation):
    """vtpm_<op> INSTANCE: the `manager` command, else the `fifos` protocol, else nothing."""
    argv = manager_argv(args.get("manager"), op, instance)
    failed = f"Error while executing vTPM operation '{operation}': vtpm_{op} {instance}"
    if argv is None and args.get("fifos"):
        fifo_call(args["fifos"], op, instance, failed)
        runtime.log("debug", f"vtpm_{op} {instance}: vtpm_managerd at {args['fifos']} says done")
        return
    if argv is None:
        runtime.log("debug", f"vtpm_{op} {instance}: no vtpm manager configured, nothing to call")
        return
    import subprocess   # only events that reach a manager pay for it
    from .. import deadline
    try:
        proc = deadline.run(argv, f"{failed}: {argv[0]}", MANAGER_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise StepError(f"{failed}: {argv[0]}: {e}") from e
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise StepError(f"{failed}: {argv[0]} exited with status {proc.returncode}"
                        + (f": {detail[-1]}" if detail else ""))
    runtime.log("debug", f"vtpm_{op} {instance}: {' '.join(argv)} done")


# vtpm-impl's commands: ordinal (VTPM_ORD_OPEN 1, CLOSE 2, DELETE 3) and, for
# OPEN, the instance type (1) and mode (1 new or started, 2 resumed).
FIFO_ORDINALS = {"create": (1, b"\x01\x01"), "start": (1, b"\x01\x01"),
                 "resume": (1, b"\x01\x02"), "suspend": (2, b""), "delete": (3, b"")}
FIFO_TAG = 0x01C1            # the vtpm manager's request tag
FIFO_ANSWER = 14             # source (4), tag (2), size (4), result (4)
TX_FIFO = "from_console.fifo"
RX_FIFO = "to_console.fifo"


def fifo_command(op, instance):
    """The bytes vtpm-impl's vtpm_manager_cmd writes for vtpm_<op> INSTANCE:
    source 0, tag, size (tag to end), ordinal, [type, mode], instance; big-endian."""
    import struct
    ordinal, extra = FIFO_ORDINALS[op]
    body = struct.pack(">I", 0x01000000 | ordinal) + extra + struct.pack(">I", instance)
    return struct.pack(">IHI", 0, FIFO_TAG, 2 + 4 + len(body)) + body


def fifo_call(fifos, op, instance, failed, timeout=MANAGER_TIMEOUT):
    """One command/answer exchange with vtpm_managerd; StepError unless it says 0."""
    import select
    import stat
    import time
    tx, rx = os.path.join(fifos, TX_FIFO), os.path.join(fifos, RX_FIFO)
    from .. import deadline as budget
    deadline, cut = budget.wait_until(time.monotonic() + timeout)
    wfd = rfd = None
    try:
        for path in (tx, rx):
            if not stat.S_ISFIFO(os.stat(path).st_mode):
                raise StepError(f"{failed}: {path} is not a fifo")
        # non-blocking: no reader on the command fifo means no manager (ENXIO),
        # never a hotplug script hanging in open()
        wfd = os.open(tx, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        rfd = os.open(rx, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        os.write(wfd, fifo_command(op, instance))   # < PIPE_BUF: written whole
        answer = b""
        while len(answer) < FIFO_ANSWER:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StepError(f"{failed}: no answer from vtpm_managerd " + (
                    f"({budget.why()})" if cut else f"in {timeout:.0f} s"))
            if select.select([rfd], [], [], left)[0]:
                chunk = os.read(rfd, FIFO_ANSWER - len(answer))
                if chunk:
                    answer += chunk
                else:
                    time.sleep(0.01)   # no writer on the answer fifo yet
    except OSError as e:
        import errno
        why = "not running (nobody reads its command fifo)" if e.errno == errno.ENXIO else e.strerror
        raise StepError(f"{failed}: vtpm_managerd at {fifos}: {why}") from e
    finally:
        for fd in (wfd, rfd):
            if fd is not None:
                os.close(fd)
    result = answer[10:14].hex()
    if result != "00000000":
        raise StepError(f"{failed}: vtpm_managerd answered {result}")
    if op == "delete":
        # vtpm-impl's vtpm_delete also drops the instance's saved state
        data = os.path.join(os.path.dirname(os.path.normpath(fifos)), f"vtpm_dm_{instance}.data")
        try:
            os.unlink(data)
        except FileNotFoundError:
            pass


def _manager_text(args):
    words = " ".join(w for w in args.get("manager") or [] if w)
    if words:
        return words
    return f"vtpm_managerd at {args['fifos']}" if args.get("fifos") else "no manager"


def _keys(uuid, domain):
    """Names to look the vTPM up by: its uuid first, then the domain's name."""
    return [k for k in (uuid, domain) if k]


# -- steps -----------------------------------------------------------------

class CreateInstance(Step):
    type_name = "vtpm.create_instance"
    summary = ("find or allocate the guest's vTPM instance in the database, create/start/resume it "
               "through the manager, write it to xenstore (4.1 vtpm_create_instance)")
    properties = {
        "db": PATH,
        "uuid": dict(TEXT, description="the vTPM's uuid (<backend>/uuid): looked up first, "
                                       "and the database key of a new entry"),
        "domain": dict(TEXT, description="the domain's name (<backend>/domain): looked up when "
                                         "the uuid is not in the database; the key when no uuid"),
        "resume": dict(TEXT, description="'True' when the domain is resumed, not created"),
        "pref_instance": dict(TEXT, description="the preferred instance number, if free"),
        "instance_path": dict(TEXT, minLength=1, description="xenstore node for the instance number"),
        "manager": MANAGER,
        "fifos": FIFOS,
    }
    required = ("db", "instance_path")

    def undo_record(self, runtime):
        from .xenstore import checked_path
        path = checked_path(self.args["instance_path"])
        # undo writes the node back as it is now; "added" is noted before the
        # database line is appended (add_entry's choice is known in advance)
        return {"path": path, "previous": runtime.xenstore.read(path), "added": None}

    def apply(self, runtime):
        a = self.args
        db, uuid, domain = a["db"], a.get("uuid", ""), a.get("domain", "")
        resume = a.get("resume", "") == "True"
        entries = read_entries(db)
        instance = find_instance(entries, uuid)
        if not instance:
            if not domain:
                raise StepError(f"no domain name for the vTPM: uuid {uuid!r} is not in {db} "
                                f"and the domain name is not set")
            instance = find_instance(entries, domain)
        if not instance and resume:
            # a resumed domain without an instance gets none (as 4.1)
            self.instance = None
            runtime.log("info", f"vTPM of {uuid or domain} resumed but not in {db}: no instance")
            return
        if not instance:
            instance = free_instance(entries, a.get("pref_instance", ""))
            call_manager(runtime, a, "create", instance, "add")
            key = uuid or domain
            if not any(n == key or _number(i) == instance for n, i in entries):
                runtime.note(self, added=[key, instance])   # add_entry will append it
            add_entry(db, entries, key, instance)
        else:
            call_manager(runtime, a, "resume" if resume else "start", instance, "add")
        self.instance = instance
        # a failure here: the engine undoes this step too, from its record
        runtime.xenstore.write(self.record["path"], str(instance))

    @classmethod
    def undo(cls, runtime, args, record):
        from .xenstore import restore_node
        restore_node(runtime.xenstore, record["path"], record["previous"])
        if record["added"] and os.path.exists(args["db"]):
            name, instance = record["added"]
            remove_lines(args["db"], lambda line: line.split()[:2] != [name, str(instance)])

    @classmethod
    def describe_undo(cls, args, record):
        added = f", drop {' '.join(map(str, record['added']))} from {args['db']}" if record["added"] else ""
        return f"write xenstore {record['path']} = {record['previous']!r} again{added}"

    def describe(self):
        a = self.args
        who = " or ".join(repr(k) for k in _keys(a.get("uuid", ""), a.get("domain", ""))) or "nobody"
        known = "resume" if a.get("resume") == "True" else "start"
        new = "none if unknown" if a.get("resume") == "True" else (
            f"create a new one (preferred {a.get('pref_instance') or '-'}) if unknown")
        return (f"vTPM instance of {who} in {a['db']}: {known} it, {new}, via {_manager_text(a)}; "
                f"write {a['instance_path']}")


class RemoveInstance(Step):
    type_name = "vtpm.remove_instance"
    summary = ("suspend the guest's vTPM instance through the manager; the database entry stays "
               "(4.1 vtpm_remove_instance)")
    properties = {
        "db": PATH,
        "uuid": dict(TEXT, description="the vTPM's uuid, looked up first"),
        "domain": dict(TEXT, description="the domain's name, looked up next"),
        "manager": MANAGER,
        "fifos": FIFOS,
    }
    required = ("db",)

    def apply(self, runtime):
        a = self.args
        entries = read_entries(a["db"])
        instance = 0
        for key in _keys(a.get("uuid", ""), a.get("domain", "")):
            instance = find_instance(entries, key)
            if instance:
                break
        if instance:
            call_manager(runtime, a, "suspend", instance, "remove")
        else:
            runtime.log("debug", f"no vTPM instance in {a['db']} for "
                                 f"{a.get('uuid') or a.get('domain')}: nothing to suspend")

    def describe(self):
        a = self.args
        who = " or ".join(repr(k) for k in _keys(a.get("uuid", ""), a.get("domain", ""))) or "nobody"
        return (f"suspend the vTPM instance of {who} from {a['db']} via "
                f"{_manager_text(a)}")


class DeleteInstance(Step):
    type_name = "vtpm.delete_instance"
    summary = ("forget a vTPM: drop its database lines and delete the instance through the "
               "manager (4.1 vtpm-delete, vtpm_delete_instance)")
    properties = {
        "db": PATH,
        "name": dict(TEXT, minLength=1, description="the database key: the vTPM's uuid or domain name"),
        "manager": MANAGER,
        "fifos": FIFOS,
    }
    required = ("db", "name")

    def undo_record(self, runtime):
        db, name = self.args["db"], self.args["name"]
        self.instance = find_instance(read_entries(db), name)
        if not self.instance:
            runtime.log("debug", f"{name!r} is not in {db}: nothing to delete")
            return None
        try:
            with open(db, encoding="utf-8", errors="replace") as fh:
                return {"before": fh.read()}   # the database is a few lines
        except OSError as e:
            raise StepError(f"cannot read the vTPM database {db}: {e.strerror}") from e

    def apply(self, runtime):
        if self.record is None:
            return
        db, name = self.args["db"], self.args["name"]
        # every line whose first word is the name goes, comments stay
        remove_lines(db, lambda line: (line.split()[:1] or [""])[0] != name)
        # a failure here: the engine undoes this step too, from its record
        call_manager(runtime, self.args, "delete", self.instance, "delete")

    @classmethod
    def undo(cls, runtime, args, record):
        restore_text(args["db"], record["before"])

    @classmethod
    def describe_undo(cls, args, record):
        return f"{args['db']}: back as before the deletion of {args['name']!r}"

    def describe(self):
        return (f"delete the vTPM instance of {self.args['name']!r} from {self.args['db']} via "
                f"{_manager_text(self.args)}")
