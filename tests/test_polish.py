"""backends.polish: the one steepest-descent polish (QAOA backends, cpsat's hint)."""

import numpy as np
import pytest

from backends.polish import descend, polish

from .helpers import all_states, brute_force, random_problem


@pytest.mark.parametrize("k", [None, 3])
def test_polish_reaches_a_local_optimum(k):
    problem = random_problem(7, k, seed=21)
    X = all_states(7) if k is None else brute_force(problem)[1]
    rng = np.random.default_rng(0)
    for x0 in X[rng.choice(len(X), 5, replace=False)]:
        y = polish(problem, x0)
        assert y.dtype == np.int8 and problem.is_feasible(y)
        e = problem.energy(y)
        assert e <= problem.energy(x0) + 1e-12
        for i in range(7):  # no single flip (k=None) / swap (k) improves
            if k is None:
                z = y.copy(); z[i] ^= 1
                assert problem.energy(z) >= e - 1e-9
            else:
                for j in range(7):
                    if y[i] == 1 and y[j] == 0:
                        z = y.copy(); z[i], z[j] = 0, 1
                        assert problem.energy(z) >= e - 1e-9


def test_steps_are_steepest_and_limits_hold():
    problem = random_problem(12, 5, seed=4)
    x0 = problem.feasible_point()
    # one move: the best swap of all
    one = descend(problem.Q, 5, x0, max_moves=1)
    swaps = []
    for i in np.flatnonzero(x0 == 1):
        for j in np.flatnonzero(x0 == 0):
            z = x0.copy(); z[i], z[j] = 0, 1
            swaps.append(problem.energy(z))
    assert problem.energy(one) == pytest.approx(min(min(swaps), problem.energy(x0)))
    # a deadline already passed: x0 unchanged, as a copy
    late = descend(problem.Q, 5, x0, stop=0.0)
    assert np.array_equal(late, x0) and late is not x0
