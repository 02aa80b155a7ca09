"""`qaoa-qiskit`: the QAOA core's circuits built in Qiskit 2.x and run on its Statevector.

Qiskit's order is the core's: qubit i is bit i of the state index (little-endian). The
XY terms are ``XXPlusYYGate(t, 0) = exp(-i t/4 (XX + YY))``, exactly the core's ``xy(t)``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .qaoa import Gate, QAOABackend

__all__ = ["QiskitQAOABackend", "build_circuit", "statevector"]

#: Measured here (2 shared cores, loaded): the Statevector run of an n = 12, p = 2 circuit
#: (~500 gates) takes ~0.06 s, n = 16 (~900 gates) 5.7 s and training there ~18 s; 14 keeps
#: a solve within seconds.
MAX_QUBITS = 14


def _xy(qc: Any, q: tuple[int, ...], t: float) -> None:
    from qiskit.circuit.library import XXPlusYYGate

    qc.append(XXPlusYYGate(t, 0.0), list(q))


#: The core's gates in Qiskit: name -> (circuit, qubits, angle) -> None.
GATES: dict[str, Callable[[Any, tuple[int, ...], Any], None]] = {
    "x": lambda qc, q, t: qc.x(*q),
    "h": lambda qc, q, t: qc.h(*q),
    "rx": lambda qc, q, t: qc.rx(t, *q),
    "ry": lambda qc, q, t: qc.ry(t, *q),
    "rz": lambda qc, q, t: qc.rz(t, *q),
    "cnot": lambda qc, q, t: qc.cx(*q),
    "ccnot": lambda qc, q, t: qc.ccx(*q),
    "zz": lambda qc, q, t: qc.rzz(t, *q),
    "xy": _xy,
}


def build_circuit(gates: list[Gate], n: int) -> Any:
    """A qiskit.QuantumCircuit of the core's gate list (no measurement)."""
    from qiskit import QuantumCircuit

    qc = QuantumCircuit(n)
    for g in gates:
        GATES[g.name](qc, g.qubits, g.angle)
    return qc


def statevector(gates: list[Gate], n: int) -> np.ndarray:
    """The final state (2**n,) complex, little-endian, from Qiskit's Statevector."""
    from qiskit.quantum_info import Statevector

    return np.asarray(Statevector(build_circuit(gates, n)).data)


class QiskitQAOABackend(QAOABackend):
    """QAOA (XY mixer from a Dicke state, or X mixer on the penalty QUBO) on Qiskit."""

    name = "qaoa-qiskit"
    summary = ("QAOA with a Hamming-weight-preserving XY mixer (X mixer + penalty for k=None), "
               f"Qiskit Statevector; n <= {MAX_QUBITS} (larger blocks with -o sub_block=q)")
    max_qubits = MAX_QUBITS
    block_size_hint = MAX_QUBITS

    def _run_circuit(self, gates: list[Gate], n: int) -> tuple[np.ndarray, dict[str, Any]]:
        from qiskit.quantum_info import Statevector

        qc = build_circuit(gates, n)
        probs = np.asarray(Statevector(qc).probabilities())
        two = sum(1 for inst in qc.data if inst.operation.num_qubits >= 2)
        return probs, {"circuit_depth": int(qc.depth()), "two_qubit_gates": int(two),
                       "sdk": "qiskit"}
