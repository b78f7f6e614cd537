"""Error types raised by fesurf.

``InputError`` is what users see for bad input: a ``ValueError`` whose message
says what is wrong and how to fix it. ``SimulationError`` is raised when a run
blows up; it carries the replica, the step and the last good state.
"""
from __future__ import annotations


class InputError(ValueError):
    """Bad input at a public boundary. The message says what and how to fix it."""


class SimulationError(RuntimeError):
    """A simulation stopped because it became unphysical (non-finite or runaway energy).

    Attributes
    ----------
    replica : int or None
        Index of the first offending replica (system) in the batch.
    step : int or None
        MD step at which the problem was detected.
    last_good_state : fesurf.state.State or None
        The last state that passed the checks, so the user can inspect or restart.
    """

    def __init__(self, message, *, replica=None, step=None, last_good_state=None):
        super().__init__(message)
        self.replica = replica
        self.step = step
        self.last_good_state = last_good_state


class OracleError(RuntimeError):
    """A reference (QM) calculation failed; the reason is in the message."""
