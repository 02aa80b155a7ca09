"""Solver backends behind one interface, found by name in a small registry.

    >>> from backends import get_backend
    >>> result = get_backend("exact").solve(problem, seed=0)

Each registry line names the backend, the module and class that implement it, and the
optional packages it needs. Availability is checked with `importlib.util.find_spec`,
never by importing, so listing backends is instant. Adding a backend means writing its
module and its line here; the conformance suite in tests/ then covers it.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qcbo.errors import BackendUnavailableError

if TYPE_CHECKING:
    from qcbo.problem import Problem
    from qcbo.result import SolveResult

    from .base import Backend

__all__ = ["BackendSpec", "BACKENDS", "available_backends", "backend_class", "get_backend",
           "solve"]


@dataclass(frozen=True)
class BackendSpec:
    """A registry line: ``target`` is "module:Class"; ``requires`` are import names."""

    name: str
    target: str
    requires: tuple[str, ...] = ()
    install: str = ""

    @property
    def module(self) -> str:
        return self.target.split(":")[0]

    def missing(self) -> list[str]:
        """Import names (and the implementing module) that cannot be found."""
        missing = [pkg for pkg in self.requires if _find_spec(pkg) is None]
        if not missing and _find_spec(self.module) is None:
            missing.append(self.module)
        return missing


def _find_spec(name: str) -> Any:
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


BACKENDS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in [
        BackendSpec("exact", "backends.exact:ExactBackend"),
        BackendSpec("cpsat", "backends.cpsat:CpSatBackend", ("ortools",), "ortools"),
        BackendSpec("sa", "backends.anneal:SimulatedAnnealingBackend", ("numba",), "numba"),
        BackendSpec("tabu", "backends.tabu:TabuBackend", ("numba",), "numba"),
        BackendSpec("dwave-tabu", "backends.dwave:DWaveTabuBackend",
                    ("dimod", "dwave.samplers"), "dwave-samplers"),
        BackendSpec("dwave-sa", "backends.dwave:DWaveSimulatedAnnealingBackend",
                    ("dimod", "dwave.samplers"), "dwave-samplers"),
        BackendSpec("qaoa-qiskit", "backends.qaoa_qiskit:QiskitQAOABackend",
                    ("qiskit",), "qiskit"),
        BackendSpec("qaoa-subspace", "backends.qaoa_subspace:SubspaceQAOABackend", ("numba",),
                    "numba"),
        BackendSpec("braket-local", "backends.qaoa_braket:BraketLocalQAOABackend",
                    ("braket.circuits", "braket.devices"), "amazon-braket-sdk"),
    ]
}


def available_backends() -> list[str]:
    """Names of the backends whose packages are installed, in registry order."""
    return [name for name, spec in BACKENDS.items() if not spec.missing()]


def backend_class(name: str) -> type["Backend"]:
    """The class of a registered backend (imports it)."""
    spec = BACKENDS.get(name)
    if spec is None:
        raise BackendUnavailableError(
            f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}"
        )
    missing = spec.missing()
    if missing:
        hint = f"pip install {spec.install}" if spec.install else "reinstall qcbo"
        raise BackendUnavailableError(
            f"backend {name!r} needs {', '.join(missing)}, which is not installed; run: {hint}"
        )
    module_name, class_name = spec.target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def get_backend(name: str) -> "Backend":
    """An instance of the backend registered as ``name``."""
    return backend_class(name)()


def solve(
    problem: "Problem",
    backend: str = "exact",
    *,
    seed: int | None = None,
    time_limit: float | None = None,
    **options: Any,
) -> "SolveResult":
    """Solve ``problem`` with the backend registered as ``backend``."""
    return get_backend(backend).solve(problem, seed=seed, time_limit=time_limit, **options)
