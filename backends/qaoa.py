"""The QAOA backends' shared base: options, sampling, polish, sub-blocks and attribution.

The model and simulator live in `backends.qaoa_model`, angle training in
`backends.qaoa_training`; their public names are re-exported here (``Gate``, ``Angles``,
``QAOAModel``, ``circuit_plan``, ``train_angles``, ...), so ``backends.qaoa`` stays the
one import for SDK modules and device planning.

A solve: train angles on the exact subspace state (or take ``angles``), get the outcome
probabilities of the circuit (an SDK simulator in `qaoa-qiskit`/`braket-local`, the
subspace simulator itself in `qaoa-subspace`), draw ``shots`` samples and pick the answer
among candidates, each labelled with where it came from:

* ``"qaoa"``: the best feasible sample, as drawn;
* ``"polish"``: the steepest descent of `backends.polish` from one of the five best
  distinct samples or from the warm start (only with ``polish=true``);
* ``"initial"``: the warm start (``initial``) itself;
* ``"fallback"``: no sample was feasible (X mixer) and no warm start was given: a
  repaired feasible point (polished when ``polish`` is on).

The lowest energy wins, the first listed on ties (a sample beats an equal polish or
warm start). ``info["source"]`` holds its label: the key iCBS counts (`pruning.engine`).

Sub-blocks (``sub_block = q``): a block of more than q variables is improved around a
warm start (``initial``, or a short `sa` run) by `backends.subblock.improve`: each round
poses a q-variable sub-QCBO with the rest fixed, solves it by QAOA as above (its warm
start: the current values) and keeps the stitched answer only when the block's energy
drops. With ``polish`` the warm start is polished first and the result last. Then
``info["source"]`` is "qaoa" when at least one kept round's answer was a QAOA sample,
else "polish" when the answer differs from the warm start, else "initial";
``info["sub_blocks"]`` gives the rounds, the source of each round's answer and the
kept rounds by source.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, ClassVar, Mapping

import numpy as np

from qcbo.errors import InputError, UnsupportedProblemError
from qcbo.problem import Problem

from .base import Assignment, Backend, Option, RawSolution, child_seeds, deadline
from .polish import descend
from .qaoa_model import (MIXERS, Angles, Gate, Mixer, QAOAModel, circuit_plan, dicke_plan,
                         index_to_bits, mixer_edges, weight_k_indices)
from .qaoa_training import Training, train_angles

__all__ = [
    "Gate", "QAOAModel", "QAOABackend", "Mixer", "MIXERS", "Angles", "Training",
    "SOURCES", "dicke_plan", "mixer_edges", "circuit_plan", "train_angles",
    "weight_k_indices", "index_to_bits",
]

logger = logging.getLogger(__name__)

#: Values of ``info["source"]`` (see the module docstring).
SOURCES: tuple[str, ...] = ("qaoa", "polish", "initial", "fallback")
_XY = ("xy-ring", "xy-complete")


#: QAOA layers when neither p nor angles are given.
DEFAULT_P = 2


class QAOABackend(Backend):
    """QAOA trained on the exact subspace state, then run and sampled.

    Subclasses set ``max_qubits`` and implement `_run_circuit` (SDK circuit ->
    probabilities over all 2**n states), or override `_outcome_probabilities`.
    """

    exact = False
    #: No fixed block limit: blocks over ``max_qubits`` are taken with ``sub_block``.
    max_variables = None
    #: Largest n the simulator takes (without ``sub_block``).
    max_qubits: ClassVar[int] = 14
    options = {
        "p": Option(int, None, "QAOA layers (null: 2, or the depth of the given angles)",
                    minimum=1),
        "mixer": Option(str, "auto", "xy-ring | xy-complete (need k) | x (penalty QUBO); auto: "
                                     "xy-ring when k is set, else x",
                        choices=("auto",) + MIXERS),
        "shots": Option(int, 1000, "samples drawn from the final state", minimum=1),
        "restarts": Option(int, 3, "optimiser starts per layer (grid starts at p=1, perturbed "
                                   "INTERP starts after)", minimum=1),
        "optimizer": Option(str, "cobyla", "cobyla | l-bfgs-b", choices=("cobyla", "l-bfgs-b")),
        "maxiter": Option(int, 150, "optimiser iterations per start", minimum=1),
        "angles": Option(dict, None, "{'gamma': [...], 'beta': [...]} to skip training (gamma "
                                     "in problem units: phase gamma * E)"),
        "penalty": Option(float, None, "penalty weight for mixer=x on a constrained problem "
                                       "(null: Problem.default_penalty)", minimum=0),
        "polish": Option(bool, True, "also try a classical steepest swap/flip descent from the "
                                     "best samples and the warm start (info['source'] says "
                                     "which answer won)"),
        "initial": Option(Assignment, None, "(n,) feasible 0/1 warm start; the better of it and "
                                            "the QAOA answer is returned"),
        "sub_block": Option(int, 0, "0: off; q >= 2: a block of more than q variables is "
                                    "improved in q-variable QAOA sub-blocks around the warm "
                                    "start (q at most the simulator's qubits)", minimum=0),
        "sub_rounds": Option(int, 4, "sub-blocks solved per block when sub_block is set",
                             minimum=1),
        "sub_train": Option(str, "first", "first: train angles on the first sub-block and reuse "
                                          "them (unit-spread energy units) in later rounds; "
                                          "every: train on each sub-block",
                            choices=("first", "every")),
    }
    #: Fraction of time_limit given to training; the rest runs and samples the circuit.
    TRAIN_SHARE = 0.3
    #: Seconds per amplitude (C(n, k) with an XY mixer, else 2**n) to build the
    #: simulator's model and run a circuit: 1.1-1.8 µs measured on 2 shared cores at
    #: n = 22-24. A block whose estimate exceeds its time limit, or whose model took
    #: longer to build than the training share of it, is answered classically
    #: (info["stopped"] says so) instead of overrunning.
    SECONDS_PER_AMPLITUDE = 1e-6
    #: Fraction of time_limit (sub-blocks without a warm start) for the classical start.
    START_SHARE = 0.1

    @classmethod
    def qubit_limit(cls, problem: Problem, mixer: str) -> int:
        """Largest n the simulator takes for this problem and mixer."""
        return cls.max_qubits

    @classmethod
    def block_size_for(cls, options: Mapping[str, Any]) -> int | None:
        """Large blocks (1024) when ``sub_block`` is set: QAOA then works on q-variable
        sub-blocks of them; else ``block_size_hint``."""
        return 1024 if options.get("sub_block") else cls.block_size_hint

    def check(self, problem: Problem, **options: Any) -> None:
        angles, p = options.get("angles"), options.get("p")
        if angles is not None and p is not None:
            depth = len(Angles.from_dict(angles, f"{self.name}: angles").gamma)
            if depth != p:
                raise InputError(f"{self.name}: p={p} but the angles have {depth} layer(s); "
                                 "drop p or give angles of that depth")
        mixer = options.get("mixer", "auto")
        if mixer in _XY and problem.k is None:
            raise InputError(f"{self.name}: mixer {mixer} needs k; use mixer=x for k=None")
        resolved = mixer if mixer != "auto" else ("x" if problem.k is None else "xy-ring")
        limit = self.qubit_limit(problem, resolved)
        sub = int(options.get("sub_block", 0) or 0)
        if sub:
            if not 2 <= sub <= limit:
                raise InputError(f"{self.name}: sub_block must be in 2..{limit} (the qubits this "
                                 f"simulator takes with mixer {resolved}), got {sub}")
            return
        if problem.n > limit:
            raise UnsupportedProblemError(
                f"{self.name}: n={problem.n} exceeds the {limit} qubits this simulator takes "
                f"(mixer {resolved}); set sub_block=q (2..{limit}) to improve the block in "
                "q-variable QAOA sub-blocks, or use a classical backend (cpsat, sa, tabu)")

    # ------------------------------------------------------------ circuit execution
    def _run_circuit(self, gates: list[Gate], n: int,
                     **sdk_options: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """Build and simulate the circuit; return (probabilities (2**n,) little-endian,
        {"circuit_depth": int, "two_qubit_gates": int, ...}). ``sdk_options`` are the
        subclass's own options."""
        raise NotImplementedError

    def _outcome_probabilities(self, model: QAOAModel, angles: Angles, **sdk_options: Any
                               ) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
        """(probabilities (m,), their little-endian states (m,) or None for all 2**n in
        order, circuit facts). Default: the SDK runs `circuit_plan`."""
        probs, facts = self._run_circuit(circuit_plan(model, angles), model.n, **sdk_options)
        return probs, None, facts

    # ------------------------------------------------------------ solve
    def _solve(self, problem: Problem, *, seed: int, time_limit: float | None,
               sub_block: int, sub_rounds: int, sub_train: str, **options: Any) -> RawSolution:
        if sub_block and problem.n > sub_block:
            return self._solve_in_sub_blocks(problem, seed=seed, time_limit=time_limit,
                                             q=sub_block, rounds=sub_rounds,
                                             train_each=sub_train == "every", **options)
        raw, _ = self._solve_block(problem, rng=np.random.default_rng(seed),
                                   time_limit=time_limit, **options)
        return raw

    def _solve_block(self, problem: Problem, *, rng: np.random.Generator,
                     time_limit: float | None, p: int | None, mixer: str, shots: int, restarts: int,
                     optimizer: str, maxiter: int, angles: Any, penalty: float | None,
                     polish: bool, initial: np.ndarray | None,
                     normalised: np.ndarray | None = None,
                     **sdk_options: Any) -> tuple[RawSolution, np.ndarray]:
        """One QAOA solve of a block that fits the simulator. ``normalised``: angles in
        unit-spread units to use instead of training. Returns the solution and the
        angles used, normalised (for reuse on another sub-block)."""
        t0 = time.perf_counter()
        stop = deadline(None if time_limit is None else self.TRAIN_SHARE * time_limit)
        n = problem.n
        if time_limit is not None:
            xy = problem.k is not None and mixer != "x"
            size = math.comb(n, problem.k) if xy else 2 ** n
            if size * self.SECONDS_PER_AMPLITUDE > time_limit:
                why = (f"time limit {time_limit:.3g} s is too short to simulate {size} "
                       f"amplitudes (about {size * self.SECONDS_PER_AMPLITUDE:.2g} s or more); "
                       "answered classically")
                return self._classical_answer(problem, initial, polish, deadline(time_limit),
                                              why), None
        model = QAOAModel(problem, mixer, penalty)
        if time_limit is not None and time.perf_counter() > stop:
            why = (f"building the model of {len(model.basis)} amplitudes took "
                   f"{time.perf_counter() - t0:.2g} s of the {time_limit:.3g} s time limit; "
                   "answered classically")
            return self._classical_answer(problem, initial, polish,
                                          t0 + time_limit, why), None
        if angles is not None:
            trained = Angles.from_dict(angles, f"{self.name}: angles")
            training = Training(trained, model.expectation(trained), 0, True)
        elif normalised is not None:
            trained = model.to_physical(normalised)
            training = Training(trained, model.expectation(trained), 0, True)
        elif model.trivial:
            p = DEFAULT_P if p is None else p
            trained = Angles((0.0,) * p, (0.0,) * p)
            training = Training(trained, float(model.energies.mean()), 0, True)
        else:
            training = train_angles(model, DEFAULT_P if p is None else p, rng=rng, restarts=restarts, optimizer=optimizer,
                                    maxiter=maxiter, stop=stop)
        t_train = time.perf_counter() - t0
        probs, states, facts = self._outcome_probabilities(model, training.angles, **sdk_options)
        probs = np.clip(probs, 0.0, None)
        t_sim = time.perf_counter() - t0 - t_train
        draws = rng.choice(len(probs), size=shots, p=probs / probs.sum())
        samples = index_to_bits(draws if states is None else states[draws], n)
        feasible = (samples.sum(axis=1) == problem.k) if problem.k is not None \
            else np.ones(shots, dtype=bool)
        info: dict[str, Any] = {
            "p": training.angles.p,
            "mixer": model.mixer,
            "angles": training.angles.to_dict(),
            "cost_scale": model.scale,
            "optimizer": optimizer,
            "optimizer_evaluations": training.evaluations,
            "training_complete": training.complete,
            "expectation": training.expectation,
            "feasible_fraction": float(feasible.mean()),
            "qubits": n,
            "shots": shots,
            **facts,
            "train_time_s": t_train,
            "simulate_time_s": t_sim,
        }
        if model.mixer == "x" and problem.k is not None:
            info["penalty"] = model.penalty
        stop_all = deadline(None if time_limit is None else time_limit - (time.perf_counter() - t0))
        candidates: list[tuple[float, str, np.ndarray]] = []
        if feasible.any():
            good = samples[feasible]
            energies = problem.energies(good)
            j = int(np.argmin(energies))
            info["best_sample_energy"] = float(energies[j])
            info["best_sample_probability"] = float(probs[draws[feasible][j]])
            candidates.append((float(energies[j]), "qaoa", good[j]))
            if polish:
                order = np.argsort(energies, kind="stable")
                _, first = np.unique(good[order], axis=0, return_index=True)
                for s in good[order][np.sort(first)[:5]]:
                    y = descend(problem.Q, problem.k, s, stop=stop_all)
                    candidates.append((problem.energy(y), "polish", y))
        else:
            info["best_sample_energy"] = None
            info["best_sample_probability"] = 0.0
        if initial is not None:
            candidates.append((problem.energy(initial), "initial", initial))
            if polish:
                y = descend(problem.Q, problem.k, initial, stop=stop_all)
                candidates.append((problem.energy(y), "polish", y))
        if not candidates:
            x0 = problem.feasible_point()
            y = descend(problem.Q, problem.k, x0, stop=stop_all) if polish else x0
            candidates.append((problem.energy(y), "fallback", y))
        # first minimum wins: a qaoa sample beats an equal polish/initial answer
        _, source, x = min(candidates, key=lambda c: c[0])
        info["source"] = source
        info["polished"] = bool(polish)
        raw = RawSolution(np.asarray(x, dtype=np.int8), proven_optimal=False, samples=samples,
                          info=info)
        return raw, model.to_normalised(training.angles)

    def _classical_answer(self, problem: Problem, initial: np.ndarray | None, polish: bool,
                          stop: float, why: str) -> RawSolution:
        """The warm start (or a feasible point), polished: for a block QAOA cannot run in
        its time limit."""
        logger.warning("%s: %s", self.name, why)
        x0 = problem.feasible_point() if initial is None else np.asarray(initial, dtype=np.int8)
        x = descend(problem.Q, problem.k, x0, stop=stop) if polish else x0
        return RawSolution(np.asarray(x, dtype=np.int8), proven_optimal=False,
                           info={"source": "fallback", "stopped": why, "qubits": problem.n,
                                 "polished": bool(polish)})

    def _classical_start(self, problem: Problem, seed: int, time_limit: float | None) -> np.ndarray:
        """A short sa run (its iCBS budget) for a sub-block run without a warm start."""
        from .anneal import SimulatedAnnealingBackend

        sa = SimulatedAnnealingBackend()
        limit = None if time_limit is None else max(self.START_SHARE * time_limit, 1e-3)
        result = sa.solve(problem, seed=seed, time_limit=limit, **sa.icbs_options)
        return result.x if result.x is not None else problem.feasible_point()

    def _solve_in_sub_blocks(self, problem: Problem, *, seed: int, time_limit: float | None,
                             q: int, rounds: int, train_each: bool, polish: bool,
                             initial: np.ndarray | None, angles: Any,
                             **options: Any) -> RawSolution:
        from .subblock import improve

        t0 = time.perf_counter()
        stop = deadline(time_limit)
        seeds = child_seeds(seed, rounds + 2)
        if initial is not None:
            start, start_kind = np.asarray(initial, dtype=np.int8), "initial"
        else:
            start, start_kind = self._classical_start(problem, seeds[0], time_limit), "sa"
        x = descend(problem.Q, problem.k, start, stop=stop) if polish else start.copy()
        reuse: dict[str, np.ndarray] = {}
        last: dict[str, Any] = {}

        def solve(sub: Problem, r: int, y0: np.ndarray) -> tuple[np.ndarray, str]:
            left = None if time_limit is None else max(stop - time.perf_counter(), 1e-3)
            budget = None if left is None else left / (rounds - r)
            raw, normalised = self._solve_block(
                sub, rng=np.random.default_rng(seeds[r + 1]), time_limit=budget,
                polish=polish, initial=y0, angles=angles,
                normalised=reuse.get("angles"), **options)
            if (not train_each and angles is None and "angles" not in reuse
                    and normalised is not None):
                reuse["angles"] = normalised
            last.update(raw.info)
            return raw.x, raw.info["source"]

        x, report = improve(problem, x, q, solve, rounds=rounds, rng=seeds[-1],
                            stop=lambda: time.perf_counter() > stop, warm=True)
        before_final = x.copy()
        if polish:
            x = descend(problem.Q, problem.k, x, stop=stop)
        kept = {s: report.sources.count(s) for s in sorted(set(report.sources))}
        if kept.get("qaoa"):
            source = "qaoa"
        elif not np.array_equal(x, start):
            source = "polish"
        else:
            source = "initial"
        info: dict[str, Any] = {
            "source": source,
            "polished": bool(polish),
            "qubits": q,
            "sub_blocks": {
                "size": q,
                "rounds": report.rounds,
                "improved_rounds": report.improved_rounds,
                "round_sources": list(report.round_sources or []),
                "kept_sources": kept,
                "start": start_kind,
                "start_energy": problem.energy(start),
                "energy_before_rounds": report.energy_before,
                "energy_after_rounds": report.energy_after,
                "final_polish_changed": bool(not np.array_equal(x, before_final)),
                "angles_reused": not train_each and angles is None,
            },
            "wall_rounds_s": time.perf_counter() - t0,
        }
        for key in ("p", "mixer", "angles", "shots", "circuit_depth", "two_qubit_gates", "sdk"):
            if key in last:
                info[key] = last[key]
        return RawSolution(x, proven_optimal=False, info=info)
