"""The one interface every solver implements.

A backend subclasses `Backend`, declares its `options` (name -> `Option`) and
implements `_solve`, which returns a `RawSolution`. `Backend.solve` validates options
(unknown ones raise TypeError), picks and records the seed, times the call and scores
the answer through `SolveResult.from_solution`, so energies are never taken on trust.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np

from qcbo.errors import InputError, QCBOError, SolverError, UnsupportedProblemError
from qcbo.problem import Problem
from qcbo.result import SolveResult

__all__ = ["Backend", "Option", "RawSolution", "deadline", "child_seeds"]


@dataclass(frozen=True)
class Option:
    """A backend option: its default and a one-line description."""

    default: Any
    help: str


@dataclass
class RawSolution:
    """What `_solve` hands back: the best assignment and facts about the run.

    ``x``: (n,) 0/1 array or None when no answer was found; ``proven_optimal`` only
    when the solver proved it; ``samples``: optional (m, n) 0/1 array.
    """

    x: np.ndarray | None
    proven_optimal: bool = False
    samples: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


def deadline(time_limit: float | None) -> float:
    """The perf_counter() value at which a run must stop (inf without a limit)."""
    return float("inf") if time_limit is None else time.perf_counter() + time_limit


def child_seeds(seed: int, count: int) -> list[int]:
    """Independent child seeds for restarts, derived from one seed."""
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(count)]


class Backend(abc.ABC):
    """Base class of every solver; see the module docstring."""

    #: Registry name, e.g. "exact".
    name: ClassVar[str]
    #: One-line description for `qcbo backends`.
    summary: ClassVar[str] = ""
    #: Options accepted by `solve` beyond seed and time_limit.
    options: ClassVar[Mapping[str, Option]] = {}
    #: Largest n the backend accepts (None: no fixed limit).
    max_variables: ClassVar[int | None] = None
    #: True when a "optimal" status means a proof (exact solvers).
    exact: ClassVar[bool] = False
    #: Block size iCBS uses with this backend when the user gives none (None: the
    #: model's preferred size, capped by ``max_variables``).
    block_size_hint: ClassVar[int | None] = None
    #: Options iCBS passes by default (iCBS blocks are easy for local search, so generic
    #: defaults would spend 10-50x the time; see benchmarks/README.md, Pruning).
    icbs_options: ClassVar[Mapping[str, Any]] = {}

    @classmethod
    def supports_initial(cls) -> bool:
        """True when ``solve`` takes a warm start as the ``initial`` option."""
        return "initial" in cls.options

    def check(self, problem: Problem, **options: Any) -> None:
        """Raise UnsupportedProblemError when this backend cannot take the problem.

        ``options`` are the solve options with defaults filled in.
        """
        if self.max_variables is not None and problem.n > self.max_variables:
            raise UnsupportedProblemError(
                f"{self.name}: n={problem.n} exceeds the {self.max_variables} variables this "
                "backend accepts; use a classical backend (cpsat, sa, tabu) instead"
            )

    def solve(
        self,
        problem: Problem,
        *,
        seed: int | None = None,
        time_limit: float | None = None,
        **options: Any,
    ) -> SolveResult:
        """Solve ``problem``; see the class docs for the options.

        ``seed``: None draws a fresh one (recorded in the result); ``time_limit`` in
        seconds bounds the solver's own work (the result may then be non-optimal).
        """
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            raise TypeError(f"{self.name}: unknown option(s) {unknown}; known options: {known}")
        if not isinstance(problem, Problem):
            raise TypeError(f"{self.name}: expected a qcbo.Problem, got {type(problem).__name__}")
        if time_limit is not None and not time_limit > 0:
            raise InputError(f"{self.name}: time_limit must be > 0 seconds, got {time_limit}")
        opts = {name: opt.default for name, opt in self.options.items()}
        opts.update(options)
        self.check(problem, **opts)
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        start = time.perf_counter()
        try:
            raw = self._solve(problem, seed=int(seed), time_limit=time_limit, **opts)
        except (QCBOError, TypeError, KeyboardInterrupt):
            raise
        except Exception as exc:  # a solver's own failure, reported as one type
            raise SolverError(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        wall = time.perf_counter() - start
        return SolveResult.from_solution(
            problem,
            raw.x,
            backend=self.name,
            wall_time_s=wall,
            seed=int(seed),
            proven_optimal=raw.proven_optimal,
            samples=raw.samples,
            info=raw.info,
        )

    @abc.abstractmethod
    def _solve(
        self, problem: Problem, *, seed: int, time_limit: float | None, **options: Any
    ) -> RawSolution:
        """Solve; options arrive with defaults filled in."""
