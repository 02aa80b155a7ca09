"""QAOA core and both SDK backends: Dicke states, SDK cross-checks, feasibility, training."""

import math

import numpy as np
import pytest

from backends.qaoa import (Angles, QAOAModel, circuit_plan, dicke_plan, index_to_bits,
                           mixer_edges, train_angles, weight_k_indices)
from backends.qaoa_model import GATE_NAMES
from backends.qaoa_training import _interp
from qcbo import InputError

from .helpers import brute_force, random_problem

qiskit = pytest.importorskip("qiskit")
braket = pytest.importorskip("braket.circuits")

from backends.qaoa_braket import BraketLocalQAOABackend, run_values, build_circuit  # noqa: E402
from backends.qaoa_braket import statevector as braket_state, to_little_endian  # noqa: E402
from backends.qaoa_qiskit import QiskitQAOABackend, statevector as qiskit_state  # noqa: E402


def _uniform(n, k):
    v = np.zeros(2**n)
    v[weight_k_indices(n, k)] = 1 / math.sqrt(math.comb(n, k))
    return v


@pytest.mark.parametrize("n", range(1, 7))
def test_dicke_circuit_is_uniform_over_weight_k_qiskit(n):
    for k in range(n + 1):
        assert np.allclose(qiskit_state(dicke_plan(n, k), n), _uniform(n, k), atol=1e-10)


@pytest.mark.parametrize("n,k", [(4, 2), (5, 3), (6, 1)])
def test_dicke_circuit_is_uniform_over_weight_k_braket(n, k):
    assert np.allclose(braket_state(dicke_plan(n, k), n), _uniform(n, k), atol=1e-10)


def test_weight_k_indices_and_bits():
    X = index_to_bits(weight_k_indices(5, 2), 5)
    assert len(X) == 10 and np.all(X.sum(axis=1) == 2)
    assert len({tuple(r) for r in X}) == 10


def test_mixer_edges():
    assert sorted(mixer_edges(5, "xy-ring")) == sorted([(0, 1), (1, 2), (2, 3), (3, 4), (4, 0)])
    assert sorted(mixer_edges(6, "xy-complete")) == [(i, j) for i in range(6) for j in range(i + 1, 6)]
    assert mixer_edges(2, "xy-ring") == [(0, 1)]


@pytest.mark.parametrize("mixer,n,k", [("xy-ring", 6, 3), ("xy-complete", 5, 2), ("x", 5, 2),
                                       ("x", 5, None), ("xy-ring", 11, 4)])
def test_sdks_and_numpy_agree_on_probabilities(mixer, n, k):
    problem = random_problem(n, k, seed=n + 7)
    model = QAOAModel(problem, mixer)
    angles = Angles((0.7 / model.scale, -0.4 / model.scale), (0.35, 1.1))
    gates = circuit_plan(model, angles)
    q = qiskit_state(gates, n)
    circ = build_circuit(gates, n)
    circ.probability()
    p_braket = to_little_endian(run_values(circ, n, "jaqcd").astype(float), n)
    p_numpy = np.zeros(2**n)
    p_numpy[model.basis] = model.probabilities(angles)
    assert np.max(np.abs(np.abs(q) ** 2 - p_braket)) < 1e-8
    assert np.max(np.abs(p_numpy - p_braket)) < 1e-8
    # the numpy state equals Qiskit's up to a global phase
    psi = np.zeros(2**n, dtype=complex)
    psi[model.basis] = model.state([g * model.scale for g in angles.gamma], angles.beta)
    assert abs(abs(np.vdot(psi, q)) - 1) < 1e-9
    if mixer != "x":
        outside = np.ones(2**n, dtype=bool)
        outside[weight_k_indices(n, k)] = False
        assert p_braket[outside].sum() < 1e-12


def test_one_translation_table_per_sdk_covers_every_gate():
    from backends import qaoa_braket, qaoa_qiskit

    assert set(qaoa_qiskit.GATES) == set(GATE_NAMES) == set(qaoa_braket.GATES)


def test_braket_openqasm_and_jaqcd_paths_agree():
    problem = random_problem(5, 2, seed=3)
    model = QAOAModel(problem, "xy-ring")
    gates = circuit_plan(model, Angles((0.2,), (0.5,)))
    a = np.abs(braket_state(gates, 5)) ** 2
    circ = build_circuit(gates, 5)
    circ.probability()
    b = to_little_endian(run_values(circ, 5, "jaqcd"), 5)
    assert np.max(np.abs(a - b)) < 1e-10


@pytest.mark.parametrize("cls", [QiskitQAOABackend, BraketLocalQAOABackend])
def test_xy_samples_all_feasible_and_info(cls):
    problem = random_problem(8, 3, seed=5)
    result = cls().solve(problem, seed=1, p=1, shots=500, polish=False)
    info = result.info
    assert info["feasible_fraction"] == 1.0
    assert np.all(result.samples.sum(axis=1) == 3)
    for key in ("p", "mixer", "angles", "optimizer_evaluations", "expectation",
                "best_sample_probability", "qubits", "circuit_depth", "two_qubit_gates"):
        assert key in info
    assert info["mixer"] == "xy-ring" and info["qubits"] == 8 and info["p"] == 1
    assert info["two_qubit_gates"] > 0 and info["circuit_depth"] > 0
    # trained QAOA beats the uniform average; the answer is the best feasible sample
    energies = problem.energies(brute_force(problem)[1])
    assert info["expectation"] < energies.mean()
    assert result.energy == pytest.approx(problem.energies(result.samples).min())
    assert info["source"] == "qaoa"


def test_same_seed_and_angles_give_same_answer_on_both_sdks():
    problem = random_problem(7, 3, seed=2)
    a = QiskitQAOABackend().solve(problem, seed=4, p=2, polish=False)
    b = BraketLocalQAOABackend().solve(problem, seed=4, p=2, polish=False)
    assert a.info["angles"] == b.info["angles"]
    assert np.array_equal(a.samples, b.samples)  # same probabilities, same rng draws


def test_x_mixer_on_penalty_qubo_reports_penalty():
    problem = random_problem(6, 3, seed=9)
    result = QiskitQAOABackend().solve(problem, seed=0, mixer="x", p=1)
    assert result.info["mixer"] == "x" and result.info["penalty"] > 0
    assert 0 < result.info["feasible_fraction"] < 1
    assert result.feasible


def test_given_angles_skip_training():
    problem = random_problem(6, 2, seed=1)
    angles = {"gamma": [0.1, 0.05], "beta": [0.4, 0.2]}
    result = QiskitQAOABackend().solve(problem, seed=0, angles=angles)
    assert result.info["optimizer_evaluations"] == 0
    assert result.info["angles"] == angles and result.info["p"] == 2


def test_initial_warm_start_is_kept_when_better():
    problem = random_problem(8, 4, seed=11)
    best, X = brute_force(problem)
    opt = X[np.argmin(problem.energies(X))]
    # zero angles: QAOA samples uniformly, no polish: the optimal initial wins (or ties)
    result = QiskitQAOABackend().solve(problem, seed=0, angles={"gamma": [0.0], "beta": [0.0]},
                                       shots=3, polish=False, initial=opt)
    assert result.energy == pytest.approx(best)
    with pytest.raises(InputError):
        QiskitQAOABackend().solve(problem, seed=0, initial=np.ones(8))


def test_bad_options_are_refused():
    backend = QiskitQAOABackend()
    with pytest.raises(InputError, match="needs"):
        backend.solve(random_problem(4, None, seed=0), seed=0, mixer="xy-ring")
    with pytest.raises(InputError, match="optimizer"):
        backend.solve(random_problem(4, 2, seed=0), seed=0, optimizer="adam")
    with pytest.raises(InputError, match="p must"):
        backend.solve(random_problem(4, 2, seed=0), seed=0, p=0)


def test_lbfgsb_and_complete_mixer_train():
    problem = random_problem(6, 3, seed=4)
    model = QAOAModel(problem, "xy-complete")
    t = train_angles(model, 2, rng=np.random.default_rng(0), optimizer="l-bfgs-b", restarts=1)
    assert t.complete and t.angles.p == 2
    assert t.expectation < model.energies.mean()


def test_interp_doubles_one_layer():
    assert np.allclose(_interp(np.array([0.4, 0.2])), [0.4, 0.4, 0.2, 0.2])
    out = _interp(np.array([1.0, 2.0, 3.0, 4.0]))
    assert np.allclose(out, [1.0, 1.5, 2.0, 3.0, 3.5, 4.0])


def test_refuses_too_many_qubits_naming_classical_backends():
    from qcbo import Problem, UnsupportedProblemError

    with pytest.raises(UnsupportedProblemError, match="classical backend"):
        QiskitQAOABackend().solve(Problem(np.eye(20), 0.0, 10), seed=0)
