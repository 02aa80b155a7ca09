"""The one interface every solver implements.

A backend subclasses `Backend`, declares its `options` (name -> `Option`, each with a
type, a default and a range or choices) and implements `_solve`, which returns a
`RawSolution`. `Backend.solve` checks everything once: unknown options raise
`UnknownOptionError`, a value of the wrong type or out of range `InputError`, a warm
start (`WARM_START`) that is not a feasible 0/1 vector of the problem `InputError`.
It then picks and records the seed, times the call and scores the answer through
`SolveResult.from_solution`, so energies are never taken on trust; an answer that is
not an (n,) 0/1 vector is the solver's fault (`SolverError`).
"""

from __future__ import annotations

import abc
import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np

from qcbo.errors import (InputError, OutOfMemoryError, QCBOError, SolverError,
                         UnknownOptionError, UnsupportedProblemError)
from qcbo.problem import Problem
from qcbo.result import SolveResult

__all__ = ["Backend", "Option", "Assignment", "WARM_START", "RawSolution", "deadline",
           "child_seeds"]


class Assignment:
    """Option type of a warm start: an (n,) 0/1 vector with sum(x) = k when k is set.

    `Backend.solve` hands it to ``_solve`` as an int8 array (or None).
    """


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
               tuple: "a list of numbers", dict: "a JSON object",
               Assignment: "an (n,) 0/1 array"}


@dataclass(frozen=True)
class Option:
    """A backend option, declared once on the class and checked once by `Backend.solve`.

    ``type``: int, float, bool, str, tuple (a list of numbers, ``length`` long), dict (a
    JSON object, checked further by the backend) or `Assignment`. None is accepted when
    the default is None or ``nullable`` is set. ``minimum``/``maximum`` bound numbers
    (inclusive), ``greater_than`` excludes its value; ``choices`` lists allowed strings.
    An int option takes 3.0 as 3; a float option takes 3 as 3.0.
    """

    type: type
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    greater_than: float | None = None
    choices: tuple[str, ...] | None = None
    length: int | None = None
    nullable: bool = False

    def describe(self) -> str:
        """The accepted values in words, e.g. 'an integer >= 1 or null'."""
        text = _TYPE_NAMES.get(self.type, self.type.__name__)
        if self.choices:
            text = "one of " + ", ".join(self.choices)
        spec = "d" if self.type is int else "g"  # 2147483647, not 2.14748e+09
        if self.minimum is not None and self.maximum is not None:
            text += f" in [{self.minimum:{spec}}, {self.maximum:{spec}}]"
        elif self.minimum is not None:
            text += f" >= {self.minimum:{spec}}"
        elif self.maximum is not None:
            text += f" <= {self.maximum:{spec}}"
        if self.greater_than is not None:
            text += f" > {self.greater_than:{spec}}"
        if self.length is not None:
            text += f" of length {self.length}"
        if self.nullable or self.default is None:
            text += " or null"
        return text

    def _number(self, value: Any) -> float | int | None:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
            return None
        if self.type is int:
            if isinstance(value, (float, np.floating)):
                return int(value) if math.isfinite(value) and float(value).is_integer() else None
            return int(value)
        return float(value) if math.isfinite(float(value)) else None

    def _in_range(self, value: float) -> bool:
        return ((self.minimum is None or value >= self.minimum)
                and (self.maximum is None or value <= self.maximum)
                and (self.greater_than is None or value > self.greater_than))

    def validate(self, value: Any, problem: Problem) -> Any:
        """The value converted to the option's type; ValueError when it does not fit."""
        if value is None:
            if self.nullable or self.default is None:
                return None
            raise ValueError
        if self.type in (int, float):
            number = self._number(value)
            if number is None or not self._in_range(number):
                raise ValueError
            return number
        if self.type is bool:
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError
            return bool(value)
        if self.type is str:
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise ValueError
            return value
        if self.type is tuple:
            if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__len__"):
                raise ValueError
            numbers = [self._number_or_fail(v) for v in value]
            if self.length is not None and len(numbers) != self.length:
                raise ValueError
            return tuple(numbers)
        if self.type is dict:
            if not isinstance(value, Mapping):
                raise ValueError
            return dict(value)
        if self.type is Assignment:
            return _assignment(value, problem)
        raise TypeError(f"Option of unsupported type {self.type!r}")  # a declaration bug

    def _number_or_fail(self, value: Any) -> float:
        number = None if isinstance(value, (bool, np.bool_)) else value
        if not isinstance(number, (int, float, np.number)) or not math.isfinite(float(number)):
            raise ValueError
        if not self._in_range(float(number)):
            raise ValueError
        return float(number)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _assignment(value: Any, problem: Problem) -> np.ndarray:
    try:
        x = np.asarray(value)
    except (TypeError, ValueError):
        raise ValueError from None
    if x.shape != (problem.n,) or x.dtype.kind not in "biuf" or not np.all((x == 0) | (x == 1)):
        raise ValueError
    x = x.astype(np.int8)
    if problem.k is not None and int(x.sum()) != problem.k:
        raise InputError(f"option initial has {int(x.sum())} ones but the problem needs "
                         f"sum(x) = k = {problem.k}")
    return x


#: The standard warm start: backends that can start from a given point declare it as
#: their ``initial`` option (pruning passes the previous mask there).
WARM_START = Option(Assignment, None, "warm start: an (n,) 0/1 array (sum(x) = k when k "
                                      "is set); a candidate answer the result never loses to")


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


def checked_time_limit(time_limit: Any, who: str = "") -> float | None:
    """``time_limit`` as seconds (float) or None for no limit (``inf`` too, for every
    backend alike); InputError unless it is None or a number > 0."""
    if time_limit is None:
        return None
    if isinstance(time_limit, (bool, np.bool_)) or not isinstance(
            time_limit, (int, float, np.integer, np.floating)) or not time_limit > 0:
        raise InputError(f"{who}time_limit must be a number > 0 of seconds (None: no "
                         f"limit), got {time_limit!r}")
    return None if math.isinf(time_limit) else float(time_limit)


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
    #: defaults would spend 10-50x the time; see benchmarks/HISTORY.md, "Pruning
    #: (benchmarks/pruning.py)").
    icbs_options: ClassVar[Mapping[str, Any]] = {}

    @classmethod
    def block_size_for(cls, options: Mapping[str, Any]) -> int | None:
        """The block size iCBS uses with these solve options when the user gives none
        (default ``block_size_hint``; a backend whose options change it overrides this)."""
        return cls.block_size_hint

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
        self._check_known(options)
        if not isinstance(problem, Problem):
            raise TypeError(f"{self.name}: expected a qcbo.Problem, got {type(problem).__name__}")
        time_limit = checked_time_limit(time_limit, f"{self.name}: ")
        if seed is not None and (isinstance(seed, (bool, np.bool_))
                                 or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise InputError(f"{self.name}: seed must be an integer >= 0, got {seed!r}")
        opts = self.prepare(problem, options)
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        start = time.perf_counter()
        try:
            raw = self._solve(problem, seed=int(seed), time_limit=time_limit, **opts)
        except (QCBOError, KeyboardInterrupt):
            raise
        except MemoryError as exc:  # sized by the options (sweeps, shots, reads) or n
            raise OutOfMemoryError(f"{self.name}: out of memory for this problem with these "
                                   f"options ({exc}); lower the options that size the run "
                                   "or solve a smaller problem") from None
        except Exception as exc:  # a solver's own failure, reported as one type
            raise SolverError(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        wall = time.perf_counter() - start
        if not isinstance(raw, RawSolution):
            raise SolverError(f"{self.name}: _solve returned {type(raw).__name__}, "
                              "not a RawSolution")
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

    def _check_known(self, options: Mapping[str, Any]) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            raise UnknownOptionError(
                f"{self.name}: unknown option(s) {', '.join(map(repr, unknown))}; known "
                f"options: {known}")

    def prepare(self, problem: Problem, options: Mapping[str, Any]) -> dict[str, Any]:
        """What `solve` checks before any work: option names, values and the problem's
        fit (InputError / UnsupportedProblemError); the resolved options."""
        self._check_known(options)
        resolved = self.resolve_options(problem, options)
        self.check(problem, **resolved)
        return resolved

    def resolve_options(self, problem: Problem, options: Mapping[str, Any]) -> dict[str, Any]:
        """Every declared option, given or default, checked and converted (see `Option`)."""
        resolved = {}
        for name, option in self.options.items():
            value = options.get(name, option.default)
            try:
                resolved[name] = option.validate(value, problem)
            except InputError as exc:
                raise InputError(f"{self.name}: {exc}") from None
            except ValueError:
                raise InputError(f"{self.name}: option {name} must be {option.describe()}, "
                                 f"got {_short(value)}") from None
        self.check_options(resolved)
        return resolved

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Raise InputError when options that are valid one by one conflict (cold > hot)."""

    @abc.abstractmethod
    def _solve(
        self, problem: Problem, *, seed: int, time_limit: float | None, **options: Any
    ) -> RawSolution:
        """Solve; options arrive with defaults filled in."""
