"""`qaoa-qiskit`: the QAOA core's circuits built in Qiskit 2.x and run on its Statevector.

Qiskit's order is the core's: qubit i is bit i of the state index (little-endian). The
XY terms are ``XXPlusYYGate(t, 0) = exp(-i t/4 (XX + YY))``, exactly the core's ``xy(t)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .qaoa import Gate, QAOABackend

__all__ = ["QiskitQAOABackend", "build_circuit", "statevector"]

#: Measured here (2 shared cores, loaded): the Statevector run of an n = 12, p = 2 circuit
#: (~500 gates) takes ~0.06 s, n = 16 (~900 gates) 5.7 s and training there ~18 s; 14 keeps
#: a solve within seconds.
MAX_QUBITS = 14


def build_circuit(gates: list[Gate], n: int) -> Any:
    """A qiskit.QuantumCircuit of the core's gate list (no measurement)."""
    from qiskit import QuantumCircuit
    from qiskit.circuit.library import XXPlusYYGate

    qc = QuantumCircuit(n)
    for g in gates:
        q, t = g.qubits, g.angle
        if g.name == "x":
            qc.x(q[0])
        elif g.name == "h":
            qc.h(q[0])
        elif g.name == "rx":
            qc.rx(t, q[0])
        elif g.name == "ry":
            qc.ry(t, q[0])
        elif g.name == "rz":
            qc.rz(t, q[0])
        elif g.name == "cnot":
            qc.cx(q[0], q[1])
        elif g.name == "ccnot":
            qc.ccx(q[0], q[1], q[2])
        elif g.name == "zz":
            qc.rzz(t, q[0], q[1])
        elif g.name == "xy":
            qc.append(XXPlusYYGate(t, 0.0), [q[0], q[1]])
        else:  # pragma: no cover - the core emits only the gates above
            raise ValueError(f"unknown gate {g.name}")
    return qc


def statevector(gates: list[Gate], n: int) -> np.ndarray:
    """The final state (2**n,) complex, little-endian, from Qiskit's Statevector."""
    from qiskit.quantum_info import Statevector

    return np.asarray(Statevector(build_circuit(gates, n)).data)


class QiskitQAOABackend(QAOABackend):
    """QAOA (XY mixer from a Dicke state, or X mixer on the penalty QUBO) on Qiskit."""

    name = "qaoa-qiskit"
    summary = ("QAOA with a Hamming-weight-preserving XY mixer (X mixer + penalty for k=None), "
               f"Qiskit Statevector; n <= {MAX_QUBITS}")
    max_variables = MAX_QUBITS

    def _run_circuit(self, gates: list[Gate], n: int) -> tuple[np.ndarray, dict[str, Any]]:
        from qiskit.quantum_info import Statevector

        qc = build_circuit(gates, n)
        probs = np.asarray(Statevector(qc).probabilities())
        two = sum(1 for inst in qc.data if inst.operation.num_qubits >= 2)
        return probs, {"circuit_depth": int(qc.depth()), "two_qubit_gates": int(two),
                       "sdk": "qiskit"}
