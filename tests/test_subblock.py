"""Sub-block decomposition: the restricted QCBO equals the parent energy on every state."""

import itertools

import numpy as np
import pytest

from backends.subblock import (choose_variables, decompose, flip_gains, improve, restrict,
                               stitch)
from qcbo.errors import InputError
from qcbo.problem import Problem


def _problem(n: int, k: int | None, seed: int = 0) -> Problem:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    return Problem((a + a.T) / 2, offset=0.7, k=k)


def _start(n: int, k: int, seed: int = 1) -> np.ndarray:
    x = np.zeros(n, dtype=np.int8)
    x[np.random.default_rng(seed).choice(n, k, replace=False)] = 1
    return x


@pytest.mark.parametrize("k", [3, None])
def test_restricted_energy_equals_parent_on_every_state(k):
    p = _problem(8, k)
    x = _start(8, 3)
    idx = np.array([0, 2, 5, 6])
    sub = restrict(p, x, idx)
    for bits in itertools.product([0, 1], repeat=len(idx)):
        y = np.array(bits)
        if sub.k is not None and y.sum() != sub.k:
            continue
        assert sub.energy(y) == pytest.approx(p.energy(stitch(x, idx, y)), abs=1e-10)
    if k is not None:
        assert sub.k == int(x[idx].sum())


def test_flip_gains_match_energy_differences():
    p = _problem(7, None, seed=3)
    x = _start(7, 3)
    g = flip_gains(p, x)
    for i in range(7):
        y = x.copy()
        y[i] ^= 1
        assert g[i] == pytest.approx(p.energy(y) - p.energy(x), abs=1e-10)


@pytest.mark.parametrize("rule", ["impact", "random", "order"])
def test_choice_has_both_kinds_and_size(rule):
    p = _problem(40, 10)
    x = _start(40, 10)
    idx = choose_variables(p, x, 8, rule=rule, order=np.arange(40)[::-1], rng=0)
    assert len(idx) == 8 and len(set(idx.tolist())) == 8
    assert 1 <= x[idx].sum() <= 7


def test_impact_picks_most_attractive_flips():
    p = _problem(30, 10, seed=5)
    x = _start(30, 10)
    idx = choose_variables(p, x, 6, rule="impact")
    g = flip_gains(p, x)
    ones = np.flatnonzero(x == 1)
    chosen_ones = [i for i in idx if x[i] == 1]
    best_ones = ones[np.argsort(g[ones], kind="stable")][: len(chosen_ones)]
    assert sorted(chosen_ones) == sorted(best_ones.tolist())


def test_decompose_covers_disjointly_and_each_is_exact():
    p = _problem(23, 9, seed=2)
    x = _start(23, 9)
    subs = decompose(p, x, 6)
    all_idx = np.concatenate([s.index for s in subs])
    assert sorted(all_idx.tolist()) == list(range(23))
    rng = np.random.default_rng(0)
    for s in subs:
        y = np.zeros(len(s.index), dtype=np.int8)
        y[rng.choice(len(y), s.problem.k, replace=False)] = 1
        assert s.problem.energy(y) == pytest.approx(p.energy(s.stitch(y)), abs=1e-9)


def test_improve_with_exact_sub_solver_improves_and_reports_what_it_kept():
    p = _problem(16, 6, seed=4)
    x = _start(16, 6)

    def exact(sub, r):
        best, be = None, np.inf
        for bits in itertools.product([0, 1], repeat=sub.n):
            y = np.array(bits)
            if sub.k is not None and y.sum() != sub.k:
                continue
            e = sub.energy(y)
            if e < be:
                best, be = y, e
        return best, "exact"

    y, rep = improve(p, x, 6, exact, rounds=6)
    assert y.sum() == 6
    assert p.energy(y) < p.energy(x)
    assert rep.energy_before == pytest.approx(p.energy(x))
    assert rep.energy_after == pytest.approx(p.energy(y))
    assert rep.improved_rounds == len(rep.sources) >= 1


def test_bad_inputs_are_input_errors():
    p = _problem(6, 2)
    with pytest.raises(InputError):
        restrict(p, np.array([1, 1, 0, 0, 0, 2]), np.array([0, 1]))
    with pytest.raises(InputError):
        restrict(p, _start(6, 2), np.array([0, 0]))
    with pytest.raises(InputError):
        choose_variables(p, _start(6, 2), 0)
    with pytest.raises(InputError):
        choose_variables(p, _start(6, 2), 3, rule="nope")
    with pytest.raises(InputError):
        decompose(p, _start(6, 3), 3)
