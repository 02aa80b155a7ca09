"""`sa`: simulated annealing that keeps sum(x) = k at every step (numba-compiled).

Moves: with a cardinality k, a swap (one variable 1 -> 0 and one 0 -> 1, drawn
uniformly), so every visited state is feasible; without one, single flips in sequential
sweeps. Each move's energy change comes in O(1) from the maintained flip deltas, an
accepted move updates them in O(n) (see `backends._kernels`).

Temperatures come from the problem's own scale: a short random walk from the start
state measures the mean |delta| of a move, ``s``. The schedule is geometric from
``T_hot = hot * s`` down to ``T_cold = cold * s``, one temperature per sweep; a sweep is
n swap proposals (or one pass of flips over all n variables). The defaults (0.3 and
0.01) were tuned on dense N(0, 1) blocks with n = 1024, k = 512: hotter starts only
waste moves, and the energy still falls below T = 0.05 s. Each restart has its own child
seed and ends with a steepest descent, so every answer is a local minimum of its move
set. Restarts alternate: the even ones (0, 2, ...) anneal from a fresh random state (or
the warm start ``initial``) from ``T_hot``; the odd ones re-anneal the best state so far
(``initial`` included) from ``T_reheat = reheat * s``. Re-annealing alone does best on n = 1024 blocks but
loses diversity on small and unconstrained instances (it missed an OR-Library bqp100
optimum and 3 of 100 n = 24 optima that independent restarts found); alternating keeps
both. ``reheat=None`` gives independent restarts only. The best of the restarts (and of
``initial``, if given) is returned.

``time_limit`` is checked between compiled chunks of about 20 ms; a new restart starts
only when the mean restart time still fits, so with a large ``restarts`` the search
fills the time limit with complete anneals.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping

import numpy as np

from qcbo.errors import InputError
from qcbo.problem import Problem

from . import _kernels as K
from .base import WARM_START, Backend, Option, RawSolution, deadline

__all__ = ["SimulatedAnnealingBackend"]

log = logging.getLogger(__name__)

#: Random moves used to measure the typical |delta| of a move.
_SCALE_SAMPLES = 2000


class SimulatedAnnealingBackend(Backend):
    """Native simulated annealing with swap moves (cardinality kept) or flips."""

    name = "sa"
    icbs_options = {"sweeps": 100, "restarts": 2}
    summary = "simulated annealing, swap moves keep sum(x) = k; numba-compiled (native)"
    options = {
        "sweeps": Option(int, 500, "temperatures per restart; each is n swap proposals or one "
                                   "pass of flips", minimum=1),
        "restarts": Option(int, 10, "anneals, each with its own child seed", minimum=1),
        "hot": Option(float, 0.3, "first temperature, as a fraction of the mean |delta| of a "
                                  "move", greater_than=0),
        "cold": Option(float, 0.01, "last temperature, as a fraction of the mean |delta| of a "
                                    "move (<= hot)", greater_than=0),
        "reheat": Option(float, 0.15, "odd restarts re-anneal the best state so far from this "
                                      "fraction of the mean |delta| (>= cold; null: all restarts "
                                      "fresh)", greater_than=0, nullable=True),
        "initial": WARM_START,
    }

    def check_options(self, options: Mapping[str, Any]) -> None:
        hot, cold, reheat = options["hot"], options["cold"], options["reheat"]
        if cold > hot:
            raise InputError(f"sa: need cold <= hot, got hot={hot}, cold={cold}")
        if reheat is not None and reheat < cold:
            raise InputError(f"sa: need cold <= reheat (or reheat=null), got reheat={reheat}, "
                             f"cold={cold}")

    def _solve(self, problem: Problem, *, seed: int, time_limit: float | None,
               sweeps: int, restarts: int, hot: float, cold: float,
               reheat: float | None, initial: np.ndarray | None) -> RawSolution:
        warm = initial
        warm_energy = None if warm is None else problem.energy(warm)
        K.warm_up()
        stop = deadline(time_limit)
        started = time.perf_counter()

        n, k = problem.n, problem.k
        q = K.as_matrix(problem.Q)
        kk = -1 if k is None else k
        seeds = K.iter_child_seeds(seed)
        scale_seed = next(seeds)
        used_seeds: list[int] = []
        x = np.empty(n, dtype=np.int8)
        sgn = np.empty(n)
        d = np.empty(n)
        members = np.empty(n, dtype=np.int64)
        pos = np.empty(n, dtype=np.int64)
        rowmax = q.max(axis=1)

        def reset(state: np.ndarray) -> float:
            x[:] = state
            K.flip_deltas(q, x, sgn, d)
            K.order_members(x, members, pos)
            return float(K.energy(q, x))

        # The problem's scale: mean |delta| along a random walk of moves.
        K.seed_rng(scale_seed)
        reset(warm if warm is not None else K.random_state(n, k, scale_seed))
        scale = float(K.sample_move_scale(q, x, sgn, d, members, pos, kk, _SCALE_SAMPLES))
        if not scale > 0:
            scale = max(float(np.abs(q).max()), 1e-12)
        t_hot = hot * scale
        t_cold = cold * scale
        ramp = np.arange(sweeps) / max(sweeps - 1, 1)
        first_temps = t_hot * (t_cold / t_hot) ** ramp
        t_reheat = None if reheat is None else reheat * scale
        later_temps = first_temps if t_reheat is None else t_reheat * (t_cold / t_reheat) ** ramp
        tol = 1e-12 * scale

        candidates: list[np.ndarray] = []
        restart_energies: list[float] = []
        sweeps_done: list[int] = []
        accepted_total = 0
        for r, child in K.timed_restarts(restarts, seeds, started, stop, used_seeds):
            reheating = t_reheat is not None and r % 2 == 1
            if reheating:
                start = candidates[int(np.argmin(restart_energies))]
                if warm is not None and warm_energy < min(restart_energies):
                    start = warm
            elif warm is not None:
                start = warm
            else:
                start = K.random_state(n, k, child)
            e = reset(start)
            temps = later_temps if reheating else first_temps
            acc = [0]
            state = [e]

            def step(lo: int, hi: int) -> None:
                if kk < 0:
                    state[0], a = K.anneal_flips(q, x, sgn, d, temps[lo:hi], state[0])
                else:
                    state[0], a = K.anneal_swaps(q, x, sgn, d, members, pos, kk, rowmax,
                                                 temps[lo:hi], n, state[0])
                acc[0] += a

            done = K.run_in_chunks(step, sweeps, stop)
            if kk < 0:
                K.descend_flips(q, x, sgn, d, state[0], tol)
            else:
                K.descend_swaps(q, x, sgn, d, members, pos, kk, rowmax, state[0], tol)
            candidates.append(x.copy())
            restart_energies.append(problem.energy(x))
            sweeps_done.append(done)
            accepted_total += acc[0]

        energies = list(restart_energies)
        best = int(np.argmin(energies))
        best_x = candidates[best]
        if warm is not None and warm_energy < energies[best]:
            best_x = warm
        proposals = sum(sweeps_done) * n
        info = {
            "move": "flip" if kk < 0 else "swap",
            "restarts_done": len(candidates),
            "restarts": restarts,
            "sweeps": sweeps,
            "sweeps_done": sweeps_done,
            "best_restart": best,
            "restart_energies": restart_energies,
            "move_scale": scale,
            "t_hot": t_hot,
            "t_cold": t_cold,
            "t_reheat": t_reheat,
            "acceptance_rate": accepted_total / proposals if proposals else 0.0,
            "stopped_by_time_limit": sum(sweeps_done) < sweeps * restarts,
            "search_time_s": time.perf_counter() - started,
            "seeds": used_seeds,
        }
        if warm is not None:
            info["initial_energy"] = warm_energy
            info["initial_kept"] = bool(best_x is warm)
        log.debug("sa: n=%d k=%s best %.6g (restart %d)", n, k, energies[best], best)
        return RawSolution(best_x, samples=np.array(candidates), info=info)
