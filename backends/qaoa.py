"""The SDK-independent QAOA core shared by `qaoa-qiskit` and `braket-local`.

Conventions
-----------
* Qubit i carries variable i; x_i = 1 <=> qubit i in |1>. A state-vector index in this
  module is ``sum_i x_i 2**i`` (Qiskit's little-endian order); the Braket module maps
  its big-endian order onto it.
* Gates (`Gate`) use ``rx/ry/rz(t) = exp(-i t/2 P)``, ``zz(t) = exp(-i t/2 Z Z)`` and
  ``xy(t) = exp(-i t/4 (X X + Y Y))`` (= Qiskit ``XXPlusYYGate(t, 0)`` = Braket
  ``xy(-t)``), plus ``x``, ``h``, ``cnot`` and ``ccnot``.
* One QAOA layer with angles (gamma, beta) is ``exp(-i gamma E) `` followed by the mixer,
  where E(x) = x Q x + offset is the problem energy (the penalty QUBO for the X mixer).
  The cost layer is built from the Ising form (s = 2x - 1 = -Z): h_i s_i -> rz(-2 gamma h_i),
  J_ij s_i s_j -> zz(2 gamma J_ij); the two differ by a global phase only.
* Mixers: "xy-ring" / "xy-complete" apply ``xy(2 beta)`` on the ring / all pairs (in a fixed
  order that the circuits repeat exactly), start from the Dicke state |D(n, k)> and keep
  the Hamming weight, so every sample is feasible. "x" applies ``rx(2 beta)`` on every
  qubit from |+>^n, on the penalty QUBO.

Training runs the same layers in numpy on the relevant subspace (the C(n, k) weight-k
states for XY, all 2**n for X) with the energies scaled to unit spread, so that angles
transfer between problems; the reported ``gamma`` is in the problem's own units
(phase = gamma * E). The SDK backends then build the real circuit with the trained
angles, run it on their simulator and sample it.
"""

from __future__ import annotations

import abc
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np
from scipy.optimize import minimize

from qcbo.errors import InputError, UnsupportedProblemError
from qcbo.problem import Problem

from .base import Assignment, Backend, Option, RawSolution, deadline

__all__ = [
    "Gate",
    "QAOAModel",
    "QAOABackend",
    "Mixer",
    "Angles",
    "dicke_plan",
    "mixer_edges",
    "circuit_plan",
    "train_angles",
    "local_search",
    "weight_k_indices",
    "index_to_bits",
]

logger = logging.getLogger(__name__)

Mixer = Literal["xy-ring", "xy-complete", "x"]
MIXERS: tuple[str, ...] = ("xy-ring", "xy-complete", "x")


@dataclass(frozen=True)
class Gate:
    """One gate: ``name`` (see module docs), the qubits it acts on, its angle if any.

    For ``cnot`` the qubits are (control, target); for ``ccnot`` (c1, c2, target).
    """

    name: str
    qubits: tuple[int, ...]
    angle: float | None = None


@dataclass(frozen=True)
class Angles:
    """QAOA angles: ``gamma`` in the problem's units (phase gamma * E), ``beta`` in radians."""

    gamma: tuple[float, ...]
    beta: tuple[float, ...]

    @property
    def p(self) -> int:
        return len(self.gamma)

    def to_dict(self) -> dict[str, list[float]]:
        return {"gamma": list(self.gamma), "beta": list(self.beta)}

    @classmethod
    def from_dict(cls, data: Any, source: str = "angles") -> "Angles":
        try:
            gamma = tuple(float(g) for g in data["gamma"])
            beta = tuple(float(b) for b in data["beta"])
        except (KeyError, TypeError, ValueError):
            raise InputError(
                f"{source}: angles must be {{'gamma': [...], 'beta': [...]}} with numbers"
            ) from None
        if len(gamma) != len(beta) or not gamma:
            raise InputError(f"{source}: gamma and beta need the same length p >= 1")
        if not all(math.isfinite(v) for v in gamma + beta):
            raise InputError(f"{source}: angles must be finite")
        return cls(gamma, beta)


# ------------------------------------------------------------------ bit bookkeeping
def weight_k_indices(n: int, k: int) -> np.ndarray:
    """Sorted state indices (little-endian) of Hamming weight k, shape (C(n, k),) int64."""
    idx = np.arange(2**n, dtype=np.int64)
    pop = np.zeros_like(idx)
    for q in range(n):
        pop += (idx >> q) & 1
    return idx[pop == k]


def index_to_bits(indices: np.ndarray, n: int) -> np.ndarray:
    """Little-endian indices (m,) -> 0/1 rows (m, n) int8 with x_i = bit i."""
    indices = np.asarray(indices, dtype=np.int64)
    return ((indices[:, None] >> np.arange(n)) & 1).astype(np.int8)


# ------------------------------------------------------------------ circuits
def mixer_edges(n: int, mixer: str) -> list[tuple[int, int]]:
    """The XY pairs of one mixer layer, in the order the circuits apply them.

    ring: (i, i+1 mod n), even i first, then odd i (and (n-1, 0) last when n is odd),
    so each round is a set of disjoint pairs; complete: all pairs in round-robin rounds.
    """
    if n < 2:
        return []
    if mixer == "xy-ring":
        if n == 2:
            return [(0, 1)]
        edges = [(i, (i + 1) % n) for i in range(n)]
        even = [e for e in edges if e[0] % 2 == 0 and not (n % 2 and e[0] == n - 1)]
        odd = [e for e in edges if e[0] % 2 == 1]
        last = [(n - 1, 0)] if n % 2 else []
        return even + odd + last
    if mixer == "xy-complete":
        players = list(range(n)) + ([-1] if n % 2 else [])
        m = len(players)
        out: list[tuple[int, int]] = []
        for _ in range(m - 1):
            for a in range(m // 2):
                i, j = players[a], players[m - 1 - a]
                if i >= 0 and j >= 0:
                    out.append((min(i, j), max(i, j)))
            players = [players[0], players[-1]] + players[1:-1]
        return out
    raise InputError(f"mixer {mixer!r} has no XY edges; choose xy-ring or xy-complete")


def _controlled_ry(theta: float, controls: Sequence[int], target: int) -> list[Gate]:
    """A (multi-)controlled ry from basic gates: X ry(-t/2) X ry(t/2) on the target.

    Because X ry(a) X = ry(-a), the target turns by t when the controls are all 1 and by
    0 otherwise (Braket's native controlled ry fails above 10 qubits).
    """
    flip = Gate("cnot", (controls[0], target)) if len(controls) == 1 else Gate(
        "ccnot", (controls[0], controls[1], target))
    return [flip, Gate("ry", (target,), -theta / 2), flip, Gate("ry", (target,), theta / 2)]


def _scs(m: int, k: int) -> list[Gate]:
    """Split-and-cyclic-shift block SCS_{m,k} on qubits 0..m-1 (Bärtschi–Eidenbenz)."""
    gates = [Gate("cnot", (m - 2, m - 1))]
    gates += _controlled_ry(2 * math.acos(math.sqrt(1 / m)), [m - 1], m - 2)
    gates.append(Gate("cnot", (m - 2, m - 1)))
    for l in range(2, k + 1):
        gates.append(Gate("cnot", (m - l - 1, m - 1)))
        gates += _controlled_ry(2 * math.acos(math.sqrt(l / m)), [m - 1, m - l], m - l - 1)
        gates.append(Gate("cnot", (m - l - 1, m - 1)))
    return gates


def dicke_plan(n: int, k: int) -> list[Gate]:
    """Gates preparing |D(n, k)> (uniform over weight-k states, real positive) from |0^n>.

    The deterministic Bärtschi–Eidenbenz construction (arXiv:1904.07358): set the last k
    qubits, then SCS_{m,k} for m = n..k+1 and SCS_{m,m-1} for m = k..2; O(n k) gates.
    """
    if not 0 <= k <= n:
        raise InputError(f"dicke_plan: need 0 <= k <= n, got n={n}, k={k}")
    gates = [Gate("x", (q,)) for q in range(n - k, n)]
    if k in (0, n):
        return gates
    for m in range(n, k, -1):
        gates += _scs(m, k)
    for m in range(k, 1, -1):
        gates += _scs(m, m - 1)
    return gates


# ------------------------------------------------------------------ the model
def _kron_power(u: np.ndarray, times: int) -> np.ndarray:
    out = np.ones((1, 1), dtype=np.complex128)
    for _ in range(times):
        out = np.kron(out, u)
    return out


class QAOAModel:
    """One problem set up for QAOA: energies on the simulated subspace, the mixer, the Ising
    form for circuits.

    ``basis``: little-endian indices of the simulated states (weight-k for XY, all for X);
    ``energies``: (len(basis),) the energy that the cost layer applies (the penalty QUBO
    for X); ``scale``: its spread, so that training works with unit-spread energies.
    """

    def __init__(self, problem: Problem, mixer: str = "auto", penalty: float | None = None):
        if mixer == "auto":
            mixer = "x" if problem.k is None else "xy-ring"
        if mixer not in MIXERS:
            raise InputError(f"mixer must be one of auto, {', '.join(MIXERS)}; got {mixer!r}")
        if mixer != "x" and problem.k is None:
            raise InputError(f"mixer {mixer} needs a cardinality constraint; use mixer=x for k=None")
        self.problem = problem
        self.mixer = mixer
        self.n = n = problem.n
        if mixer == "x":
            self.cost_problem, inverter = problem.to_qubo(penalty)
            self.penalty = inverter.penalty
            self.basis = np.arange(2**n, dtype=np.int64)
        else:
            self.cost_problem = problem
            self.penalty = 0.0
            self.basis = weight_k_indices(n, problem.k)
        self.bits = index_to_bits(self.basis, n)
        self.energies = self.cost_problem.energies(self.bits)
        spread = float(self.energies.std())
        self.scale = spread if spread > 1e-12 else 1.0
        self._cost = (self.energies - self.energies.mean()) / self.scale
        self.edges = mixer_edges(n, mixer) if mixer != "x" else []
        # per edge: (a then b, b then a) positions, so one gather/scatter updates both sides
        self._pairs = []
        for i, j in self.edges:
            a, b = self._edge_pairs(i, j)
            self._pairs.append((np.concatenate([a, b]), np.concatenate([b, a])))

    @property
    def trivial(self) -> bool:
        """True when the subspace holds one state or every state has the same energy."""
        return len(self.basis) == 1 or float(np.ptp(self.energies)) <= 1e-12 * max(
            1.0, float(np.abs(self.energies).max()))

    def _edge_pairs(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions (a, b) in ``basis`` of states that xy on (i, j) swaps: bit i=0, j=1 <-> 1, 0."""
        b = self.basis
        a_mask = (((b >> i) & 1) == 0) & (((b >> j) & 1) == 1)
        a = np.flatnonzero(a_mask)
        partner = b[a] ^ ((1 << i) | (1 << j))
        return a, np.searchsorted(b, partner)

    def initial_state(self) -> np.ndarray:
        """Dicke state (XY) or |+>^n (X) on the subspace: uniform, real."""
        m = len(self.basis)
        return np.full(m, 1.0 / math.sqrt(m), dtype=np.complex128)

    def state(self, gamma_n: Sequence[float], beta: Sequence[float]) -> np.ndarray:
        """The final state on ``basis`` for normalised gammas (phase gamma_n * cost)."""
        psi = self.initial_state()
        n = self.n
        for g, bt in zip(gamma_n, beta):
            psi *= np.exp(-1j * g * self._cost)
            c, s = math.cos(bt), -1j * math.sin(bt)
            if self.mixer == "x":
                # rx(2 beta) on every qubit = (u kron ... kron u); split into two halves
                u = np.array([[c, s], [s, c]])
                lo = n // 2
                u_lo = _kron_power(u, lo)
                u_hi = _kron_power(u, n - lo)
                psi = (u_hi @ psi.reshape(2 ** (n - lo), 2**lo) @ u_lo).ravel()
            else:
                for ab, ba in self._pairs:
                    psi[ab] = c * psi[ab] + s * psi[ba]
        return psi

    def expectation_n(self, params: np.ndarray) -> float:
        """<cost> in normalised units for params = (gamma_n_1..p, beta_1..p)."""
        p = len(params) // 2
        psi = self.state(params[:p], params[p:])
        return float(np.dot(np.abs(psi) ** 2, self._cost))

    def probabilities(self, angles: Angles) -> np.ndarray:
        """Outcome probabilities on ``basis`` for physical angles."""
        psi = self.state([g * self.scale for g in angles.gamma], angles.beta)
        return np.abs(psi) ** 2

    def to_physical(self, params: np.ndarray) -> Angles:
        p = len(params) // 2
        return Angles(tuple(float(g) / self.scale for g in params[:p]),
                      tuple(float(b) for b in params[p:]))

    def to_normalised(self, angles: Angles) -> np.ndarray:
        return np.array([g * self.scale for g in angles.gamma] + list(angles.beta))


def circuit_plan(model: QAOAModel, angles: Angles) -> list[Gate]:
    """The full QAOA circuit as gates (no measurement), for physical ``angles``."""
    n = model.n
    ising = model.cost_problem.to_ising()
    if model.mixer == "x":
        gates = [Gate("h", (q,)) for q in range(n)]
    else:
        gates = dicke_plan(n, model.problem.k)
    iu, ju = np.nonzero(np.triu(ising.J, 1))
    for gamma, beta in zip(angles.gamma, angles.beta):
        for q in range(n):
            if ising.h[q] != 0.0:
                gates.append(Gate("rz", (q,), float(-2.0 * gamma * ising.h[q])))
        for i, j in zip(iu.tolist(), ju.tolist()):
            gates.append(Gate("zz", (i, j), float(2.0 * gamma * ising.J[i, j])))
        if model.mixer == "x":
            gates += [Gate("rx", (q,), 2.0 * beta) for q in range(n)]
        else:
            gates += [Gate("xy", e, 2.0 * beta) for e in model.edges]
    return gates


# ------------------------------------------------------------------ training
class _OutOfTime(Exception):
    pass


@dataclass
class Training:
    """What `train_angles` found: the angles, <E> in problem units and the effort spent."""

    angles: Angles
    expectation: float
    evaluations: int
    complete: bool
    #: the best angles found at each depth 1..p reached (INTERP passes through them)
    per_depth: list[Angles] = field(default_factory=list)


def _interp(params: np.ndarray) -> np.ndarray:
    """INTERP (Zhou et al. 2020): p-layer optimum -> (p+1)-layer start by linear interpolation."""
    p = len(params) // 2

    def stretch(v: np.ndarray) -> np.ndarray:
        padded = np.concatenate([[0.0], v, [0.0]])
        return np.array([(i / p) * padded[i] + ((p - i) / p) * padded[i + 1] for i in range(p + 1)])

    return np.concatenate([stretch(params[:p]), stretch(params[p:])])


def train_angles(
    model: QAOAModel,
    p: int,
    *,
    rng: np.random.Generator,
    restarts: int = 3,
    optimizer: str = "cobyla",
    maxiter: int = 150,
    stop: float = math.inf,
) -> Training:
    """Minimise the exact <E> over 2p angles, layer by layer.

    p = 1: a coarse grid picks ``restarts`` starts; each p -> p + 1: the INTERP start of
    the best p-layer angles plus ``restarts - 1`` randomly perturbed copies. Stops at the
    perf_counter time ``stop`` keeping the best angles seen (``complete`` is then False).
    """
    evaluations = 0
    best: dict[str, Any] = {"f": math.inf, "x": None}

    def f(params: np.ndarray) -> float:
        nonlocal evaluations
        if time.perf_counter() > stop and best["x"] is not None:
            raise _OutOfTime
        evaluations += 1
        value = model.expectation_n(params)
        if value < best["f"]:
            best["f"], best["x"] = value, np.array(params, dtype=float)
        return value

    def run(x0: np.ndarray) -> np.ndarray:
        if optimizer == "cobyla":
            res = minimize(f, x0, method="COBYLA", tol=1e-3,
                           options={"maxiter": maxiter, "rhobeg": 0.2})
        else:
            res = minimize(f, x0, method="L-BFGS-B", options={"maxiter": maxiter})
        return np.asarray(res.x, dtype=float)

    complete = True
    per_depth: list[Angles] = []
    try:
        grid_g = np.linspace(0.1, 1.6, 7)
        grid_b = np.linspace(0.1, 1.5, 7)
        scores = [(f(np.array([g, b])), g, b) for g in grid_g for b in grid_b]
        scores.sort()
        layer_best = None
        for value, g, b in scores[: max(1, restarts)]:
            x = run(np.array([g, b]))
            if layer_best is None or model.expectation_n(x) < model.expectation_n(layer_best):
                layer_best = x
        per_depth.append(model.to_physical(layer_best))
        for depth in range(2, p + 1):
            start = _interp(layer_best)
            candidates = [start] + [start + rng.normal(scale=0.1, size=start.shape)
                                    for _ in range(max(0, restarts - 1))]
            finals = [run(x0) for x0 in candidates]
            layer_best = min(finals, key=model.expectation_n)
            per_depth.append(model.to_physical(layer_best))
    except _OutOfTime:
        complete = False
    params = best["x"]
    if params is None:
        params = np.zeros(2)
    if len(params) < 2 * p:
        # cut short before reaching depth p: pad with idle layers (gamma = beta = 0)
        q = len(params) // 2
        params = np.concatenate([params[:q], np.zeros(p - q), params[q:], np.zeros(p - q)])
    angles = model.to_physical(params)
    expectation = float(np.dot(model.probabilities(angles), model.energies))
    return Training(angles, expectation, evaluations, complete, per_depth)


# ------------------------------------------------------------------ classical polish
def local_search(problem: Problem, x: np.ndarray, max_steps: int = 10_000) -> np.ndarray:
    """Steepest descent from x: single flips (k=None) or swaps (keeps sum(x) = k).

    Flip gain: dE_i = (1 - 2 x_i) (Q_ii + 2 sum_{j != i} Q_ij x_j); swapping i (1 -> 0) with
    j (0 -> 1): dE_i + dE_j - 2 Q_ij.
    """
    q = problem.Q
    diag = np.diag(q)
    x = np.asarray(x, dtype=np.float64).copy()
    for _ in range(max_steps):
        field = q @ x
        d = (1.0 - 2.0 * x) * (diag + 2.0 * (field - diag * x))
        if problem.k is None:
            i = int(np.argmin(d))
            if d[i] >= -1e-12:
                break
            x[i] = 1.0 - x[i]
            continue
        ones, zeros = np.flatnonzero(x == 1), np.flatnonzero(x == 0)
        if not len(ones) or not len(zeros):
            break
        gain = d[ones][:, None] + d[zeros][None, :] - 2.0 * q[np.ix_(ones, zeros)]
        a, b = np.unravel_index(int(np.argmin(gain)), gain.shape)
        if gain[a, b] >= -1e-12:
            break
        x[ones[a]], x[zeros[b]] = 0.0, 1.0
    return x.astype(np.int8)


# ------------------------------------------------------------------ the shared backend
class QAOABackend(Backend):
    """QAOA trained on the exact state vector, then run and sampled on an SDK simulator.

    Subclasses implement `_run_circuit` (SDK circuit -> probabilities in the little-endian
    order of this module, plus circuit facts).
    """

    exact = False
    options = {
        "p": Option(int, 2, "QAOA layers", minimum=1),
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
        "polish": Option(bool, True, "improve the best sample by a classical swap/flip descent"),
        "initial": Option(Assignment, None, "(n,) feasible 0/1 warm start; the better of it and "
                                            "the QAOA answer is returned"),
    }
    #: Fraction of time_limit given to training; the rest runs and samples the circuit.
    TRAIN_SHARE = 0.3

    def check(self, problem: Problem, **options: Any) -> None:
        if self.max_variables is not None and problem.n > self.max_variables:
            raise UnsupportedProblemError(
                f"{self.name}: n={problem.n} exceeds the {self.max_variables} qubits this "
                "state-vector simulator handles in reasonable time here; use a classical "
                "backend (cpsat, sa, tabu) instead"
            )
        mixer = options.get("mixer", "auto")
        if mixer in ("xy-ring", "xy-complete") and problem.k is None:
            raise InputError(f"{self.name}: mixer {mixer} needs k; use mixer=x for k=None")

    @abc.abstractmethod
    def _run_circuit(self, gates: list[Gate], n: int,
                     **sdk_options: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """Build and simulate the circuit; return (probabilities (2**n,) little-endian,
        {"circuit_depth": int, "two_qubit_gates": int, ...}). ``sdk_options`` are the
        subclass's own options."""

    def _solve(self, problem: Problem, *, seed: int, time_limit: float | None, p: int,
               mixer: str, shots: int, restarts: int, optimizer: str, maxiter: int,
               angles: Any, penalty: float | None, polish: bool, initial: np.ndarray | None,
               **sdk_options: Any) -> RawSolution:
        t0 = time.perf_counter()
        stop = deadline(None if time_limit is None else self.TRAIN_SHARE * time_limit)
        rng = np.random.default_rng(seed)
        n = problem.n
        model = QAOAModel(problem, mixer, penalty)
        if angles is not None:
            trained = Angles.from_dict(angles, f"{self.name}: angles")
            training = Training(trained, float(np.dot(model.probabilities(trained), model.energies)),
                                0, True)
        elif model.trivial:
            trained = Angles((0.0,) * p, (0.0,) * p)
            training = Training(trained, float(model.energies.mean()), 0, True)
        else:
            training = train_angles(model, p, rng=rng, restarts=restarts, optimizer=optimizer,
                                    maxiter=maxiter, stop=stop)
        t_train = time.perf_counter() - t0
        gates = circuit_plan(model, training.angles)
        probs, facts = self._run_circuit(gates, n, **sdk_options)
        probs = np.clip(probs, 0.0, None)
        t_sim = time.perf_counter() - t0 - t_train
        draws = rng.choice(len(probs), size=shots, p=probs / probs.sum())
        samples = index_to_bits(draws, n)
        feasible = np.array([problem.is_feasible(s) for s in samples]) if problem.k is not None \
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
        candidates: list[tuple[float, str, np.ndarray]] = []
        if feasible.any():
            good = samples[feasible]
            energies = problem.energies(good)
            j = int(np.argmin(energies))
            best = good[j]
            best_index = int(np.sum(best.astype(np.int64) << np.arange(n)))
            info["best_sample_energy"] = float(energies[j])
            info["best_sample_probability"] = float(probs[best_index])
            candidates.append((float(energies[j]), "qaoa", best))
            if polish:
                order = np.argsort(energies, kind="stable")
                _, first = np.unique(good[order], axis=0, return_index=True)
                starts = good[order][np.sort(first)[:5]]
                for s in starts:
                    y = local_search(problem, s)
                    candidates.append((problem.energy(y), "polish", y))
        else:
            info["best_sample_energy"] = None
            info["best_sample_probability"] = 0.0
        if initial is not None:
            candidates.append((problem.energy(initial), "initial", initial))
            if polish:
                y = local_search(problem, initial)
                candidates.append((problem.energy(y), "polish", y))
        if not candidates:
            # every sample violated the constraint: fall back to a repaired point
            x0 = problem.feasible_point()
            y = local_search(problem, x0) if polish else x0
            candidates.append((problem.energy(y), "fallback", y))
        # first minimum wins: a qaoa sample beats an equal polish/initial answer
        energy, source, x = min(candidates, key=lambda c: c[0])
        info["answer_from"] = source
        info["polished"] = bool(polish)
        return RawSolution(x.astype(np.int8), proven_optimal=False, samples=samples, info=info)
