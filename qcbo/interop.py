"""Converters to and from dimod and qiskit-optimization (imported lazily).

- dimod: `to_bqm` / `from_bqm` (unconstrained), `to_cqm` / `from_cqm` (with the
  cardinality constraint, labelled "cardinality"), `.json` files holding a dimod
  serialisable BQM of the objective plus a ``"qcbo"`` entry with k and metadata.
- qiskit-optimization: `to_quadratic_program` / `from_quadratic_program`, and `.lp`
  files written by qiskit-optimization (docplex's LP writer) and read back by a small
  parser of that LP subset (qiskit-optimization's own LP reader needs CPLEX).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BackendUnavailableError, InputError
from .problem import Problem

__all__ = [
    "to_bqm",
    "from_bqm",
    "to_cqm",
    "from_cqm",
    "to_quadratic_program",
    "from_quadratic_program",
    "read_dimod_json",
    "write_dimod_json",
    "read_lp",
    "write_lp",
]

CARDINALITY = "cardinality"


def _require(module: str, package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise BackendUnavailableError(f"{module} is not installed; run: pip install {package}") from None


def _variables(problem: Problem) -> list[Any]:
    return list(problem.labels) if problem.labels is not None else list(range(problem.n))


# --------------------------------------------------------------------------- dimod
def to_bqm(problem: Problem) -> Any:
    """A dimod BINARY BinaryQuadraticModel with the same energy on every state.

    Constrained problems have no BQM form without a penalty: use ``to_cqm`` or
    ``to_bqm(problem.to_qubo()[0])``.
    """
    dimod = _require("dimod", "dimod")
    if problem.k is not None:
        raise InputError(
            "to_bqm: the problem has a cardinality constraint; use to_cqm, or to_bqm on "
            "problem.to_qubo()[0] for the penalty form"
        )
    labels = _variables(problem)
    q = problem.Q
    iu, ju = np.triu_indices(problem.n, 1)
    quadratic = {(labels[i], labels[j]): 2.0 * q[i, j] for i, j in zip(iu, ju) if q[i, j] != 0}
    linear = {labels[i]: float(q[i, i]) for i in range(problem.n)}
    return dimod.BinaryQuadraticModel(linear, quadratic, problem.offset, dimod.BINARY)


def _from_quadratic(linear: dict, quadratic: dict, offset: float, variables: list,
                    k: int | None, metadata: dict | None, source: str) -> Problem:
    index = {v: i for i, v in enumerate(variables)}
    n = len(variables)
    if n == 0:
        raise InputError(f"{source}: the model has no variables")
    q = np.zeros((n, n))
    for v, bias in linear.items():
        q[index[v], index[v]] += float(bias)
    for (u, v), bias in quadratic.items():
        i, j = index[u], index[v]
        q[i, j] += float(bias) / 2.0
        q[j, i] += float(bias) / 2.0
    labels = None if variables == list(range(n)) else variables
    return Problem(q, float(offset), k, labels=labels, metadata=metadata, source=source)


def from_bqm(bqm: Any, *, k: int | None = None, metadata: dict | None = None) -> Problem:
    """A Problem from a dimod BQM (SPIN models are converted to BINARY)."""
    dimod = _require("dimod", "dimod")
    if bqm.vartype is not dimod.BINARY:
        bqm = bqm.change_vartype(dimod.BINARY, inplace=False)
    variables = list(bqm.variables)
    return _from_quadratic(dict(bqm.linear), dict(bqm.quadratic), bqm.offset, variables, k,
                           metadata, "from_bqm")


def to_cqm(problem: Problem) -> Any:
    """A dimod ConstrainedQuadraticModel: the objective plus Σx == k (if k is set)."""
    dimod = _require("dimod", "dimod")
    objective = to_bqm(problem.replace(k=None))
    cqm = dimod.ConstrainedQuadraticModel()
    cqm.set_objective(objective)
    if problem.k is not None:
        cqm.add_constraint_from_iterable(
            [(v, 1.0) for v in _variables(problem)], "==", rhs=problem.k, label=CARDINALITY
        )
    return cqm


def from_cqm(cqm: Any, *, metadata: dict | None = None) -> Problem:
    """A Problem from a CQM with binary variables and at most one cardinality constraint."""
    dimod = _require("dimod", "dimod")
    variables = list(cqm.variables)
    for v in variables:
        if cqm.vartype(v) is not dimod.BINARY:
            raise InputError(f"from_cqm: variable {v!r} is {cqm.vartype(v).name}, not BINARY")
    k = None
    if len(cqm.constraints) > 1:
        raise InputError(f"from_cqm: {len(cqm.constraints)} constraints; only one Σx == k is supported")
    for label, comparison in cqm.constraints.items():
        lhs = comparison.lhs
        ok = comparison.sense is dimod.sym.Sense.Eq
        biases = dict(lhs.linear)
        quad = dict(lhs.quadratic) if hasattr(lhs, "quadratic") else {}
        if (not ok or quad or set(biases) != set(variables)
                or any(b != 1.0 for b in biases.values())):
            raise InputError(f"from_cqm: constraint {label!r} is not Σx == k over all variables")
        rhs = float(comparison.rhs) - float(lhs.offset)
        if rhs != round(rhs):
            raise InputError(f"from_cqm: constraint {label!r} has a non-integer right side {rhs}")
        k = int(round(rhs))
    objective = cqm.objective
    return _from_quadratic(dict(objective.linear), dict(objective.quadratic), objective.offset,
                           variables, k, metadata, "from_cqm")


def write_dimod_json(path: str | os.PathLike, problem: Problem) -> None:
    """A dimod serialisable BQM of the objective, plus {"qcbo": {k, metadata}}."""
    from .io import atomic_write

    data = to_bqm(problem.replace(k=None)).to_serializable(use_bytes=False)
    data["qcbo"] = {"version": 1, "k": problem.k, "metadata": problem.metadata}
    with atomic_write(path, "w") as handle:
        json.dump(data, handle)


def read_dimod_json(path: str | os.PathLike, *, k: int | None = None) -> Problem:
    """Read a dimod serialisable BQM (.json), with the qcbo entry if present."""
    dimod = _require("dimod", "dimod")
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict) or data.get("type") != "BinaryQuadraticModel":
        raise InputError(f"{path}: not a dimod BinaryQuadraticModel JSON document")
    try:
        bqm = dimod.BinaryQuadraticModel.from_serializable(data)
    except Exception as exc:  # dimod raises many types on malformed documents
        raise InputError(f"{path}: malformed dimod BQM ({exc})") from None
    extra = data.get("qcbo") or {}
    file_k = extra.get("k")
    if k is not None and file_k is not None and k != file_k:
        raise InputError(f"{path}: the file has k={file_k}; --k {k} conflicts")
    biases = np.concatenate([np.asarray(list(bqm.linear.values()), float),
                             np.asarray(list(bqm.quadratic.values()), float), [bqm.offset]])
    if not np.all(np.isfinite(biases)):
        raise InputError(f"{path}: the model contains NaN or inf biases")
    try:
        return from_bqm(bqm, k=k if k is not None else file_k, metadata=extra.get("metadata"))
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------- qiskit
def to_quadratic_program(problem: Problem, name: str = "qcbo") -> Any:
    """A qiskit-optimization QuadraticProgram (minimise; binary vars x0..x{n-1})."""
    qo = _require("qiskit_optimization", "qiskit-optimization")
    qp = qo.QuadraticProgram(name)
    names = [f"x{i}" for i in range(problem.n)]
    for v in names:
        qp.binary_var(v)
    q = problem.Q
    iu, ju = np.triu_indices(problem.n, 1)
    quadratic = {(names[i], names[j]): 2.0 * q[i, j] for i, j in zip(iu, ju) if q[i, j] != 0}
    linear = {names[i]: float(q[i, i]) for i in range(problem.n) if q[i, i] != 0}
    qp.minimize(constant=problem.offset, linear=linear, quadratic=quadratic)
    if problem.k is not None:
        qp.linear_constraint({v: 1 for v in names}, "==", problem.k, name=CARDINALITY)
    return qp


def from_quadratic_program(qp: Any, *, metadata: dict | None = None) -> Problem:
    """A Problem from a QuadraticProgram with binary variables and at most Σx == k.

    A maximisation is negated into a minimisation (recorded in metadata).
    """
    qo = _require("qiskit_optimization", "qiskit-optimization")
    variables = qp.variables
    n = len(variables)
    if n == 0:
        raise InputError("from_quadratic_program: the program has no variables")
    for var in variables:
        if var.vartype != qo.problems.VarType.BINARY:
            raise InputError(f"from_quadratic_program: variable {var.name} is not binary")
    if qp.quadratic_constraints:
        raise InputError("from_quadratic_program: quadratic constraints are not supported")
    k = None
    if len(qp.linear_constraints) > 1:
        raise InputError("from_quadratic_program: only one constraint Σx == k is supported")
    for con in qp.linear_constraints:
        coeffs = con.linear.to_array()
        if con.sense != qo.problems.Constraint.Sense.EQ or not np.all(coeffs == 1.0):
            raise InputError(f"from_quadratic_program: constraint {con.name} is not Σx == k")
        if con.rhs != round(con.rhs):
            raise InputError(f"from_quadratic_program: constraint {con.name} has rhs {con.rhs}")
        k = int(round(con.rhs))
    obj = qp.objective
    sign = 1.0 if obj.sense == obj.sense.MINIMIZE else -1.0
    quad = obj.quadratic.to_array(symmetric=True)
    q = sign * (quad + np.diag(obj.linear.to_array()))
    meta = dict(metadata or {})
    if sign < 0:
        meta.setdefault("sense", "maximise, negated")
    names = [v.name for v in variables]
    labels = None if names == [f"x{i}" for i in range(n)] else names
    return Problem(q, sign * obj.constant, k, labels=labels, metadata=meta,
                   source="from_quadratic_program")


def write_lp(path: str | os.PathLike, problem: Problem) -> None:
    """Write an LP file through qiskit-optimization (docplex's LP writer)."""
    from .io import atomic_write

    qp = to_quadratic_program(problem)
    _require("docplex", "docplex")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        text = qp.export_as_lp_string()
    with atomic_write(path, "w") as handle:
        handle.write(text)


_TERM = re.compile(
    r"([+-]?)\s*(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)?\s*"
    r"([A-Za-z_][\w.]*)?(?:\s*(\^)\s*2|\s*\*\s*([A-Za-z_][\w.]*))?"
)


def _parse_expression(text: str, source: str) -> tuple[dict, dict, float]:
    """Parse 'a x + b y + [ c x*y + d x^2 ]/2 + const' into linear, quadratic, const."""
    linear: dict[str, float] = {}
    quadratic: dict[tuple[str, str], float] = {}
    constant = 0.0

    def terms(part: str, scale: float, quad: bool) -> None:
        nonlocal constant
        part = part.strip()
        pos = 0
        while pos < len(part):
            if part[pos].isspace():
                pos += 1
                continue
            m = _TERM.match(part, pos)
            if not m or m.end() == pos:
                raise InputError(f"{source}: cannot parse LP expression near {part[pos:pos + 30]!r}")
            sign, coef, var, square, other = m.groups()
            value = (-1.0 if sign == "-" else 1.0) * (float(coef) if coef else 1.0) * scale
            if var is None:
                if coef is None:
                    raise InputError(f"{source}: cannot parse LP expression near {part[pos:pos + 30]!r}")
                constant += value
            elif square or other:
                if not quad:
                    raise InputError(f"{source}: quadratic term outside [ ] in LP expression")
                key = (var, var if square else other)
                quadratic[key] = quadratic.get(key, 0.0) + value
            else:
                linear[var] = linear.get(var, 0.0) + value
            pos = m.end()

    rest = text
    while "[" in rest:
        before, _, after = rest.partition("[")
        inside, _, after = after.partition("]")
        match = re.match(r"\s*/\s*2", after)
        if not match:
            raise InputError(f"{source}: quadratic block must be written [ ... ]/2")
        before = before.rstrip()
        bracket_sign = 1.0
        if before.endswith(("+", "-")):
            bracket_sign = -1.0 if before.endswith("-") else 1.0
            before = before[:-1]
        terms(before, 1.0, False)
        terms(inside, 0.5 * bracket_sign, True)
        rest = after[match.end():]
    terms(rest, 1.0, False)
    return linear, quadratic, constant


def read_lp(path: str | os.PathLike, *, k: int | None = None) -> Problem:
    """Read the LP subset qiskit-optimization/docplex writes for a QCBO."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="latin-1")
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    lines = [ln.split("\\", 1)[0].strip() for ln in raw.splitlines()]
    sections: dict[str, list[str]] = {}
    current = None
    heads = {"minimize": "min", "minimise": "min", "min": "min", "maximize": "max",
             "maximise": "max", "max": "max", "subject to": "st", "st": "st", "s.t.": "st",
             "bounds": "bounds", "binaries": "bin", "binary": "bin", "end": "end"}
    sense = None
    for line in lines:
        if not line:
            continue
        key = heads.get(line.lower())
        if key:
            current = key
            if key in ("min", "max"):
                sense = key
            sections.setdefault(key, [])
            continue
        if current is None:
            raise InputError(f"{path}: unexpected line before the objective: {line!r}")
        sections[current].append(line)
    if sense is None:
        raise InputError(f"{path}: no Minimize/Maximize section; not an LP file")
    objective = " ".join(sections.get(sense, []))
    objective = re.sub(r"^\s*[\w.]+\s*:", "", objective)
    linear, quadratic, constant = _parse_expression(objective, str(path))
    names = list(sections.get("bin", []))
    variables: list[str] = [v for line in names for v in line.split()]
    seen = set(variables)
    for v in list(linear) + [u for pair in quadratic for u in pair]:
        if v not in seen:
            raise InputError(f"{path}: variable {v} is not declared binary")
    file_k = None
    constraints = sections.get("st", [])
    if len(constraints) > 1:
        raise InputError(f"{path}: only one constraint Σx == k is supported")
    for line in constraints:
        body = re.sub(r"^\s*[\w.]+\s*:", "", line)
        if "=" not in body or "<" in body or ">" in body:
            raise InputError(f"{path}: constraint {line!r} is not an equality Σx == k")
        lhs, rhs = body.split("=", 1)
        lin, quad, const = _parse_expression(lhs, str(path))
        if quad or const or set(lin) != seen or any(c != 1.0 for c in lin.values()):
            raise InputError(f"{path}: constraint {line!r} is not Σx == k over all variables")
        value = float(rhs)
        if value != round(value):
            raise InputError(f"{path}: constraint right side {value} is not an integer")
        file_k = int(round(value))
    if k is not None and file_k is not None and k != file_k:
        raise InputError(f"{path}: the file has k={file_k}; --k {k} conflicts")
    sign = 1.0 if sense == "min" else -1.0
    index = {v: i for i, v in enumerate(variables)}
    n = len(variables)
    if n == 0:
        raise InputError(f"{path}: no binary variables declared")
    q = np.zeros((n, n))
    for v, c in linear.items():
        q[index[v], index[v]] += sign * c
    for (u, v), c in quadratic.items():
        i, j = index[u], index[v]
        if i == j:
            q[i, i] += sign * c
        else:
            q[i, j] += sign * c / 2.0
            q[j, i] += sign * c / 2.0
    labels = None if variables == [f"x{i}" for i in range(n)] else variables
    meta = {"name": path.stem, "source": str(path), "format": "lp"}
    return Problem(q, sign * constant, k if k is not None else file_k, labels=labels,
                   metadata=meta, source=str(path))
