"""The SDK-independent QAOA model: gates, circuits and the subspace state-vector simulator.

Conventions
-----------
* Qubit i carries variable i; x_i = 1 <=> qubit i in |1>. A state-vector index in this
  module is ``sum_i x_i 2**i`` (Qiskit's little-endian order); the Braket module maps
  its big-endian order onto it.
* Gates (`Gate`) use ``rx/ry/rz(t) = exp(-i t/2 P)``, ``zz(t) = exp(-i t/2 Z Z)`` and
  ``xy(t) = exp(-i t/4 (X X + Y Y))`` (= Qiskit ``XXPlusYYGate(t, 0)`` = Braket
  ``xy(-t)``), plus ``x``, ``h``, ``cnot`` and ``ccnot``.
* One QAOA layer with angles (gamma, beta) is ``exp(-i gamma E)`` followed by the mixer,
  where E(x) = x Q x + offset is the problem energy (the penalty QUBO for the X mixer).
  The cost layer is built from the Ising form (s = 2x - 1 = -Z): h_i s_i -> rz(-2 gamma h_i),
  J_ij s_i s_j -> zz(2 gamma J_ij); the two differ by a global phase only.
* Mixers: "xy-ring" / "xy-complete" apply ``xy(2 beta)`` on the pairs of `mixer_edges`, in
  that order (the gates of overlapping pairs do not commute, so the order is part of the
  ansatz; the simulator applies exactly the circuit's sequence), start from the Dicke state
  |D(n, k)> and keep the Hamming weight, so every sample is feasible. "x" applies
  ``rx(2 beta)`` on every qubit from |+>^n, on the penalty QUBO.

`QAOAModel` simulates those layers on the relevant subspace (the C(n, k) weight-k states
for XY, all 2**n for X) with the numba kernels of `backends._qaoa_kernels`: memory is
O(C(n, k)) (n = 26, k = 13: 10.4 M amplitudes, ~0.5 GB in all), never per-edge index
arrays; the XY gates of a layer run in cache-friendly passes over blocks of states, in an
order equivalent to the circuit's. `QAOAModel.expectation_and_gradient_n` gives <E> and
its exact gradient in all 2p angles by the adjoint method (about three circuit runs,
four state-sized arrays). Training (`backends.qaoa_training`) works with the energies scaled to unit
spread, so that angles transfer between problems; ``gamma`` in `Angles` is in the
problem's own units (phase = gamma * E).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np

from qcbo.errors import InputError
from qcbo.problem import Problem

__all__ = ["Gate", "GATE_NAMES", "Angles", "Mixer", "MIXERS", "QAOAModel", "weight_k_indices",
           "index_to_bits", "mixer_edges", "dicke_plan", "circuit_plan", "gate_facts"]

Mixer = Literal["xy-ring", "xy-complete", "x"]
MIXERS: tuple[str, ...] = ("xy-ring", "xy-complete", "x")
#: Every gate name the plans here emit; each SDK module has one translation table of them.
GATE_NAMES: tuple[str, ...] = ("x", "h", "rx", "ry", "rz", "cnot", "ccnot", "zz", "xy")


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
    """Sorted state indices (little-endian) of Hamming weight k, shape (C(n, k),) int64.

    The position of a state in this list is its rank (see `backends._qaoa_kernels`).
    """
    from . import _qaoa_kernels as kernels

    return kernels.weight_k_masks(int(n), int(k))


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


# ------------------------------------------------------------------ the simulator
class QAOAModel:
    """One problem set up for QAOA: energies on the simulated subspace, the mixer, the Ising
    form for circuits.

    ``basis``: (m,) int64 little-endian indices of the simulated states, sorted (weight-k
    for XY, all 2**n for X); ``energies``: (m,) float64 the energy that the cost layer
    applies (the penalty QUBO for X); ``scale``: its spread, so that training works with
    unit-spread energies; ``edges``: the XY pairs of one mixer layer, in circuit order.
    """

    def __init__(self, problem: Problem, mixer: str = "auto", penalty: float | None = None):
        from . import _qaoa_kernels as kernels

        if mixer == "auto":
            mixer = "x" if problem.k is None else "xy-ring"
        if mixer not in MIXERS:
            raise InputError(f"mixer must be one of auto, {', '.join(MIXERS)}; got {mixer!r}")
        if mixer != "x" and problem.k is None:
            raise InputError(f"mixer {mixer} needs a cardinality constraint; use mixer=x for k=None")
        self.problem = problem
        self.mixer = mixer
        self.n = n = problem.n
        if n > 62:
            raise InputError(f"QAOA simulation takes at most 62 qubits, got n={n}")
        kernels.warm_up()
        if mixer == "x":
            self.cost_problem, inverter = problem.to_qubo(penalty)
            self.penalty = inverter.penalty
            self.basis = np.arange(2**n, dtype=np.int64)
        else:
            self.cost_problem = problem
            self.penalty = 0.0
            self.basis = kernels.weight_k_masks(n, problem.k)
        q = np.ascontiguousarray(self.cost_problem.Q, dtype=np.float64)
        self.energies = kernels.mask_energies(self.basis, q, float(self.cost_problem.offset))
        spread = float(self.energies.std())
        self.scale = spread if spread > 1e-12 else 1.0
        self._cost = (self.energies - self.energies.mean()) / self.scale
        self.edges = mixer_edges(n, mixer) if mixer != "x" else []
        h = kernels.block_split(n)
        self._layout = None if mixer == "x" else kernels.build_layout(
            n, int(problem.k), h, self.edges, kernels.rank_tables(n, h))
        self._bits: np.ndarray | None = None

    @property
    def bits(self) -> np.ndarray:
        """(m, n) int8 rows of ``basis`` (built on first use: m * n bytes)."""
        if self._bits is None:
            self._bits = index_to_bits(self.basis, self.n)
        return self._bits

    @property
    def trivial(self) -> bool:
        """True when the subspace holds one state or every state has the same energy."""
        return len(self.basis) == 1 or float(np.ptp(self.energies)) <= 1e-12 * max(
            1.0, float(np.abs(self.energies).max()))

    def _evolve(self, gamma_n: Sequence[float], beta: Sequence[float]
                ) -> tuple[np.ndarray, np.ndarray]:
        from . import _qaoa_kernels as kernels

        m = len(self.basis)  # the start: Dicke state (XY) or |+>^n (X), uniform and real
        re = np.full(m, 1.0 / math.sqrt(m))
        im = np.zeros(m)
        gammas = np.asarray(gamma_n, dtype=np.float64)
        betas = np.asarray(beta, dtype=np.float64)
        with kernels.threads_for(m):
            if self._layout is None:
                kernels.evolve_x(re, im, self._cost, gammas, betas, self.n)
            else:
                kernels.evolve_xy(re, im, self._cost, gammas, betas, *self._layout.arrays())
        return re, im

    def state(self, gamma_n: Sequence[float], beta: Sequence[float]) -> np.ndarray:
        """The final state (m,) complex on ``basis`` for normalised gammas (phase gamma_n *
        cost, cost the energies centred and divided by ``scale``; a global phase away
        from the circuit's)."""
        re, im = self._evolve(gamma_n, beta)
        return re + 1j * im

    def expectation_n(self, params: np.ndarray) -> float:
        """<cost> in normalised units for params = (gamma_n_1..p, beta_1..p)."""
        from . import _qaoa_kernels as kernels

        p = len(params) // 2
        re, im = self._evolve(params[:p], params[p:])
        with kernels.threads_for(len(re)):
            return float(kernels.expectation(re, im, self._cost))

    def expectation_and_gradient_n(self, params: np.ndarray) -> tuple[float, np.ndarray]:
        """(<cost>, its gradient (2p,)) in normalised units for params = (gamma_n_1..p,
        beta_1..p): exact, by the adjoint method (about three circuit runs)."""
        from . import _qaoa_kernels as kernels

        params = np.asarray(params, dtype=np.float64)
        p = len(params) // 2
        gammas = np.ascontiguousarray(params[:p])
        betas = np.ascontiguousarray(params[p:])
        with kernels.threads_for(len(self._cost)):
            if self._layout is None:
                value, grad = kernels.energy_and_gradient_x(self._cost, gammas, betas, self.n)
            else:
                value, grad = kernels.energy_and_gradient_xy(self._cost, gammas, betas,
                                                             *self._layout.arrays())
        return float(value), grad

    def probabilities(self, angles: "Angles") -> np.ndarray:
        """Outcome probabilities (m,) on ``basis`` for physical angles."""
        from . import _qaoa_kernels as kernels

        return kernels.probabilities(*self._evolve([g * self.scale for g in angles.gamma],
                                                   angles.beta))

    def expectation(self, angles: "Angles") -> float:
        """<E> in problem units (the cost problem's energy) for physical angles."""
        return float(np.dot(self.probabilities(angles), self.energies))

    def to_physical(self, params: np.ndarray) -> "Angles":
        p = len(params) // 2
        return Angles(tuple(float(g) / self.scale for g in params[:p]),
                      tuple(float(b) for b in params[p:]))

    def to_normalised(self, angles: "Angles") -> np.ndarray:
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


def gate_facts(gates: list[Gate], n: int) -> dict[str, int]:
    """Depth (gates as they come, each starting after the last gate on its qubits) and the
    number of gates on two or more qubits of a gate list, before any transpilation."""
    level = [0] * n
    two = 0
    for g in gates:
        top = 1 + max(level[q] for q in g.qubits)
        for q in g.qubits:
            level[q] = top
        two += len(g.qubits) >= 2
    return {"circuit_depth": max(level, default=0), "two_qubit_gates": two}

