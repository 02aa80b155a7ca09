"""Compiled (numba) inner loops shared by the `sa` and `tabu` backends.

Conventions, for Q symmetric (n, n) float64 and x an (n,) int8 0/1 vector, with
``E(x) = x @ Q @ x`` (offset left out):

* ``sgn[i] = 1 - 2 x[i]`` (float64): +1 when x_i = 0, -1 when x_i = 1.
* ``d[i]`` is the change of E when x_i alone flips:
  ``d[i] = sgn[i] * (Q_ii + 2 * sum_{j != i} Q_ij x_j)``.
  Flipping m changes every other d[l] by ``2 * sgn[l] * Q_lm * (x_m' - x_m)`` and
  negates d[m]: O(n) per accepted move.
* A swap moves one variable i from 1 to 0 and one variable j from 0 to 1; its change
  is ``d[i] + d[j] - 2 Q_ij``: O(1) from the maintained d.
* ``members`` is a permutation of 0..n-1 whose first k entries are the variables at 1
  and the rest those at 0; ``pos[v]`` is v's index in ``members``. This lets a swap
  proposal draw a random 1 and a random 0 in O(1).

Randomness: numba's own generator, re-seeded from a child seed (`seed_rng`) at the start
of every restart, so runs reproduce from the seed and are independent of chunking.
Every kernel takes exactly one set of argument types (float64 / int8 / int64 arrays,
Q read-only), so each compiles once and is cached on disk (``cache=True``).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numba
import numpy as np
from numba import njit

__all__ = [
    "as_matrix", "seed_rng", "energy", "flip_deltas", "order_members", "apply_flip",
    "apply_swap", "anneal_flips", "anneal_swaps", "sample_move_scale", "descend_flips",
    "descend_swaps", "tabu_flips", "tabu_swaps", "warm_up",
]

def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _cache_fallback(candidates: list[Path]) -> str | None:
    """A private temporary cache folder when none of numba's usual ones is writable.

    Numba caches next to the source (``__pycache__``), then in the user's cache folder;
    with neither writable (a read-only install run with HOME unset or read-only) it
    refuses to compile ``cache=True`` functions at import. None: a usual one works.
    """
    if any(_writable(folder) for folder in candidates):
        return None
    folder = Path(tempfile.gettempdir()) / f"qcbo-numba-cache-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        if folder.stat().st_uid == os.getuid() and _writable(folder):
            return str(folder)
    except OSError:
        pass
    return tempfile.mkdtemp(prefix="qcbo-numba-cache-")


def _usual_cache_folders() -> list[Path]:
    xdg = os.environ.get("XDG_CACHE_HOME")
    user = Path(xdg) if xdg else Path(os.path.expanduser("~")) / ".cache"
    return [Path(__file__).resolve().parent / "__pycache__", user / "numba"]


if not numba.config.CACHE_DIR:
    _fallback = _cache_fallback(_usual_cache_folders())
    if _fallback is not None:
        numba.config.CACHE_DIR = _fallback


#: Metropolis: uphill moves with beta * delta above this are never accepted (p < 1e-17).
_MAX_EXPONENT = 40.0


def as_matrix(q: np.ndarray) -> np.ndarray:
    """Q as the one array type the kernels are compiled for: C-contiguous, float64, read-only."""
    m = np.ascontiguousarray(q, dtype=np.float64)
    if m.flags.writeable:
        m = m.copy()
        m.setflags(write=False)
    return m


@njit(cache=True)
def seed_rng(seed: int) -> None:
    """Seed numba's generator (not numpy's): called at the start of every restart."""
    np.random.seed(seed)


@njit(cache=True)
def energy(Q, x):
    """x @ Q @ x for int8 x."""
    n = x.shape[0]
    e = 0.0
    for i in range(n):
        if x[i]:
            row = 0.0
            for j in range(n):
                if x[j]:
                    row += Q[i, j]
            e += row
    return e


@njit(cache=True)
def flip_deltas(Q, x, sgn, d):
    """Fill sgn and d (see the module docstring) from x in O(n^2)."""
    n = x.shape[0]
    for i in range(n):
        f = 0.0
        for j in range(n):
            if x[j] and j != i:
                f += Q[i, j]
        sgn[i] = 1.0 - 2.0 * x[i]
        d[i] = sgn[i] * (Q[i, i] + 2.0 * f)


@njit(cache=True)
def order_members(x, members, pos):
    """Fill members (ones first, then zeros, each in index order) and pos; return k."""
    n = x.shape[0]
    k = 0
    for v in range(n):
        if x[v]:
            k += 1
    a, b = 0, k
    for v in range(n):
        if x[v]:
            members[a] = v
            pos[v] = a
            a += 1
        else:
            members[b] = v
            pos[v] = b
            b += 1
    return k


@njit(cache=True)
def apply_flip(Q, x, sgn, d, m):
    """Flip x[m] and update sgn, d in O(n)."""
    n = x.shape[0]
    change = sgn[m]  # +1: 0 -> 1, -1: 1 -> 0
    dm = d[m]
    for l in range(n):
        d[l] += 2.0 * sgn[l] * Q[m, l] * change
    d[m] = -dm
    x[m] = 1 - x[m]
    sgn[m] = -sgn[m]


@njit(cache=True)
def apply_swap(Q, x, sgn, d, members, pos, a, b):
    """Swap members[a] (at 1, a < k) with members[b] (at 0, b >= k); update all in O(n)."""
    n = x.shape[0]
    i = members[a]
    j = members[b]
    qij = Q[i, j]
    di = d[i]
    dj = d[j]
    for l in range(n):
        d[l] += 2.0 * sgn[l] * (Q[j, l] - Q[i, l])
    d[i] = -di + 2.0 * qij
    d[j] = -dj + 2.0 * qij
    x[i] = 0
    x[j] = 1
    sgn[i] = 1.0
    sgn[j] = -1.0
    members[a] = j
    members[b] = i
    pos[j] = a
    pos[i] = b


@njit(cache=True)
def sample_move_scale(Q, x, sgn, d, members, pos, k, samples):
    """Mean |delta| of ``samples`` random moves along a random walk from x (x is changed).

    Swaps when 0 < k < n is meant (k >= 0), single flips when k < 0. Every move is
    applied, so the walk visits typical states rather than just the start.
    """
    n = x.shape[0]
    total = 0.0
    count = 0
    for _ in range(samples):
        if k < 0:
            m = np.random.randint(0, n)
            delta = d[m]
            apply_flip(Q, x, sgn, d, m)
        else:
            if k == 0 or k == n:
                return 0.0
            a = np.random.randint(0, k)
            b = k + np.random.randint(0, n - k)
            delta = d[members[a]] + d[members[b]] - 2.0 * Q[members[a], members[b]]
            apply_swap(Q, x, sgn, d, members, pos, a, b)
        total += abs(delta)
        count += 1
    return total / max(count, 1)


@njit(cache=True)
def anneal_flips(Q, x, sgn, d, temps, e):
    """Metropolis single-flip sweeps (one sequential pass over all variables per temperature).

    Returns (energy, accepted moves); ``e`` is the energy of x on entry.
    """
    n = x.shape[0]
    accepted = 0
    for t in range(temps.shape[0]):
        beta = 1.0 / temps[t]
        for m in range(n):
            delta = d[m]
            if delta > 0.0:
                z = beta * delta
                if z > _MAX_EXPONENT or np.random.random() >= math.exp(-z):
                    continue
            apply_flip(Q, x, sgn, d, m)
            e += delta
            accepted += 1
    return e, accepted


@njit(cache=True)
def anneal_swaps(Q, x, sgn, d, members, pos, k, rowmax, temps, proposals, e):
    """Metropolis swap moves: ``proposals`` random (1, 0) pairs per temperature.

    Keeps sum(x) = k throughout. Returns (energy, accepted moves).
    Metropolis in threshold form: with u uniform, accept iff delta < -T ln(u). The
    threshold is drawn before Q[i, j] is read, so that most rejections at low temperature
    come from the bound ``delta >= d[i] + d[j] - 2 rowmax[i]`` alone, without reading
    Q[i, j] (a cache miss on large Q, which would otherwise dominate the cost of a
    proposal); a bound above 40 T rejects without drawing at all (p < e^-40).
    """
    n = x.shape[0]
    accepted = 0
    if k == 0 or k == n:
        return e, accepted
    zeros = n - k
    for t in range(temps.shape[0]):
        temp = temps[t]
        cutoff = _MAX_EXPONENT * temp  # moves above it are accepted with p < e^-40
        for _ in range(proposals):
            # One uniform draw picks both: its integer part the 1, its fraction the 0.
            r = np.random.random() * k
            a = min(int(r), k - 1)
            b = k + min(int((r - a) * zeros), zeros - 1)
            i = members[a]
            j = members[b]
            bound = d[i] + d[j] - 2.0 * rowmax[i]
            if bound > cutoff:
                continue
            u = np.random.random()
            threshold = -temp * math.log(u) if u > 0.0 else np.inf
            if bound > threshold:
                continue
            delta = d[i] + d[j] - 2.0 * Q[i, j]
            if delta > threshold:
                continue
            apply_swap(Q, x, sgn, d, members, pos, a, b)
            e += delta
            accepted += 1
    return e, accepted


@njit(cache=True)
def _best_swap(Q, d, members, k, rowmax, tabu_until, it, e, aspiration, use_tabu):
    """The best admissible swap: (a, b, delta), a = -1 when none is admissible.

    Admissible: neither variable tabu (``tabu_until[v] > it``), or the move reaches an
    energy below ``aspiration``. Exact; pairs are filtered by the bound
    ``delta(i, j) >= base[i] + d[j]`` with ``base[i] = d[i] - 2 rowmax[i]``
    (rowmax[i] = max_j Q_ij): after seeding with the admissible pair of smallest flip
    deltas, only the few ones and zeros that can beat it are scanned pairwise.
    """
    n = members.shape[0]
    best_a = -1
    best_b = -1
    dmin0 = np.inf
    for b in range(k, n):
        dj = d[members[b]]
        if dj < dmin0:
            dmin0 = dj
        if not (use_tabu and tabu_until[members[b]] > it) and (
                best_b < 0 or dj < d[members[best_b]]):
            best_b = b
    for a in range(k):
        if not (use_tabu and tabu_until[members[a]] > it) and (
                best_a < 0 or d[members[a]] < d[members[best_a]]):
            best_a = a
    best = np.inf
    if best_a >= 0 and best_b >= 0:
        best = d[members[best_a]] + d[members[best_b]] - 2.0 * Q[members[best_a], members[best_b]]
    else:
        best_a = -1
        best_b = -1
    # Candidate ones: base + dmin0 < best; candidate zeros: min base + d < best.
    ones = np.empty(k, dtype=np.int64)
    n_ones = 0
    min_base = np.inf
    for a in range(k):
        i = members[a]
        base = d[i] - 2.0 * rowmax[i]
        if base + dmin0 < best:
            ones[n_ones] = a
            n_ones += 1
            if base < min_base:
                min_base = base
    if n_ones == 0:
        return best_a, best_b, best
    zeros = np.empty(n - k, dtype=np.int64)
    n_zeros = 0
    for b in range(k, n):
        if min_base + d[members[b]] < best:
            zeros[n_zeros] = b
            n_zeros += 1
    for ia in range(n_ones):
        a = ones[ia]
        i = members[a]
        di = d[i]
        base = di - 2.0 * rowmax[i]
        if base + dmin0 >= best:
            continue
        i_tabu = use_tabu and tabu_until[i] > it
        for ib in range(n_zeros):
            b = zeros[ib]
            j = members[b]
            dj = d[j]
            if base + dj >= best:
                continue
            delta = di + dj - 2.0 * Q[i, j]
            if delta < best:
                if use_tabu and (i_tabu or tabu_until[j] > it) and not (e + delta < aspiration):
                    continue
                best = delta
                best_a = a
                best_b = b
    return best_a, best_b, best


@njit(cache=True)
def descend_swaps(Q, x, sgn, d, members, pos, k, rowmax, e, tol):
    """Steepest descent over swaps until no swap lowers E by more than tol. Returns E."""
    n = x.shape[0]
    if k == 0 or k == n:
        return e
    no_tabu = np.zeros(n, dtype=np.int64)
    while True:
        a, b, delta = _best_swap(Q, d, members, k, rowmax, no_tabu, 0, e, -np.inf, False)
        if a < 0 or not delta < -tol:
            return e
        apply_swap(Q, x, sgn, d, members, pos, a, b)
        e += delta


@njit(cache=True)
def descend_flips(Q, x, sgn, d, e, tol):
    """Steepest descent over single flips. Returns E."""
    n = x.shape[0]
    while True:
        m = 0
        for l in range(1, n):
            if d[l] < d[m]:
                m = l
        if not d[m] < -tol:
            return e
        e += d[m]
        apply_flip(Q, x, sgn, d, m)


@njit(cache=True)
def _restore(Q, x, sgn, d, members, pos, best_x):
    """Set x to best_x and rebuild sgn, d, members, pos; return (k, energy)."""
    x[:] = best_x
    flip_deltas(Q, x, sgn, d)
    k = order_members(x, members, pos)
    return k, energy(Q, x)


@njit(cache=True)
def tabu_swaps(Q, x, sgn, d, members, pos, k, rowmax, tabu_until, best_x, istate, fstate,
               until, tenure, stall, perturb, tol):
    """Tabu search over swaps until iteration ``until`` (resumable in chunks).

    ``istate`` = [iteration, last improvement, perturbations, aspirations, forced moves];
    ``fstate`` = [current energy, best energy]; best_x holds the best state seen.
    Each step applies the best admissible swap (even uphill); the variables moved become
    tabu for ``tenure + randint(0, tenure]`` steps; aspiration admits a tabu move that
    beats the best energy. After ``stall`` steps without improvement the search returns to
    best_x and applies ``perturb`` random swaps (iterated tabu search).
    """
    n = x.shape[0]
    if k == 0 or k == n:
        return
    e = fstate[0]
    best_e = fstate[1]
    it = istate[0]
    while it < until:
        a, b, delta = _best_swap(Q, d, members, k, rowmax, tabu_until, it, e, best_e - tol,
                                 True)
        if a < 0:  # every move tabu: take the best regardless
            a, b, delta = _best_swap(Q, d, members, k, rowmax, tabu_until, it, e, -np.inf,
                                     False)
            istate[4] += 1
        elif tabu_until[members[a]] > it or tabu_until[members[b]] > it:
            istate[3] += 1
        i = members[a]
        j = members[b]
        apply_swap(Q, x, sgn, d, members, pos, a, b)
        e += delta
        tabu_until[i] = it + tenure + 1 + np.random.randint(0, tenure + 1)
        tabu_until[j] = it + tenure + 1 + np.random.randint(0, tenure + 1)
        it += 1
        if e < best_e - tol:
            best_e = e
            best_x[:] = x
            istate[1] = it
        elif it - istate[1] > stall:
            k, e = _restore(Q, x, sgn, d, members, pos, best_x)
            for _ in range(perturb):
                pa = np.random.randint(0, k)
                pb = k + np.random.randint(0, n - k)
                e += d[members[pa]] + d[members[pb]] - 2.0 * Q[members[pa], members[pb]]
                apply_swap(Q, x, sgn, d, members, pos, pa, pb)
            tabu_until[:] = 0
            istate[1] = it
            istate[2] += 1
    istate[0] = it
    fstate[0] = e
    fstate[1] = best_e


@njit(cache=True)
def tabu_flips(Q, x, sgn, d, tabu_until, best_x, istate, fstate, until, tenure, stall,
               perturb, tol):
    """Tabu search over single flips (no constraint); same state layout as `tabu_swaps`."""
    n = x.shape[0]
    e = fstate[0]
    best_e = fstate[1]
    it = istate[0]
    while it < until:
        m = -1
        best = np.inf
        for l in range(n):
            dl = d[l]
            if dl < best and (tabu_until[l] <= it or e + dl < best_e - tol):
                best = dl
                m = l
        if m < 0:
            for l in range(n):
                if d[l] < best:
                    best = d[l]
                    m = l
            istate[4] += 1
        elif tabu_until[m] > it:
            istate[3] += 1
        apply_flip(Q, x, sgn, d, m)
        e += best
        tabu_until[m] = it + tenure + 1 + np.random.randint(0, tenure + 1)
        it += 1
        if e < best_e - tol:
            best_e = e
            best_x[:] = x
            istate[1] = it
        elif it - istate[1] > stall:
            x[:] = best_x
            flip_deltas(Q, x, sgn, d)
            e = energy(Q, x)
            for _ in range(perturb):
                pm = np.random.randint(0, n)
                e += d[pm]
                apply_flip(Q, x, sgn, d, pm)
            tabu_until[:] = 0
            istate[1] = it
            istate[2] += 1
    istate[0] = it
    fstate[0] = e
    fstate[1] = best_e


_WARM = False


def warm_up() -> None:
    """Compile (or load from the on-disk cache) every kernel once, on a tiny problem.

    Backends call this before starting their clock, so compilation never eats into a
    caller's time_limit.
    """
    global _WARM
    if _WARM:
        return
    n, k = 4, 2
    q = as_matrix(np.arange(n * n, dtype=np.float64).reshape(n, n) % 3 - 1.0)
    q = as_matrix(q + q.T)
    x = np.array([1, 1, 0, 0], dtype=np.int8)
    sgn = np.empty(n)
    d = np.empty(n)
    members = np.empty(n, dtype=np.int64)
    pos = np.empty(n, dtype=np.int64)
    rowmax = q.max(axis=1)
    temps = np.array([1.0])
    seed_rng(0)
    flip_deltas(q, x, sgn, d)
    order_members(x, members, pos)
    e = energy(q, x)
    sample_move_scale(q, x, sgn, d, members, pos, k, 2)
    sample_move_scale(q, x, sgn, d, members, pos, -1, 2)
    x[:] = [1, 1, 0, 0]
    flip_deltas(q, x, sgn, d)
    order_members(x, members, pos)
    e = energy(q, x)
    e, _ = anneal_swaps(q, x, sgn, d, members, pos, k, rowmax, temps, 2, e)
    e = descend_swaps(q, x, sgn, d, members, pos, k, rowmax, e, 1e-12)
    e, _ = anneal_flips(q, x, sgn, d, temps, e)
    e = descend_flips(q, x, sgn, d, e, 1e-12)
    x[:] = [1, 1, 0, 0]
    flip_deltas(q, x, sgn, d)
    k = order_members(x, members, pos)
    tabu = np.zeros(n, dtype=np.int64)
    best_x = x.copy()
    istate = np.zeros(5, dtype=np.int64)
    fstate = np.array([energy(q, x), energy(q, x)])
    tabu_swaps(q, x, sgn, d, members, pos, k, rowmax, tabu, best_x, istate, fstate,
               3, 1, 2, 1, 1e-12)
    istate[:] = 0
    tabu_flips(q, x, sgn, d, tabu, best_x, istate, fstate, 3, 1, 2, 1, 1e-12)
    _WARM = True


def random_state(n: int, k: int | None, seed: int) -> np.ndarray:
    """A uniformly random assignment ((n,) int8) with exactly k ones (any count if None)."""
    rng = np.random.default_rng(seed)
    if k is None:
        return rng.integers(0, 2, size=n).astype(np.int8)
    x = np.zeros(n, dtype=np.int8)
    x[rng.permutation(n)[:k]] = 1
    return x


#: Target duration of one compiled call when a time limit must be checked between calls.
_CHUNK_SECONDS = 0.02


def run_in_chunks(step, total: int, stop: float) -> int:
    """Run ``step(start, end)`` over the units [0, total) and return how many were done.

    Without a deadline (``stop`` = inf) this is one call. With one, the work is cut into
    chunks of about 20 ms (sized from the measured speed) and the clock is read between
    chunks, so a run overshoots its deadline by at most about one chunk. ``step`` keeps
    its state in arrays, so the result does not depend on how the work was cut.
    """
    import time

    if total <= 0:
        return 0
    if stop == float("inf"):
        step(0, total)
        return total
    done, chunk = 0, 1
    while done < total:
        now = time.perf_counter()
        if now >= stop:
            break
        end = min(total, done + chunk)
        step(done, end)
        elapsed = time.perf_counter() - now
        per_unit = max(elapsed, 1e-7) / (end - done)
        done = end
        room = max(stop - time.perf_counter(), 0.0)
        chunk = int(max(1, min(_CHUNK_SECONDS, room) / per_unit))
    return done


def iter_child_seeds(seed: int):
    """The seeds of `backends.base.child_seeds(seed, count)`, one at a time, lazily.

    ``SeedSequence.spawn`` numbers its children, so spawning them one by one gives the
    same seeds as spawning ``count`` at once, without paying for unused restarts.
    """
    parent = np.random.SeedSequence(seed)
    while True:
        yield int(parent.spawn(1)[0].generate_state(1)[0])


def timed_restarts(restarts: int, seeds, started: float, stop: float, used_seeds: list[int]):
    """Yield the restart numbers 0 .. restarts-1 that fit before ``stop``.

    Restart r > 0 starts only if the mean time of the r done so far (since ``started``)
    still fits. Each restart takes the next seed of ``seeds``, records it in ``used_seeds``
    and seeds numba's generator with it (`seed_rng`).
    """
    import time

    for r in range(restarts):
        if r > 0 and time.perf_counter() + (time.perf_counter() - started) / r > stop:
            return
        child = next(seeds)
        used_seeds.append(child)
        seed_rng(child)
        yield r, child
