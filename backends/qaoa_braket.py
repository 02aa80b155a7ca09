"""`braket-local`: the QAOA core's circuits built with the Braket SDK, run on
``LocalSimulator("braket_sv")``.

By default the circuit goes to the simulator as JAQCD IR (``ir="jaqcd"``): the same
state-vector engine that ``LocalSimulator("braket_sv")`` wraps (`StateVectorSimulator`),
without the OpenQASM text round trip whose ANTLR parser dominates the run time here
(n = 12, p = 2: ~0.1 s against ~0.5-1.2 s). ``ir="openqasm"`` runs the circuit through
``LocalSimulator("braket_sv").run`` exactly as a user would. JAQCD is deprecated in the
Braket SDK; its warnings are silenced here, and ``openqasm`` remains for when it goes.

Braket orders state-vector indices big-endian (qubit 0 is the most significant bit);
`to_little_endian` maps them onto the core's order. Its native ``xy(t)`` is
``exp(+i t/4 (XX + YY))``, so the core's ``xy(t)`` becomes ``xy(-t)``. Controlled
rotations arrive from the core already written with ry and cnot/ccnot (Braket's
``ry(..., control=...)`` fails above 10 qubits). Every qubit gets an identity first, so
that idle qubits still count in the state vector.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np

from qcbo.errors import InputError

from .base import Option
from .qaoa import Gate, QAOABackend

__all__ = ["BraketLocalQAOABackend", "build_circuit", "to_little_endian", "statevector"]

#: Measured here (2 shared cores, JAQCD): n = 12, p = 2 (~500 gates) runs in ~0.1-0.3 s and
#: n = 14 in ~0.5 s once numba's kernels for more than 10 qubits are loaded, but loading
#: them costs the first such circuit of every process ~0.8-1.3 s (2.5 s+ when numba must
#: compile them), which breaks a 0.5 s time limit; so n <= 10 (use qaoa-qiskit for 11-14).
MAX_QUBITS = 10

_SIMULATORS: dict[str, Any] = {}


def _simulator(ir: str = "openqasm") -> Any:
    """LocalSimulator("braket_sv") for OpenQASM; its engine StateVectorSimulator for JAQCD."""
    if ir not in _SIMULATORS:
        if ir == "openqasm":
            from braket.devices import LocalSimulator

            _SIMULATORS[ir] = LocalSimulator("braket_sv")
        else:
            from braket.default_simulator import StateVectorSimulator

            _SIMULATORS[ir] = StateVectorSimulator()
    return _SIMULATORS[ir]


def run_values(circ: Any, n: int, ir: str = "jaqcd") -> np.ndarray:
    """Run a circuit with exactly one result type (state_vector or probability) on the
    Braket state-vector simulator and return that result's values (big-endian)."""
    if ir == "openqasm":
        result = _simulator("openqasm").run(circ, shots=0).result()
        return np.asarray(result.values[0])
    if ir != "jaqcd":
        raise InputError(f"braket-local: ir must be jaqcd or openqasm, got {ir!r}")
    from braket.circuits.serialization import IRType

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        program = circ.to_ir(IRType.JAQCD)
        result = _simulator("jaqcd").run(program, qubit_count=n, shots=0)
    value = result.resultTypes[0].value
    if isinstance(value, dict):  # state vectors come back as {"0101": [re, im]} maps
        raise InputError("braket-local: use probability() or amplitude results here")
    return np.asarray(value)


#: The core's gates in Braket: name -> (circuit, qubits, angle) -> None. Braket's xy(t) is
#: exp(+i t/4 (XX + YY)), so the core's xy(t) is Braket's xy(-t).
GATES: dict[str, Callable[[Any, tuple[int, ...], Any], None]] = {
    "x": lambda c, q, t: c.x(*q),
    "h": lambda c, q, t: c.h(*q),
    "rx": lambda c, q, t: c.rx(*q, t),
    "ry": lambda c, q, t: c.ry(*q, t),
    "rz": lambda c, q, t: c.rz(*q, t),
    "cnot": lambda c, q, t: c.cnot(*q),
    "ccnot": lambda c, q, t: c.ccnot(*q),
    "zz": lambda c, q, t: c.zz(*q, t),
    "xy": lambda c, q, t: c.xy(*q, -t),
}


def build_circuit(gates: list[Gate], n: int) -> Any:
    """A braket.circuits.Circuit of the core's gate list (no result types)."""
    from braket.circuits import Circuit

    circ = Circuit()
    for q in range(n):
        circ.i(q)
    for g in gates:
        GATES[g.name](circ, g.qubits, g.angle)
    return circ


def to_little_endian(values: np.ndarray, n: int) -> np.ndarray:
    """Reorder a (2**n,) array from Braket's big-endian indices to little-endian."""
    return np.asarray(values).reshape((2,) * n).transpose(tuple(range(n - 1, -1, -1))).ravel()


def statevector(gates: list[Gate], n: int) -> np.ndarray:
    """The final state (2**n,) complex, little-endian, from LocalSimulator("braket_sv")."""
    circ = build_circuit(gates, n)
    circ.state_vector()
    return to_little_endian(run_values(circ, n, "openqasm"), n)


def circuit_facts(circ: Any) -> dict[str, int]:
    """Depth and the number of gates on two or more qubits of a Braket circuit."""
    two = sum(1 for inst in circ.instructions
              if len(inst.target) + len(getattr(inst, "control", ()) or ()) >= 2)
    return {"circuit_depth": int(circ.depth), "two_qubit_gates": int(two)}


class BraketLocalQAOABackend(QAOABackend):
    """QAOA (XY mixer from a Dicke state, or X mixer on the penalty QUBO) on Braket's
    local state-vector simulator."""

    name = "braket-local"
    summary = ("QAOA with a Hamming-weight-preserving XY mixer (X mixer + penalty for k=None), "
               f"Amazon Braket LocalSimulator('braket_sv'); n <= {MAX_QUBITS} (larger blocks with "
               "-o sub_block=q)")
    max_qubits = MAX_QUBITS
    block_size_hint = MAX_QUBITS
    options = {
        **QAOABackend.options,
        "ir": Option(str, "jaqcd", "jaqcd (fast, same simulator engine) | openqasm (through "
                                   "LocalSimulator.run, slower to parse)",
                     choices=("jaqcd", "openqasm")),
    }

    def _run_circuit(self, gates: list[Gate], n: int,
                     ir: str = "jaqcd") -> tuple[np.ndarray, dict[str, Any]]:
        circ = build_circuit(gates, n)
        facts = circuit_facts(circ)
        circ.probability()
        probs = to_little_endian(run_values(circ, n, ir).astype(float), n)
        return probs, {**facts, "sdk": "braket", "ir": ir}
