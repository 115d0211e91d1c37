"""User-facing errors.

A :class:`FusionBenchError` carries a one-line, actionable message (what went wrong, where,
what to do). The CLI prints it without a traceback and exits non-zero.
"""


class FusionBenchError(Exception):
    """An error caused by the user's input or environment, reported as one line."""
