"""The engine's pieces on their own: the acceptance rule and halved answers."""

import itertools

import numpy as np
import pytest

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
        # The moves kept are the ones whose single undoing from `best` costs most,
        # recomputed here by flipping each one back.
        undo = {}
        for i in np.flatnonzero(best != x_cur):
            y = best.copy()
            y[i] ^= 1
            undo[i] = p.energy(y) - p.energy(best)
        for side in (1, 0):  # newly pruned (best 1, x_cur 0), then newly kept
            moves = [i for i in undo if best[i] == side]
            expected = sorted(moves, key=lambda i: -undo[i])[:len(moves) // 2]
            assert {i for i in moves if half[i] == best[i]} == set(expected)


def test_accepts_only_strictly_better_feasible_answers():
    p = _problem()
    x_cur = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=np.int8)
    worse = max((np.array(s, dtype=np.int8) for s in itertools.product((0, 1), repeat=p.n)
                 if sum(s) == p.k), key=p.energy)
    assert accepts(p, x_cur, SolveResult.from_solution(p, x_cur, backend="t", wall_time_s=0.0)) is None
    assert accepts(p, x_cur, SolveResult.from_solution(p, worse, backend="t", wall_time_s=0.0)) is None
    infeasible = np.ones(p.n, dtype=np.int8)
    assert accepts(p, x_cur, SolveResult.from_solution(p, infeasible, backend="t", wall_time_s=0.0)) is None
    # A strictly better answer is accepted with its energy drop ...
    best = min((np.array(s, dtype=np.int8) for s in itertools.product((0, 1), repeat=p.n)
                if sum(s) == p.k), key=p.energy)
    drop = accepts(p, x_cur, SolveResult.from_solution(p, best, backend="t", wall_time_s=0.0))
    assert drop == pytest.approx(p.energy(x_cur) - p.energy(best)) and drop > 0
    # ... but not a gain below the relative tolerance (a shifted copy of the problem).
    from pruning.engine import ACCEPT_RTOL

    e_cur, e_best = p.energy(x_cur), p.energy(best)
    scale = 0.5 * ACCEPT_RTOL / (e_cur - e_best)
    tiny = Problem(p.Q * scale, 1.0, p.k)  # drop 0.5 ACCEPT_RTOL, |E_current| ~ 1
    assert accepts(tiny, x_cur, SolveResult.from_solution(tiny, best, backend="t",
                                                          wall_time_s=0.0)) is None


def _reference_select(sel, n, k):
    """The selection rule written plainly: sort the candidates at every call."""
    open_ = ~sel.fixed & ~sel.busy
    free_p, free_k = int((open_ & ~sel.keep).sum()), int((open_ & sel.keep).sum())
    want_p = min(k, free_p)
    want_k = min(n - want_p, free_k)
    want_p = min(n - want_k, free_p)
    in_tabu, tabu = sel.in_tabu.copy(), list(sel.tabu)
    while True:
        cand = open_ & ~in_tabu
        pruned, kept = np.flatnonzero(cand & ~sel.keep), np.flatnonzero(cand & sel.keep)
        if not tabu or (len(pruned) >= want_p and len(kept) >= want_k):
            break
        in_tabu[tabu.pop(0)] = False
    take_p, take_k = min(want_p, len(pruned)), min(want_k, len(kept))
    if take_p == 0 or take_k == 0:
        return None
    top = pruned[np.argsort(-sel.score[pruned], kind="stable")[:take_p]]
    low = kept[np.argsort(sel.score[kept], kind="stable")[:take_k]]
    return np.sort(np.concatenate([top, low]))


def test_selection_equals_the_plain_rule():
    from pruning.engine import BlockSelector, SelectionPolicy

    rng = np.random.default_rng(1)
    for trial in range(20):
        m = int(rng.integers(50, 3000))
        keep = rng.random(m) < rng.uniform(0.1, 0.9)
        score = rng.integers(0, 20, m).astype(float)  # many ties
        sel = BlockSelector(keep, score, SelectionPolicy(0.2, 0.2, 0.5), 16)
        for _ in range(40):
            expected = _reference_select(sel, 16, 8)
            got = sel.select(16, 8)
            if expected is None:
                assert got is None
                break
            assert np.array_equal(got, expected)
            keep[got[: len(got) // 2]] ^= True  # the block's answer changes some weights
            sel.release(got)


class _ToyObjective:
    """A quadratic surrogate on one unit of m weights: loss(x) = x' A x (x = pruned)."""

    def __init__(self, m=24, seed=0):
        from pruning.engine import Objective  # noqa: F401  (duck-typed below)
        rng = np.random.default_rng(seed)
        a = rng.normal(size=(m, m))
        self.A = (a + a.T) / 2
        self.names = ["toy"]
        self.pruned = np.zeros(m, dtype=bool)
        self.pruned[: m // 2] = True
        self.rng = rng

    def keep(self, unit):
        return ~self.pruned

    def score(self, unit):
        return np.arange(len(self.pruned), dtype=np.float64)

    def refresh(self):
        pass

    def problem(self, block, step):
        idx = block.indices
        x0 = block.x_current.astype(np.float64)
        full = self.pruned.astype(np.float64)
        rest = full.copy()
        rest[idx] = 0
        q = self.A[np.ix_(idx, idx)].copy()
        q[np.diag_indices_from(q)] += 2 * (self.A[idx] @ rest)
        return Problem(q, -float(x0 @ q @ x0), int(x0.sum()), metadata={"scale": 1.0})

    def apply(self, block, x):
        self.pruned[block.indices] = np.asarray(x, dtype=bool)

    def admissible(self, block, x):
        return True

    def loss(self):
        return None

    def selector(self, unit, policy, block_size):
        from pruning.engine import BlockSelector
        return BlockSelector(self.keep(unit), self.score(unit), policy, block_size)


def test_engine_counts_applied_answers_by_source():
    """The engine reads result.info["source"] and counts the answers it kept by it."""
    from types import SimpleNamespace

    from pruning.engine import ICBSEngine

    class LabellingSolver:
        backend = SimpleNamespace(name="fake")

        def __init__(self):
            self.calls = 0

        def solve_pairs(self, pairs):
            out = []
            for p, _x in pairs:
                states = [np.array(s, dtype=np.int8) for s in itertools.product((0, 1), repeat=p.n)
                          if sum(s) == p.k]
                best = min(states, key=p.energy)
                self.calls += 1
                source = "qaoa" if self.calls % 2 else "polish"
                out.append(SolveResult.from_solution(p, best, backend="fake", wall_time_s=0.0,
                                                     info={"source": source}))
            return out

    obj = _ToyObjective()
    engine = ICBSEngine(obj, LabellingSolver(), block_size=8, loss_check=False)
    for _ in range(6):
        engine.step([0])
    applied = engine.stats.blocks_applied
    assert applied >= 1
    assert sum(engine.stats.applied_by_source.values()) == applied
    assert set(engine.stats.applied_by_source) <= {"qaoa", "polish"}
    frac = engine.stats.fraction_from("qaoa")
    assert frac == engine.stats.applied_by_source.get("qaoa", 0) / applied


def test_engine_selects_blocks_lazily_with_the_same_blocks_and_numbers():
    """The solver reads the first block before the later ones are selected; the blocks,
    their step numbers and the solver's running numbers equal the eager order's."""
    from pruning.engine import BlockSolver, ICBSEngine

    class Recording(BlockSolver):
        def __init__(self):
            super().__init__("exact", seed=3)
            self.selected_at_first = None
            self.seen = []

        def solve_pairs(self, pairs):
            def watch():
                for i, (p, x) in enumerate(pairs):
                    if i == 0:
                        self.selected_at_first = len(engine.selector(0).tabu) + int(
                            engine.selector(0).busy.sum())
                    self.seen.append((p.metadata["step"], x.copy()))
                    yield p, x
            return super().solve_pairs(watch())

    class Numbered(_ToyObjective):
        def problem(self, block, step):
            p = super().problem(block, step)
            return p.replace(metadata={**p.metadata, "step": step})

    obj = Numbered(m=48)
    solver = Recording()
    engine = ICBSEngine(obj, solver, block_size=6, block_k=3, loss_check=False)
    engine.step([0, 0, 0, 0])
    # one block of 6 selected (busy) when the first problem was read, not all four
    assert solver.selected_at_first == 6
    assert [s for s, _ in solver.seen] == [1, 2, 3, 4]
    assert solver.count == 4
    engine.step([0, 0])
    assert solver.count == 6 and [s for s, _ in solver.seen][-2:] == [5, 6]


class _NoisyHeldOut(_ToyObjective):
    """The toy's loss x'Ax as the mean of N per-sample losses whose paired change has a
    spread of ``spread`` x |change of a random linear function of x|, mean exactly 0."""

    def __init__(self, spread, m=24, n=400, seed=0):
        super().__init__(m=m, seed=seed)
        rng = np.random.default_rng(seed + 1)
        r = rng.normal(size=n)
        self.r = r - r.mean()
        self.w = rng.normal(size=m)
        self.spread = spread

    def loss(self):
        x = self.pruned.astype(np.float64)
        return float(x @ self.A @ x)

    def loss_samples(self):
        x = self.pruned.astype(np.float64)
        return self.loss() + self.spread * self.r * float(self.w @ x)


def _run_noisy(spread, z, steps=8):
    from pruning.engine import BlockSolver, ICBSEngine

    obj = _NoisyHeldOut(spread)
    engine = ICBSEngine(obj, BlockSolver("exact", seed=0), block_size=8, loss_z=z,
                        shrink_steps=0)
    start = engine.loss
    for _ in range(steps):
        engine.step([0])
    return obj, engine, start


def test_paired_loss_test_keeps_only_changes_larger_than_their_noise():
    # Without noise the paired test is the plain rule: the same steps, the same masks.
    plain, e_plain, start = _run_noisy(0.0, 0.0)
    paired, e_paired, _ = _run_noisy(0.0, 3.0)
    assert np.array_equal(plain.pruned, paired.pruned)
    assert e_plain.stats.blocks_applied > 0 and e_plain.loss < start
    # With noise far above every gain, z = 0 still takes the (real) gains, z = 3 none.
    loud, e_loud, start = _run_noisy(1e3, 0.0)
    assert e_loud.stats.blocks_applied > 0 and e_loud.loss < start
    strict, e_strict, start = _run_noisy(1e3, 3.0)
    checked = [g for g in e_strict.stats.groups if g.measured is not None]
    assert checked and all(g.reverted for g in checked)
    assert e_strict.stats.blocks_applied == 0 and e_strict.loss == start
    # Each checked group records the threshold it had to beat: tol - z * standard error.
    assert all(g.threshold is not None and g.threshold < -1.0 for g in checked)
    assert all(g.threshold == 0.0 for g in e_loud.stats.groups if g.measured is not None)


def test_loss_z_must_be_non_negative():
    import pytest

    from pruning.engine import BlockSolver, ICBSEngine
    from qcbo.errors import InputError

    with pytest.raises(InputError, match="loss_z"):
        ICBSEngine(_NoisyHeldOut(1.0), BlockSolver("exact"), block_size=8, loss_z=-1.0)
