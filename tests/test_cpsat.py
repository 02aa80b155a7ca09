"""cpsat: the product-literal model, its cuts, the integer scaling and the hint."""

import itertools

import numpy as np
import pytest

pytest.importorskip("ortools")

from backends.cpsat import CpSatBackend, swap_descent  # noqa: E402
from qcbo import InputError, Problem, UnsupportedProblemError  # noqa: E402

from .helpers import brute_force, random_problem  # noqa: E402


def sparse_problem(n, k, seed, density=0.4):
    rng = np.random.default_rng(seed)
    a = np.triu(rng.normal(size=(n, n)) * (rng.random((n, n)) < density), 1)
    a += np.diag(rng.normal(size=n))
    return Problem(a + np.triu(a, 1).T, 0.5, k)


@pytest.mark.parametrize("cut,triangles", [(True, True), (True, False), (False, False)])
@pytest.mark.parametrize("n,k,sparse", [(9, 4, False), (10, 3, True), (9, None, True),
                                        (8, None, False), (10, 1, True)])
def test_every_formulation_proves_the_enumerated_optimum(n, k, sparse, cut, triangles):
    problem = sparse_problem(n, k, seed=n) if sparse else random_problem(n, k, seed=n)
    best, _ = brute_force(problem)
    result = CpSatBackend().solve(problem, seed=0, cut=cut, triangles=triangles)
    assert result.status == "optimal"
    assert result.energy == pytest.approx(best, abs=1e-9)
    info = result.info
    assert info["best_bound"] <= result.energy + 1e-12
    assert info["relative_gap"] < 1e-6
    assert abs(info["scaling_error"]) <= info["energy_error_bound"] + 1e-12


def test_coarse_scaling_error_bound_holds_for_every_feasible_assignment():
    problem = random_problem(8, 4, seed=5)
    result = CpSatBackend().solve(problem, seed=0, precision_bits=3)
    bound = result.info["energy_error_bound"]
    scale = result.info["scale"]
    q = problem.Q
    iu, ju = np.triu_indices(8, 1)
    c_diag = np.rint(np.diag(q) * scale)
    c_pair = np.rint(2 * q[iu, ju] * scale)
    worst = 0.0
    for ones in itertools.combinations(range(8), 4):
        x = np.zeros(8)
        x[list(ones)] = 1
        scaled = (c_diag @ x + c_pair @ (x[iu] * x[ju])) / scale + problem.offset
        worst = max(worst, abs(problem.energy(x) - scaled))
    assert worst <= bound + 1e-12
    best, _ = brute_force(problem)
    # The scaled model's optimum is within twice the bound of the true one.
    assert best <= result.energy <= best + 2 * bound + 1e-12


def test_initial_hint_is_validated_and_never_beaten_by_the_answer():
    problem = random_problem(12, 5, seed=2)
    with pytest.raises(InputError, match="initial"):
        CpSatBackend().solve(problem, seed=0, initial=np.ones(12))
    x0 = np.zeros(12, dtype=np.int8)
    x0[:5] = 1
    result = CpSatBackend().solve(problem, seed=0, initial=x0)
    assert result.info["initial_given"] is True
    assert result.energy <= problem.energy(x0)
    assert result.status == "optimal"


@pytest.mark.parametrize("k", [None, 6])
def test_swap_descent_ends_in_a_local_optimum(k):
    problem = random_problem(14, k, seed=4)
    x0 = problem.feasible_point()
    x = swap_descent(problem.Q, k, x0, float("inf"))
    assert problem.is_feasible(x)
    e = problem.energy(x)
    assert e <= problem.energy(x0)
    if k is None:
        moves = [np.flatnonzero(np.arange(14) == i) for i in range(14)]
    else:
        moves = [np.array([i, j]) for i in np.flatnonzero(x) for j in np.flatnonzero(x == 0)]
    for flip in moves:
        y = x.copy()
        y[flip] = 1 - y[flip]
        assert problem.energy(y) >= e - 1e-9


def test_time_limit_returns_a_feasible_answer_with_bound_and_gap():
    problem = random_problem(60, 30, seed=1)
    backend = CpSatBackend()
    backend.solve(random_problem(5, 2, seed=0), seed=0)  # import outside the timing
    result = backend.solve(problem, seed=0, time_limit=0.5)
    assert result.feasible and result.status == "feasible"
    assert result.wall_time_s < 2.0
    if "stopped" not in result.info:
        assert result.info["best_bound"] <= result.energy
        assert result.info["relative_gap"] > 0


def test_too_many_products_is_refused_with_the_reason():
    problem = random_problem(30, 15, seed=0)
    with pytest.raises(UnsupportedProblemError, match="cpsat.*max_products"):
        CpSatBackend().solve(problem, seed=0, max_products=100)


def test_bad_options_are_input_errors():
    problem = random_problem(5, 2, seed=0)
    with pytest.raises(InputError, match="precision_bits"):
        CpSatBackend().solve(problem, seed=0, precision_bits=0)
    with pytest.raises(InputError, match="workers"):
        CpSatBackend().solve(problem, seed=0, workers=0)


def test_optimal_only_when_rounding_cannot_hide_a_better_answer():
    """One coefficient of 1e9 beside ones of 1: 30 bits round the small ones to integers,
    so the scaled model's optima include states 0.96 above the true optimum (seed 0, draw
    49; which optimum CP-SAT returns depends on its workers' timing)."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = rng.normal(size=(8, 8))
        q = (a + a.T) / 2
        q[0, 0] = 1e9 * rng.choice([-1, 1])
    problem = Problem(q, k=3)
    best, _ = brute_force(problem)
    result = CpSatBackend().solve(problem, seed=0)
    assert result.status == "feasible" and "narrow the range" in result.info["not_proven"]
    assert result.info["precision_retry"]["from_bits"] == 30  # retried at 40 bits, still open
    assert result.info["best_bound"] <= best <= result.energy
    assert result.energy - result.info["best_bound"] > 1e-3  # 40 bits: about 0.0015
    # The same Q without the outlier: the rounding is fine and the proof holds.
    q[0, 0] = 1.0
    fine = Problem(q, k=3)
    result = CpSatBackend().solve(fine, seed=0)
    assert result.status == "optimal"
    assert result.energy == pytest.approx(brute_force(fine)[0], abs=1e-9)


def test_a_gap_left_by_the_rounding_is_closed_at_full_precision():
    """Coefficients up to 1e3 and an optimum of 0: 30 bits leave a rounding gap above
    the tolerance, the retry at 40 bits proves the optimum."""
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1000, size=(20, 20))
    result = CpSatBackend().solve(Problem((a + a.T) / 2), seed=0)
    assert result.status == "optimal" and result.energy == 0.0
    assert result.info["precision_retry"]["from_bits"] == 30
