"""qaoa-subspace: ranking, probabilities equal to the SDK circuit's, sub-blocks, attribution."""

import math

import numpy as np
import pytest

from backends import _qaoa_kernels as kernels
from backends.qaoa import SOURCES, Angles, QAOAModel, circuit_plan
from backends.qaoa_subspace import MAX_QUBITS, SubspaceQAOABackend
from qcbo import InputError, Problem, UnsupportedProblemError

from .helpers import brute_force, random_problem


@pytest.mark.parametrize("n", [1, 2, 7, 10])
def test_masks_are_sorted_weight_k_states_and_ranks_are_positions(n):
    every = np.arange(2**n)
    weight = np.array([bin(v).count("1") for v in every])
    for k in range(n + 1):
        masks = kernels.weight_k_masks(n, k)
        assert np.array_equal(masks, every[weight == k])
        for h in {0, n // 2, n}:
            tables = kernels.rank_tables(n, h)
            assert np.array_equal(kernels.ranks(masks, *tables, h), np.arange(len(masks)))


def _cases():
    for n in range(2, 13):
        for k in sorted({1, n // 2, n - 1}):
            for mixer in ("xy-ring", "xy-complete"):
                yield n, k, mixer


@pytest.mark.parametrize("p", [2, 3])
def test_probabilities_equal_qiskit_on_every_n_up_to_12(p):
    """The subspace simulator runs the very circuit qaoa-qiskit builds (gate order included)."""
    pytest.importorskip("qiskit")
    from backends.qaoa_qiskit import statevector

    rng = np.random.default_rng(p)
    for n, k, mixer in _cases():
        problem = random_problem(n, k, seed=31 * n + k)
        model = QAOAModel(problem, mixer)
        angles = Angles(tuple(rng.uniform(-1, 1, p) / model.scale), tuple(rng.uniform(-1.5, 1.5, p)))
        sdk = np.abs(statevector(circuit_plan(model, angles), n)) ** 2
        ours = np.zeros(2**n)
        ours[model.basis] = model.probabilities(angles)
        assert np.max(np.abs(ours - sdk)) < 1e-9, (n, k, mixer)


def test_x_mixer_equals_qiskit_on_the_full_space():
    pytest.importorskip("qiskit")
    from backends.qaoa_qiskit import statevector

    problem = random_problem(7, None, seed=2)
    model = QAOAModel(problem, "x")
    angles = Angles((0.3 / model.scale, 0.8 / model.scale), (0.4, -0.9))
    sdk = np.abs(statevector(circuit_plan(model, angles), 7)) ** 2
    assert np.max(np.abs(model.probabilities(angles) - sdk)) < 1e-9


def test_energies_match_the_problem():
    problem = random_problem(9, 4, seed=3, offset=0.5)
    model = QAOAModel(problem, "xy-ring")
    assert np.allclose(model.energies, problem.energies(model.bits), atol=1e-12)


def test_solve_info_samples_and_source():
    problem = random_problem(10, 4, seed=5)
    backend = SubspaceQAOABackend()
    result = backend.solve(problem, seed=1, p=2, shots=300, polish=False)
    info = result.info
    assert np.all(result.samples.sum(axis=1) == 4) and info["feasible_fraction"] == 1.0
    assert info["amplitudes"] == math.comb(10, 4) and info["sdk"] == "subspace"
    assert info["two_qubit_gates"] > 0 and info["circuit_depth"] > 0
    assert info["source"] == "qaoa"
    assert result.energy == pytest.approx(problem.energies(result.samples).min())
    again = backend.solve(problem, seed=1, p=2, shots=300, polish=False)
    assert np.array_equal(again.samples, result.samples)


def test_source_says_initial_polish_or_qaoa():
    problem = random_problem(8, 4, seed=11)
    best, states = brute_force(problem)
    optimum = states[np.argmin(problem.energies(states))]
    flat = {"gamma": [0.0], "beta": [0.0]}  # uniform sampling
    backend = SubspaceQAOABackend()
    kept = backend.solve(problem, seed=0, angles=flat, shots=1, polish=False, initial=optimum)
    assert kept.info["source"] == "initial" and kept.energy == pytest.approx(best)
    polished = backend.solve(problem, seed=0, angles=flat, shots=1, polish=True)
    sample_energy = problem.energy(polished.samples[0])
    if polished.energy < sample_energy - 1e-12:
        assert polished.info["source"] == "polish"
    else:
        assert polished.info["source"] == "qaoa"


def test_too_large_refused_in_one_line_naming_sub_block():
    big = Problem(np.eye(MAX_QUBITS + 1), 0.0, 5)
    with pytest.raises(UnsupportedProblemError, match="sub_block") as err:
        SubspaceQAOABackend().solve(big, seed=0)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="sub_block must be in 2..26"):
        SubspaceQAOABackend().solve(big, seed=0, sub_block=30)


@pytest.mark.parametrize("polish", [True, False])
def test_sub_blocks_improve_a_large_block_and_count_sources(polish):
    problem = random_problem(60, 30, seed=8)
    x0 = np.zeros(60, dtype=np.int8)
    x0[::2] = 1
    result = SubspaceQAOABackend().solve(problem, seed=3, initial=x0, sub_block=10,
                                         sub_rounds=3, p=1, shots=200, polish=polish)
    info = result.info
    sub = info["sub_blocks"]
    assert result.feasible and result.energy <= problem.energy(x0) + 1e-9
    assert sub["rounds"] == 3 and len(sub["round_sources"]) == 3
    assert set(sub["round_sources"]) <= set(SOURCES)
    assert sum(sub["kept_sources"].values()) == sub["improved_rounds"]
    assert info["source"] in SOURCES
    if not polish:
        # no classical descent anywhere: every change is a kept QAOA sample
        assert set(sub["round_sources"]) <= {"qaoa", "initial"}
        changed = not np.array_equal(result.x, x0)
        assert info["source"] == ("qaoa" if changed else "initial")
    assert SubspaceQAOABackend.block_size_for({"sub_block": 10}) == 1024
    assert SubspaceQAOABackend.block_size_for({}) == SubspaceQAOABackend.block_size_hint


def test_sub_blocks_without_warm_start_use_a_classical_start():
    problem = random_problem(40, 12, seed=2)
    result = SubspaceQAOABackend().solve(problem, seed=0, sub_block=8, sub_rounds=2, p=1,
                                         shots=100, sub_train="every")
    assert result.feasible and result.info["sub_blocks"]["start"] == "sa"
    assert result.info["sub_blocks"]["angles_reused"] is False


# ------------------------------------------------------------------ adjoint gradient
@pytest.mark.parametrize("mixer", ["xy-ring", "xy-complete"])
@pytest.mark.parametrize("n", [6, 7, 10])
def test_adjoint_gradient_equals_central_differences(n, mixer):
    rng = np.random.default_rng(n)
    model = QAOAModel(random_problem(n, n // 2 - (n == 7), seed=n), mixer)
    for p in (1, 2, 3):
        x = rng.uniform(-1.5, 1.5, 2 * p)
        value, grad = model.expectation_and_gradient_n(x)
        assert value == pytest.approx(model.expectation_n(x), abs=1e-12)
        step = 1e-5
        fd = np.array([(model.expectation_n(x + step * e) - model.expectation_n(x - step * e))
                       / (2 * step) for e in np.eye(2 * p)])
        assert np.max(np.abs(grad - fd)) < 1e-7, (n, mixer, p)


def test_adjoint_gradient_x_mixer():
    model = QAOAModel(random_problem(7, 3, seed=4), "x")
    x = np.array([0.4, -0.3, 0.8, 0.2])
    value, grad = model.expectation_and_gradient_n(x)
    fd = np.array([(model.expectation_n(x + 1e-5 * e) - model.expectation_n(x - 1e-5 * e)) / 2e-5
                   for e in np.eye(4)])
    assert value == pytest.approx(model.expectation_n(x), abs=1e-12)
    assert np.max(np.abs(grad - fd)) < 1e-7


@pytest.mark.parametrize("mixer", ["xy-ring", "xy-complete"])
def test_schedule_keeps_every_gate_once_and_shared_qubits_in_order(mixer):
    from backends.qaoa_model import mixer_edges

    for n in (5, 8, 13, 24):
        edges = [tuple(sorted(e)) for e in mixer_edges(n, mixer)]
        h = n // 2
        ops, low = kernels.schedule(edges, h)
        flat = []
        for kind, a, b, c, d in ops:
            flat += low[a:b] if kind == 0 else [(a, b)] + ([(c, d)] if kind == 3 else [])
            if kind == 3:
                assert not {a, b} & {c, d}
        assert sorted(flat) == sorted(edges)
        position = {e: t for t, e in enumerate(flat)}
        for s, e in enumerate(edges):
            for f in edges[s + 1:]:
                if set(e) & set(f):
                    assert position[e] < position[f], (n, e, f)


def test_threads_do_not_change_results(monkeypatch):
    """Sums run per block / fixed chunk: same numbers on one thread or all."""
    import numba

    model = QAOAModel(random_problem(10, 5, seed=9), "xy-ring")
    x = np.array([0.3, -0.6, 0.9, 0.5, -0.4, 1.1])
    one = numba.get_num_threads()
    monkeypatch.setattr(kernels, "PARALLEL_MIN", 1 << 40)
    serial = model.expectation_and_gradient_n(x), model.state(x[:3], x[3:])
    monkeypatch.setattr(kernels, "PARALLEL_MIN", 0)
    parallel = model.expectation_and_gradient_n(x), model.state(x[:3], x[3:])
    assert numba.get_num_threads() == one
    assert serial[0][0] == parallel[0][0] and np.array_equal(serial[0][1], parallel[0][1])
    assert np.array_equal(serial[1], parallel[1])


def test_gradient_training_at_least_as_good_as_cobyla():
    from backends.qaoa import train_angles

    for seed in range(3):
        model = QAOAModel(random_problem(10, 5, seed=40 + seed), "xy-ring")
        runs = {opt: train_angles(model, 3, rng=np.random.default_rng(seed), optimizer=opt)
                for opt in ("cobyla", "l-bfgs-b")}
        assert runs["l-bfgs-b"].complete
        assert runs["l-bfgs-b"].expectation <= runs["cobyla"].expectation + 1e-6
        assert runs["l-bfgs-b"].evaluations < runs["cobyla"].evaluations / 2


def test_subspace_trains_with_the_gradient_by_default():
    problem = random_problem(8, 4, seed=6)
    backend = SubspaceQAOABackend()
    assert backend.options["optimizer"].default == "l-bfgs-b"
    result = backend.solve(problem, seed=0, p=2, shots=100)
    assert result.info["optimizer"] == "l-bfgs-b" and result.info["training_complete"]
    slow = backend.solve(problem, seed=0, p=2, shots=100, optimizer="cobyla")
    assert slow.info["optimizer"] == "cobyla"
    assert result.info["expectation"] <= slow.info["expectation"] + 1e-6


def test_blocks_too_big_for_the_time_limit_are_answered_classically(monkeypatch):
    """C(24, 12) = 2.7 M amplitudes cannot be simulated in 0.5 s: a polished classical
    answer comes back in time, saying why; a model whose build eats the training share
    of the limit ends the same way."""
    import time

    from backends.qaoa import QAOABackend
    from backends.qaoa_subspace import SubspaceQAOABackend

    backend = SubspaceQAOABackend()
    problem = random_problem(24, 12, seed=1)
    start = time.perf_counter()
    result = backend.solve(problem, seed=0, time_limit=0.5)
    assert time.perf_counter() - start < 1.5
    assert result.feasible and result.info["source"] == "fallback"
    assert "too short to simulate 2704156 amplitudes" in result.info["stopped"]
    assert result.energy <= problem.energy(problem.feasible_point()) + 1e-9
    monkeypatch.setattr(QAOABackend, "SECONDS_PER_AMPLITUDE", 0.0)
    small = random_problem(18, 9, seed=2)
    result = backend.solve(small, seed=0, time_limit=1e-4)
    assert result.feasible and "building the model" in result.info["stopped"]


def test_p_and_angles_of_another_depth_conflict():
    backend = SubspaceQAOABackend()
    problem = random_problem(6, 3, seed=0)
    one_layer = {"gamma": [0.1], "beta": [0.2]}
    assert backend.solve(problem, seed=0, angles=one_layer).info["p"] == 1
    assert backend.solve(problem, seed=0).info["p"] == 2
    with pytest.raises(InputError, match="p=3 but the angles have 1 layer"):
        backend.solve(problem, seed=0, p=3, angles=one_layer)
