"""The iCBS engine: one block-coordinate-descent step shared by every model family.

ICBS.md, "One step", for a *group* of disjoint blocks taken from one snapshot:

1. select: per block, a unit (a layer's flat weights, or one row of a Linear) and n of its
   free weights, k_b currently pruned and n - k_b kept (`BlockSelector`: the pruned ones
   with the highest score, the kept ones with the lowest, skipping fixed and tabu weights);
2. pose: the objective takes one snapshot (a fresh batch, captured gradients, ...) and
   turns every block into a QCBO `Problem` whose energy is the objective's predicted
   change (energy 0 at the current pattern, k = the block's current pruned count);
3. solve: every problem with the chosen backend, warm-started from the current pattern,
   through the `BlockSolver` (serially, or through an executor that solves the group in
   parallel with per-problem seeds, so answers do not depend on the executor). Steps 1-3
   are interleaved: each block is selected and posed when the solver reads the next
   problem, so workers start on the first blocks while the rest are selected;
4. accept: a block's answer is applied only when it is feasible, admissible for the
   objective and strictly better than the current pattern on the exact block model
   (`accepts`: one rule, in the problem's own units);
5. check: when the objective has a held-out loss (data no step's snapshot used), the
   group is kept only if that loss did not rise by more than ``loss_tol``; otherwise every
   block of the group is reverted and, up to ``shrink_steps`` times, the answers are
   halved (`shrink_answer`: the half of each answer's swaps whose undoing would cost the
   block model most) and checked again: a trust region measured on the real loss. So the
   held-out loss never rises across steps;
6. record: a `StepRecord` per block (predicted change, applied, reverted), a
   `GroupRecord` per group (predicted against measured change), the export hook
   (``block_sink``) after solving, with the answer, energy reached, applied flag and the
   problem's provenance.

Objectives (`Objective`) supply the model-family part: units, masks, scores, block
problems, how to apply a pattern, and the held-out loss. Classifiers use
`pruning.objectives.ClassifierFisher`; language models the reconstruction and Fisher
objectives of `pruning.llm.objectives`.
"""

from __future__ import annotations

import abc
import logging
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from qcbo.errors import InputError, UnknownOptionError
from qcbo.problem import Problem
from qcbo.result import SolveResult

__all__ = ["ACCEPT_RTOL", "SelectionPolicy", "BlockSelector", "Block", "Objective",
           "BlockSolver", "accepts", "shrink_answer", "StepRecord", "GroupRecord", "EngineStats", "ICBSEngine"]

log = logging.getLogger(__name__)

#: An answer is applied when its energy is below the current pattern's by more than
#: ACCEPT_RTOL * max(1, |E_current|), in the block problem's own (rescaled) units.
ACCEPT_RTOL = 1e-9


@dataclass(frozen=True)
class SelectionPolicy:
    """Which weights may enter a block (ICBS.md, "Ingredients").

    The lowest-scoring ``fix_frac_prune`` of the initially pruned weights stay pruned and
    the highest-scoring ``fix_frac_keep`` of the kept ones stay kept; a FIFO tabu list
    holds at most ``tabu_frac`` of a unit's free weights, and never so many that a block
    of ``block_size`` could not be filled (its oldest entries are released first).
    """

    fix_frac_prune: float = 0.42
    fix_frac_keep: float = 0.35
    tabu_frac: float = 0.40

    def validate(self) -> None:
        for name in ("fix_frac_prune", "fix_frac_keep", "tabu_frac"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise InputError(f"{name} must be in [0, 1), got {getattr(self, name)}")


class BlockSelector:
    """Fixing and tabu state of one unit; picks blocks of its free weights.

    ``keep`` (m,) bool is the unit's live mask (read at every selection); ``score``
    (m,) float64, higher = more important, may be replaced by ``select(score=...)``.
    """

    def __init__(self, keep: np.ndarray, score: np.ndarray, policy: SelectionPolicy,
                 block_size: int) -> None:
        self.keep = keep
        self.score = np.asarray(score, dtype=np.float64).reshape(-1)
        size = keep.size
        self.fixed = np.zeros(size, dtype=bool)
        pruned, kept = np.flatnonzero(~keep), np.flatnonzero(keep)
        order_p = pruned[np.argsort(self.score[pruned], kind="stable")]
        order_k = kept[np.argsort(-self.score[kept], kind="stable")]
        self.fixed[order_p[: int(policy.fix_frac_prune * len(pruned))]] = True
        self.fixed[order_k[: int(policy.fix_frac_keep * len(kept))]] = True
        self.free = int((~self.fixed).sum())
        self.tabu: deque[np.ndarray] = deque()
        self.in_tabu = np.zeros(size, dtype=bool)
        self.busy = np.zeros(size, dtype=bool)  # in a block of the current group
        self.tabu_capacity = max(0, min(int(policy.tabu_frac * self.free),
                                        self.free - block_size))
        self._orders: tuple[np.ndarray, np.ndarray] | None = None

    def _sorted(self) -> tuple[np.ndarray, np.ndarray]:
        """All indices by decreasing and by increasing score (ties: lower index first),
        sorted once per score: a selection then filters them in O(m), with no sort."""
        if self._orders is None:
            self._orders = (np.argsort(-self.score, kind="stable"),
                            np.argsort(self.score, kind="stable"))
        return self._orders

    def select(self, n: int, k: int, score: np.ndarray | None = None) -> np.ndarray | None:
        """Sorted flat indices of a block: up to k pruned (highest score first), the rest
        kept (lowest score first); None when no block with both kinds can be formed."""
        if score is not None:
            self.score = np.asarray(score, dtype=np.float64).reshape(-1)
            self._orders = None
        open_ = ~self.fixed & ~self.busy
        free_pruned = int(np.count_nonzero(open_ & ~self.keep))
        free_kept = int(np.count_nonzero(open_ & self.keep))
        want_p = min(k, free_pruned)
        want_k = min(n - want_p, free_kept)
        want_p = min(n - want_k, free_pruned)
        while True:
            cand_pruned = open_ & ~self.in_tabu & ~self.keep
            cand_kept = open_ & ~self.in_tabu & self.keep
            n_p, n_k = int(np.count_nonzero(cand_pruned)), int(np.count_nonzero(cand_kept))
            if not self.tabu or (n_p >= want_p and n_k >= want_k):
                break
            self.in_tabu[self.tabu.popleft()] = False
        take_p, take_k = min(want_p, n_p), min(want_k, n_k)
        if take_p == 0 or take_k == 0:
            return None
        descending, ascending = self._sorted()
        top_p = _first(descending, cand_pruned, take_p)
        low_k = _first(ascending, cand_kept, take_k)
        idx = np.sort(np.concatenate([top_p, low_k]))
        self.busy[idx] = True
        return idx

    def release(self, idx: np.ndarray) -> None:
        """End of the block's group: the block goes onto the tabu list."""
        self.busy[idx] = False
        self.tabu.append(idx)
        self.in_tabu[idx] = True
        while self.tabu and int(self.in_tabu.sum()) > self.tabu_capacity:
            self.in_tabu[self.tabu.popleft()] = False


def _first(order: np.ndarray, mask: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` entries of ``order`` whose ``mask`` is set, scanning growing
    chunks so that a selection costs what it uses, not the unit's size."""
    found: list[np.ndarray] = []
    start, size, need = 0, max(4 * count, 1024), count
    while need > 0 and start < order.size:
        chunk = order[start:start + size]
        hit = chunk[mask[chunk]][:need]
        found.append(hit)
        need -= hit.size
        start += size
        size *= 4
    return np.concatenate(found) if found else np.empty(0, dtype=np.int64)


@dataclass
class Block:
    """n weights of one unit: flat ``indices`` (n,) and the current pattern (n,) int8
    (x_i = 1: weight pruned)."""

    unit: int
    indices: np.ndarray
    x_current: np.ndarray
    data: Any = None  # the objective's own (e.g. the block's values when posed)


class Objective(abc.ABC):
    """A model family's side of iCBS (see the module docstring).

    ``names[u]`` names unit u; `keep(u)` is its live (m,) bool mask (True = kept) and
    `score(u)` its selection score (higher = more important).
    """

    names: list[str]

    @abc.abstractmethod
    def keep(self, unit: int) -> np.ndarray: ...

    @abc.abstractmethod
    def score(self, unit: int) -> np.ndarray: ...

    def refresh(self) -> None:
        """Take the snapshot the next group of problems is posed from (default: none)."""

    @abc.abstractmethod
    def problem(self, block: Block, step: int) -> Problem:
        """The block QCBO: energy = predicted change (units ``metadata["scale"]``),
        k = ``block.x_current.sum()``, energy 0 at ``block.x_current``."""

    @abc.abstractmethod
    def apply(self, block: Block, x: np.ndarray) -> None:
        """Set the block's pattern to x (n,) 0/1 (x_i = 1: prune), weights included."""

    def admissible(self, block: Block, x: np.ndarray) -> bool:
        """Extra structure an answer must keep (e.g. n:m groups); default: any."""
        return True

    def loss(self) -> float | None:
        """The held-out loss the steps are checked on; None: the objective is exact and
        needs no check."""
        return None

    def loss_samples(self) -> np.ndarray | None:
        """Per-sample losses (N,) of the last `loss` call, whose mean it is; None when the
        objective cannot give them (the engine's paired test then falls back to the
        plain tolerance)."""
        return None

    def selector(self, unit: int, policy: SelectionPolicy, block_size: int) -> Any:
        """The unit's block selector (default `BlockSelector` over keep and score)."""
        return BlockSelector(self.keep(unit), self.score(unit), policy, block_size)


class BlockSolver:
    """A backend with its options and warm starts; seeds are per problem,
    `backends.executor.task_seed` (``seed``, the problem's running number), so an
    executor never changes an answer.

    ``executor``: None solves serially; otherwise an object with
    ``solve_many(problems, backend, options, seed=..., time_limit=..., initials=...,
    indices=...)`` yielding results in input order (see `backends.executor`); it must
    read ``initials[i]`` and ``indices[i]`` only after reading problem i, since both
    are filled as the problems are posed.
    """

    def __init__(self, backend: str, options: Mapping[str, Any] | None = None, *,
                 seed: int = 0, time_limit: float | None = None, executor: Any = None) -> None:
        from backends import get_backend

        self.backend = get_backend(backend)
        base = dict(self.backend.icbs_options) if options is None else dict(options)
        unknown = sorted(set(base) - set(self.backend.options))
        if unknown:
            raise UnknownOptionError(f"{self.backend.name}: unknown option(s) {unknown}; known options: "
                             f"{', '.join(sorted(self.backend.options)) or 'none'}")
        self.options = base
        self.warm = self.backend.supports_initial()
        self.seed = int(seed)
        self.time_limit = time_limit
        self.executor = executor
        self.count = 0

    def solve_pairs(self, pairs: Iterable[tuple[Problem, np.ndarray]]) -> list[SolveResult]:
        """One result per (problem, current x) pair, in order. ``pairs`` is read lazily
        (a generator may select and pose each block as the executor asks for the next
        one); problem i of the call is numbered ``count + i`` for its seed, however
        many pairs there turn out to be."""
        base = self.count
        initials: list[np.ndarray] = []

        def problems() -> Iterator[Problem]:
            for problem, x0 in pairs:
                initials.append(x0)
                yield problem

        try:
            if self.executor is not None:
                return list(self.executor.solve_many(
                    problems(), self.backend.name, self.options, seed=self.seed,
                    time_limit=self.time_limit, initials=initials if self.warm else None,
                    indices=_Numbers(base)))
            from backends.executor import task_seed

            results = []
            for number, problem in enumerate(problems(), start=base):
                opts = dict(self.options)
                if self.warm:
                    opts["initial"] = np.asarray(initials[-1], dtype=np.int8)
                results.append(self.backend.solve(problem, seed=task_seed(self.seed, number),
                                                  time_limit=self.time_limit, **opts))
            return results
        finally:
            self.count = base + len(initials)


class _Numbers:
    """The running numbers base, base + 1, ... as a lazily indexed sequence."""

    def __init__(self, base: int) -> None:
        self.base = base

    def __getitem__(self, i: int) -> int:
        return self.base + int(i)


def accepts(problem: Problem, x_current: np.ndarray, result: SolveResult) -> float | None:
    """The energy drop (problem units, > 0) when ``result`` may replace ``x_current``:
    feasible and better by more than ACCEPT_RTOL * max(1, |E_current|); else None."""
    if result.x is None or not problem.is_feasible(result.x):
        return None
    current = problem.energy(np.asarray(x_current, dtype=np.int8))
    drop = current - problem.energy(result.x)
    return drop if drop > ACCEPT_RTOL * max(1.0, abs(current)) else None


def shrink_answer(problem: Problem, x_current: np.ndarray, x_new: np.ndarray) -> np.ndarray | None:
    """Half of the answer's change: of its s newly pruned and s newly kept weights, keep
    the ⌊s/2⌋ of each whose undoing (one flip back, from ``x_new``) would raise the block
    energy most. None when nothing is left or the result is not better than x_current."""
    x_cur = np.asarray(x_current, dtype=np.int8)
    x_new = np.asarray(x_new, dtype=np.int8)
    pruned = np.flatnonzero((x_new == 1) & (x_cur == 0))
    kept = np.flatnonzero((x_new == 0) & (x_cur == 1))
    half = min(len(pruned), len(kept)) // 2
    if half == 0:
        return None
    Q = problem.Q
    field = Q @ x_new.astype(np.float64)
    diag = np.diagonal(Q)
    undo_prune = -(2.0 * field[pruned] - diag[pruned])  # x_i: 1 -> 0
    undo_keep = 2.0 * field[kept] + diag[kept]          # x_j: 0 -> 1
    x = x_cur.copy()
    x[pruned[np.argsort(-undo_prune, kind="stable")[:half]]] = 1
    x[kept[np.argsort(-undo_keep, kind="stable")[:half]]] = 0
    current = problem.energy(x_cur)
    if problem.energy(x) < current - ACCEPT_RTOL * max(1.0, abs(current)):
        return x
    return None


@dataclass
class StepRecord:
    """One block: predicted change in loss units of what stays applied (energy change x
    scale; 0 when nothing does); ``shrunk``: times the answer was halved before it held."""

    step: int
    unit: str
    n: int
    k: int
    predicted: float
    applied: bool
    reverted: bool = False
    shrunk: int = 0
    status: str = ""
    solver_time_s: float = 0.0
    source: str = ""


@dataclass
class GroupRecord:
    """One group: summed predicted change of the answers first applied and, with a check,
    the measured change of the held-out loss they caused (before any revert or shrink);
    ``applied``: blocks left applied in the end."""

    first_step: int
    blocks: int
    applied: int
    predicted: float
    measured: float | None
    reverted: bool
    threshold: float | None = None


@dataclass
class EngineStats:
    """Counters of an engine run (JSON-ready through ``asdict``)."""

    blocks_solved: int = 0
    blocks_applied: int = 0
    blocks_reverted: int = 0
    blocks_skipped: int = 0
    groups_checked: int = 0
    groups_reverted: int = 0
    groups_shrunk: int = 0
    #: main-process time selecting and posing blocks (all but a group's first selection)
    pose_time_s: float = 0.0
    #: the rest of a group's solve call (waiting for the solver or its workers)
    solver_time_s: float = 0.0
    check_time_s: float = 0.0
    #: blocks left applied, by where the backend says the answer came from
    #: (``result.info["source"]``: e.g. "qaoa", "polish", "initial"; "" when not said)
    applied_by_source: dict[str, int] = field(default_factory=dict)
    groups: list[GroupRecord] = field(default_factory=list)

    def fraction_from(self, source: str) -> float | None:
        """Fraction of the applied blocks whose answer came from ``source`` (None: none)."""
        total = sum(self.applied_by_source.values())
        return self.applied_by_source.get(source, 0) / total if total else None

    def to_dict(self, with_groups: bool = True) -> dict[str, Any]:
        out = asdict(self)
        if not with_groups:
            out.pop("groups")
        return out


class ICBSEngine:
    """Runs iCBS steps of an `Objective` with a `BlockSolver` (see the module docstring).

    ``block_size`` n and ``block_k`` (None: n // 2) shape every block; ``loss_check``
    enables the held-out check when the objective has a loss, with tolerance
    ``loss_tol`` (loss units: a group is reverted when the loss rises by more);
    ``loss_z`` > 0 makes the check a paired test when the objective gives per-sample
    losses: a group is kept only if the loss changes by at most ``loss_tol`` minus
    ``loss_z`` standard errors of the mean per-sample change (so a step must lower the
    loss by more than its noise on the held-out set; 0: the plain rule; the test starts
    at the first accepted check when ``initial_loss`` is given, whose samples are unknown);
    ``initial_loss``: the objective's loss now, when the caller already measured it.
    ``block_sink(problem)`` receives every solved problem, its metadata completed with
    the answer; ``on_step(record)`` every `StepRecord`.
    """

    def __init__(self, objective: Objective, solver: BlockSolver, *, block_size: int,
                 block_k: int | None = None, policy: SelectionPolicy = SelectionPolicy(),
                 loss_check: bool = True, loss_tol: float = 0.0, shrink_steps: int = 2,
                 loss_z: float = 0.0, initial_loss: float | None = None,
                 block_sink: Callable[[Problem], None] | None = None,
                 on_step: Callable[[StepRecord], None] | None = None) -> None:
        policy.validate()
        self.objective = objective
        self.solver = solver
        self.n = int(block_size)
        self.k = self.n // 2 if block_k is None else int(block_k)
        if self.n < 2 or not 0 < self.k < self.n:
            raise InputError(f"need block size >= 2 and 0 < block k < block size, got "
                             f"n={self.n}, k={self.k}")
        self.policy = policy
        self.loss_tol = float(loss_tol)
        if not self.loss_tol >= 0.0 or not float(loss_z) >= 0.0:
            raise InputError(f"loss_tol and loss_z must be >= 0, got {loss_tol} and {loss_z}")
        self.loss_z = float(loss_z)
        self.shrink_steps = int(shrink_steps)
        self.block_sink = block_sink
        self.on_step = on_step
        self.stats = EngineStats()
        self.step_count = 0
        self._selectors: dict[int, Any] = {}
        self.loss = None
        self._samples: np.ndarray | None = None
        if loss_check:
            self.loss = initial_loss if initial_loss is not None else objective.loss()
            if self.loss_z > 0 and initial_loss is None:
                self._samples = _copy(objective.loss_samples())

    def rebase(self) -> None:
        """The weights changed outside the steps (e.g. a re-fit of the kept weights): the
        objective's held-out loss now becomes the reference of the next check."""
        if self.loss is not None:
            value = self.objective.loss()
            assert value is not None
            self._accept(float(value))

    def selector(self, unit: int) -> Any:
        if unit not in self._selectors:
            self._selectors[unit] = self.objective.selector(unit, self.policy, self.n)
        return self._selectors[unit]

    def step(self, units: Sequence[int]) -> GroupRecord | None:
        """One iCBS step over a group of blocks, one block per entry of ``units``."""
        first = self.step_count + 1
        # 1. select disjoint blocks, 2. pose every block from one snapshot, 3. solve them
        # (in parallel when the solver has an executor). Blocks are selected and posed
        # lazily, as the solver reads them, so an executor's workers solve the first
        # blocks while the rest are selected and posed; nothing is applied before every
        # block is solved, and selecting a block reads no state that posing or refresh()
        # changes, so the blocks and their problems are the same either way.
        todo = iter(units)
        blocks: list[Block] = []

        def select() -> Block | None:
            for unit in todo:
                self.step_count += 1
                idx = self.selector(unit).select(self.n, self.k)
                if idx is None:
                    self.stats.blocks_skipped += 1
                    continue
                block = Block(unit, idx, (~self.objective.keep(unit)[idx]).astype(np.int8))
                blocks.append(block)
                return block
            return None

        if select() is None:  # nothing to solve: no refresh (no batch drawn)
            return None
        t0 = time.perf_counter()
        self.objective.refresh()
        problems: list[Problem] = []
        pose_time = time.perf_counter() - t0

        def pose() -> Iterator[tuple[Problem, np.ndarray]]:
            nonlocal pose_time
            i = 0
            while True:
                start = time.perf_counter()
                if i == len(blocks) and select() is None:
                    return
                b = blocks[i]
                problems.append(self.objective.problem(b, first + i))
                pose_time += time.perf_counter() - start
                yield problems[-1], b.x_current
                i += 1

        results = self.solver.solve_pairs(pose())
        t2 = time.perf_counter()
        self.stats.pose_time_s += pose_time
        self.stats.solver_time_s += t2 - t0 - pose_time
        self.stats.blocks_solved += len(blocks)
        # 4. accept and apply
        records, applied = [], []
        for i, (block, problem, result) in enumerate(zip(blocks, problems, results)):
            drop = accepts(problem, block.x_current, result)
            if drop is not None and not self.objective.admissible(block, result.x):
                drop = None
            if drop is not None:
                self.objective.apply(block, result.x)
                applied.append(block)
            scale = float(problem.metadata.get("scale", 1.0))
            records.append(StepRecord(first + i, self.objective.names[block.unit], len(block.indices),
                                      int(block.x_current.sum()),
                                      -drop * scale if drop is not None else 0.0,
                                      drop is not None, status=result.status,
                                      solver_time_s=result.wall_time_s,
                                      source=str(result.info.get("source", ""))))
        predicted = sum(r.predicted for r in records)
        # 5. check on the held-out loss; revert, then try halved answers
        measured, reverted, threshold = None, False, None
        if self.loss is not None and applied:
            answers = {id(b): np.asarray(r.x, dtype=np.int8) for b, r in zip(blocks, results)}
            after = self._check()
            measured = after - self.loss
            threshold = self._threshold()
            if measured > threshold:
                by_block = {id(b): (i, p) for i, (b, p) in enumerate(zip(blocks, problems))}
                for block in reversed(applied):
                    self.objective.apply(block, block.x_current)
                kept = self._shrink(applied, answers, by_block, records)
                for block in applied:
                    record = records[by_block[id(block)][0]]
                    record.reverted = id(block) not in kept
                    if record.reverted:
                        record.predicted = 0.0
                if not kept:
                    reverted = True
                    self.stats.groups_reverted += 1
                else:
                    self.stats.groups_shrunk += 1
                self.stats.blocks_reverted += len(applied) - len(kept)
                applied = [b for b in applied if id(b) in kept]
            else:
                self._accept(after)
        for block in blocks:
            self.selector(block.unit).release(block.indices)
        self.stats.blocks_applied += len(applied)
        for block, record in zip(blocks, records):
            if record.applied and not record.reverted:
                by = self.stats.applied_by_source
                by[record.source] = by.get(record.source, 0) + 1
        # 6. record and export
        for block, problem, result, record in zip(blocks, problems, results, records):
            if self.block_sink is not None:
                meta = problem.metadata
                meta.update({"backend": self.solver.backend.name, "energy_reached": result.energy,
                             "status": result.status, "applied": record.applied and not record.reverted,
                             "reverted": record.reverted, "shrunk": record.shrunk,
                             "solver_time_s": result.wall_time_s, "source": record.source,
                             "answer": None if result.x is None else np.asarray(result.x).tolist(),
                             "initial": block.x_current.tolist(), "indices": block.indices.tolist(),
                             "step": record.step})
                self.block_sink(problem.replace(metadata=meta))
            if self.on_step is not None:
                self.on_step(record)
        group = GroupRecord(first, len(blocks), len(applied), predicted, measured, reverted,
                            threshold)
        self.stats.groups.append(group)
        return group

    def _check(self) -> float:
        t0 = time.perf_counter()
        value = self.objective.loss()
        self.stats.check_time_s += time.perf_counter() - t0
        self.stats.groups_checked += 1
        assert value is not None
        return float(value)

    def _threshold(self) -> float:
        """The largest change of the held-out loss a group may cause (after `_check`):
        ``loss_tol``, less ``loss_z`` standard errors of the paired per-sample change
        against the last accepted state when the objective gives per-sample losses."""
        if self.loss_z <= 0 or self._samples is None:
            return self.loss_tol
        new = self.objective.loss_samples()
        if new is None or len(new) != len(self._samples) or len(new) < 2:
            return self.loss_tol
        diff = np.asarray(new, dtype=np.float64) - self._samples
        return self.loss_tol - self.loss_z * float(np.std(diff, ddof=1) / np.sqrt(len(diff)))

    def _accept(self, after: float) -> None:
        """The checked state becomes the reference of the next check."""
        self.loss = after
        if self.loss_z > 0:
            self._samples = _copy(self.objective.loss_samples())

    def _shrink(self, applied: list[Block], answers: dict[int, np.ndarray],
                by_block: dict[int, tuple[int, Problem]], records: list[StepRecord]) -> set[int]:
        """Halve the reverted answers up to ``shrink_steps`` times until the held-out loss
        does not rise; returns the ids of the blocks left applied (their records updated)."""
        current = {id(b): answers[id(b)] for b in applied}
        for attempt in range(1, self.shrink_steps + 1):
            halves = {}
            for block in applied:
                if id(block) in current:
                    x = shrink_answer(by_block[id(block)][1], block.x_current, current[id(block)])
                    if x is not None:
                        halves[id(block)] = x
            if not halves:
                return set()
            trial = [b for b in applied if id(b) in halves]
            for block in trial:
                self.objective.apply(block, halves[id(block)])
            after = self._check()
            if after - self.loss <= self._threshold():
                self._accept(after)
                for block in trial:
                    i, problem = by_block[id(block)]
                    x = halves[id(block)]
                    records[i].predicted = float(
                        (problem.energy(x) - problem.energy(block.x_current))
                        * problem.metadata.get("scale", 1.0))
                    records[i].shrunk = attempt
                return set(halves)
            for block in reversed(trial):
                self.objective.apply(block, block.x_current)
            current = halves
        return set()

    def run(self, schedule: Sequence[int], group_size: int = 1) -> None:
        """Steps over ``schedule`` (one unit index per block), ``group_size`` blocks a group."""
        if group_size < 1:
            raise InputError(f"group size must be >= 1, got {group_size}")
        for start in range(0, len(schedule), group_size):
            self.step(schedule[start:start + group_size])


def _copy(values: Any) -> np.ndarray | None:
    return None if values is None else np.array(values, dtype=np.float64)
