"""`tabu`: tabu search that keeps sum(x) = k at every step (numba-compiled).

Moves: with a cardinality k, swaps (one variable 1 -> 0, one 0 -> 1); without one,
single flips. Every step takes the best admissible move, downhill or not, found exactly
from the maintained flip deltas (swap delta ``d[i] + d[j] - 2 Q_ij``, with a bound that
skips most pairs without reading Q). The variables just moved become tabu for
``tenure + randint(0, tenure]`` steps; a tabu move is still admitted when it reaches an
energy below the best seen (aspiration). After ``stall`` steps without a new best the
search returns to the best state and applies ``perturb`` random moves (iterated tabu
search). Restarts, each with its own child seed, start from random states (or from the
warm start ``initial``). ``time_limit`` is checked between compiled chunks of about
20 ms; a new restart starts only when the mean restart time still fits.

Defaults scale with n: tenure ``clip(n // 100, 5, min(k, n - k) // 4)`` (flips:
``clip(n // 100, 5, n // 4)``), stall ``max(200, 3 n)`` steps, perturbation
``max(2, min(k, n - k) // 4)`` moves, ``max(3000, 30 n)`` steps per restart
(flips, which are cheaper: ``max(10000, 100 n)``).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from qcbo.problem import Problem

from . import _kernels as K
from .base import WARM_START, Backend, Option, RawSolution, deadline

__all__ = ["TabuBackend", "default_settings"]

log = logging.getLogger(__name__)


def default_settings(n: int, k: int | None) -> dict[str, int]:
    """The automatic iterations, tenure, stall and perturb for a problem of this shape."""
    room = n if k is None else min(k, n - k)
    cap = max(1, room // 4)
    return {
        # A flip step costs O(n), a swap step O(n) plus the pruned pair scan.
        "iterations": max(10000, 100 * n) if k is None else max(3000, 30 * n),
        "tenure": max(1, min(max(5, n // 100), cap)),
        "stall": max(200, 3 * n),
        "perturb": max(2, room // 4),
    }


class TabuBackend(Backend):
    """Native tabu search with swap moves (cardinality kept) or flips."""

    name = "tabu"
    icbs_options = {"iterations": 4000}
    summary = "tabu search, swap moves keep sum(x) = k; numba-compiled (native)"
    options = {
        "iterations": Option(int, None, "moves per restart (null: max(3000, 30 n) swaps, "
                                        "max(10000, 100 n) flips)", minimum=1),
        "restarts": Option(int, 1, "independent searches, each from its own child seed",
                           minimum=1),
        "tenure": Option(int, None, "base tabu tenure in moves (null: scales with n)", minimum=0),
        "stall": Option(int, None, "moves without a new best before perturbing (null: "
                                   "max(200, 3n))", minimum=1),
        "perturb": Option(int, None, "random moves applied to the best state when stalled "
                                     "(null: max(2, min(k, n - k) // 4); flips: max(2, n // 4))",
                          minimum=0),
        "initial": WARM_START,
    }

    def _solve(self, problem: Problem, *, seed: int, time_limit: float | None,
               iterations: int | None, restarts: int, tenure: int | None,
               stall: int | None, perturb: int | None,
               initial: np.ndarray | None) -> RawSolution:
        n, k = problem.n, problem.k
        auto = default_settings(n, k)
        iterations = auto["iterations"] if iterations is None else iterations
        tenure = auto["tenure"] if tenure is None else tenure
        stall = auto["stall"] if stall is None else stall
        perturb = auto["perturb"] if perturb is None else perturb
        warm = initial
        K.warm_up()
        stop = deadline(time_limit)
        started = time.perf_counter()

        q = K.as_matrix(problem.Q)
        rowmax = q.max(axis=1)
        seeds = K.iter_child_seeds(seed)
        used_seeds: list[int] = []
        x = np.empty(n, dtype=np.int8)
        sgn = np.empty(n)
        d = np.empty(n)
        members = np.empty(n, dtype=np.int64)
        pos = np.empty(n, dtype=np.int64)
        tabu_until = np.zeros(n, dtype=np.int64)
        scale = float(np.abs(q).max()) or 1.0
        tol = 1e-12 * scale * n

        candidates: list[np.ndarray] = []
        restart_energies: list[float] = []
        iterations_done: list[int] = []
        totals = np.zeros(5, dtype=np.int64)
        trivial = k is not None and (k == 0 or k == n)
        for _, child in K.timed_restarts(restarts, seeds, started, stop, used_seeds):
            x[:] = warm if warm is not None else K.random_state(n, k, child)
            K.flip_deltas(q, x, sgn, d)
            kk = K.order_members(x, members, pos)
            e = float(K.energy(q, x))
            tabu_until[:] = 0
            best_x = x.copy()
            istate = np.zeros(5, dtype=np.int64)
            fstate = np.array([e, e])

            def step(lo: int, hi: int) -> None:
                if k is None:
                    K.tabu_flips(q, x, sgn, d, tabu_until, best_x, istate, fstate, hi,
                                 tenure, stall, perturb, tol)
                else:
                    K.tabu_swaps(q, x, sgn, d, members, pos, kk, rowmax, tabu_until, best_x,
                                 istate, fstate, hi, tenure, stall, perturb, tol)

            done = 0 if trivial else K.run_in_chunks(step, iterations, stop)
            candidates.append(best_x)
            restart_energies.append(problem.energy(best_x))
            iterations_done.append(done)
            totals += istate

        best = int(np.argmin(restart_energies))
        best_x = candidates[best]
        warm_energy = None
        if warm is not None:
            warm_energy = problem.energy(warm)
            if warm_energy < restart_energies[best]:
                best_x = warm
        info = {
            "move": "flip" if k is None else "swap",
            "restarts_done": len(candidates),
            "restarts": restarts,
            "iterations": iterations,
            "iterations_done": iterations_done,
            "best_restart": best,
            "restart_energies": restart_energies,
            "tenure": tenure,
            "stall": stall,
            "perturb": perturb,
            "perturbations": int(totals[2]),
            "aspirations": int(totals[3]),
            "forced_moves": int(totals[4]),
            "stopped_by_time_limit": sum(iterations_done) < iterations * restarts and not trivial,
            "search_time_s": time.perf_counter() - started,
            "seeds": used_seeds,
        }
        if warm is not None:
            info["initial_energy"] = warm_energy
            info["initial_kept"] = bool(best_x is warm)
        log.debug("tabu: n=%d k=%s best %.6g", n, k, restart_energies[best])
        return RawSolution(best_x, samples=np.array(candidates), info=info)
