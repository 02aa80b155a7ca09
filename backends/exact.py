"""Exhaustive enumeration, vectorised in numpy: the ground truth for tests.

The variables are split into a low block of b <= 16 variables and a high block of the
rest. All low patterns (grouped by popcount when k is set) and their energies are
tabulated once; for each high pattern h the energies of every compatible low pattern l
are ``E_high(h) + E_low(l) + l @ (2 Q_lh h)``: one matrix-vector product per high
pattern. With k set only the C(n, k) feasible assignments are visited.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from qcbo.errors import UnsupportedProblemError
from qcbo.problem import Problem

from .base import Backend, Option, RawSolution, deadline

__all__ = ["ExactBackend", "enumeration_count"]

#: Assignments scored per second on the reference machine (2 cores), conservatively.
_RATE = 1.0e7
#: Refuse problems whose estimated enumeration time exceeds this many seconds.
MAX_SECONDS = 60.0
_LOW_BITS = 16


def enumeration_count(n: int, k: int | None) -> int:
    """How many assignments exhaustive enumeration visits."""
    return 2**n if k is None else math.comb(n, k)


def _bit_patterns(bits: int) -> np.ndarray:
    """All 2**bits patterns as a (2**bits, bits) float64 array, row r = binary of r."""
    r = np.arange(2**bits, dtype=np.int64)
    return ((r[:, None] >> np.arange(bits)) & 1).astype(np.float64)


class ExactBackend(Backend):
    """Exhaustive enumeration; proves optimality. Refuses sizes past ~1 minute."""

    name = "exact"
    block_size_hint = 16
    summary = "exhaustive enumeration in numpy (over C(n, k) when k is set); proves optimality"
    exact = True
    options = {
        "max_seconds": Option(float, MAX_SECONDS, "refuse problems whose estimated run time "
                                                  "exceeds this", greater_than=0),
    }

    def check(self, problem: Problem, max_seconds: float = MAX_SECONDS, **_: Any) -> None:
        count = enumeration_count(problem.n, problem.k)
        if count > max_seconds * _RATE:
            digits = len(str(count)) - 1
            raise UnsupportedProblemError(
                f"exact: n={problem.n}, k={problem.k} has about 10^{digits} assignments, more "
                f"than it can enumerate in {max_seconds:.0f} s; use cpsat (exact, with proof), "
                "sa or tabu"
            )

    def _solve(self, problem: Problem, *, seed: int, time_limit: float | None,
               max_seconds: float) -> RawSolution:
        stop = deadline(time_limit)
        n, k, q = problem.n, problem.k, problem.Q
        b = min(n, _LOW_BITS)
        a = n - b
        low_idx = np.arange(b)          # low block: variables 0..b-1
        high_idx = np.arange(b, n)      # high block: variables b..n-1
        L = _bit_patterns(b)
        q_ll = q[np.ix_(low_idx, low_idx)]
        q_lh = q[np.ix_(low_idx, high_idx)]
        q_hh = q[np.ix_(high_idx, high_idx)]
        e_low = np.einsum("mi,mi->m", L @ q_ll, L)
        popcount = L.sum(axis=1).astype(np.int64)
        groups = {p: np.flatnonzero(popcount == p) for p in range(b + 1)}

        best_e, best_x = math.inf, None
        visited, complete = 0, True
        for h in range(2**a):
            if h % 64 == 0 and time.perf_counter() > stop and best_x is not None:
                complete = False
                break
            hbits = ((h >> np.arange(a)) & 1).astype(np.float64)
            if k is None:
                rows = None
            else:
                need = k - int(hbits.sum())
                if need < 0 or need > b:
                    continue
                rows = groups[need]
            e_high = float(hbits @ q_hh @ hbits)
            lin = 2.0 * (q_lh @ hbits)
            if rows is None:
                energies = e_low + L @ lin
            else:
                energies = e_low[rows] + L[rows] @ lin
            visited += energies.shape[0]
            j = int(np.argmin(energies))
            if energies[j] + e_high < best_e:
                best_e = float(energies[j] + e_high)
                low = L[j if rows is None else rows[j]]
                best_x = np.concatenate([low, hbits]).astype(np.int8)
        total = enumeration_count(n, k)
        info = {"enumerated": visited, "assignments": total, "complete": complete}
        return RawSolution(best_x, proven_optimal=complete, info=info)
