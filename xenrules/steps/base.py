"""Base class of every step type.

A step is one ordered action of a rule. The engine expands its arguments
(templates -> strings), then calls `apply`; on a later failure it calls
`revert` on the steps already applied, in reverse order. `describe` says what
the step would do, with its expanded values, for dry runs and traces.
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

    def revert(self, runtime):
        """Undo what apply did. Steps that change nothing keep this no-op."""

    def describe(self):
        """One line: what apply does, with the expanded values."""
        words = " ".join(f"{k}={v}" for k, v in sorted(self.args.items()))
        return f"{self.type_name} {words}".rstrip()
