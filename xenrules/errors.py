"""The one root error class of xenrules and its families.

Every error xenrules raises on purpose is a XenrulesError, so the CLI and the
engine can tell an expected failure (reported cleanly) from a bug (traceback).
"""


class XenrulesError(Exception):
    """Root of every error xenrules raises on purpose."""


class RuleError(XenrulesError):
    """A rule file is invalid. Carries every problem found, each located."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class TemplateError(XenrulesError):
    """A template is malformed or names a variable that does not exist."""


class StepError(XenrulesError):
    """A step failed while applying or reverting."""


class BusyError(StepError):
    """A resource is in use (the bash `ebusy`): hotplug-status=busy."""


class XenstoreError(XenrulesError):
    """The XenStore could not be reached or refused a request."""


class LockError(XenrulesError):
    """A hotplug lock could not be taken."""


class JournalError(XenrulesError):
    """The journal (crash-safe revert) cannot be read, written or trusted."""


class DeadlineError(StepError):
    """The event's deadline (deadline.py) ran out while it waited for something;
    the message names what."""
