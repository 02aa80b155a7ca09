"""The problem model and its algebraic identities, checked by enumeration."""

import numpy as np
import pytest

from qcbo import InputError, Problem, SolverError
from qcbo.result import SolveResult

from .helpers import all_states, brute_force, random_problem


def test_energy_matches_definition_and_batch():
    p = random_problem(6, None, seed=1, offset=1.25)
    X = all_states(6)
    single = np.array([x @ p.Q @ x + 1.25 for x in X.astype(float)])
    assert np.allclose(p.energies(X), single)
    assert p.energy(X[13]) == pytest.approx(single[13])


def test_upper_triangle_and_mapping_give_same_energies():
    rng = np.random.default_rng(0)
    u = np.triu(rng.normal(size=(5, 5)))
    X = all_states(5).astype(float)
    direct = np.einsum("mi,ij,mj->m", X, u, X)
    assert np.allclose(Problem(u).energies(X), direct)
    mapping = {(i, j): u[i, j] for i in range(5) for j in range(i, 5)}
    assert np.allclose(Problem(mapping).energies(X), direct)
    # (j, i) keys count the same as (i, j): the term is value * x_i * x_j
    assert Problem({(1, 0): 2.0}, n=2).energy(np.array([1, 1])) == 2.0


def test_symmetrize_flag_keeps_energies():
    a = np.random.default_rng(3).normal(size=(4, 4))
    with pytest.raises(InputError, match="not symmetric"):
        Problem(a)
    p = Problem(a, symmetrize=True)
    X = all_states(4).astype(float)
    assert np.allclose(p.energies(X), np.einsum("mi,ij,mj->m", X, a, X))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(Q=np.array([[1.0, np.nan], [np.nan, 0.0]])), "NaN"),
        (dict(Q=np.ones((2, 3))), "square"),
        (dict(Q=np.zeros((0, 0))), "at least one"),
        (dict(Q=np.eye(3), k=4), "out of range"),
        (dict(Q=np.eye(3), k=-1), "out of range"),
        (dict(Q=np.eye(3), k=1.5), "integer"),
        (dict(Q=np.eye(3), offset=float("inf")), "finite"),
        (dict(Q=np.eye(2), labels=["a"]), "labels"),
        (dict(Q=np.eye(2), labels=["a", "a"]), "unique"),
        (dict(Q=np.eye(2), metadata={"x": object()}), "JSON"),
        (dict(Q=[["a", "b"], ["c", "d"]]), "numeric"),
        (dict(Q={(0, 0): float("nan"), (0, 1): 1.0}), "finite"),
        (dict(Q={(0, 1): float("inf")}), "finite"),
        (dict(Q={(0, 1): "abc"}), "not a number"),
        (dict(Q={(0.5, 1): 1.0}), "integer indices"),
        (dict(Q={("a", "b"): 1.0}), "integer indices"),
        (dict(Q={(0, 1): 1.0}, n=2.5), "non-negative integer"),
        (dict(Q={}, n=-1), "non-negative integer"),
        (dict(Q={}), "at least one"),
        (dict(Q={(0, 1): 1.0}, n=1), "out of range"),
        (dict(Q=[[1e308, 1.7e308], [1e308, 0.0]], symmetrize=True), "overflows"),
    ],
)
def test_bad_input_raises_one_type(kwargs, match):
    with pytest.raises(InputError, match=match):
        Problem(**kwargs)


def test_numpy_labels_become_python_scalars():
    p = Problem(np.eye(2), labels=np.array([3, 7]))
    assert p.labels == (3, 7) and all(type(v) is int for v in p.labels)


def test_problem_is_read_only():
    p = Problem(np.eye(2))
    with pytest.raises(ValueError):
        p.Q[0, 0] = 5.0


def test_feasibility():
    p = Problem(np.eye(4), k=2)
    assert p.is_feasible(np.array([1, 0, 1, 0]))
    assert not p.is_feasible(np.array([1, 1, 1, 0]))
    assert not p.is_feasible(np.array([1, 0, 1]))
    assert not p.is_feasible(np.array([2, 0, 0, 0]))
    assert p.is_feasible(p.feasible_point())
    free = Problem(np.eye(4))
    assert p.is_constrained and not free.is_constrained
    assert free.is_feasible(np.array([1, 1, 1, 0]))


def _adversarial(n: int, k: int, seed: int) -> Problem:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    q = (a + a.T) / 2
    q -= 50.0 * rng.random(size=(n, n)) * (rng.random(size=(n, n)) < 0.5)  # large negative couplings
    q = (q + q.T) / 2
    np.fill_diagonal(q, np.diag(q) - 100.0 * rng.random(n))
    return Problem(q, 3.0, k)


@pytest.mark.parametrize("n", [2, 5, 8, 10])
@pytest.mark.parametrize("kind", ["random", "adversarial"])
def test_default_penalty_makes_infeasible_states_worse(n, kind):
    for seed in range(3):
        for k in {0, 1, n // 2, n - 1, n}:
            p = random_problem(n, k, seed) if kind == "random" else _adversarial(n, k, seed)
            qubo, inverter = p.to_qubo()
            assert qubo.k is None and inverter.penalty > 0
            X = all_states(n)
            feasible = X.sum(axis=1) == k
            e = qubo.energies(X)
            # The penalty QUBO agrees with the original on feasible states ...
            assert np.allclose(e[feasible], p.energies(X[feasible]))
            # ... and every infeasible state is strictly worse than the constrained optimum.
            best_feasible = p.energies(X[feasible]).min()
            assert e[~feasible].min() > best_feasible
            assert inverter.is_feasible(X[np.argmin(e)])


def test_lower_bound_and_default_penalty_are_the_documented_bounds():
    chosen = set()
    for n in (3, 6, 9):
        for seed in range(4):
            for p in (random_problem(n, n // 2, seed), _adversarial(n, n // 2, seed)):
                X = all_states(n)
                assert p.energy_lower_bound() <= p.energies(X).min() + 1e-9
                Q = p.Q
                flip = max(abs(Q[i, i]) + 2 * sum(abs(Q[i, j]) for j in range(n) if j != i)
                           for i in range(n))
                # Every single flip from every state changes the energy by at most flip.
                for i in range(n):
                    Y = X.copy()
                    Y[:, i] ^= 1
                    assert np.abs(p.energies(Y) - p.energies(X)).max() <= flip + 1e-9
                gap = p.energy(p.feasible_point()) - p.energy_lower_bound()
                assert p.default_penalty() == pytest.approx(1.01 * min(flip, gap) + 1e-9)
                chosen.add("flip" if flip < gap else "range")
    assert chosen == {"flip", "range"}  # both bounds are the smaller one somewhere


def test_explicit_penalty_and_unconstrained_passthrough():
    p = random_problem(5, 2, seed=4)
    qubo, inverter = p.to_qubo(penalty=0.5)
    X = all_states(5)
    expected = p.energies(X) + 0.5 * (X.sum(axis=1) - 2) ** 2
    assert np.allclose(qubo.energies(X), expected)
    assert inverter.penalty == 0.5 and qubo.metadata["penalty"]["weight"] == 0.5
    free = random_problem(4, None, seed=1)
    same, inv = free.to_qubo()
    assert same is free and inv.penalty == 0.0
    with pytest.raises(InputError):
        p.to_qubo(penalty=-1.0)


@pytest.mark.parametrize("n", [1, 3, 7])
def test_ising_mapping_equal_on_every_state(n):
    p = random_problem(n, None, seed=n, offset=-0.75)
    ising = p.to_ising()
    X = all_states(n)
    S = 2 * X.astype(float) - 1  # spin +1 <=> x = 1
    assert np.allclose(ising.energies(S), p.energies(X))
    assert np.allclose(np.tril(ising.J), 0.0)
    back = Problem.from_ising(ising.h, ising.J, ising.offset)
    assert np.allclose(back.energies(X), p.energies(X))


def test_solve_result_recomputes_energy_and_flags_infeasible():
    p = random_problem(4, 2, seed=0)
    good = SolveResult.from_solution(p, np.array([1, 1, 0, 0]), backend="t", wall_time_s=0.1)
    assert good.status == "feasible" and good.energy == pytest.approx(p.energy(np.array([1, 1, 0, 0])))
    bad = SolveResult.from_solution(p, np.array([1, 1, 1, 0]), backend="t", wall_time_s=0.1,
                                    proven_optimal=True)
    assert bad.status == "infeasible" and not bad.feasible
    failed = SolveResult.from_solution(p, None, backend="t", wall_time_s=0.1)
    assert failed.status == "failed" and failed.to_dict()["energy"] is None
    with pytest.raises(SolverError, match="not binary"):
        SolveResult.from_solution(p, np.array([1, 2, 0, 0]), backend="t", wall_time_s=0.0)


def test_brute_force_helper_agrees_with_exact_backend():
    from backends import get_backend

    p = random_problem(9, 4, seed=5)
    assert get_backend("exact").solve(p, seed=0).energy == pytest.approx(brute_force(p)[0])


def test_from_ising_keeps_a_diagonal_J_as_a_constant_on_every_state():
    rng = np.random.default_rng(4)
    h, J = rng.normal(size=4), rng.normal(size=(4, 4))  # full J, diagonal included
    p = Problem.from_ising(h, J, offset=0.25)
    for x in all_states(4):
        s = 2.0 * x - 1.0
        assert p.energy(x) == pytest.approx(h @ s + s @ J @ s + 0.25)
    with pytest.raises(InputError, match="h must have shape"):
        Problem.from_ising(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(InputError, match="penalty must be"):
        Problem(np.eye(2), k=1).to_qubo(penalty="x")
    with pytest.raises(InputError, match="0 or 1"):
        Problem(np.eye(2), k=1).to_qubo()[1](np.array([2, 0]))
    with pytest.raises(InputError, match="expected 2 variables"):
        Problem(np.eye(2)).energy(1)
