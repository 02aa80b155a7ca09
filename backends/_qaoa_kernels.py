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

An XY gate on qubits i < j only mixes the pairs (a, b) of states that agree outside i, j
and hold one 1 there: a has it at i, b at j. Those pairs are the masks of n - 2 bits and
weight k - 1 (``pair_masks``, C(n-2, k-1) of them, shared by every edge) with a 0
inserted at i and at j, then one 1 at i (a) or j (b). For i >= 3 the gate runs by
segments instead: with the bits above i fixed, the states differing below i have
consecutive ranks (colex), so a pattern of the high bits gives C(i, w) consecutive pairs
(a streaming loop; 3-7x faster per pair at n = 22). Either way a mixer layer touches only
the amplitudes it changes; no per-edge index arrays. The state is kept as two float64
arrays (real, imaginary).

Every kernel takes one set of argument types (int64 / float64 / complex128 arrays), so it
compiles once and is cached on disk (``cache=True``; `backends._kernels` sets numba's
cache folder fallback, which importing it here applies).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import _kernels  # noqa: F401  (numba cache-folder fallback, set at its import)

__all__ = ["weight_k_masks", "rank_tables", "ranks", "evolve", "expectation",
           "probabilities", "mask_energies", "warm_up"]


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


@njit(cache=True)
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


@njit(cache=True)
def _xy_gate_pairs(re, im, pair_masks, i, j, c, sn, low_rank, low_count, high_rank, h):
    """exp(-i beta/2 (XX + YY)) on qubits i < j, pair by pair (c = cos beta, sn = sin beta):
    each pair is a mask of ``pair_masks`` with a 0 inserted at i and at j."""
    lowmask = (np.int64(1) << h) - 1
    below_i = (np.int64(1) << i) - 1
    below_j = (np.int64(1) << (j - 1)) - 1
    mid = below_j ^ below_i
    above = ~below_j
    bit_i = np.int64(1) << i
    bit_j = np.int64(1) << j
    for t in range(pair_masks.shape[0]):
        y = pair_masks[t]
        base = (y & below_i) | ((y & mid) << 1) | ((y & above) << 2)
        a = base | bit_i
        b = base | bit_j
        lo = a & lowmask
        ra = low_rank[lo] + high_rank[low_count[lo], a >> h]
        lo = b & lowmask
        rb = low_rank[lo] + high_rank[low_count[lo], b >> h]
        _rotate(re, im, ra, rb, c, sn)


@njit(cache=True)
def _xy_gate_segments(re, im, n, k, i, j, c, sn, low_rank, low_count, high_rank, h, binom):
    """The same gate by contiguous segments: for a fixed pattern P of the bits above i
    (j excluded), the states P + {i} + (w ones below i) have consecutive ranks, and so do
    P + {j} + (the same low bits), in the same order: C(i, w) pairs per pattern."""
    lowmask = (np.int64(1) << h) - 1
    m = n - i - 2
    below = (np.int64(1) << (j - i - 1)) - 1
    bit_i = np.int64(1) << i
    bit_j = np.int64(1) << j
    for u in range(0, min(m, k - 1) + 1):
        w = k - 1 - u
        if w > i:
            continue
        length = binom[i, w]
        fill = (np.int64(1) << w) - 1
        count = binom[m, u]
        z = (np.int64(1) << u) - 1
        for t in range(count):
            pattern = (((z & below) << 1) | ((z & ~below) << 2)) << i
            a = pattern | bit_i | fill
            b = pattern | bit_j | fill
            lo = a & lowmask
            ra = low_rank[lo] + high_rank[low_count[lo], a >> h]
            lo = b & lowmask
            rb = low_rank[lo] + high_rank[low_count[lo], b >> h]
            for l in range(length):
                _rotate(re, im, ra + l, rb + l, c, sn)
            if u > 0 and t + 1 < count:
                low_bit = z & -z
                r = z + low_bit
                z = (((r ^ z) >> 2) // low_bit) | r


#: Below this i the segments are too short to pay for their pattern enumeration.
_SEGMENT_MIN_I = 3


@njit(cache=True)
def _rx_all(re, im, n, c, sn):
    """rx(2 beta) = exp(-i beta X) on every qubit of a full (2**n,) state."""
    size = re.shape[0]
    for q in range(n):
        bit = np.int64(1) << q
        below = bit - 1
        for t in range(size // 2):
            a = ((t & ~below) << 1) | (t & below)
            _rotate(re, im, a, a | bit, c, sn)


@njit(cache=True)
def evolve(re, im, cost, gammas, betas, n, k, edges, pair_masks, low_rank, low_count,
           high_rank, h):
    """Apply p QAOA layers in place to the state re + i im: phase exp(-i gamma cost), then
    the mixer.

    ``edges`` (m, 2) int64: the XY gates of one mixer layer in circuit order (each row
    i < j); an empty ``edges`` means the X mixer on the full 2**n space.
    """
    binom = _binomial_table(n)
    for layer in range(gammas.shape[0]):
        g = gammas[layer]
        for r in range(re.shape[0]):
            phase = -g * cost[r]
            cs = math.cos(phase)
            sn = math.sin(phase)
            a = re[r]
            b = im[r]
            re[r] = a * cs - b * sn
            im[r] = a * sn + b * cs
        c = math.cos(betas[layer])
        sn = math.sin(betas[layer])
        if edges.shape[0] == 0:
            _rx_all(re, im, n, c, sn)
            continue
        for e in range(edges.shape[0]):
            i = edges[e, 0]
            j = edges[e, 1]
            if i >= _SEGMENT_MIN_I:
                _xy_gate_segments(re, im, n, k, i, j, c, sn, low_rank, low_count,
                                  high_rank, h, binom)
            else:
                _xy_gate_pairs(re, im, pair_masks, i, j, c, sn, low_rank, low_count,
                               high_rank, h)


@njit(cache=True)
def expectation(re, im, cost):
    """sum_r |psi_r|^2 cost_r."""
    total = 0.0
    for r in range(re.shape[0]):
        total += (re[r] * re[r] + im[r] * im[r]) * cost[r]
    return total


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


_WARM = False


def warm_up() -> None:
    """Compile (or load from the disk cache) every kernel once on a tiny case, so that
    compilation never eats into a caller's time limit."""
    global _WARM
    if _WARM:
        return
    n, k, h = 4, 2, 2
    masks = weight_k_masks(n, k)
    low_rank, low_count, high_rank = rank_tables(n, h)
    ranks(masks, low_rank, low_count, high_rank, h)
    pair_masks = weight_k_masks(n - 2, k - 1)
    re = np.full(len(masks), 1 / math.sqrt(len(masks)))
    im = np.zeros(len(masks))
    cost = np.arange(len(masks), dtype=np.float64)
    one = np.array([0.1])
    evolve(re, im, cost, one, one, n, k, np.array([[0, 1], [1, 3]], dtype=np.int64), pair_masks,
           low_rank, low_count, high_rank, h)
    evolve(np.full(2**n, 0.25), np.zeros(2**n), np.zeros(2**n), one, one, n, -1,
           np.zeros((0, 2), dtype=np.int64), pair_masks, low_rank, low_count, high_rank, h)
    expectation(re, im, cost)
    probabilities(re, im)
    mask_energies(masks, np.eye(n), 0.0)
    _WARM = True
