"""`qaoa-subspace`: QAOA simulated and sampled in the weight-k subspace, with no SDK.

The XY mixers never leave the Hamming-weight-k states, so the state from the Dicke start
lives on C(n, k) amplitudes (n = 20: 184,756; n = 26: 10.4 M) instead of 2**n. The
simulator is `backends.qaoa_model.QAOAModel` (numba kernels in `backends._qaoa_kernels`):
it applies the gates of `circuit_plan`'s mixer in the circuit's order, and the cost layer
as one diagonal phase (equal to the circuit's rz/zz layer up to a global phase), so its
outcome probabilities are those of the circuit that qaoa-qiskit runs (tests compare them
on every n <= 12). Training and sampling are the other QAOA backends'
(`backends.qaoa.QAOABackend`), except that training defaults to L-BFGS-B with the
simulator's exact adjoint gradient (``optimizer=cobyla`` gives the SDK backends'
derivative-free training); blocks over ``max_qubits`` are taken with ``sub_block``.
For k=None (or mixer=x) it simulates the X mixer on all 2**n states, up to
``MAX_X_QUBITS``.

Memory at n = 26, k = 13: the state (complex128), the energies and the normalised cost
(float64), the masks (int64) and the sampling cdf: about 0.5 GB at peak (measured in
benchmarks/qaoa.py). Time per layer grows as C(n-2, k-1) * (edges): ring mixers are ~n/2
times cheaper than complete ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qcbo.problem import Problem

from .base import Option
from .qaoa import QAOABackend
from .qaoa_model import Angles, QAOAModel, circuit_plan, gate_facts

__all__ = ["SubspaceQAOABackend", "MAX_QUBITS", "MAX_X_QUBITS"]

#: XY mixers: C(26, 13) = 10.4 M amplitudes, ~0.5 GB at peak.
MAX_QUBITS = 26
#: X mixer (k=None or mixer=x): 2**22 = 4.2 M amplitudes.
MAX_X_QUBITS = 22


class SubspaceQAOABackend(QAOABackend):
    """QAOA (XY mixer from a Dicke state, or X mixer on the penalty QUBO) on the numba
    weight-k subspace simulator."""

    name = "qaoa-subspace"
    summary = ("QAOA with a Hamming-weight-preserving XY mixer simulated on the C(n, k) "
               f"weight-k states (no SDK); n <= {MAX_QUBITS} (X mixer n <= {MAX_X_QUBITS}), "
               "larger blocks with -o sub_block=q")
    max_qubits = MAX_QUBITS
    #: Training defaults to L-BFGS-B on the exact adjoint gradient (the SDK backends keep
    #: COBYLA): a few times fewer circuit runs for the same or lower <E>.
    options = {**QAOABackend.options,
               "optimizer": Option(str, "l-bfgs-b", "l-bfgs-b (exact adjoint gradient) | "
                                                    "cobyla", choices=("cobyla", "l-bfgs-b"))}
    #: iCBS blocks without sub_block: 20 variables (training + 1000 shots in seconds).
    block_size_hint = 20

    @classmethod
    def qubit_limit(cls, problem: Problem, mixer: str) -> int:
        return MAX_X_QUBITS if mixer == "x" else MAX_QUBITS

    def _outcome_probabilities(self, model: QAOAModel, angles: Angles, **sdk_options: Any
                               ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        probs = model.probabilities(angles)
        facts = gate_facts(circuit_plan(model, angles), model.n)
        return probs, model.basis, {**facts, "amplitudes": int(len(model.basis)),
                                    "sdk": "subspace"}
