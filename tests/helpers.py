"""Small helpers shared by the tests: brute-force enumeration of tiny problems."""

import itertools

import numpy as np

from qcbo import Problem


def all_states(n: int) -> np.ndarray:
    """Every binary vector of length n, shape (2**n, n) int8."""
    return np.array(list(itertools.product([0, 1], repeat=n)), dtype=np.int8)


def brute_force(problem: Problem) -> tuple[float, np.ndarray]:
    """(min energy, feasible states) by enumerating every state."""
    X = all_states(problem.n)
    if problem.k is not None:
        X = X[X.sum(axis=1) == problem.k]
    return float(problem.energies(X).min()), X


def random_problem(n: int, k: int | None, seed: int, offset: float = 0.0) -> Problem:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    return Problem((a + a.T) / 2.0, offset, k)
