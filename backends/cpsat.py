"""OR-Tools CP-SAT as an exact solver with a proof of optimality.

Model (Q symmetric, energy(x) = sum_i Q_ii x_i + sum_{i<j} 2 Q_ij x_i x_j + offset):

* one Boolean x_i per variable;
* one Boolean product literal y_ij per pair i < j with Q_ij != 0, linked both ways:
  y => x_i, y => x_j, x_i & x_j => y (clauses; cheaper than AddMultiplicationEquality);
* for every triple with all three products, the triangle inequalities of the Boolean
  quadric polytope (y_ij + y_il - y_jl <= x_i, ..., x_i + x_j + x_l - y_ij - y_il - y_jl
  <= 1), by default when n <= 40: they cut the search roughly in half at n = 20..28;
* with k set: sum_i x_i == k, plus the redundant RLT cut obtained by multiplying the
  cardinality by x_i: sum_{j != i} y_ij == (k - 1) x_i. When row i misses some pairs
  (Q_ij == 0, no y_ij) the equality no longer holds, and two valid inequalities replace
  it: sum_{j in N(i)} y_ij <= min(k - 1, |N(i)|) x_i and
  sum_{j in N(i)} y_ij >= sum_{j in N(i)} x_j - min(k, |N(i)|) (1 - x_i)
  (on a full row they reduce to the equality). Without k the cut does not apply.

CP-SAT needs integer objective coefficients. Every coefficient c (Q_ii, 2 Q_ij) is
replaced by round(c * s) with s = 2**precision_bits / max|c|, so each coefficient is
exact to 0.5 / s: a relative precision of 2**-(precision_bits + 1) of the largest
coefficient. ``info["energy_error_bound"]`` is a bound on |energy(x) - scaled(x) / s| over
every feasible x (the worst sum of rounding residuals of one sign over the terms a
feasible x can switch on), so the proven optimum of the scaled model is within twice that
bound of the true optimum. "optimal" means CP-SAT proved the scaled model optimal *and*
the answer is within ``OPTIMALITY_RTOL * max(1, |energy|)`` of the resulting lower bound
on the true optimum (CP-SAT's bound / s minus the rounding bound); otherwise (a Q whose
coefficients span more than the precision, e.g. one of 1e9 beside ones of 1) the status
is "feasible" and ``info["not_proven"]`` says why. Such a run is solved once more at
``MAX_PRECISION_BITS`` from its answer (``info["precision_retry"]``), which settles most
(a Q of coefficients up to 1e3 with an optimum near 0); a range wider than the bits
(1e9 beside 1) stays "feasible".

A solution hint comes from the ``initial`` assignment (or ``Problem.feasible_point``)
improved by the steepest swap/flip descent of `backends.polish`; when CP-SAT returns no
solution within the time limit, that heuristic answer is returned with status "feasible".
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import numpy as np

from qcbo.errors import SolverError, UnsupportedProblemError
from qcbo.problem import Problem

from .base import Assignment, Backend, Option, RawSolution, deadline
from .polish import descend

__all__ = ["CpSatBackend", "swap_descent"]

log = logging.getLogger(__name__)

#: Largest number of product literals (pairs with Q_ij != 0) we build a model for.
MAX_PRODUCTS = 200_000
#: Largest n for which the triangle inequalities (4 C(n, 3) rows) are added by default.
TRIANGLE_MAX_N = 40
#: An answer counts as proven optimal when its energy is within this fraction of
#: max(1, |energy|) of the certified lower bound on the true optimum.
OPTIMALITY_RTOL = 1e-6
#: Largest precision_bits; a proof the rounding leaves open is retried at it once.
MAX_PRECISION_BITS = 40
#: Fraction of the time limit (at most this many seconds) spent on the heuristic hint.
_HINT_SHARE, _HINT_MAX_S = 0.1, 1.0


def _worker_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def swap_descent(q: np.ndarray, k: int | None, x0: np.ndarray, stop: float) -> np.ndarray:
    """Steepest swap (k set) / flip (k None) descent from ``x0`` until perf_counter() >
    ``stop``: the project's one polish, `backends.polish.descend` (kept under this name for
    callers of cpsat's hint)."""
    return descend(q, k, x0, stop=stop)


def _error_bound(resid_diag: np.ndarray, resid_pair: np.ndarray, k: int | None) -> float:
    """Max |sum of residuals of the terms one feasible x switches on|.

    With k set a feasible x switches on k diagonal terms and k (k - 1) / 2 pairs at most.
    """
    def worst(r: np.ndarray, count: int | None) -> float:
        pos = np.sort(r[r > 0])[::-1]
        neg = np.sort(-r[r < 0])[::-1]
        if count is not None:
            pos, neg = pos[:count], neg[:count]
        return float(max(pos.sum(initial=0.0), neg.sum(initial=0.0)))

    n_diag = None if k is None else k
    n_pair = None if k is None else k * (k - 1) // 2
    # Bound each part separately (a safe over-estimate of the joint worst case).
    return worst(resid_diag, n_diag) + worst(resid_pair, n_pair)


class CpSatBackend(Backend):
    """OR-Tools CP-SAT on a product-literal model with RLT cuts; proves optimality."""

    name = "cpsat"
    block_size_hint = 64
    summary = ("OR-Tools CP-SAT, product literals + RLT cut sum_j y_ij = (k-1) x_i; "
               "exact with proof (dense n <= ~30 in seconds)")
    exact = True
    max_variables = 1024
    options = {
        "initial": Option(Assignment, None, "(n,) feasible 0/1 assignment used as the "
                                            "solution hint"),
        "workers": Option(int, None, "CP-SAT search workers (null: every core this process "
                                     "may use)", minimum=1),
        "precision_bits": Option(int, 30, "largest |coefficient| is scaled to 2**bits before "
                                          "rounding", minimum=1, maximum=MAX_PRECISION_BITS),
        "cut": Option(bool, True, "add the RLT cut sum_j y_ij = (k - 1) x_i (k set only)"),
        "triangles": Option(bool, None, "add the 4 triangle inequalities per triple with all "
                                        "three products (null: when n <= %d)" % TRIANGLE_MAX_N),
        "max_products": Option(int, MAX_PRODUCTS, "refuse models with more product literals "
                                                  "(one per non-zero pair: dense n above 632 "
                                                  "needs more)", minimum=0),
        "log_search": Option(bool, False, "let CP-SAT log its search to stderr"),
    }

    def check(self, problem: Problem, **options: Any) -> None:
        super().check(problem)
        limit = options.get("max_products", MAX_PRODUCTS)
        pairs = int(np.count_nonzero(np.triu(problem.Q, 1)))
        if pairs > limit:
            raise UnsupportedProblemError(
                f"cpsat: n={problem.n} has {pairs} non-zero pairs, more than the {limit} product "
                "literals it builds (max_products); such sizes are out of reach of a proof, "
                "use sa or tabu"
            )

    def _solve(self, problem: Problem, *, seed: int, time_limit: float | None,
               initial: np.ndarray | None, workers: int | None, precision_bits: int, cut: bool,
               triangles: bool | None, max_products: int, log_search: bool) -> RawSolution:
        start = time.perf_counter()
        args = dict(seed=seed, workers=workers, cut=cut, triangles=triangles,
                    max_products=max_products, log_search=log_search)
        raw = self._solve_scaled(problem, time_limit=time_limit, initial=initial,
                                 precision_bits=precision_bits, **args)
        left = None if time_limit is None else time_limit - (time.perf_counter() - start)
        if ("not_proven" in raw.info and precision_bits < MAX_PRECISION_BITS
                and (left is None or left > 0)):
            # The rounding, not the search, left the gap: once more at full precision,
            # from the answer found.
            again = self._solve_scaled(problem, time_limit=left, initial=raw.x,
                                       precision_bits=MAX_PRECISION_BITS, **args)
            again.info["precision_retry"] = {"from_bits": int(precision_bits),
                                             "first_gap": raw.info["not_proven"]}
            if problem.energy(again.x) <= problem.energy(raw.x):
                return again
        return raw

    def _solve_scaled(self, problem: Problem, *, seed: int, time_limit: float | None,
                      initial: np.ndarray | None, workers: int | None, precision_bits: int,
                      cut: bool, triangles: bool | None, max_products: int,
                      log_search: bool) -> RawSolution:
        start = time.perf_counter()
        stop = deadline(time_limit)
        from ortools.sat.python import cp_model  # heavy import; counts against the limit

        n, k, q = problem.n, problem.k, problem.Q
        workers = _worker_count() if workers is None else workers

        # Heuristic starting point: the hint, and the fallback answer.
        x0 = problem.feasible_point() if initial is None else initial
        hint_budget = _HINT_MAX_S if time_limit is None else min(_HINT_MAX_S,
                                                                 _HINT_SHARE * time_limit)
        x_hint = swap_descent(q, k, x0, min(stop, time.perf_counter() + hint_budget))
        hint_energy = problem.energy(x_hint)
        info: dict[str, Any] = {"workers": workers, "hint_energy": hint_energy,
                                "initial_given": initial is not None}

        # Integer coefficients.
        iu, ju = np.triu_indices(n, 1)
        pair_coef = 2.0 * q[iu, ju]
        keep = pair_coef != 0.0
        iu, ju, pair_coef = iu[keep], ju[keep], pair_coef[keep]
        diag = np.diag(q).copy()
        largest = max(float(np.abs(diag).max(initial=0.0)),
                      float(np.abs(pair_coef).max(initial=0.0)))
        scale = 2.0**precision_bits / largest if largest > 0 else 1.0
        c_diag = np.rint(diag * scale).astype(np.int64)
        c_pair = np.rint(pair_coef * scale).astype(np.int64)
        bound = _error_bound(diag - c_diag / scale, pair_coef - c_pair / scale, k)
        info.update(scale=scale, precision_bits=int(precision_bits), products=int(iu.size),
                    energy_error_bound=bound)

        model = cp_model.CpModel()
        x = [model.new_bool_var(f"x{i}") for i in range(n)]
        y = []
        for t in range(iu.size):
            if t % 2048 == 0 and time.perf_counter() > stop:
                return self._fallback(x_hint, info, start, "time limit reached while building")
            i, j = int(iu[t]), int(ju[t])
            yt = model.new_bool_var(f"y{i}_{j}")
            model.add_implication(yt, x[i])
            model.add_implication(yt, x[j])
            model.add_bool_or([x[i].Not(), x[j].Not(), yt])
            y.append(yt)
        if k is not None:
            model.add(cp_model.LinearExpr.sum(x) == k)
            if cut:
                self._add_cuts(model, cp_model, x, y, iu, ju, n, k)
        if triangles is None:
            triangles = n <= TRIANGLE_MAX_N
        info["triangles"] = bool(triangles)
        if triangles and not self._add_triangles(model, x, y, iu, ju, n, stop):
            return self._fallback(x_hint, info, start, "time limit reached while building")
        model.minimize(cp_model.LinearExpr.weighted_sum(
            x + y, [int(c) for c in c_diag] + [int(c) for c in c_pair]))
        for i in range(n):
            model.add_hint(x[i], int(x_hint[i]))
        for t in range(iu.size):
            model.add_hint(y[t], int(x_hint[iu[t]] & x_hint[ju[t]]))
        info["build_s"] = time.perf_counter() - start

        remaining = stop - time.perf_counter()
        if remaining <= 0:
            return self._fallback(x_hint, info, start, "time limit reached while building")
        solver = cp_model.CpSolver()
        solver.parameters.num_workers = workers
        solver.parameters.random_seed = int(seed % (2**31 - 1))
        solver.parameters.log_search_progress = bool(log_search)
        if math.isfinite(remaining):
            solver.parameters.max_time_in_seconds = float(remaining)
        status = solver.solve(model)
        info["cpsat_status"] = solver.status_name(status)
        info["cpsat_wall_s"] = solver.wall_time
        if status in (cp_model.INFEASIBLE, cp_model.MODEL_INVALID):
            raise SolverError(f"cpsat: CP-SAT reported {solver.status_name(status)} for a "
                              "problem that has feasible points; this is a bug in the model")
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return self._fallback(x_hint, info, start, "CP-SAT found no solution in time")

        x_best = np.array([solver.boolean_value(v) for v in x], dtype=np.int8)
        # CP-SAT's bound is on the scaled model; subtracting the rounding bound makes it
        # a valid lower bound on the true optimum.
        best_bound = solver.best_objective_bound / scale + problem.offset - bound
        energy = problem.energy(x_best)
        if energy > hint_energy:  # a FEASIBLE stop may trail the hint; never return worse
            x_best, energy = x_hint, hint_energy
        xb = x_best.astype(np.int64)
        scaled = (c_diag @ xb + c_pair @ (xb[iu] * xb[ju])) / scale + problem.offset
        info.update(
            best_bound=best_bound,
            relative_gap=max(0.0, energy - best_bound) / max(abs(energy), 1e-12),
            scaling_error=energy - scaled,
        )
        proven = status == cp_model.OPTIMAL
        if proven and energy - best_bound > OPTIMALITY_RTOL * max(1.0, abs(energy)):
            proven = False
            fix = (f"raise precision_bits (now {precision_bits}, at most "
                   f"{MAX_PRECISION_BITS}) or narrow" if precision_bits < MAX_PRECISION_BITS
                   else "narrow")
            info["not_proven"] = (
                f"CP-SAT proved the rounded model optimal, but rounding leaves a gap of "
                f"{energy - best_bound:.3g} to the true optimum; {fix} the range of Q's "
                "coefficients")
        return RawSolution(x_best, proven_optimal=proven, info=info)

    @staticmethod
    def _add_cuts(model: Any, cp_model: Any, x: list, y: list, iu: np.ndarray,
                  ju: np.ndarray, n: int, k: int) -> None:
        """sum_j y_ij == (k - 1) x_i on full rows, its two valid halves otherwise."""
        rows: list[list[int]] = [[] for _ in range(n)]
        for t in range(iu.size):
            rows[int(iu[t])].append(t)
            rows[int(ju[t])].append(t)
        for i in range(n):
            ts = rows[i]
            ys = cp_model.LinearExpr.sum([y[t] for t in ts]) if ts else 0
            if len(ts) == n - 1:
                model.add(ys == (k - 1) * x[i])
                continue
            if not ts:
                continue
            nbrs = [int(ju[t]) if int(iu[t]) == i else int(iu[t]) for t in ts]
            size = len(ts)
            model.add(ys <= min(k - 1, size) * x[i])
            big_m = min(k, size)
            model.add(ys >= cp_model.LinearExpr.sum([x[j] for j in nbrs]) - big_m
                      + big_m * x[i])

    @staticmethod
    def _add_triangles(model: Any, x: list, y: list, iu: np.ndarray, ju: np.ndarray, n: int,
                       stop: float) -> bool:
        """Triangle inequalities of the Boolean quadric polytope; False on timeout.

        For i < j < l with all three products: y_ij + y_il - y_jl <= x_i (and its two
        rotations) and x_i + x_j + x_l - y_ij - y_il - y_jl <= 1.
        """
        index = {(int(a), int(b)): t for t, (a, b) in enumerate(zip(iu, ju))}
        for i in range(n):
            if time.perf_counter() > stop:
                return False
            for j in range(i + 1, n):
                t_ij = index.get((i, j))
                if t_ij is None:
                    continue
                for l in range(j + 1, n):
                    t_il, t_jl = index.get((i, l)), index.get((j, l))
                    if t_il is None or t_jl is None:
                        continue
                    a, b, c = y[t_ij], y[t_il], y[t_jl]
                    model.add(a + b - c <= x[i])
                    model.add(a + c - b <= x[j])
                    model.add(b + c - a <= x[l])
                    model.add(x[i] + x[j] + x[l] - a - b - c <= 1)
        return True

    @staticmethod
    def _fallback(x_hint: np.ndarray, info: dict[str, Any], start: float,
                  why: str) -> RawSolution:
        log.info("cpsat: %s after %.2f s; returning the heuristic hint", why,
                 time.perf_counter() - start)
        info["stopped"] = why
        info["answer_from"] = "heuristic hint"
        return RawSolution(x_hint, proven_optimal=False, info=info)
