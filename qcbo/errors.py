"""Exception types shared by the whole toolkit.

The CLI maps them to exit codes: `InputError` (and its subclasses) and
`BackendUnavailableError` are the user's to fix (exit 2); `SolverError` is a solver
that failed on valid input (exit 1).
"""

from __future__ import annotations


class QCBOError(Exception):
    """Base class of every error this toolkit raises on purpose."""


class InputError(QCBOError, ValueError):
    """Malformed input: a bad file, NaN/inf, a wrong shape, k out of range, ...

    The message names the source (file or argument) and the fault.
    """


class UnsupportedProblemError(InputError):
    """A valid problem that a backend cannot take (too many variables, say)."""


class OutOfMemoryError(InputError):
    """A solve that needs more memory than there is, sized by the problem or the options
    (reads, sweeps, shots): the user's to fix, but in a comparison one failed run."""


class UnknownOptionError(InputError):
    """An option a backend does not declare (the message lists the ones it does)."""


class BackendUnavailableError(QCBOError):
    """A backend whose optional packages are not installed, or an unknown name."""


class SolverError(QCBOError):
    """A solver failed on valid input."""
