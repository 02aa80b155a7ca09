"""qcbo: quadratic constrained binary optimisation.

Minimise ``x @ Q @ x + offset`` over binary x, optionally with ``sum(x) == k``.
The core imports only numpy (and scipy where needed); solvers live in the `backends`
package and the pruning that produces problems in `pruning`.
"""

from .errors import (
    BackendUnavailableError,
    InputError,
    OutOfMemoryError,
    QCBOError,
    SolverError,
    UnsupportedProblemError,
)
from .problem import IsingModel, PenaltyInverter, Problem
from .result import SolveResult

__version__ = "0.1.0"

__all__ = [
    "Problem",
    "PenaltyInverter",
    "IsingModel",
    "SolveResult",
    "QCBOError",
    "InputError",
    "OutOfMemoryError",
    "UnsupportedProblemError",
    "BackendUnavailableError",
    "SolverError",
]
