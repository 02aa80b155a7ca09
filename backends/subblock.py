"""Sub-blocks: cut a block larger than a device into device-size QCBOs and stitch back.

A block problem P (n variables, optional cardinality k) and a feasible answer x (n,) in
{0, 1}. Choose q variables S, keep the others F fixed at x, and pose the problem over S:

    E(x) = x_S' Q_SS x_S + 2 x_S' Q_SF x_F + x_F' Q_FF x_F + offset

so the sub-problem has ``Q' = Q_SS + diag(2 Q_SF x_F)``, ``offset' = offset + x_F' Q_FF x_F``
and ``k' = k - sum(x_F) = sum(x_S)`` (binary x: x_i^2 = x_i, so the linear term sits on the
diagonal). It is again a QCBO, and ``P.energy(stitch(x, S, y)) == sub.energy(y)`` for
every y (tests enumerate tiny cases).

Choice of S (``rule``):

- ``"impact"`` (default): as dwave-hybrid's EnergyImpactDecomposer, by the energy change
  of flipping each variable alone, g_i = (1 - 2 x_i)(Q_ii + 2 sum_{j != i} Q_ij x_j), most
  attractive (smallest g) first. A cardinality-preserving move swaps a set variable with an
  unset one, so S takes both kinds in the proportion k/n (at least one of each when it can).
- ``"order"``: the first q of a caller's priority order (e.g. iCBS saliency), the same
  balance of set and unset variables.
- ``"random"``: uniform, the same balance.

`improve` runs rounds of choose -> restrict -> solve -> stitch and keeps an answer only if
the full block's energy drops; used by the QAOA backends (``sub_block`` option) so that a
block of 1024 weights can be worked on by a 20-qubit QAOA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import numpy as np

from qcbo.errors import InputError
from qcbo.problem import Problem

__all__ = ["RULES", "SubBlock", "flip_gains", "choose_variables", "restrict", "stitch",
           "decompose", "improve", "ImproveReport"]

RULES = ("impact", "order", "random")
Rule = Literal["impact", "order", "random"]


def _binary(problem: Problem, x: np.ndarray) -> np.ndarray:
    a = np.asarray(x)
    if a.shape != (problem.n,):
        raise InputError(f"answer of shape {a.shape} for a problem of n={problem.n}")
    if not np.all((a == 0) | (a == 1)):
        raise InputError("the answer to decompose around must be binary (0/1)")
    return a.astype(np.int8)


@dataclass(frozen=True)
class SubBlock:
    """One sub-problem: ``index`` (q,) sorted positions in the parent, ``problem`` the QCBO
    over them with the rest fixed at ``base`` (n,), the parent answer it was cut from."""

    index: np.ndarray
    problem: Problem
    base: np.ndarray

    def stitch(self, y: np.ndarray) -> np.ndarray:
        """The parent answer with the sub-block set to y (q,)."""
        return stitch(self.base, self.index, y)


def flip_gains(problem: Problem, x: np.ndarray) -> np.ndarray:
    """(n,) energy change of flipping each variable of x alone (negative: flipping helps)."""
    xb = _binary(problem, x).astype(np.float64)
    q = problem.Q
    d = np.diag(q)
    field = 2.0 * (q @ xb) - 2.0 * d * xb + d
    return (1.0 - 2.0 * xb) * field


def _split(q: int, n: int, ones: int, k: int | None) -> tuple[int, int]:
    """How many set (x=1) and unset variables a sub-block of q takes."""
    zeros = n - ones
    if k is None:
        want_ones = int(round(q * ones / n))
    else:
        want_ones = int(round(q * k / n)) if n else 0
        if 0 < ones and 0 < zeros and q >= 2:
            want_ones = min(max(want_ones, 1), q - 1)
    want_ones = min(want_ones, ones)
    want_zeros = min(q - want_ones, zeros)
    want_ones = min(q - want_zeros, ones)
    return want_ones, want_zeros


def choose_variables(
    problem: Problem,
    x: np.ndarray,
    q: int,
    *,
    rule: Rule = "impact",
    order: Sequence[int] | np.ndarray | None = None,
    exclude: np.ndarray | None = None,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """q sorted variable positions for a sub-block around x (see module docstring).

    ``exclude`` (n,) bool: variables to take only when the others run out (lets rounds
    move on to new variables). ``order``: priority order for rule "order" (best first).
    """
    n = problem.n
    xb = _binary(problem, x)
    if not isinstance(q, (int, np.integer)) or q < 1:
        raise InputError(f"sub-block size must be a positive integer, got {q!r}")
    if q >= n:
        return np.arange(n)
    if rule not in RULES:
        raise InputError(f"sub-block rule must be one of {', '.join(RULES)}; got {rule!r}")
    if rule == "impact":
        priority = np.argsort(flip_gains(problem, xb), kind="stable")
    elif rule == "order":
        if order is None:
            raise InputError("sub-block rule 'order' needs an order (a permutation of 0..n-1)")
        priority = np.asarray(order, dtype=np.int64)
        if priority.shape != (n,) or not np.array_equal(np.sort(priority), np.arange(n)):
            raise InputError(f"sub-block order must be a permutation of 0..{n - 1}")
    else:
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        priority = gen.permutation(n)
    if exclude is not None:
        ex = np.asarray(exclude, dtype=bool)
        if ex.shape != (n,):
            raise InputError(f"exclude mask of shape {ex.shape} for n={n}")
        # stable: non-excluded first, each part in priority order
        priority = priority[np.argsort(ex[priority], kind="stable")]
    ones_first = priority[xb[priority] == 1]
    zeros_first = priority[xb[priority] == 0]
    n_one, n_zero = _split(q, n, len(ones_first), problem.k)
    return np.sort(np.concatenate([ones_first[:n_one], zeros_first[:n_zero]]))


def restrict(problem: Problem, x: np.ndarray, index: np.ndarray,
             metadata: dict[str, Any] | None = None, *,
             qx: np.ndarray | None = None) -> Problem:
    """The QCBO over ``index`` with the other variables fixed at x (module docstring).

    ``qx``: Q @ x (n,), when the caller cuts many sub-blocks around one x (`decompose`):
    the fixed part then costs O(q^2) instead of O(n^2) per sub-block.
    """
    xb = _binary(problem, x).astype(np.float64)
    idx = np.asarray(index, dtype=np.int64)
    if idx.ndim != 1 or len(idx) == 0 or len(np.unique(idx)) != len(idx) \
            or idx.min() < 0 or idx.max() >= problem.n:
        raise InputError(f"sub-block index must be distinct positions in 0..{problem.n - 1}")
    fixed = np.ones(problem.n, dtype=bool)
    fixed[idx] = False
    q = problem.Q
    xf = xb * fixed
    sub_q = q[np.ix_(idx, idx)].copy()
    if qx is None:
        sub_q[np.diag_indices_from(sub_q)] += 2.0 * (q[idx] @ xf)
        offset = problem.offset + float(xf @ q @ xf)
    else:  # Q xf = Q x - Q[:, S] x_S, and xf' Q xf = x' Q x - 2 x_S' (Q x)_S + x_S' Q_SS x_S
        xs = xb[idx]
        q_ss_xs = sub_q @ xs
        sub_q[np.diag_indices_from(sub_q)] += 2.0 * (qx[idx] - q_ss_xs)
        offset = problem.offset + float(xb @ qx - 2.0 * xs @ qx[idx] + xs @ q_ss_xs)
    k = None if problem.k is None else int(problem.k - xf.sum())
    if k is not None and not 0 <= k <= len(idx):
        raise InputError(f"sub-block cut from an answer with sum {int(xb.sum())} != k={problem.k}")
    meta = dict(problem.metadata)
    meta.update({"sub_block": {"index": idx.tolist(), "parent_n": problem.n}})
    if metadata:
        meta.update(metadata)
    labels = None if problem.labels is None else [problem.labels[i] for i in idx]
    return Problem(sub_q, offset, k, labels=labels, metadata=meta, source="sub-block")


def stitch(x: np.ndarray, index: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x (n,) with positions ``index`` replaced by y (len(index),); a new int8 array."""
    out = np.array(x, dtype=np.int8, copy=True)
    yy = np.asarray(y)
    if yy.shape != (len(index),):
        raise InputError(f"sub-block answer of shape {yy.shape} for {len(index)} variables")
    out[np.asarray(index, dtype=np.int64)] = yy
    return out


def decompose(problem: Problem, x: np.ndarray, q: int, *, count: int | None = None,
              rule: Rule = "impact", order: Sequence[int] | None = None,
              rng: np.random.Generator | int | None = None) -> list[SubBlock]:
    """Disjoint sub-blocks of at most q variables around one fixed answer x.

    ``count``: how many (default: enough to cover every variable once). Each is posed
    with all other variables (including the other sub-blocks) fixed at x, so each can be
    solved on its own; stitching one at a time into x and re-scoring the parent is exact.
    """
    xb = _binary(problem, x)
    if problem.k is not None and int(xb.sum()) != problem.k:
        raise InputError(f"the answer to decompose around has sum {int(xb.sum())}, need k={problem.k}")
    n = problem.n
    if q >= n:
        return [SubBlock(np.arange(n), restrict(problem, xb, np.arange(n)), xb)]
    total = -(-n // q) if count is None else int(count)
    if total < 1:
        raise InputError(f"sub-block count must be >= 1, got {count}")
    used = np.zeros(n, dtype=bool)
    out: list[SubBlock] = []
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    qx = problem.Q @ xb.astype(np.float64)
    if rule == "impact":  # x stays fixed, so the impact order is computed once
        rule, order = "order", np.argsort(flip_gains(problem, xb), kind="stable")
    for _ in range(total):
        free = np.flatnonzero(~used)
        if len(free) == 0:
            break
        if len(free) <= q:
            idx = free
        else:
            idx = choose_variables(problem, xb, q, rule=rule, order=order, exclude=used, rng=gen)
            idx = idx[~used[idx]] if used[idx].any() else idx
        used[idx] = True
        out.append(SubBlock(idx, restrict(problem, xb, idx, qx=qx), xb))
    return out


@dataclass
class ImproveReport:
    """What `improve` did: rounds run, rounds that lowered the parent energy, the energy
    before and after, and the source of the final answer ("initial" or "sub-block")."""

    rounds: int = 0
    improved_rounds: int = 0
    energy_before: float = float("nan")
    energy_after: float = float("nan")
    sources: list[str] | None = None
    #: the source of every round's answer, kept or not (``sources`` lists the kept ones)
    round_sources: list[str] | None = None


def improve(problem: Problem, x: np.ndarray, q: int,
            solve: Callable[[Problem, int], tuple[np.ndarray, str]],
            *, rounds: int = 1, rule: Rule = "impact",
            order: Sequence[int] | None = None,
            rng: np.random.Generator | int | None = None,
            stop: Callable[[], bool] | None = None,
            warm: bool = False) -> tuple[np.ndarray, ImproveReport]:
    """Rounds of sub-block solves around x; an answer is kept only if the parent improves.

    ``solve(sub_problem, round) -> (y, source)``: any solver of the sub-QCBO, with a label
    of where its answer came from (e.g. "qaoa", "polish"); with ``warm``,
    ``solve(sub_problem, round, y0)`` also gets y0, the current answer on the sub-block
    (a feasible warm start of the sub-problem). Variables used in earlier
    rounds are taken again only when the others run out. Returns the best answer (n,)
    int8 and an ImproveReport whose ``sources`` lists the source of each kept round.
    """
    xb = _binary(problem, x)
    if problem.k is not None and int(xb.sum()) != problem.k:
        raise InputError(f"the answer to improve has sum {int(xb.sum())}, need k={problem.k}")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    best = xb.copy()
    best_e = problem.energy(best)
    rep = ImproveReport(energy_before=best_e, sources=[], round_sources=[])
    used = np.zeros(problem.n, dtype=bool)
    for r in range(max(int(rounds), 1)):
        if stop is not None and r > 0 and stop():
            break
        if used.all():
            used[:] = False
        idx = choose_variables(problem, best, q, rule=rule, order=order, exclude=used, rng=gen)
        used[idx] = True
        sub = restrict(problem, best, idx)
        y, source = solve(sub, r, best[idx].copy()) if warm else solve(sub, r)
        cand = stitch(best, idx, y)
        rep.rounds += 1
        rep.round_sources.append(source)
        if problem.k is not None and int(cand.sum()) != problem.k:
            continue
        e = problem.energy(cand)
        if e < best_e - 1e-12 * max(1.0, abs(best_e)):
            best, best_e = cand, e
            rep.improved_rounds += 1
            rep.sources.append(source)
    rep.energy_after = best_e
    return best, rep
