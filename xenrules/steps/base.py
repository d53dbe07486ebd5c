"""Base class of every step type.

A step is one ordered action of a rule. The engine expands its arguments
(templates -> strings), asks the step for its undo record (`undo_record`:
what revert needs, read before anything changes), writes that to the
device's journal, then calls `apply`. On a later failure, or when the event
was killed and its journal is replayed, `undo(runtime, args, record)` puts
things back from the record alone: no live object is needed. `describe`
says what the step would do, with its expanded values, for dry runs and
traces.
"""


class Step:
    #: The name used in rule files, e.g. "link.rename".
    type_name = ""
    #: JSON Schema "properties" for this step's own arguments. `when` and
    #: `on_error` are common to every step and are added by the schema builder.
    properties = {}
    #: Names of the arguments that must be given.
    required = ()
    #: One line saying what the step does (docs, `xenrules schema`).
    summary = ""

    def __init__(self, args):
        # args: the step's arguments with every template already expanded.
        self.args = args

    def apply(self, runtime):
        """Do the work. Raise StepError (or BusyError) on failure."""
        raise NotImplementedError

    #: Set by the engine: the undo record written to the journal (None: nothing to undo).
    record = None
    #: A failure part way is undone at once (the engine reverts only the steps
    #: that completed); True for a step whose failure leaves what it did on
    #: purpose (route.remove: "reported after trying every one").
    keeps_partial_work = False

    def undo_record(self, runtime):
        """What undo needs, read before apply changes anything: plain data
        (str, int, bool, None, lists, dicts), or None when apply will change
        nothing. apply may read it back from self.record."""
        return None

    @classmethod
    def undo(cls, runtime, args, record):
        """Put back what apply did, from the journal record alone. Must be
        safe when apply never ran, ran part way, or this undo already ran
        (a killed recovery is replayed again)."""

    def run(self, runtime):
        """undo_record, then apply, as the engine does (without a journal)."""
        self.record = self.undo_record(runtime)
        try:
            self.apply(runtime)
        except Exception:
            self.undo_failed(runtime)
            raise

    def undo_failed(self, runtime):
        """apply failed: undo what it did part way, unless it keeps it on purpose."""
        if self.record is None or self.keeps_partial_work:
            return False
        try:
            type(self).undo(runtime, self.args, self.record)
        except Exception as e:   # the step's own error is the one to report
            runtime.log("err", f"revert of the failed {self.type_name} failed: {e}")
        return True

    def revert(self, runtime):
        """Undo what apply did (in-process): the journal's undo, from the record.
        Steps without an undo record that change state override this; they
        are not crash-safe (the journal marks them)."""
        if self.record is not None:
            type(self).undo(runtime, self.args, self.record)

    @classmethod
    def retake(cls, runtime, args, record):
        """Before a replay undoes anything: take again what the dead event
        held for this step (lock.acquire: its lock)."""

    @classmethod
    def describe_undo(cls, args, record):
        """One line: what undo would do (xenrules recover --dry-run)."""
        return f"revert {cls(args).describe()}"

    def describe(self):
        """One line: what apply does, with the expanded values."""
        words = " ".join(f"{k}={v}" for k, v in sorted(self.args.items()))
        return f"{self.type_name} {words}".rstrip()
