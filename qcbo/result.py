"""`SolveResult`: what every backend returns, scored by the Problem itself."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import numpy as np

from .errors import SolverError
from .problem import Problem

__all__ = ["SolveResult", "Status", "jsonable"]

Status = Literal["optimal", "feasible", "infeasible", "failed"]


def jsonable(value: Any) -> Any:
    """``value`` with what JSON cannot hold replaced: dict keys as str, tuples as lists,
    arrays as nested lists, scalars with ``.item()`` (numpy, 0-d torch tensors) as Python
    numbers, NaN and infinities as None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return jsonable(value.item())
    return value


@dataclass(frozen=True)
class SolveResult:
    """The answer of one backend on one problem.

    ``energy`` and ``feasible`` are always recomputed from the Problem (never taken
    on trust from a solver). ``x`` is int8 (n,), or None when the solver failed.
    ``samples`` (m, n) int8 and ``sample_energies`` (m,) are optional.
    ``status``: "optimal" (proven), "feasible", "infeasible" (x violates the
    constraint) or "failed" (no answer).
    """

    x: np.ndarray | None
    energy: float
    feasible: bool
    status: Status
    backend: str
    wall_time_s: float
    seed: int | None = None
    samples: np.ndarray | None = None
    sample_energies: np.ndarray | None = None
    info: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_solution(
        cls,
        problem: Problem,
        x: np.ndarray | None,
        *,
        backend: str,
        wall_time_s: float,
        seed: int | None = None,
        proven_optimal: bool = False,
        samples: np.ndarray | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> "SolveResult":
        """Score ``x`` (and ``samples``) with ``problem`` and derive the status.

        An ``x`` or ``samples`` that is not binary of the problem's length is the
        solver's fault: `SolverError`.
        """
        info = dict(info or {})
        sample_energies = None
        if samples is not None:
            samples = np.asarray(samples)
            if samples.size == 0:
                samples = samples.reshape(0, problem.n)
            if (samples.ndim != 2 or samples.shape[1] != problem.n
                    or not np.all((samples == 0) | (samples == 1))):
                raise SolverError(f"{backend}: returned samples of shape {samples.shape} that "
                                  f"are not 0/1 rows of length {problem.n}")
            samples = samples.astype(np.int8)
            sample_energies = problem.energies(samples) if len(samples) else np.empty(0)
        if x is None:
            return cls(None, math.nan, False, "failed", backend, wall_time_s, seed,
                       samples, sample_energies, info)
        x = np.asarray(x)
        if x.shape != (problem.n,) or not np.all((x == 0) | (x == 1)):
            raise SolverError(
                f"{backend}: returned an assignment of shape {x.shape} that is not binary of "
                f"length {problem.n}"
            )
        x = x.astype(np.int8)
        feasible = problem.is_feasible(x)
        if not feasible:
            status: Status = "infeasible"
        elif proven_optimal:
            status = "optimal"
        else:
            status = "feasible"
        return cls(x, problem.energy(x), feasible, status, backend, wall_time_s, seed,
                   samples, sample_energies, info)

    def to_dict(self, *, include_samples: bool = False) -> dict[str, Any]:
        """A JSON-ready dict (NaN/inf become null)."""
        out: dict[str, Any] = {
            "backend": self.backend,
            "status": self.status,
            "energy": self.energy,
            "feasible": self.feasible,
            "x": None if self.x is None else self.x.tolist(),
            "wall_time_s": self.wall_time_s,
            "seed": self.seed,
            "info": dict(self.info),
        }
        if include_samples and self.samples is not None:
            out["samples"] = self.samples.tolist()
            out["sample_energies"] = self.sample_energies.tolist()
        return jsonable(out)
