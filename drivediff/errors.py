"""Exceptions raised at drivediff's boundaries.

Every error a user can cause (a bad scenario file, a malformed action, a truncated log, a foreign
checkpoint) is one of these, with a message naming what was wrong. The CLI prints the message and exits
non-zero without a traceback.
"""


class DrivediffError(Exception):
    """Base class: a problem with user input, not a bug in drivediff."""


class ScenarioError(DrivediffError, ValueError):
    """A scenario name, file or field is invalid."""


class ActionError(DrivediffError, ValueError):
    """An action array or action dict is malformed (shape, NaN/inf, unknown agent)."""


class LogError(DrivediffError, ValueError):
    """An episode log is missing, truncated, of an unknown version or lacks a field."""


class CheckpointError(DrivediffError, ValueError):
    """A planner checkpoint is missing, corrupted or not a drivediff checkpoint."""
