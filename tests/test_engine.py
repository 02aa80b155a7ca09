"""The engine's pieces on their own: the acceptance rule and halved answers."""

import itertools

import numpy as np

from pruning.engine import accepts, shrink_answer
from qcbo.problem import Problem
from qcbo.result import SolveResult


def _problem(n=10, k=4, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, n))
    return Problem((A + A.T) / 2, 0.0, k)


def test_shrink_keeps_cardinality_and_improves_when_it_returns():
    for seed in range(20):
        p = _problem(seed=seed)
        states = [np.array(s, dtype=np.int8) for s in itertools.product((0, 1), repeat=p.n)
                  if sum(s) == p.k]
        x_cur = states[seed % len(states)]
        best = min(states, key=p.energy)
        half = shrink_answer(p, x_cur, best)
        if half is None:
            continue
        assert half.sum() == p.k
        moved = int(np.sum(half != x_cur)) // 2
        assert moved == int(np.sum(best != x_cur)) // 4
        assert p.energy(half) < p.energy(x_cur)


def test_accepts_only_strictly_better_feasible_answers():
    p = _problem()
    x_cur = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=np.int8)
    worse = max((np.array(s, dtype=np.int8) for s in itertools.product((0, 1), repeat=p.n)
                 if sum(s) == p.k), key=p.energy)
    assert accepts(p, x_cur, SolveResult.from_solution(p, x_cur, backend="t", wall_time_s=0.0)) is None
    assert accepts(p, x_cur, SolveResult.from_solution(p, worse, backend="t", wall_time_s=0.0)) is None
    infeasible = np.ones(p.n, dtype=np.int8)
    assert accepts(p, x_cur, SolveResult.from_solution(p, infeasible, backend="t", wall_time_s=0.0)) is None
