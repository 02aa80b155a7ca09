"""Compiled (numba) loops of the QAOA state-vector simulator on the weight-k subspace.

Conventions (as in `backends.qaoa_model`): a basis state is a little-endian bit mask
(bit i = x_i); the weight-k subspace is the sorted list of masks of popcount k, and an
amplitude's position in it is the mask's *rank*. Sorted masks of equal popcount are in
colexicographic order, so the rank is the combinatorial number system's
``sum_t C(c_t, t + 1)`` over the set bits c_0 < c_1 < ... of the mask.

Ranks come from two small tables instead of a loop over the bits: with the mask split
into its low ``h`` bits and the rest, ``rank = low_rank[lo] + high_rank[popcount(lo),
hi]`` (``low_rank`` and ``low_count`` have 2**h entries, ``high_rank`` (h + 1, 2**(n-h));
a few hundred kB at n = 26).

Blocks. For a fixed high part ``hi`` (weight k - w) the states form one contiguous
*block* of C(h, w) ranks starting at ``high_rank[w, hi]``, in the order of ``low_rank``
(`Layout` holds the block starts). An XY gate on qubits i < j then acts in one of three
ways:

* low (j < h): inside every block, on local pairs (tables per gate and block weight);
  all the low gates that can run together are applied block by block while the block
  sits in the L1/L2 cache (one pass over the state for many gates);
* high (i >= h): between the blocks of hi and hi ^ (bits i, j), element by element
  (streams); two consecutive high gates on four distinct qubits share one pass over
  their groups of four blocks;
* cross (i < h <= j): between the block of hi (bit j clear) and that of hi | bit j
  (low weight one less), on local pairs (a table per i and weight).

Low gates commute with high gates (disjoint qubits), so `Layout` reorders a mixer layer
into passes (low pass, high gates, cross gates) while keeping every pair of gates that
share a qubit in circuit order: the unitary is exactly the circuit's (up to rounding).
The passes run over blocks with ``prange`` (on one thread unless ``PARALLEL_MIN`` says
otherwise); no two iterations write the same amplitude.

Gradient (`energy_and_gradient_xy` / `_x`): the adjoint method. Forward to the final
state psi, lambda = C psi, then back gate by gate: with U = exp(-i theta H),
dE/dtheta = 2 Im <lambda|H|psi> at that point, then psi and lambda are both rotated back
by U^dagger. H is the diagonal cost for a phase layer and X on the pair (a, b) for an XY
gate (exp(-i beta X) on each pair); all gates of a layer share beta, so only per-layer
sums are kept. Cost: about three forward passes for all 2p derivatives; memory: four
real arrays of C(n, k). Sums are taken per block (or per fixed chunk) into an array
and added in order, so results do not depend on the number of threads.

The state is kept as two float64 arrays (real, imaginary). Amplitude indices in the hot
loops are uint64: numba then skips the negative-index wraparound test, and the loops
vectorise; sin and cos of the phases come from a branch-free polynomial (`_cos_sin`)
that vectorises too. Every kernel takes one set of argument types (int64 / uint64 /
float64 arrays, bool flags), so it compiles once and is cached on disk
(``cache=True``; `backends._kernels` sets numba's cache folder fallback, which importing
it here applies).
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Iterator

import numba
import numpy as np
from numba import njit, prange

from . import _kernels  # noqa: F401  (numba cache-folder fallback, set at its import)

__all__ = ["weight_k_masks", "rank_tables", "ranks", "Layout", "block_split", "schedule",
           "build_layout", "evolve_xy", "evolve_x", "energy_and_gradient_xy",
           "energy_and_gradient_x", "expectation", "probabilities", "mask_energies",
           "threads_for", "warm_up"]

#: States of at least this many amplitudes run the passes on numba's threads; smaller ones
#: (and all, by default) on one thread. Default off: on this project's 2-core machines any
#: other busy process stalls every fork-join barrier (measured at n = 20 with a second job
#: running: 20x slower on two threads than on one), while an idle machine gains < 2x.
#: Set QCBO_QAOA_PARALLEL_MIN (e.g. 131072, n >= 20) to turn it on.
PARALLEL_MIN = int(os.environ.get("QCBO_QAOA_PARALLEL_MIN", "0")) or (1 << 62)
#: Fixed number of chunks for sums over all amplitudes (deterministic for any thread count).
_CHUNKS = 64
#: Pass kinds of `Layout.ops`: a low pass, one high gate, one cross gate, two high gates
#: on four distinct qubits (one pass over their four blocks).
_LOW, _HIGH, _CROSS, _HIGH2 = 0, 1, 2, 3


@njit(cache=True)
def _binomial_table(n):
    table = np.zeros((n + 2, n + 2), dtype=np.int64)
    for a in range(n + 2):
        table[a, 0] = 1
        for b in range(1, a + 1):
            table[a, b] = table[a - 1, b - 1] + table[a - 1, b]
    return table


@njit(cache=True)
def weight_k_masks(n, k):
    """The (C(n, k),) int64 masks of n bits with popcount k, ascending (Gosper's hack)."""
    if k < 0 or k > n:
        return np.zeros(0, dtype=np.int64)
    count = _binomial_table(n)[n, k]
    out = np.empty(count, dtype=np.int64)
    if k == 0:
        out[0] = 0
        return out
    y = (np.int64(1) << k) - 1
    for t in range(count):
        out[t] = y
        if t + 1 < count:
            c = y & -y
            r = y + c
            y = (((r ^ y) >> 2) // c) | r
    return out


@njit(cache=True)
def rank_tables(n, h):
    """(low_rank (2**h,), low_count (2**h,), high_rank (h + 1, 2**(n-h))) int64 for ranks
    of n-bit masks split after bit h (see the module docstring)."""
    binom = _binomial_table(n)
    low_rank = np.zeros(1 << h, dtype=np.int64)
    low_count = np.zeros(1 << h, dtype=np.int64)
    for lo in range(1 << h):
        t = 0
        r = 0
        for c in range(h):
            if (lo >> c) & 1:
                t += 1
                r += binom[c, t]
        low_rank[lo] = r
        low_count[lo] = t
    high_rank = np.zeros((h + 1, 1 << (n - h)), dtype=np.int64)
    for t0 in range(h + 1):
        for hi in range(1 << (n - h)):
            t = t0
            r = 0
            for c in range(n - h):
                if (hi >> c) & 1:
                    t += 1
                    r += binom[h + c, t]
            high_rank[t0, hi] = r
    return low_rank, low_count, high_rank


@njit(cache=True)
def ranks(masks, low_rank, low_count, high_rank, h):
    """Rank of each mask (m,) in its weight class (tests check it against sorting)."""
    lowmask = (np.int64(1) << h) - 1
    out = np.empty(masks.shape[0], dtype=np.int64)
    for t in range(masks.shape[0]):
        lo = masks[t] & lowmask
        out[t] = low_rank[lo] + high_rank[low_count[lo], masks[t] >> h]
    return out


# ------------------------------------------------------------------ layout (Python)
@dataclass(frozen=True)
class Layout:
    """Blocks and the pass schedule of one XY mixer layer (see the module docstring).

    ``his``: the high parts that hold states (ascending); ``start_of``/``w_of`` (2**(n-h),):
    block start (-1: none) and low weight per high part; ``blen`` (h + 1,): C(h, w);
    ``ops`` (passes, 5): [kind, a, b, c, d]: low pass over low gates a..b-1, a high or
    cross gate on qubits (a, b), or the high gates (a, b) and (c, d) in one pass; ``low_off`` (gates, h + 2) / ``low_pairs``: local pairs of low
    gate g at block weight w in rows low_off[g, w]..low_off[g, w + 1]; ``cross_off``
    (h, h + 2) / ``cross_pairs``: for low qubit i and weight w, the local rank in the
    weight-w block (bit i set) and in the weight-(w-1) block (bit i cleared).
    """

    h: int
    his: np.ndarray
    start_of: np.ndarray
    w_of: np.ndarray
    blen: np.ndarray
    ops: np.ndarray
    low_off: np.ndarray
    low_pairs: np.ndarray
    cross_off: np.ndarray
    cross_pairs: np.ndarray

    def arrays(self) -> tuple:
        """The layout arguments of `evolve_xy` and `energy_and_gradient_xy`."""
        return (self.his, self.start_of, self.w_of, self.blen, self.ops, self.low_off,
                self.low_pairs, self.cross_off, self.cross_pairs, self.h)


#: Pair consecutive disjoint high gates into one pass (`_high_gate2`).
PAIR_HIGH = True
#: Extra low qubits over n // 2 in the block split (see `block_split`).
EXTRA_LOW = 0


def block_split(n: int) -> int:
    """h: the low qubits of a block (blocks of at most C(h, h/2) states)."""
    return min(n, n // 2 + EXTRA_LOW)


def schedule(edges: list[tuple[int, int]], h: int) -> tuple[list[tuple[int, int, int]],
                                                             list[tuple[int, int]]]:
    """Passes for the gates ``edges`` (i < j, circuit order): ([(kind, a, b, c, d)], low
    gates); see `Layout`.

    Repeatedly: every low gate that no earlier unscheduled gate on a shared qubit holds
    back (one low pass), then such high gates, then such cross gates. A gate moves only
    past gates on other qubits, which commute with it.
    """
    def kind(e: tuple[int, int]) -> int:
        return _LOW if e[1] < h else (_HIGH if e[0] >= h else _CROSS)

    remaining = [tuple(sorted(e)) for e in edges]
    ops: list[tuple[int, int, int]] = []
    low_gates: list[tuple[int, int]] = []
    while remaining:
        for want in (_LOW, _HIGH, _CROSS):
            blocked: set[int] = set()
            taken: list[tuple[int, int]] = []
            rest: list[tuple[int, int]] = []
            for e in remaining:
                if kind(e) == want and e[0] not in blocked and e[1] not in blocked:
                    taken.append(e)
                else:
                    blocked.update(e)
                    rest.append(e)
            remaining = rest
            if not taken:
                continue
            if want == _LOW:
                ops.append((_LOW, len(low_gates), len(low_gates) + len(taken), 0, 0))
                low_gates += taken
            elif want == _CROSS:
                ops += [(want, i, j, 0, 0) for i, j in taken]
            else:
                # consecutive disjoint high gates commute: pair them in one pass
                while taken:
                    e = taken.pop(0)
                    if PAIR_HIGH and taken and not set(e) & set(taken[0]):
                        f = taken.pop(0)
                        ops.append((_HIGH2, e[0], e[1], f[0], f[1]))
                    else:
                        ops.append((_HIGH, e[0], e[1], 0, 0))
    return ops, low_gates


def build_layout(n: int, k: int, h: int, edges: list[tuple[int, int]],
                 tables: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Layout:
    """The `Layout` of the weight-k subspace of n qubits split after bit h (``tables``:
    `rank_tables` (n, h)) for one mixer layer of ``edges``."""
    low_rank, low_count, high_rank = tables
    his_all = np.arange(1 << (n - h), dtype=np.int64)
    w_of = k - np.array([bin(v).count("1") for v in his_all], dtype=np.int64)
    valid = (w_of >= 0) & (w_of <= h)
    start_of = np.full(len(his_all), -1, dtype=np.int64)
    start_of[valid] = high_rank[w_of[valid], his_all[valid]]
    blen = np.array([math.comb(h, w) for w in range(h + 1)], dtype=np.int64)
    ops, low_gates = schedule(edges, h)

    los = np.arange(1 << h, dtype=np.int64)

    def table(selected: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """Per entry (lo_a, lo_b) arrays: rows sorted by (weight of lo_a, rank of lo_a)."""
        off = np.zeros((max(1, len(selected)), h + 2), dtype=np.int64)
        rows = []
        total = 0
        for g, (la, lb) in enumerate(selected):
            order = np.lexsort((low_rank[la], low_count[la]))
            la, lb = la[order], lb[order]
            counts = np.bincount(low_count[la], minlength=h + 1)
            off[g, 1:] = total + np.cumsum(counts)
            off[g, 0] = total
            total += len(la)
            rows.append(np.stack([low_rank[la], low_rank[lb]], axis=1))
        pairs = np.concatenate(rows) if rows else np.zeros((0, 2), dtype=np.uint64)
        return off, np.ascontiguousarray(pairs, dtype=np.uint64).reshape(-1, 2)

    low_sel = []
    for i, j in low_gates:
        la = los[((los >> i) & 1 == 1) & ((los >> j) & 1 == 0)]
        low_sel.append((la, la ^ (1 << i) ^ (1 << j)))
    low_off, low_pairs = table(low_sel)
    cross_sel = []
    for i in range(h):
        la = los[(los >> i) & 1 == 1]
        cross_sel.append((la, la ^ (1 << i)))
    cross_off, cross_pairs = table(cross_sel)
    return Layout(h, his_all[valid], start_of, w_of, blen,
                  np.array(ops, dtype=np.int64).reshape(-1, 5), low_off, low_pairs,
                  cross_off, cross_pairs)


# ------------------------------------------------------------------ gates
@njit(cache=True)
def _abs_max(values):
    top = 0.0
    for r in range(values.shape[0]):
        top = max(top, abs(values[r]))
    return top


@njit(cache=True)
def _ordered_sum(part):
    """part[0] + part[1] + ... in order (np.sum in a parallel function is a parallel
    reduction, whose order depends on the threads)."""
    total = 0.0
    for t in range(part.shape[0]):
        total += part[t]
    return total


@njit(cache=True, inline="always")
def _rotate(re, im, x, y, c, sn):
    """(a, b) -> (c a - i sn b, c b - i sn a) on amplitudes x and y (split re/im)."""
    ar = re[x]
    ai = im[x]
    br = re[y]
    bi = im[y]
    re[x] = c * ar + sn * bi
    im[x] = c * ai - sn * br
    re[y] = c * br + sn * ai
    im[y] = c * bi - sn * ar


@njit(cache=True, inline="always")
def _rotate_adj(pr, pi, lr, li, x, y, c, sn):
    """Im(conj(l_x) p_y + conj(l_y) p_x), then (c, sn) applied to p and to l."""
    term = lr[x] * pi[y] - li[x] * pr[y] + lr[y] * pi[x] - li[y] * pr[x]
    _rotate(pr, pi, x, y, c, sn)
    _rotate(lr, li, x, y, c, sn)
    return term


# fdlibm's kernels of sin and cos on [-pi/4, pi/4] and its three-part pi/2 (the first
# part has 33 bits, so k * _PIO2_1 is exact for |k| < 2**20)
_S1, _S2, _S3 = -1.66666666666666324348e-01, 8.33333333332248946124e-03, -1.98412698298579493134e-04
_S4, _S5, _S6 = 2.75573137070700676789e-06, -2.50507602534068634195e-08, 1.58969099521155010221e-10
_C1, _C2, _C3 = 4.16666666666666019037e-02, -1.38888888888741095749e-03, 2.48015872894767294178e-05
_C4, _C5, _C6 = -2.75573143513906633035e-07, 2.08757232129817482790e-09, -1.13596475577881948265e-11
_INV_PIO2 = 6.36619772367581382433e-01
_PIO2_1, _PIO2_2, _PIO2_3 = 1.57079632673412561417e+00, 6.07710050630396597660e-11, 2.02226624871116645580e-21
#: |phase| below which `_cos_sin` is used (its reduction is exact far beyond).
_FAST_PHASE = 1e5


@njit(cache=True, inline="always")
def _cos_sin(x):
    """(cos x, sin x) within 1 ulp or so for |x| < _FAST_PHASE: branch-free, so a loop of
    them vectorises (~10x faster than math.cos and math.sin)."""
    k = math.floor(x * _INV_PIO2 + 0.5)
    r = ((x - k * _PIO2_1) - k * _PIO2_2) - k * _PIO2_3
    z = r * r
    s = r + (z * r) * (_S1 + z * (_S2 + z * (_S3 + z * (_S4 + z * (_S5 + z * _S6)))))
    c = 1.0 - (0.5 * z - z * (z * (_C1 + z * (_C2 + z * (_C3 + z * (_C4 + z * (_C5 + z * _C6)))))))
    q = np.int64(k)
    odd = (q & 1) != 0
    c1 = s if odd else c
    s1 = c if odd else s
    return (1.0 - ((q + 1) & 2)) * c1, (1.0 - (q & 2)) * s1


@njit(cache=True)
def _run_terms(pr, pi, lr, li, sa, sb, length):
    """sum_l Im(conj(l_a) p_b + conj(l_b) p_a) over a = sa + l, b = sb + l (uint64), with
    four accumulators in a fixed order (a single one would serialise the loop)."""
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    four = np.uint64(4)
    l = np.uint64(0)
    while l + four <= length:
        a0 += lr[sa + l] * pi[sb + l] - li[sa + l] * pr[sb + l] + lr[sb + l] * pi[sa + l] - li[sb + l] * pr[sa + l]
        m = l + np.uint64(1)
        a1 += lr[sa + m] * pi[sb + m] - li[sa + m] * pr[sb + m] + lr[sb + m] * pi[sa + m] - li[sb + m] * pr[sa + m]
        m = l + np.uint64(2)
        a2 += lr[sa + m] * pi[sb + m] - li[sa + m] * pr[sb + m] + lr[sb + m] * pi[sa + m] - li[sb + m] * pr[sa + m]
        m = l + np.uint64(3)
        a3 += lr[sa + m] * pi[sb + m] - li[sa + m] * pr[sb + m] + lr[sb + m] * pi[sa + m] - li[sb + m] * pr[sa + m]
        l += four
    while l < length:
        a0 += lr[sa + l] * pi[sb + l] - li[sa + l] * pr[sb + l] + lr[sb + l] * pi[sa + l] - li[sb + l] * pr[sa + l]
        l += np.uint64(1)
    return (a0 + a1) + (a2 + a3)


@njit(cache=True)
def _run_rotate(re, im, sa, sb, length, c, sn):
    """`_rotate` on amplitudes sa + l, sb + l for l < length (uint64; a vectorised loop)."""
    for l in range(length):
        _rotate(re, im, sa + l, sb + l, c, sn)


@njit(cache=True)
def _run_adj(pr, pi, lr, li, sa, sb, length, c, sn):
    """Adjoint step of one XY gate on the runs sa.., sb..: the terms, then p and l rotated."""
    acc = _run_terms(pr, pi, lr, li, sa, sb, length)
    _run_rotate(pr, pi, sa, sb, length, c, sn)
    _run_rotate(lr, li, sa, sb, length, c, sn)
    return acc


@njit(cache=True)
def _expectation_range(re, im, cost, lo, hi):
    """sum_r |psi_r|^2 cost_r over lo..hi-1 (uint64), four accumulators."""
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    four = np.uint64(4)
    r = lo
    while r + four <= hi:
        a0 += (re[r] * re[r] + im[r] * im[r]) * cost[r]
        m = r + np.uint64(1)
        a1 += (re[m] * re[m] + im[m] * im[m]) * cost[m]
        m = r + np.uint64(2)
        a2 += (re[m] * re[m] + im[m] * im[m]) * cost[m]
        m = r + np.uint64(3)
        a3 += (re[m] * re[m] + im[m] * im[m]) * cost[m]
        r += four
    while r < hi:
        a0 += (re[r] * re[r] + im[r] * im[r]) * cost[r]
        r += np.uint64(1)
    return (a0 + a1) + (a2 + a3)


@njit(cache=True)
def _phase_terms(pr, pi, lr, li, cost, lo, hi):
    """sum_r cost_r Im(conj(l_r) p_r) over lo..hi-1 (uint64), four accumulators."""
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    four = np.uint64(4)
    r = lo
    while r + four <= hi:
        a0 += cost[r] * (lr[r] * pi[r] - li[r] * pr[r])
        m = r + np.uint64(1)
        a1 += cost[m] * (lr[m] * pi[m] - li[m] * pr[m])
        m = r + np.uint64(2)
        a2 += cost[m] * (lr[m] * pi[m] - li[m] * pr[m])
        m = r + np.uint64(3)
        a3 += cost[m] * (lr[m] * pi[m] - li[m] * pr[m])
        r += four
    while r < hi:
        a0 += cost[r] * (lr[r] * pi[r] - li[r] * pr[r])
        r += np.uint64(1)
    return (a0 + a1) + (a2 + a3)


@njit(cache=True)
def _phase_range(re, im, cost, g, fast, lo, hi):
    """psi_r *= exp(-i g cost_r) for r in lo..hi-1 (uint64); fast: |g cost| < _FAST_PHASE."""
    if fast:
        for r in range(lo, hi):
            cs, sn = _cos_sin(-g * cost[r])
            a = re[r]
            b = im[r]
            re[r] = a * cs - b * sn
            im[r] = a * sn + b * cs
    else:
        for r in range(lo, hi):
            phase = -g * cost[r]
            cs = math.cos(phase)
            sn = math.sin(phase)
            a = re[r]
            b = im[r]
            re[r] = a * cs - b * sn
            im[r] = a * sn + b * cs


@njit(cache=True)
def _phase_adj_range(pr, pi, lr, li, cost, g, fast, lo, hi):
    """sum_r cost_r Im(conj(l_r) p_r) over lo..hi-1, then p and l times exp(+i g cost_r):
    in slices of 2048, the sum first, then the two vectorised phase loops."""
    acc = 0.0
    s0 = lo
    while s0 < hi:
        s1 = min(s0 + np.uint64(2048), hi)
        acc += _phase_terms(pr, pi, lr, li, cost, s0, s1)
        _phase_range(pr, pi, cost, -g, fast, s0, s1)
        _phase_range(lr, li, cost, -g, fast, s0, s1)
        s0 = s1
    return acc


@njit(cache=True, parallel=True)
def _phase(re, im, cost, g, cmax):
    """psi_r *= exp(-i g cost_r) (cmax: max |cost_r|)."""
    fast = abs(g) * cmax < _FAST_PHASE
    m = re.shape[0]
    for ch in prange(_CHUNKS):
        _phase_range(re, im, cost, g, fast, np.uint64(ch * m // _CHUNKS),
                     np.uint64((ch + 1) * m // _CHUNKS))


@njit(cache=True, parallel=True)
def _phase_adj(pr, pi, lr, li, cost, g, cmax):
    """sum_r cost_r Im(conj(l_r) p_r), then p and l multiplied by exp(+i g cost_r)."""
    m = pr.shape[0]
    fast = abs(g) * cmax < _FAST_PHASE
    part = np.zeros(_CHUNKS)
    for ch in prange(_CHUNKS):
        part[ch] = _phase_adj_range(pr, pi, lr, li, cost, g, fast, np.uint64(ch * m // _CHUNKS),
                                    np.uint64((ch + 1) * m // _CHUNKS))
    return _ordered_sum(part)


@njit(cache=True, parallel=True)
def _low_pass(re, im, his, start_of, w_of, low_off, low_pairs, g0, g1, c, sn):
    for t in prange(his.shape[0]):
        hi = his[t]
        base = np.uint64(start_of[hi])
        w = w_of[hi]
        for g in range(g0, g1):
            for q in range(low_off[g, w], low_off[g, w + 1]):
                _rotate(re, im, base + low_pairs[q, 0], base + low_pairs[q, 1], c, sn)


@njit(cache=True, parallel=True)
def _low_pass_adj(pr, pi, lr, li, his, start_of, w_of, low_off, low_pairs, g0, g1, c, sn):
    part = np.zeros(his.shape[0])
    for t in prange(his.shape[0]):
        hi = his[t]
        base = np.uint64(start_of[hi])
        w = w_of[hi]
        acc0 = 0.0
        acc1 = 0.0
        for g in range(g1 - 1, g0 - 1, -1):
            # two accumulators (the pairs of a gate are disjoint): half the add chain
            q = low_off[g, w]
            end = low_off[g, w + 1]
            while q + 1 < end:
                acc0 += _rotate_adj(pr, pi, lr, li, base + low_pairs[q, 0],
                                    base + low_pairs[q, 1], c, sn)
                acc1 += _rotate_adj(pr, pi, lr, li, base + low_pairs[q + 1, 0],
                                    base + low_pairs[q + 1, 1], c, sn)
                q += 2
            if q < end:
                acc0 += _rotate_adj(pr, pi, lr, li, base + low_pairs[q, 0],
                                    base + low_pairs[q, 1], c, sn)
        part[t] = acc0 + acc1
    return _ordered_sum(part)


@njit(cache=True, parallel=True)
def _high_gate(re, im, his, start_of, w_of, blen, bi, bj, c, sn):
    for t in prange(his.shape[0]):
        hi = his[t]
        if (hi & bi) != 0 and (hi & bj) == 0:
            sa = np.uint64(start_of[hi])
            sb = np.uint64(start_of[hi ^ bi ^ bj])
            for l in range(np.uint64(blen[w_of[hi]])):
                _rotate(re, im, sa + l, sb + l, c, sn)


@njit(cache=True, parallel=True)
def _high_gate_adj(pr, pi, lr, li, his, start_of, w_of, blen, bi, bj, c, sn):
    part = np.zeros(his.shape[0])
    for t in prange(his.shape[0]):
        hi = his[t]
        if (hi & bi) != 0 and (hi & bj) == 0:
            part[t] = _run_adj(pr, pi, lr, li, np.uint64(start_of[hi]),
                               np.uint64(start_of[hi ^ bi ^ bj]), np.uint64(blen[w_of[hi]]),
                               c, sn)
    return _ordered_sum(part)


@njit(cache=True, inline="always")
def _rot4(ar, ai, br, bi, c, sn):
    return c * ar + sn * bi, c * ai - sn * br, c * br + sn * ai, c * bi - sn * ar


@njit(cache=True, inline="always")
def _pair_roles(hi, bi, bj):
    """(active, lead): the gate on bits bi, bj pairs hi with hi ^ bi ^ bj (one of the
    bits set), and hi is the pair's first block (bit bi set)."""
    si = (hi & bi) != 0
    sj = (hi & bj) != 0
    return si != sj, si and not sj


@njit(cache=True, inline="always")
def _quad_starts(start_of, hi, m1, m2):
    """Starts of the four blocks hi ^ {0, m1, m2, m1 | m2} that two high gates mix."""
    return (np.uint64(start_of[hi]), np.uint64(start_of[hi ^ m1]),
            np.uint64(start_of[hi ^ m2]), np.uint64(start_of[hi ^ m1 ^ m2]))


@njit(cache=True, parallel=True)
def _high_gate2(re, im, his, start_of, w_of, blen, b1, c1, b2, c2, c, sn):
    """High gates on bits (b1, c1) and (b2, c2) (four distinct qubits) in one pass:
    each group of four blocks hi ^ {0, m1, m2, m1 | m2} is read and written once."""
    m1 = b1 | c1
    m2 = b2 | c2
    for t in prange(his.shape[0]):
        hi = his[t]
        act1, lead1 = _pair_roles(hi, b1, c1)
        act2, lead2 = _pair_roles(hi, b2, c2)
        length = np.uint64(blen[w_of[hi]])
        if act1 and act2:
            if lead1 and lead2:
                sa, sb, sc, sd = _quad_starts(start_of, hi, m1, m2)
                for l in range(length):
                    ar, ai, br, bi = _rot4(re[sa + l], im[sa + l], re[sb + l], im[sb + l], c, sn)
                    cr, ci, dr, di = _rot4(re[sc + l], im[sc + l], re[sd + l], im[sd + l], c, sn)
                    ar, ai, cr, ci = _rot4(ar, ai, cr, ci, c, sn)
                    br, bi, dr, di = _rot4(br, bi, dr, di, c, sn)
                    re[sa + l] = ar
                    im[sa + l] = ai
                    re[sb + l] = br
                    im[sb + l] = bi
                    re[sc + l] = cr
                    im[sc + l] = ci
                    re[sd + l] = dr
                    im[sd + l] = di
        elif (act1 and lead1) or (act2 and lead2):
            sa = np.uint64(start_of[hi])
            sb = np.uint64(start_of[hi ^ (m1 if act1 else m2)])
            for l in range(length):
                _rotate(re, im, sa + l, sb + l, c, sn)


@njit(cache=True, parallel=True)
def _high_gate2_adj(pr, pi, lr, li, his, start_of, w_of, blen, b1, c1, b2, c2, c, sn):
    m1 = b1 | c1
    m2 = b2 | c2
    part = np.zeros(his.shape[0])
    for t in prange(his.shape[0]):
        hi = his[t]
        act1, lead1 = _pair_roles(hi, b1, c1)
        act2, lead2 = _pair_roles(hi, b2, c2)
        length = np.uint64(blen[w_of[hi]])
        if act1 and act2:
            if lead1 and lead2:
                sa, sb, sc, sd = _quad_starts(start_of, hi, m1, m2)
                # gate 2 (the later one) on (a, c) and (b, d), then gate 1 on (a, b), (c, d)
                acc = _run_adj(pr, pi, lr, li, sa, sc, length, c, sn)
                acc += _run_adj(pr, pi, lr, li, sb, sd, length, c, sn)
                acc += _run_adj(pr, pi, lr, li, sa, sb, length, c, sn)
                acc += _run_adj(pr, pi, lr, li, sc, sd, length, c, sn)
                part[t] = acc
        elif (act1 and lead1) or (act2 and lead2):
            part[t] = _run_adj(pr, pi, lr, li, np.uint64(start_of[hi]),
                               np.uint64(start_of[hi ^ (m1 if act1 else m2)]), length, c, sn)
    return _ordered_sum(part)


@njit(cache=True, parallel=True)
def _cross_gate(re, im, his, start_of, w_of, cross_off, cross_pairs, i, bj, c, sn):
    for t in prange(his.shape[0]):
        hi = his[t]
        if (hi & bj) == 0:
            if start_of[hi | bj] >= 0:
                sb = np.uint64(start_of[hi | bj])
                sa = np.uint64(start_of[hi])
                w = w_of[hi]
                for q in range(cross_off[i, w], cross_off[i, w + 1]):
                    _rotate(re, im, sa + cross_pairs[q, 0], sb + cross_pairs[q, 1], c, sn)


@njit(cache=True, parallel=True)
def _cross_gate_adj(pr, pi, lr, li, his, start_of, w_of, cross_off, cross_pairs, i, bj, c, sn):
    part = np.zeros(his.shape[0])
    for t in prange(his.shape[0]):
        hi = his[t]
        if (hi & bj) == 0:
            if start_of[hi | bj] >= 0:
                sb = np.uint64(start_of[hi | bj])
                sa = np.uint64(start_of[hi])
                w = w_of[hi]
                acc = 0.0
                for q in range(cross_off[i, w], cross_off[i, w + 1]):
                    acc += _rotate_adj(pr, pi, lr, li, sa + cross_pairs[q, 0],
                                       sb + cross_pairs[q, 1], c, sn)
                part[t] = acc
    return _ordered_sum(part)


@njit(cache=True)
def _mixer_xy(re, im, beta, his, start_of, w_of, blen, ops, low_off, low_pairs, cross_off,
              cross_pairs, h):
    """The passes of one mixer layer."""
    c = math.cos(beta)
    sn = math.sin(beta)
    for o in range(ops.shape[0]):
        kind = ops[o, 0]
        a = ops[o, 1]
        b = ops[o, 2]
        if kind == _LOW:
            _low_pass(re, im, his, start_of, w_of, low_off, low_pairs, a, b, c, sn)
        elif kind == _HIGH2:
            _high_gate2(re, im, his, start_of, w_of, blen, np.int64(1) << (a - h),
                        np.int64(1) << (b - h), np.int64(1) << (ops[o, 3] - h),
                        np.int64(1) << (ops[o, 4] - h), c, sn)
        elif kind == _HIGH:
            _high_gate(re, im, his, start_of, w_of, blen, np.int64(1) << (a - h),
                       np.int64(1) << (b - h), c, sn)
        else:
            _cross_gate(re, im, his, start_of, w_of, cross_off, cross_pairs, a,
                        np.int64(1) << (b - h), c, sn)


@njit(cache=True)
def evolve_xy(re, im, cost, gammas, betas, his, start_of, w_of, blen, ops, low_off, low_pairs,
              cross_off, cross_pairs, h):
    """Apply p QAOA layers in place to re + i im (weight-k states): phase exp(-i gamma
    cost), then the XY mixer layer of `Layout` (arguments: `Layout.arrays`)."""
    cmax = _abs_max(cost)
    for layer in range(gammas.shape[0]):
        _phase(re, im, cost, gammas[layer], cmax)
        _mixer_xy(re, im, betas[layer], his, start_of, w_of, blen, ops, low_off, low_pairs,
                  cross_off, cross_pairs, h)


@njit(cache=True, parallel=True)
def _cost_times(pr, pi, cost):
    """(lambda = cost * psi, <psi|cost|psi>), the sum in fixed chunks."""
    m = pr.shape[0]
    lr = np.empty(m)
    li = np.empty(m)
    part = np.zeros(_CHUNKS)
    for ch in prange(_CHUNKS):
        lo = np.uint64(ch * m // _CHUNKS)
        hi = np.uint64((ch + 1) * m // _CHUNKS)
        for r in range(lo, hi):
            lr[r] = cost[r] * pr[r]
            li[r] = cost[r] * pi[r]
        part[ch] = _expectation_range(pr, pi, cost, lo, hi)
    return lr, li, _ordered_sum(part)


@njit(cache=True)
def energy_and_gradient_xy(cost, gammas, betas, his, start_of, w_of, blen, ops, low_off,
                           low_pairs, cross_off, cross_pairs, h):
    """(<cost>, d<cost>/d(gammas, betas) (2p,)) from the Dicke state, by the adjoint method."""
    m = cost.shape[0]
    p = gammas.shape[0]
    pr = np.full(m, 1.0 / math.sqrt(m))
    pi = np.zeros(m)
    evolve_xy(pr, pi, cost, gammas, betas, his, start_of, w_of, blen, ops, low_off,
              low_pairs, cross_off, cross_pairs, h)
    lr, li, energy = _cost_times(pr, pi, cost)
    cmax = _abs_max(cost)
    grad = np.zeros(2 * p)
    for layer in range(p - 1, -1, -1):
        c = math.cos(betas[layer])
        sn = -math.sin(betas[layer])  # the inverse rotation
        acc = 0.0
        for o in range(ops.shape[0] - 1, -1, -1):
            kind = ops[o, 0]
            a = ops[o, 1]
            b = ops[o, 2]
            if kind == _LOW:
                acc += _low_pass_adj(pr, pi, lr, li, his, start_of, w_of, low_off, low_pairs,
                                     a, b, c, sn)
            elif kind == _HIGH2:
                acc += _high_gate2_adj(pr, pi, lr, li, his, start_of, w_of, blen,
                                       np.int64(1) << (a - h), np.int64(1) << (b - h),
                                       np.int64(1) << (ops[o, 3] - h),
                                       np.int64(1) << (ops[o, 4] - h), c, sn)
            elif kind == _HIGH:
                acc += _high_gate_adj(pr, pi, lr, li, his, start_of, w_of, blen,
                                      np.int64(1) << (a - h), np.int64(1) << (b - h), c, sn)
            else:
                acc += _cross_gate_adj(pr, pi, lr, li, his, start_of, w_of, cross_off,
                                       cross_pairs, a, np.int64(1) << (b - h), c, sn)
        grad[p + layer] = 2.0 * acc
        grad[layer] = 2.0 * _phase_adj(pr, pi, lr, li, cost, gammas[layer], cmax)
    return energy, grad


# ------------------------------------------------------------------ X mixer (2**n states)
@njit(cache=True, parallel=True)
def _rx(re, im, q, c, sn):
    """exp(-i beta X_q) on a full (2**n,) state (c = cos beta, sn = sin beta)."""
    bit = np.uint64(1) << np.uint64(q)
    below = bit - np.uint64(1)
    for t in prange(re.shape[0] // 2):
        u = np.uint64(t)
        a = ((u & ~below) << np.uint64(1)) | (u & below)
        _rotate(re, im, a, a | bit, c, sn)


@njit(cache=True, parallel=True)
def _rx_adj(pr, pi, lr, li, q, c, sn):
    bit = np.uint64(1) << np.uint64(q)
    below = bit - np.uint64(1)
    half = pr.shape[0] // 2
    part = np.zeros(_CHUNKS)
    for ch in prange(_CHUNKS):
        acc = 0.0
        for t in range(np.uint64(ch * half // _CHUNKS), np.uint64((ch + 1) * half // _CHUNKS)):
            a = ((t & ~below) << np.uint64(1)) | (t & below)
            acc += _rotate_adj(pr, pi, lr, li, a, a | bit, c, sn)
        part[ch] = acc
    return _ordered_sum(part)


@njit(cache=True)
def evolve_x(re, im, cost, gammas, betas, n):
    """Apply p QAOA layers with the X mixer (rx(2 beta) on every qubit) to a (2**n,) state."""
    cmax = _abs_max(cost)
    for layer in range(gammas.shape[0]):
        _phase(re, im, cost, gammas[layer], cmax)
        c = math.cos(betas[layer])
        sn = math.sin(betas[layer])
        for q in range(n):
            _rx(re, im, q, c, sn)


@njit(cache=True)
def energy_and_gradient_x(cost, gammas, betas, n):
    """(<cost>, gradient (2p,)) from |+>^n with the X mixer, by the adjoint method."""
    m = cost.shape[0]
    p = gammas.shape[0]
    pr = np.full(m, 1.0 / math.sqrt(m))
    pi = np.zeros(m)
    evolve_x(pr, pi, cost, gammas, betas, n)
    lr, li, energy = _cost_times(pr, pi, cost)
    cmax = _abs_max(cost)
    grad = np.zeros(2 * p)
    for layer in range(p - 1, -1, -1):
        c = math.cos(betas[layer])
        sn = -math.sin(betas[layer])
        acc = 0.0
        for q in range(n - 1, -1, -1):
            acc += _rx_adj(pr, pi, lr, li, q, c, sn)
        grad[p + layer] = 2.0 * acc
        grad[layer] = 2.0 * _phase_adj(pr, pi, lr, li, cost, gammas[layer], cmax)
    return energy, grad


# ------------------------------------------------------------------ read-out
@njit(cache=True, parallel=True)
def expectation(re, im, cost):
    """sum_r |psi_r|^2 cost_r (summed in fixed chunks)."""
    m = re.shape[0]
    part = np.zeros(_CHUNKS)
    for ch in prange(_CHUNKS):
        part[ch] = _expectation_range(re, im, cost, np.uint64(ch * m // _CHUNKS),
                                      np.uint64((ch + 1) * m // _CHUNKS))
    return _ordered_sum(part)


@njit(cache=True)
def probabilities(re, im):
    """|psi|^2 as float64."""
    out = np.empty(re.shape[0], dtype=np.float64)
    for r in range(re.shape[0]):
        out[r] = re[r] * re[r] + im[r] * im[r]
    return out


@njit(cache=True)
def mask_energies(masks, Q, offset):
    """x Q x + offset for the state of each mask (x_i = bit i), Q symmetric (n, n)."""
    n = Q.shape[0]
    out = np.empty(masks.shape[0], dtype=np.float64)
    ones = np.empty(n, dtype=np.int64)
    for t in range(masks.shape[0]):
        m = masks[t]
        count = 0
        for i in range(n):
            if (m >> i) & 1:
                ones[count] = i
                count += 1
        e = 0.0
        for a in range(count):
            i = ones[a]
            e += Q[i, i]
            row = 0.0
            for b in range(a + 1, count):
                row += Q[i, ones[b]]
            e += 2.0 * row
        out[t] = e + offset
    return out


@contextlib.contextmanager
def threads_for(m: int) -> Iterator[None]:
    """Run the kernels inside on one thread when the state (m amplitudes) is small."""
    if m >= PARALLEL_MIN:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


_WARM = False


def warm_up() -> None:
    """Compile (or load from the disk cache) every kernel once on a tiny case, so that
    compilation never eats into a caller's time limit."""
    global _WARM
    if _WARM:
        return
    n, k, h = 4, 2, 2
    masks = weight_k_masks(n, k)
    tables = rank_tables(n, h)
    ranks(masks, *tables, h)
    # n = 6, h = 2: a low pass, a paired and a single high gate, a cross gate
    layout = build_layout(6, 3, 2, [(0, 1), (2, 3), (4, 5), (1, 2), (3, 4)], rank_tables(6, 2))
    cost = np.arange(20, dtype=np.float64)
    re = np.full(20, 1 / math.sqrt(20))
    im = np.zeros(20)
    one = np.array([0.1])
    evolve_xy(re, im, cost, one, one, *layout.arrays())
    energy_and_gradient_xy(cost, one, one, *layout.arrays())
    evolve_x(np.full(2**n, 0.25), np.zeros(2**n), np.zeros(2**n), one, one, n)
    energy_and_gradient_x(np.zeros(2**n), one, one, n)
    expectation(re, im, cost)
    probabilities(re, im)
    mask_energies(masks, np.eye(n), 0.0)
    _WARM = True
