"""The project's one classical polish: steepest descent by single flips or by swaps.

For Q symmetric (n, n) and x (n,) 0/1, every step applies the move that lowers
E(x) = x Q x the most: a flip of one variable when k is None, a swap of a set variable
with an unset one (so sum(x) stays k) when k is set; it stops at a local optimum (no
move lowers E by more than ``1e-12 * max|Q|``), at ``max_moves`` or at the perf_counter
time ``stop``. Flip change d_i = (1 - 2 x_i)(Q_ii + 2 sum_{j != i} Q_ij x_j); swap i out,
j in: d_i + d_j - 2 Q_ij. The moves run in the numba kernels of `backends._kernels`
(the same ones the sa and tabu backends end with), a chunk of moves per call, so a
deadline is checked every ``_CHUNK`` moves.

Used by the QAOA backends (``polish`` option) and by cpsat for its hint.
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit

from qcbo.problem import Problem

from . import _kernels as kernels

__all__ = ["descend", "polish"]

_CHUNK = 256


@njit(cache=True)
def _swap_moves(Q, x, sgn, d, members, pos, k, rowmax, tol, moves):
    """Up to ``moves`` best-improving swaps; returns (moves made, reached a local optimum)."""
    no_tabu = np.zeros(x.shape[0], dtype=np.int64)
    for step in range(moves):
        a, b, delta = kernels._best_swap(Q, d, members, k, rowmax, no_tabu, 0, 0.0,
                                         -np.inf, False)
        if a < 0 or not delta < -tol:
            return step, True
        kernels.apply_swap(Q, x, sgn, d, members, pos, a, b)
    return moves, False


@njit(cache=True)
def _flip_moves(Q, x, sgn, d, tol, moves):
    """Up to ``moves`` best-improving flips; returns (moves made, reached a local optimum)."""
    n = x.shape[0]
    for step in range(moves):
        m = 0
        for l in range(1, n):
            if d[l] < d[m]:
                m = l
        if not d[m] < -tol:
            return step, True
        kernels.apply_flip(Q, x, sgn, d, m)
    return moves, False


def descend(q: np.ndarray, k: int | None, x0: np.ndarray, *, stop: float = float("inf"),
            max_moves: int | None = None) -> np.ndarray:
    """Steepest descent from ``x0`` (see the module docstring); an int8 (n,) copy.

    ``q``: symmetric (n, n) float64; ``x0``: 0/1 (n,), with sum(x0) = k when k is set
    (swaps keep it); ``stop``: a perf_counter() deadline; ``max_moves``: a cap.
    """
    Q = kernels.as_matrix(q)
    x = np.asarray(x0, dtype=np.int8).copy()
    n = x.shape[0]
    if n == 0:
        return x
    tol = 1e-12 * float(np.abs(Q).max())
    sgn = np.empty(n)
    d = np.empty(n)
    kernels.flip_deltas(Q, x, sgn, d)
    left = np.inf if max_moves is None else int(max_moves)
    if k is None:
        while left > 0 and time.perf_counter() <= stop:
            made, done = _flip_moves(Q, x, sgn, d, tol, int(min(_CHUNK, left)))
            left -= made
            if done:
                break
        return x
    members = np.empty(n, dtype=np.int64)
    pos = np.empty(n, dtype=np.int64)
    ones = kernels.order_members(x, members, pos)
    if ones in (0, n):
        return x
    rowmax = Q.max(axis=1)
    while left > 0 and time.perf_counter() <= stop:
        made, done = _swap_moves(Q, x, sgn, d, members, pos, ones, rowmax, tol,
                                 int(min(_CHUNK, left)))
        left -= made
        if done:
            break
    return x


def polish(problem: Problem, x0: np.ndarray, *, stop: float = float("inf")) -> np.ndarray:
    """`descend` on a problem's Q and k: a feasible x0 stays feasible and never gets worse."""
    return descend(problem.Q, problem.k, x0, stop=stop)
