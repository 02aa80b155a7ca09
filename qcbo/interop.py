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
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BackendUnavailableError, InputError
from .files import atomic_write
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
    from .io import check_dense_size

    check_dense_size(n, source)
    q = np.zeros((n, n))
    for v, bias in linear.items():
        q[index[v], index[v]] += float(bias)
    for (u, v), bias in quadratic.items():
        i, j = index[u], index[v]
        q[i, j] += float(bias) / 2.0
        q[j, i] += float(bias) / 2.0
    labels = None if variables == list(range(n)) else variables
    return Problem(q, float(offset), k, labels=labels, metadata=metadata, source=source)


def from_bqm(bqm: Any, *, k: int | None = None, metadata: dict | None = None,
             order: list | None = None) -> Problem:
    """A Problem from a dimod BQM (SPIN models are converted to BINARY); its variables in
    ``order`` (every variable of the BQM once) when given, else in the BQM's order."""
    dimod = _require("dimod", "dimod")
    if not isinstance(bqm, dimod.BinaryQuadraticModel):
        raise InputError(f"from_bqm: expected a dimod BinaryQuadraticModel, got "
                         f"{type(bqm).__name__}")
    if bqm.vartype is not dimod.BINARY:
        bqm = bqm.change_vartype(dimod.BINARY, inplace=False)
    variables = list(bqm.variables)
    if order is not None:
        if len(order) != len(variables) or set(order) != set(variables):
            raise InputError("from_bqm: the variable order does not list the model's "
                             "variables exactly once each")
        variables = list(order)
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


def _check_section_version(extra: dict, path: Path) -> None:
    """The qcbo section of a .json or .lp file must be version 1 (or carry none)."""
    version = extra.get("version", 1)
    if version != 1 or isinstance(version, bool):
        raise InputError(f"{path}: its qcbo section is version {version!r}; this qcbo reads "
                         "version 1 (upgrade qcbo, or drop the section to read the model alone)")


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples they were written from (dimod does the same)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def write_dimod_json(path: str | os.PathLike, problem: Problem) -> None:
    """A dimod serialisable BQM of the objective, plus {"qcbo": {k, metadata}}."""
    data = to_bqm(problem.replace(k=None)).to_serializable(use_bytes=False)
    # dimod writes the variables sorted; the qcbo entry keeps the problem's order.
    data["qcbo"] = {"version": 1, "k": problem.k, "metadata": problem.metadata,
                    "variables": list(_variables(problem))}
    with atomic_write(path, "w") as handle:
        json.dump(data, handle)


def _check_dimod_lengths(data: dict, path: Path) -> None:
    """The counts and list lengths of a dimod document agree (dimod itself pads a short
    ``linear_biases`` with zeros and ignores ``num_variables``); InputError otherwise.
    Fields stored as bytes (``use_bytes``) are left to dimod."""
    groups = (("num_variables", ("variable_labels", "linear_biases")),
              ("num_interactions", ("quadratic_biases", "quadratic_head", "quadratic_tail")))
    for count_key, list_keys in groups:
        lengths = {key: len(data[key]) for key in list_keys if isinstance(data.get(key), list)}
        count = data.get(count_key)
        if isinstance(count, int) and not isinstance(count, bool):
            lengths[count_key] = count
        if len(set(lengths.values())) > 1:
            found = ", ".join(f"{key} {n}" for key, n in lengths.items())
            raise InputError(f"{path}: malformed dimod BQM: its counts disagree ({found}); "
                             "re-export it with dimod")


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
    _check_dimod_lengths(data, path)
    try:
        bqm = dimod.BinaryQuadraticModel.from_serializable(data)
    except Exception as exc:  # dimod raises many types on malformed documents
        raise InputError(f"{path}: malformed dimod BQM ({exc})") from None
    extra = data.get("qcbo") or {}
    if not isinstance(extra, dict):
        raise InputError(f"{path}: the 'qcbo' entry is not a JSON object")
    _check_section_version(extra, path)
    file_k = extra.get("k")
    if k is not None and file_k is not None and k != file_k:
        raise InputError(f"{path}: the file has k={file_k}; --k {k} conflicts")
    biases = np.concatenate([np.asarray(list(bqm.linear.values()), float),
                             np.asarray(list(bqm.quadratic.values()), float), [bqm.offset]])
    if not np.all(np.isfinite(biases)):
        raise InputError(f"{path}: the model contains NaN or inf biases")
    order = extra.get("variables")
    if order is not None:
        if not isinstance(order, list):
            raise InputError(f"{path}: the qcbo entry's 'variables' is not a list")
        order = [_tuples(v) for v in order]
        try:
            if len(order) != len(bqm.variables) or set(order) != set(bqm.variables):
                raise TypeError
        except TypeError:
            raise InputError(f"{path}: the qcbo entry's 'variables' do not list the model's "
                             "variables exactly once each") from None
    try:
        return from_bqm(bqm, k=k if k is not None else file_k, metadata=extra.get("metadata"),
                        order=order)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------- qiskit
#: Variable names every LP reader accepts (CPLEX allows more; this subset is safe).
_LP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _program_names(problem: Problem) -> list[str]:
    """Variable names of the QuadraticProgram: the labels as strings, else x0..x{n-1}."""
    if problem.labels is None:
        return [f"x{i}" for i in range(problem.n)]
    names = [str(v) for v in problem.labels]
    if len(set(names)) != len(names):
        raise InputError("to_quadratic_program: labels are not unique once written as strings")
    return names


def to_quadratic_program(problem: Problem, name: str = "qcbo") -> Any:
    """A qiskit-optimization QuadraticProgram (minimise; binary variables).

    Variables are named by the problem's labels (as strings), else x0..x{n-1}.
    """
    qo = _require("qiskit_optimization", "qiskit-optimization")
    qp = qo.QuadraticProgram(name)
    names = _program_names(problem)
    for v in names:
        qp.binary_var(v)
    q = problem.Q
    iu, ju = np.triu_indices(problem.n, 1)
    keep = q[iu, ju] != 0
    quadratic = {(names[i], names[j]): 2.0 * float(q[i, j]) for i, j in zip(iu[keep], ju[keep])}
    linear = {names[i]: float(q[i, i]) for i in range(problem.n) if q[i, i] != 0}
    qp.minimize(constant=problem.offset, linear=linear, quadratic=quadratic)
    if problem.k is not None:
        qp.linear_constraint({v: 1 for v in names}, "==", problem.k, name=CARDINALITY)
    return qp


def from_quadratic_program(qp: Any, *, metadata: dict | None = None) -> Problem:
    """A Problem from a QuadraticProgram with binary variables and at most Σx == k.

    A maximisation is negated into a minimisation (recorded in metadata). Variable
    names become labels unless they are the default x0..x{n-1}.
    """
    qo = _require("qiskit_optimization", "qiskit-optimization")
    variables = qp.variables
    n = len(variables)
    if n == 0:
        raise InputError("from_quadratic_program: the program has no variables")
    for var in variables:
        if var.vartype != qo.problems.VarType.BINARY:
            raise InputError(f"from_quadratic_program: variable {var.name} is not binary")
        if (var.lowerbound, var.upperbound) != (0, 1):
            raise InputError(f"from_quadratic_program: variable {var.name} has bounds "
                             f"[{var.lowerbound}, {var.upperbound}]; only 0..1 is supported")
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


#: Words LP readers take as section keywords; docplex renames such variables (End ->
#: _End), so labels among them are kept in the qcbo comment instead.
_LP_KEYWORDS = frozenset({
    "minimize", "minimise", "minimum", "min", "maximize", "maximise", "maximum", "max",
    "subject", "to", "st", "such", "that", "bounds", "bound", "binaries", "binary", "bin",
    "generals", "general", "gen", "end", "free", "inf", "infinity", "semi", "sos"})

#: Prefix of the comment line in which write_lp keeps what LP cannot say (labels that
#: are not LP names, metadata); other LP readers skip it as a comment.
_LP_COMMENT = "\\ qcbo: "


def write_lp(path: str | os.PathLike, problem: Problem) -> None:
    """Write an LP file through qiskit-optimization (docplex's LP writer).

    Labels that are valid LP names name the variables; any other labels (ints, say) are
    kept, with the metadata, in a ``\\ qcbo: {json}`` comment line that `read_lp` reads.
    """
    labels = problem.labels
    plain = labels is None or all(isinstance(v, str) and _LP_NAME.match(v)
                                  and v.lower() not in _LP_KEYWORDS for v in labels)
    qp = to_quadratic_program(problem if plain else problem.replace(labels=None))
    _require("docplex", "docplex")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        text = qp.export_as_lp_string()
    extra = {"version": 1, "labels": None if plain else list(labels),
             "metadata": problem.metadata}
    comment = _LP_COMMENT + json.dumps(extra, allow_nan=False) + "\n"
    with atomic_write(path, "w", encoding="latin-1") as handle:
        handle.write(comment + text)


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


_LP_HEADS = {
    "minimize": "min", "minimise": "min", "minimum": "min", "min": "min",
    "maximize": "max", "maximise": "max", "maximum": "max", "max": "max",
    "subject to": "st", "such that": "st", "st": "st", "s.t.": "st", "st.": "st",
    "bounds": "bounds", "bound": "bounds",
    "binaries": "bin", "binary": "bin", "bin": "bin",
    "end": "end",
}
_LP_UNSUPPORTED = {"general", "generals", "gen", "semi-continuous", "semis", "semi", "sos"}
_LP_RELATION = re.compile(r"(<=|>=|=<|=>|<|>|=)")
_LP_NUMBER = r"[+-]?\s*(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
#: One constraint: an optional name, the left side (which may span wrapped lines), the
#: relation and a number. docplex wraps long constraints over several lines.
_LP_CONSTRAINT = re.compile(
    r"\s*(?:([^\s:<>=+\-][^\s:<>=]*)\s*:)?([^<>=]*?)(<=|>=|=<|=>|<|>|=)\s*(" + _LP_NUMBER + r")"
)


def _lp_sections(raw: str, path: Path) -> tuple[str, dict[str, list[str]], dict]:
    """(sense, section -> lines, the qcbo comment or {}) of an LP text."""
    extra: dict = {}
    sections: dict[str, list[str]] = {}
    current = sense = None
    for line in raw.splitlines():
        if line.startswith(_LP_COMMENT):
            try:
                extra = json.loads(line[len(_LP_COMMENT):])
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}: malformed qcbo comment line ({exc})") from None
            if not isinstance(extra, dict):
                raise InputError(f"{path}: the qcbo comment line is not a JSON object")
            _check_section_version(extra, path)
            continue
        line = line.split("\\", 1)[0].strip()
        if not line:
            continue
        lowered = " ".join(line.lower().split())
        if lowered in _LP_UNSUPPORTED:
            raise InputError(f"{path}: section {line!r} declares non-binary variables; only "
                             "binary variables are supported")
        key = _LP_HEADS.get(lowered)
        if key:
            if key in ("min", "max"):
                if sense is not None:
                    raise InputError(f"{path}: more than one objective section")
                sense = key
            current = key
            sections.setdefault(key, [])
            continue
        if current is None:
            raise InputError(f"{path}: unexpected line before the objective: {line[:60]!r}")
        if current == "end":
            raise InputError(f"{path}: data after End: {line[:60]!r}")
        sections[current].append(line)
    if sense is None:
        raise InputError(f"{path}: no Minimize/Maximize section; not an LP file")
    return sense, sections, extra


def _lp_constraints(lines: list[str], path: Path) -> list[tuple[str, str, str, float]]:
    """(name, left side, relation, right side) of every constraint, wrapped lines joined."""
    text = " ".join(lines)
    out = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _LP_CONSTRAINT.match(text, pos)
        if not m:
            raise InputError(f"{path}: cannot parse constraint near {text[pos:pos + 40].strip()!r}")
        name, lhs, relation, rhs = m.groups()
        out.append((name or f"c{len(out) + 1}", lhs, relation, float(rhs.replace(" ", ""))))
        pos = m.end()
    return out


def _lp_bound_value(token: str, path: Path, line: str) -> float:
    text = token.replace(" ", "").lower()
    if text.lstrip("+-") in ("inf", "infinity"):
        return -math.inf if text.startswith("-") else math.inf
    try:
        return float(text)
    except ValueError:
        raise InputError(f"{path}: cannot parse bound {line!r}") from None


def _lp_bounds(lines: list[str], path: Path) -> dict[str, tuple[float, float]]:
    """Variable -> (lower, upper) as written in the Bounds section (missing sides: None)."""
    bounds: dict[str, list[float | None]] = {}

    def put(var: str, lo: float | None, up: float | None) -> None:
        entry = bounds.setdefault(var, [None, None])
        if lo is not None:
            entry[0] = lo
        if up is not None:
            entry[1] = up

    for line in lines:
        parts = [p.strip() for p in _LP_RELATION.split(line)]
        if len(parts) == 1:
            words = line.split()
            if len(words) == 2 and words[1].lower() == "free":
                put(words[0], -math.inf, math.inf)
                continue
            raise InputError(f"{path}: cannot parse bound {line!r}")
        if len(parts) == 5:
            lo, r1, var, r2, up = parts
            if r1 not in ("<=", "=<", "<") or r2 not in ("<=", "=<", "<"):
                raise InputError(f"{path}: cannot parse bound {line!r}")
            put(var, _lp_bound_value(lo, path, line), _lp_bound_value(up, path, line))
            continue
        if len(parts) != 3:
            raise InputError(f"{path}: cannot parse bound {line!r}")
        left, relation, right = parts
        if _TERM_NAME.match(left):
            var, value, flipped = left, _lp_bound_value(right, path, line), False
        elif _TERM_NAME.match(right):
            var, value, flipped = right, _lp_bound_value(left, path, line), True
        else:
            raise InputError(f"{path}: cannot parse bound {line!r}")
        if relation == "=":
            put(var, value, value)
        elif (relation in ("<=", "=<", "<")) != flipped:
            put(var, None, value)
        else:
            put(var, value, None)
    return {v: (lo, up) for v, (lo, up) in bounds.items()}


_TERM_NAME = re.compile(r"[A-Za-z_][\w.]*\Z")


def _fold_fixed(q: np.ndarray, constant: float, fixed: dict[int, int]) -> tuple[np.ndarray, float]:
    """Q and offset over the free variables once each fixed x_f = c_f is substituted.

    x Q x = x_R Q_RR x_R + 2 x_R Q_RF c + c Q_FF c, and x_i**2 == x_i puts the middle
    term on the diagonal of the reduced Q.
    """
    f = np.array(sorted(fixed), dtype=np.int64)
    c = np.array([fixed[i] for i in f], dtype=np.float64)
    r = np.setdiff1d(np.arange(q.shape[0]), f)
    reduced = q[np.ix_(r, r)].copy()
    reduced[np.diag_indices(len(r))] += 2.0 * (q[np.ix_(r, f)] @ c)
    return reduced, constant + float(c @ q[np.ix_(f, f)] @ c)


def read_lp(path: str | os.PathLike, *, k: int | None = None) -> Problem:
    """Read the LP subset qiskit-optimization/docplex writes for a QCBO.

    Binary variables only; at most one constraint, Σx == k over every variable (it
    may be wrapped over several lines). Bounds are honoured: a variable whose bounds
    leave one value is fixed and folded into Q and the offset (``metadata["fixed"]``
    names it and its value; k drops by the ones fixed to 1); bounds that leave no 0/1
    value are refused.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        raw = path.read_text(encoding="latin-1")
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    sense, sections, extra = _lp_sections(raw, path)
    objective = " ".join(sections.get(sense, []))
    objective = re.sub(r"^\s*[^\s:]+\s*:", "", objective)
    linear, quadratic, constant = _parse_expression(objective, str(path))
    variables: list[str] = [v for line in sections.get("bin", []) for v in line.split()]
    if len(set(variables)) != len(variables):
        raise InputError(f"{path}: a variable is declared binary twice")
    seen = set(variables)
    for v in list(linear) + [u for pair in quadratic for u in pair]:
        if v not in seen:
            raise InputError(f"{path}: variable {v} is not declared binary")
    file_k = None
    constraints = _lp_constraints(sections.get("st", []), path)
    if len(constraints) > 1:
        raise InputError(f"{path}: {len(constraints)} constraints; only one Σx == k is supported")
    for name, lhs, relation, value in constraints:
        if relation != "=":
            raise InputError(f"{path}: constraint {name} is not an equality Σx == k")
        lin, quad, const = _parse_expression(lhs, str(path))
        if quad or const or set(lin) != seen or any(c != 1.0 for c in lin.values()):
            raise InputError(f"{path}: constraint {name} is not Σx == k over all variables")
        if value != round(value):
            raise InputError(f"{path}: constraint right side {value} is not an integer")
        file_k = int(round(value))
    if k is not None and file_k is not None and k != file_k:
        raise InputError(f"{path}: the file has k={file_k}; --k {k} conflicts")
    n = len(variables)
    if n == 0:
        raise InputError(f"{path}: no binary variables declared")
    index = {v: i for i, v in enumerate(variables)}
    fixed: dict[int, int] = {}
    for v, (lo, up) in _lp_bounds(sections.get("bounds", []), path).items():
        if v not in index:
            raise InputError(f"{path}: bound on {v}, which is not declared binary")
        lo_v = 0.0 if lo is None else lo
        up_v = 1.0 if up is None else up
        values = [c for c in (0, 1) if lo_v <= c <= up_v]
        if not values:
            raise InputError(f"{path}: bounds [{lo_v:g}, {up_v:g}] of binary {v} leave no "
                             "0/1 value")
        if len(values) == 1:
            fixed[index[v]] = values[0]
    sign = 1.0 if sense == "min" else -1.0
    from .io import check_dense_size

    check_dense_size(n, str(path))
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
    offset = sign * constant
    labels: list[Any] = list(variables)
    stored = extra.get("labels")
    if stored is not None:
        if not isinstance(stored, list) or len(stored) != n:
            raise InputError(f"{path}: the qcbo comment holds {len(stored) if isinstance(stored, list) else 'no'} "
                             f"labels for {n} variables")
        labels = [_tuples(v) for v in stored]  # JSON wrote tuples as lists
    metadata = extra.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise InputError(f"{path}: metadata in the qcbo comment is not a JSON object")
    meta = dict(metadata) if metadata else {"name": path.stem, "source": str(path), "format": "lp"}
    if sense == "max":
        meta.setdefault("sense", "maximise, negated")
    k_out = k if k is not None else file_k
    if fixed:
        if len(fixed) == n:
            raise InputError(f"{path}: every variable is fixed by its bounds; nothing to solve")
        q, offset = _fold_fixed(q, offset, fixed)
        meta["fixed"] = {str(labels[i]): c for i, c in sorted(fixed.items())}
        labels = [v for i, v in enumerate(labels) if i not in fixed]
        if k_out is not None:
            k_out -= sum(fixed.values())
            if not 0 <= k_out <= len(labels):
                raise InputError(f"{path}: the fixed variables leave Σx == {k_out} over "
                                 f"{len(labels)} free ones; no feasible point")
    if labels == [f"x{i}" for i in range(len(labels))]:
        labels = None
    return Problem(q, offset, k_out, labels=labels, metadata=meta, source=str(path))
