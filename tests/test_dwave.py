"""dwave-tabu and dwave-sa: penalty QUBO in, honest answers out."""

import numpy as np
import pytest

pytest.importorskip("dwave.samplers")

from backends.dwave import (  # noqa: E402
    DWaveSimulatedAnnealingBackend,
    DWaveTabuBackend,
    default_beta_range,
    greedy_repair,
)
from qcbo import InputError, Problem  # noqa: E402

from .helpers import brute_force, random_problem  # noqa: E402

BACKENDS = [DWaveTabuBackend, DWaveSimulatedAnnealingBackend]


def all_ones_wins(n=6, k=2):
    """Every x_i wants to be 1, so without a penalty no sample has sum(x) == k."""
    return Problem(-np.eye(n) - 0.1 * (np.ones((n, n)) - np.eye(n)), 0.0, k)


@pytest.mark.parametrize("cls", BACKENDS)
def test_samples_are_mapped_back_and_rescored(cls):
    problem = random_problem(10, 4, seed=3)
    result = cls().solve(problem, seed=1)
    best, _ = brute_force(problem)
    assert result.feasible and result.status == "feasible"
    assert result.samples.shape[1] == 10
    assert np.allclose(result.sample_energies, problem.energies(result.samples))
    feasible = result.samples.sum(axis=1) == 4
    assert result.info["feasible_fraction"] == pytest.approx(feasible.mean())
    # The answer is the best feasible sample.
    assert result.energy == pytest.approx(result.sample_energies[feasible].min())
    assert result.energy >= best - 1e-9
    assert result.info["penalty"] == pytest.approx(problem.default_penalty())


@pytest.mark.parametrize("cls", BACKENDS)
def test_no_feasible_sample_is_an_honest_infeasible_answer(cls):
    problem = all_ones_wins()
    result = cls().solve(problem, seed=0, penalty=0.0)
    assert result.info["feasible_fraction"] == 0.0
    assert result.status == "infeasible" and not result.feasible
    assert result.x.sum() == 6
    assert result.info["repaired"] is False


@pytest.mark.parametrize("cls", BACKENDS)
def test_repair_moves_to_the_nearest_feasible_assignment_and_says_so(cls):
    problem = all_ones_wins()
    result = cls().solve(problem, seed=0, penalty=0.0, repair=True)
    assert result.feasible and result.status == "feasible"
    assert result.info["repaired"] is True
    assert "repair" in result.info["answer_from"]
    best, _ = brute_force(problem)
    assert result.energy == pytest.approx(best)


def test_greedy_repair_flips_exactly_the_excess():
    rng = np.random.default_rng(0)
    problem = random_problem(12, 5, seed=8)
    for _ in range(20):
        x = (rng.random(12) < rng.random()).astype(np.int8)
        y = greedy_repair(problem.Q, 5, x)
        assert y.sum() == 5
        assert np.abs(y.astype(int) - x).sum() == abs(int(x.sum()) - 5)


def test_beta_range_matches_the_samplers_own_rule():
    from dwave.samplers.sa.sampler import _default_ising_beta_range

    from backends.dwave import _bqm

    qubo, _ = random_problem(15, 6, seed=2).to_qubo()
    h, J, _ = _bqm(qubo).to_ising()
    assert np.allclose(default_beta_range(qubo), _default_ising_beta_range(h, J))


def test_sa_reads_until_the_time_limit():
    backend = DWaveSimulatedAnnealingBackend()
    backend.solve(random_problem(5, 2, seed=0), seed=0)
    result = backend.solve(random_problem(30, 15, seed=1), seed=0, time_limit=0.4)
    assert result.wall_time_s < 1.4
    assert result.info["num_reads"] > 2  # more than the two calibration reads


@pytest.mark.parametrize("cls", BACKENDS)
def test_bad_options_are_input_errors(cls):
    problem = random_problem(5, 2, seed=0)
    with pytest.raises(InputError, match="penalty"):
        cls().solve(problem, seed=0, penalty=-1.0)
    with pytest.raises(InputError, match="num_reads"):
        cls().solve(problem, seed=0, num_reads=0)


def test_tabu_starts_from_the_initial_state():
    problem = random_problem(12, 6, seed=4)
    x0 = np.zeros(12, dtype=np.int8)
    x0[::2] = 1
    result = DWaveTabuBackend().solve(problem, seed=0, initial=x0, num_reads=1)
    assert result.energy <= problem.energy(x0)
    with pytest.raises(InputError, match="initial"):
        DWaveTabuBackend().solve(problem, seed=0, initial=np.ones(12))
