"""The block QCBO equals the Taylor model on every feasible x (enumerated)."""

import itertools

import numpy as np
import pytest

from pruning.block import block_problem, block_qcbo, taylor_change


def _random_block(n: int, seed: int):
    rng = np.random.default_rng(seed)
    w0 = rng.normal(size=n)
    a = rng.normal(size=(n, n))
    H = a @ a.T / n + 0.1 * np.eye(n)
    g = rng.normal(size=n)
    x_current = np.zeros(n, dtype=np.int8)
    x_current[rng.choice(n, size=rng.integers(1, n), replace=False)] = 1
    return w0, x_current, g, H


def _feasible(n: int, k: int) -> np.ndarray:
    return np.array([x for x in itertools.product([0, 1], repeat=n) if sum(x) == k],
                    dtype=np.int8)


@pytest.mark.parametrize("n,seed", [(2, 0), (4, 1), (6, 2), (8, 3)])
@pytest.mark.parametrize("rescale", [False, True])
def test_energy_equals_taylor_model_on_every_feasible_x(n, seed, rescale):
    gamma, lam = 0.75, 1e-3
    w0, x_current, g, H = _random_block(n, seed)
    problem = block_problem(w0, x_current, g, H, gamma=gamma, lam=lam, rescale=rescale)
    assert problem.k == int(x_current.sum())
    scale = problem.metadata["scale"]
    if not rescale:
        assert scale == 1.0
    w_current = w0 * (1 - x_current)
    for x in _feasible(n, problem.k):
        delta = w0 * (1 - x) - w_current
        expected = taylor_change(delta, g, H, gamma=gamma, lam=lam)
        assert problem.energy(x) * scale == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_current_mask_has_zero_energy_and_rescale_gives_unit_mean():
    w0, x_current, g, H = _random_block(10, 7)
    problem = block_problem(w0, x_current, g, H, gamma=0.75, lam=1e-3)
    assert abs(problem.energy(x_current)) < 1e-9
    q = problem.Q
    assert np.abs(q[q != 0]).mean() == pytest.approx(1.0)


def test_qcbo_matches_formula_terms_with_asymmetric_input_hessian():
    # A non-symmetric H is symmetrised first: the quadratic form only sees (H + H^T) / 2.
    rng = np.random.default_rng(3)
    n = 5
    w0, x_current, g, _ = _random_block(n, 3)
    H = rng.normal(size=(n, n))
    Q, const = block_qcbo(w0, x_current, g, H, gamma=0.5, lam=0.01)
    assert np.allclose(Q, Q.T)
    for x in _feasible(n, int(x_current.sum())):
        delta = -(-(x_current * w0) + x * w0)
        assert x @ Q @ x + const == pytest.approx(
            taylor_change(delta, g, (H + H.T) / 2, gamma=0.5, lam=0.01), rel=1e-9, abs=1e-12)


def test_metadata_is_kept():
    w0, x_current, g, H = _random_block(4, 0)
    problem = block_problem(w0, x_current, g, H, gamma=0.75, lam=1e-3,
                            metadata={"layer": "0.weight", "indices": [1, 2, 3, 9]})
    meta = problem.metadata
    assert meta["layer"] == "0.weight" and meta["indices"] == [1, 2, 3, 9]
    assert meta["gamma"] == 0.75 and meta["lambda"] == 1e-3
