"""The native `sa` and `tabu` backends and their compiled kernels.

The kernels' bookkeeping (flip deltas, swap deltas, incremental updates) is checked
against energies recomputed from scratch; the backends against exhaustive enumeration.
"""

import numpy as np
import pytest

pytest.importorskip("numba")

from backends import _kernels as K  # noqa: E402
from backends import get_backend  # noqa: E402
from backends.tabu import default_settings  # noqa: E402
from qcbo import InputError, Problem  # noqa: E402

from .helpers import all_states, brute_force, random_problem  # noqa: E402

NAMES = ["sa", "tabu"]


def _state(problem, x):
    n = problem.n
    q = K.as_matrix(problem.Q)
    x = np.array(x, dtype=np.int8)
    sgn, d = np.empty(n), np.empty(n)
    members, pos = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    K.flip_deltas(q, x, sgn, d)
    k = K.order_members(x, members, pos)
    return q, x, sgn, d, members, pos, k


def _energy0(problem, x):
    return problem.energy(x) - problem.offset


# ---------------------------------------------------------------- kernels
def test_flip_deltas_and_energy_match_recomputation():
    problem = random_problem(7, None, seed=3, offset=1.5)
    for x in all_states(7)[::5]:
        q, x, sgn, d, *_ = _state(problem, x)
        assert K.energy(q, x) == pytest.approx(_energy0(problem, x), abs=1e-12)
        for m in range(7):
            y = x.copy()
            y[m] ^= 1
            assert d[m] == pytest.approx(problem.energy(y) - problem.energy(x), abs=1e-12)
        assert np.array_equal(sgn, 1.0 - 2.0 * x)


def test_incremental_swaps_and_flips_stay_exact():
    problem = random_problem(12, 5, seed=4)
    rng = np.random.default_rng(0)
    q, x, sgn, d, members, pos, k = _state(problem, K.random_state(12, 5, 1))
    e = K.energy(q, x)
    for _ in range(50):
        a, b = int(rng.integers(0, k)), int(rng.integers(k, 12))
        i, j = members[a], members[b]
        delta = d[i] + d[j] - 2.0 * q[i, j]
        K.apply_swap(q, x, sgn, d, members, pos, a, b)
        e += delta
        assert x.sum() == 5 and x[i] == 0 and x[j] == 1
        assert e == pytest.approx(_energy0(problem, x), abs=1e-9)
        ref = _state(problem, x)
        assert np.allclose(d, ref[3], atol=1e-9)
        assert np.array_equal(np.sort(members[:k]), np.flatnonzero(x))
        assert np.array_equal(members[pos], np.arange(12))
    for m in rng.integers(0, 12, size=30):
        e += d[m]
        K.apply_flip(q, x, sgn, d, int(m))
        assert e == pytest.approx(_energy0(problem, x), abs=1e-9)
        assert np.allclose(d, _state(problem, x)[3], atol=1e-9)


def test_descent_reaches_a_local_minimum_of_swaps():
    problem = random_problem(14, 6, seed=5)
    q, x, sgn, d, members, pos, k = _state(problem, K.random_state(14, 6, 2))
    e = K.descend_swaps(q, x, sgn, d, members, pos, k, q.max(axis=1), K.energy(q, x), 1e-12)
    assert x.sum() == 6
    assert e == pytest.approx(_energy0(problem, x), abs=1e-9)
    base = problem.energy(x)
    for i in np.flatnonzero(x):
        for j in np.flatnonzero(x == 0):
            y = x.copy()
            y[i], y[j] = 0, 1
            assert problem.energy(y) >= base - 1e-9


def test_run_in_chunks_covers_all_units_in_order():
    spans = []
    done = K.run_in_chunks(lambda lo, hi: spans.append((lo, hi)), 1000, float("inf"))
    assert done == 1000 and spans == [(0, 1000)]
    spans.clear()
    import time
    done = K.run_in_chunks(lambda lo, hi: spans.append((lo, hi)), 300, time.perf_counter() + 60)
    assert done == 300 and spans[0][0] == 0 and spans[-1][1] == 300
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


# ---------------------------------------------------------------- backends
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n,k", [(12, 6), (13, 4), (12, None), (10, 1), (10, 9)])
def test_finds_enumerated_optimum(name, n, k):
    backend = get_backend(name)
    for seed in range(3):
        problem = random_problem(n, k, seed=1000 + 10 * n + seed, offset=-0.5)
        best, _ = brute_force(problem)
        result = backend.solve(problem, seed=seed)
        assert result.feasible
        assert result.energy == pytest.approx(best, abs=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_every_restart_keeps_the_cardinality(name):
    problem = random_problem(60, 17, seed=6)
    result = get_backend(name).solve(problem, seed=1, restarts=3)
    assert result.samples.shape == (3, 60)
    assert np.all(result.samples.sum(axis=1) == 17)
    assert result.energy == pytest.approx(result.sample_energies.min())
    assert result.info["restarts_done"] == 3
    assert result.info["move"] == "swap"
    assert result.info["restart_energies"] == pytest.approx(list(result.sample_energies))


@pytest.mark.parametrize("name", NAMES)
def test_chunked_run_equals_single_run(name):
    """Cutting the work into timed chunks must not change the search."""
    problem = random_problem(40, 20, seed=7)
    backend = get_backend(name)
    a = backend.solve(problem, seed=3)
    b = backend.solve(problem, seed=3, time_limit=600.0)
    assert np.array_equal(a.x, b.x)
    assert a.info["restart_energies"] == b.info["restart_energies"]


@pytest.mark.parametrize("name", NAMES)
def test_time_limit_stops_the_search_early(name):
    problem = random_problem(200, 100, seed=8)
    big = {"sweeps": 10**6} if name == "sa" else {"iterations": 10**8}
    result = get_backend(name).solve(problem, seed=0, time_limit=0.05, **big)
    assert result.feasible
    assert result.info["stopped_by_time_limit"]
    assert result.info["restarts_done"] == 1


@pytest.mark.parametrize("name", NAMES)
def test_warm_start_is_never_worsened(name):
    problem = random_problem(30, 10, seed=9)
    exact_like = get_backend("tabu").solve(problem, seed=0, restarts=3)
    # A tiny budget from the (near-)optimal start cannot return anything worse.
    small = {"sweeps": 1, "restarts": 1} if name == "sa" else {"iterations": 1}
    result = get_backend(name).solve(problem, seed=0, initial=exact_like.x, **small)
    assert result.energy <= exact_like.energy + 1e-12
    assert result.info["initial_energy"] == pytest.approx(exact_like.energy)
    # And from a poor start the search improves on it.
    poor = problem.feasible_point()
    order = np.argsort(np.diag(problem.Q))[::-1][:10]
    poor[:] = 0
    poor[order] = 1
    improved = get_backend(name).solve(problem, seed=0, initial=poor)
    assert improved.energy < problem.energy(poor)
    assert not improved.info["initial_kept"]


def test_sa_reheats_a_good_warm_start():
    """The odd restarts re-anneal the best state, the warm start included."""
    problem = random_problem(60, 30, seed=14)
    good = get_backend("tabu").solve(problem, seed=0, restarts=2)
    # One fresh sweep from a hot start is poor; the re-anneal (near zero temperature)
    # starts from the warm start, so it ends at least as low.
    result = get_backend("sa").solve(problem, seed=0, initial=good.x, sweeps=1, restarts=2,
                                     reheat=1e-3, cold=1e-3, hot=5.0)
    first, second = result.info["restart_energies"]
    assert first > good.energy
    assert second <= good.energy + 1e-9


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [np.ones(5), np.full(30, 2), np.r_[np.ones(11), np.zeros(19)]])
def test_bad_warm_start_is_refused(name, bad):
    problem = random_problem(30, 10, seed=9)
    with pytest.raises(InputError, match=f"{name}: option initial"):
        get_backend(name).solve(problem, seed=0, initial=bad)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("k", [0, 9])
def test_trivial_cardinalities(name, k):
    problem = random_problem(9, k, seed=10)
    result = get_backend(name).solve(problem, seed=0)
    assert result.feasible and int(result.x.sum()) == k


@pytest.mark.parametrize("name,options", [
    ("sa", {"sweeps": 0}), ("sa", {"restarts": 0}), ("sa", {"hot": 0.1, "cold": 0.2}),
    ("sa", {"cold": 0.0}),
    ("tabu", {"iterations": 0}), ("tabu", {"tenure": -1}), ("tabu", {"restarts": 1.5}),
])
def test_bad_options_are_refused(name, options):
    with pytest.raises(InputError, match=name):
        get_backend(name).solve(random_problem(6, 3, seed=0), seed=0, **options)


def test_sa_temperatures_follow_the_problem_scale():
    problem = random_problem(50, 25, seed=11)
    scaled = Problem(problem.Q * 1000.0, 0.0, 25)
    a = get_backend("sa").solve(problem, seed=0, sweeps=50, restarts=1)
    b = get_backend("sa").solve(scaled, seed=0, sweeps=50, restarts=1)
    assert b.info["t_hot"] == pytest.approx(1000.0 * a.info["t_hot"], rel=1e-9)
    assert b.info["t_cold"] == pytest.approx(1000.0 * a.info["t_cold"], rel=1e-9)
    assert a.info["t_hot"] > a.info["t_cold"] > 0
    assert np.array_equal(a.x, b.x)  # same moves, same seeds: scale-free search


def test_sa_alternates_fresh_restarts_and_reheats():
    problem = random_problem(120, 60, seed=13)
    sa = get_backend("sa")
    short = {"sweeps": 5, "restarts": 4, "cold": 0.01}
    chained = sa.solve(problem, seed=0, reheat=0.01, **short)
    assert chained.info["t_reheat"] == pytest.approx(0.01 * chained.info["move_scale"])
    independent = sa.solve(problem, seed=0, reheat=None, **short)
    assert independent.info["t_reheat"] is None
    a, b = chained.info["restart_energies"], independent.info["restart_energies"]
    # Same seeds: the fresh (even) restarts are identical ...
    assert a[0] == b[0] and a[2] == b[2]
    # ... the odd ones re-anneal the best state so far, here at a near-zero temperature.
    assert a[1] <= a[0] + 1e-9 and a[3] <= min(a[:3]) + 1e-9
    assert a[1] != b[1]
    with pytest.raises(InputError, match="reheat"):
        sa.solve(problem, seed=0, reheat=0.001)


def test_tabu_unconstrained_uses_flips_and_defaults_scale_with_n():
    problem = random_problem(40, None, seed=12)
    result = get_backend("tabu").solve(problem, seed=0)
    assert result.info["move"] == "flip"
    small, large = default_settings(20, 10), default_settings(1024, 512)
    assert small["tenure"] < large["tenure"] < 512 // 4 + 1
    assert small["iterations"] < large["iterations"]


def test_best_swap_is_the_brute_force_best_admissible_swap():
    """The tabu kernel's pruned pair scan against every swap, with tabu and aspiration."""
    rng = np.random.default_rng(0)
    it = 5
    for _ in range(40):
        n = int(rng.integers(4, 24))
        k = int(rng.integers(1, n))
        A = rng.normal(size=(n, n))
        Q = (A + A.T) / 2
        x = np.zeros(n, dtype=np.int8)
        x[rng.choice(n, k, replace=False)] = 1
        sgn, d = np.empty(n), np.empty(n)
        K.flip_deltas(Q, x, sgn, d)
        members, pos = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
        assert K.order_members(x, members, pos) == k
        tabu_until = np.where(rng.random(n) < 0.4, it + 3, 0).astype(np.int64)
        e = float(x @ Q @ x)
        aspiration = e - abs(float(rng.normal()))
        a, b, delta = K._best_swap(Q, d, members, k, Q.max(axis=1), tabu_until, it, e,
                                   aspiration, True)
        best = np.inf
        for i in np.flatnonzero(x == 1):
            for j in np.flatnonzero(x == 0):
                y = x.copy()
                y[i], y[j] = 0, 1
                change = float(y @ Q @ y) - e
                free = tabu_until[i] <= it and tabu_until[j] <= it
                if (free or e + change < aspiration) and change < best:
                    best = change
        if best == np.inf:
            assert a == -1
            continue
        assert 0 <= a < k <= b < n
        y = x.copy()
        y[members[a]], y[members[b]] = 0, 1
        assert delta == pytest.approx(best, abs=1e-9)
        assert float(y @ Q @ y) - e == pytest.approx(best, abs=1e-9)


def test_annealing_kernels_keep_their_bookkeeping_and_cold_sweeps_only_descend():
    """anneal_flips / anneal_swaps on their own (no final descent to hide a fault): the
    returned energy is x's, a cold schedule never goes uphill and ends at a local minimum
    of its moves, a cool one accepts few moves, a hot one almost every move."""
    rng = np.random.default_rng(1)
    K.seed_rng(1)
    n, k = 40, 15
    A = rng.normal(size=(n, n))
    Q = (A + A.T) / 2
    sgn, d = np.empty(n), np.empty(n)
    for kind in ("flips", "swaps"):
        for temp, sweeps in ((1e-9, 60), (0.1, 60), (1e9, 5)):
            x = np.zeros(n, dtype=np.int8)
            x[rng.choice(n, k, replace=False)] = 1
            K.flip_deltas(Q, x, sgn, d)
            e0 = float(x @ Q @ x)
            temps = np.full(sweeps, temp)
            if kind == "flips":
                e, accepted = K.anneal_flips(Q, x, sgn, d, temps, e0)
                moves = n * sweeps
            else:
                members, pos = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
                K.order_members(x, members, pos)
                e, accepted = K.anneal_swaps(Q, x, sgn, d, members, pos, k, Q.max(axis=1),
                                             temps, 200, e0)
                moves = 200 * sweeps
                assert x.sum() == k
            assert e == pytest.approx(float(x @ Q @ x), abs=1e-9)
            if temp == 0.1:
                # Cool: uphill moves of a few units are accepted with p ~ e^-20 or less,
                # so after the descent few moves are accepted (measured: under 2 %).
                assert e < e0 and accepted <= 0.1 * moves
            elif temp < 1:
                assert e <= e0 + 1e-12
                if kind == "flips":
                    assert d.min() >= -1e-12  # no single flip improves
                else:
                    ones, zeros = np.flatnonzero(x == 1), np.flatnonzero(x == 0)
                    best = min(d[i] + d[j] - 2 * Q[i, j] for i in ones for j in zeros)
                    assert best >= -1e-9  # no swap improves
            else:
                assert accepted >= 0.9 * moves
