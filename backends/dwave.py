"""dwave-samplers' TabuSampler and SimulatedAnnealingSampler on the penalty QUBO.

Neither sampler keeps the cardinality, so a constrained problem goes through
`Problem.to_qubo` (penalty P (sum(x) - k)^2, P from `Problem.default_penalty` unless the
``penalty`` option is given) and back through its inverter. Every sample is re-scored on
the original problem; the answer is the best feasible sample. When no sample is feasible
the answer is the best sample by penalty-QUBO energy with status "infeasible", unless
``repair=True``, which moves each sample greedily to the nearest feasible assignment
(|sum(x) - k| flips, each the cheapest flip in the right direction) and says so in info.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from qcbo.problem import Problem

from .base import Assignment, Backend, Option, RawSolution, deadline

__all__ = ["DWaveTabuBackend", "DWaveSimulatedAnnealingBackend", "default_beta_range",
           "greedy_repair"]

log = logging.getLogger(__name__)

#: Most reads a time-limited SA run makes when num_reads is not given.
_MAX_TIMED_READS = 100_000
#: The tabu sampler's timeout is a C long of milliseconds; 2^31 - 1 ms (24.8 days) fits
#: every platform, and a longer time limit is cut to it.
_MAX_TIMEOUT_MS = 2**31 - 1
#: Reads per call to the SA sampler.
_CHUNK_READS = 64


def greedy_repair(q: np.ndarray, k: int, x: np.ndarray) -> np.ndarray:
    """The nearest feasible assignment to ``x`` (|sum(x) - k| flips), chosen greedily.

    ``q``: symmetric (n, n); ``x``: 0/1 (n,). While sum(x) > k the 1 whose removal
    lowers x Q x most is cleared; while sum(x) < k the cheapest 0 is set.
    Returns int8 (n,) with sum == k.
    """
    x = np.asarray(x, dtype=np.int8).copy()
    g = q @ x.astype(np.float64)
    d = np.diag(q)
    while int(x.sum()) != k:
        adding = int(x.sum()) < k
        candidates = np.flatnonzero(x == (0 if adding else 1))
        sign = 1.0 if adding else -1.0
        delta = 2.0 * sign * g[candidates] + d[candidates]
        i = int(candidates[np.argmin(delta)])
        x[i] = 1 if adding else 0
        g += sign * q[:, i]
    return x


def _bqm(qubo: Problem) -> Any:
    """A dimod BINARY BQM with the same energies as ``qubo`` (k None)."""
    import dimod

    q = qubo.Q
    return dimod.BinaryQuadraticModel(np.diag(q).copy(), 2.0 * np.triu(q, 1), qubo.offset,
                                      dimod.BINARY)


def default_beta_range(qubo: Problem, excitation_rate: float = 0.01) -> tuple[float, float]:
    """dwave-samplers' default (hot, cold) beta range, computed in numpy.

    Same rule as ``dwave.samplers.sa``'s default on the Ising form (s = 2x - 1): hot beta
    lets the largest effective field flip with probability 1/2, cold beta makes the
    smallest bias excite with total probability ``excitation_rate``. The sampler computes
    it in a Python loop over the couplings (seconds on a dense n = 1024 problem), so we
    pass it explicitly.
    """
    ising = qubo.to_ising()
    h = np.abs(ising.h)
    J = np.abs(ising.J + ising.J.T)
    max_field = float((h + J.sum(axis=1)).max(initial=0.0))
    masked = np.where(J > 0, J, np.inf)
    per_spin = np.minimum(np.where(h > 0, h, np.inf), masked.min(axis=1, initial=np.inf))
    per_spin = per_spin[np.isfinite(per_spin)]
    if max_field == 0.0 or per_spin.size == 0:
        return 0.1, 1.0
    hot = math.log(2.0) / (2.0 * max_field)
    smallest = float(per_spin.min())
    count = int(np.sum(per_spin == smallest))
    cold = math.log(count / excitation_rate) / (2.0 * smallest)
    return hot, cold


def _samples_in_order(sampleset: Any, n: int) -> np.ndarray:
    """(m, n) int8 samples with column i = variable i."""
    labels = list(sampleset.variables)
    order = np.array([labels.index(i) for i in range(n)])
    return np.asarray(sampleset.record.sample)[:, order].astype(np.int8)


class _PenaltyQuboBackend(Backend):
    """Shared part: penalty QUBO in, best feasible (or repaired / infeasible) sample out."""

    def _prepare(self, problem: Problem, penalty: float | None) -> tuple[Problem, Any, float]:
        qubo, inverter = problem.to_qubo(penalty)
        weight = inverter.penalty
        return qubo, _bqm(qubo), weight

    def _choose(self, problem: Problem, qubo: Problem, samples: np.ndarray, repair: bool,
                info: dict[str, Any]) -> RawSolution:
        feasible = np.array([problem.is_feasible(s) for s in samples], dtype=bool)
        info["num_samples"] = int(len(samples))
        info["feasible_fraction"] = float(feasible.mean()) if len(samples) else 0.0
        info["repaired"] = False
        if feasible.any():
            good = samples[feasible]
            best = good[int(np.argmin(problem.energies(good)))]
            info["answer_from"] = "best feasible sample"
            return RawSolution(best, samples=samples, info=info)
        if repair and problem.k is not None and len(samples):
            fixed = np.array([greedy_repair(problem.Q, problem.k, s) for s in samples])
            best = fixed[int(np.argmin(problem.energies(fixed)))]
            info["repaired"] = True
            info["answer_from"] = "greedy repair of infeasible samples (nearest feasible)"
            return RawSolution(best, samples=samples, info=info)
        if not len(samples):
            info["answer_from"] = "no sample"
            return RawSolution(None, samples=None, info=info)
        best = samples[int(np.argmin(qubo.energies(samples)))]
        info["answer_from"] = "best infeasible sample (lowest penalty-QUBO energy)"
        log.info("%s: no feasible sample among %d; answer is infeasible", self.name,
                 len(samples))
        return RawSolution(best, samples=samples, info=info)


class DWaveTabuBackend(_PenaltyQuboBackend):
    """dwave-samplers TabuSampler (multistart tabu, C++) on the penalty QUBO."""

    name = "dwave-tabu"
    summary = "dwave-samplers TabuSampler on the penalty QUBO; best feasible sample"
    options = {
        "num_reads": Option(int, 4, "independent tabu runs", minimum=1),
        "timeout_ms": Option(int, 100, "time per read in ms without a time_limit (with one, "
                                       "the limit is shared across reads); the search stops "
                                       "on time, so a seed reproduces its answer only when "
                                       "the search settles within it", minimum=1,
                             maximum=_MAX_TIMEOUT_MS),
        "penalty": Option(float, None, "penalty weight P (null: Problem.default_penalty)",
                          minimum=0),
        "repair": Option(bool, False, "when no sample is feasible, repair greedily to "
                                      "sum(x) = k"),
        "initial": Option(Assignment, None, "(n,) feasible 0/1 start of the first read"),
        "tenure": Option(int, None, "tabu tenure (null: the sampler's default)", minimum=1),
    }

    def _solve(self, problem: Problem, *, seed: int, time_limit: float | None,
               num_reads: int, timeout_ms: int, penalty: float | None, repair: bool,
               initial: np.ndarray | None, tenure: int | None) -> RawSolution:
        stop = deadline(time_limit)
        from dwave.samplers import TabuSampler

        t0 = time.perf_counter()
        qubo, bqm, weight = self._prepare(problem, penalty)
        if time_limit is not None:
            # Reads run one after another. The sampler's own conversion of the BQM costs
            # about three times our conversion (measured on dense n = 1024); reserve that,
            # and a margin for scoring.
            setup = 3.0 * (time.perf_counter() - t0) + 0.01
            remaining = max(stop - time.perf_counter() - setup, 0.0)
            timeout_ms = max(1, min(int(1000.0 * 0.9 * remaining / num_reads), _MAX_TIMEOUT_MS))
        kwargs: dict[str, Any] = dict(num_reads=num_reads, timeout=timeout_ms,
                                      seed=int(seed % (2**31 - 1)))
        if tenure is not None:
            kwargs["tenure"] = min(tenure, problem.n - 1)
        if initial is not None:
            kwargs["initial_states"] = (initial[None, :], list(range(problem.n)))
            kwargs["initial_states_generator"] = "random"
        sampleset = TabuSampler().sample(bqm, **kwargs)
        samples = _samples_in_order(sampleset, problem.n)
        info = {"penalty": weight, "num_reads": num_reads, "timeout_ms": timeout_ms}
        return self._choose(problem, qubo, samples, bool(repair), info)


class DWaveSimulatedAnnealingBackend(_PenaltyQuboBackend):
    """dwave-samplers SimulatedAnnealingSampler (neal's successor) on the penalty QUBO."""

    name = "dwave-sa"
    summary = "dwave-samplers SimulatedAnnealingSampler on the penalty QUBO; best feasible sample"
    options = {
        "num_reads": Option(int, None, "annealing runs (null: 100, or as many as fit in "
                                       "time_limit)", minimum=1),
        "num_sweeps": Option(int, 1000, "sweeps per read (cut so one read fits in time_limit)",
                             minimum=1),
        "penalty": Option(float, None, "penalty weight P (null: Problem.default_penalty)",
                          minimum=0),
        "repair": Option(bool, False, "when no sample is feasible, repair greedily to "
                                      "sum(x) = k"),
        "beta_range": Option(tuple, None, "[hot, cold] inverse temperatures (null: the "
                                          "sampler's default rule, computed in numpy)",
                             greater_than=0, length=2),
    }

    def _solve(self, problem: Problem, *, seed: int, time_limit: float | None,
               num_reads: int | None, num_sweeps: int, penalty: float | None, repair: bool,
               beta_range: tuple[float, float] | None) -> RawSolution:
        stop = deadline(time_limit)
        from dwave.samplers import SimulatedAnnealingSampler

        qubo, bqm, weight = self._prepare(problem, penalty)
        sampler = SimulatedAnnealingSampler()
        rng = np.random.default_rng(seed)
        if beta_range is None:
            beta_range = default_beta_range(qubo)
        kwargs: dict[str, Any] = {"beta_range": tuple(float(b) for b in beta_range)}
        info: dict[str, Any] = {"penalty": weight}
        margin = 0.05 * (time_limit or 0.0)

        def out_of_time() -> bool:
            return time.perf_counter() > stop - margin

        chunks: list[np.ndarray] = []
        setup = per_sweep = 0.0
        if time_limit is not None:
            # Calibrate with two short reads: the interrupt function runs after every read,
            # so its timestamps give the time per sweep apart from the set-up cost of a call
            # (which dominates on dense problems). Then cut the sweeps so one read takes at
            # most half of what is left after one more set-up.
            probe = min(num_sweeps, 100)
            stamps: list[float] = []

            def stamp() -> bool:
                stamps.append(time.perf_counter())
                return out_of_time()

            t0 = time.perf_counter()
            sampleset = sampler.sample(bqm, num_reads=2, num_sweeps=probe,
                                       seed=int(rng.integers(2**31 - 1)),
                                       interrupt_function=stamp, **kwargs)
            chunks.append(_samples_in_order(sampleset, problem.n))
            total = time.perf_counter() - t0
            per_read = stamps[1] - stamps[0] if len(stamps) >= 2 else total / 2.0
            setup = max(total - 2.0 * per_read, 0.0)
            per_sweep = max(per_read / probe, 1e-9)
            remaining = max(stop - time.perf_counter() - setup, 0.0)
            num_sweeps = max(1, min(num_sweeps, int(0.5 * remaining / per_sweep)))
            info.update(seconds_per_sweep=per_sweep, setup_s=setup)
        reads = num_reads or (100 if time_limit is None else _MAX_TIMED_READS)
        done = sum(len(c) for c in chunks)
        while done < reads and not (chunks and out_of_time()):
            if chunks and time.perf_counter() + setup + per_sweep * num_sweeps > stop:
                break  # not even one more read fits
            # Chunks bound the memory the sampler allocates up front for its states.
            chunk = min(reads - done, _CHUNK_READS)
            sampleset = sampler.sample(
                bqm, num_reads=chunk, num_sweeps=num_sweeps, seed=int(rng.integers(2**31 - 1)),
                interrupt_function=out_of_time if time_limit is not None else None, **kwargs)
            chunks.append(_samples_in_order(sampleset, problem.n))
            done += len(chunks[-1])
        samples = np.concatenate(chunks)
        info.update(num_reads=int(len(samples)), num_sweeps=num_sweeps,
                    beta_range=list(kwargs["beta_range"]),
                    calibration_reads=2 if time_limit is not None else 0)
        return self._choose(problem, qubo, samples, bool(repair), info)
