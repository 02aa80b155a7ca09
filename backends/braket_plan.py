"""Planning a Braket submission offline: device snapshots, sub-blocks, native-gate and
routing estimates, cost. Nothing here touches the network or trains angles.

Order of the checks (a block never reaches angle training unless every one passes):

1. the device: a dated capability snapshot shipped in ``backends/data/braket_devices.json``
   (`snapshot_target`), or live properties read by the caller (`live_target`);
2. the size: a block larger than the sub-block size q is cut into sub-blocks of at most q
   variables around a classical answer (`backends.subblock.decompose`); with sub-blocks off
   (q = 0) or q above the qubit count, the plan is refused in one InputError;
3. every task's circuit, built from the circuit structure with placeholder angles
   (`circuit_plan` on a `_CircuitShape`, no 2**q state vector): the qubit count and the
   device's supported operations (`supported_counts`, the counts of what `check_circuit`
   builds at submission), then its native gates and, on a device that is not all-to-all, a
   greedy SWAP routing (`native_estimate`) for depth and two-qubit gate count.

Each gate name is rewritten once (a template on canonical qubits), the Dicke preparation
of each (q, k) is built and counted once, and circuits with the same structure (q, k,
mixer, p, non-zero couplings) are estimated once: a plan for 8 blocks of 1024 variables
(416 sub-blocks of 20) takes about 2 s.

The counts are estimates: fixed rewrite rules (exact, tested by unitaries) rather than a
provider's optimising compiler, and a greedy router; a provider can do better (e.g. an
XY rotation in two iSWAPs where the rules here use four).
"""

from __future__ import annotations

import functools
import json
import re
from collections import deque
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Mapping, Sequence

import numpy as np

from qcbo.errors import BackendUnavailableError, InputError, UnsupportedProblemError
from qcbo.problem import Problem

from .braket_device import (PRICES, PRICES_DATE, DeviceInfo, Price, _price_key, decompose,
                            device_info, fingerprint)
from .qaoa import Angles, Gate, circuit_plan

__all__ = ["DeviceTarget", "NativeEstimate", "TaskPlan", "BlockPlan", "SubmissionPlan",
           "snapshots", "snapshot_target", "live_target", "parse_device_arn", "circuit_shape",
           "native_estimate", "supported_counts", "classical_answer", "plan_submission",
           "format_submission_plan", "manifest_parts", "DEFAULT_SUB_BLOCK_CAP"]

#: Default sub-block size: the device's qubit count, but at most this, so that angles can
#: still be trained on the weight-k subspace of a laptop (C(20, 10) = 184,756 amplitudes).
DEFAULT_SUB_BLOCK_CAP = 20

#: Two-qubit gates the rewrite rules of `backends.braket_device` can target.
TWO_QUBIT_TARGETS = ("ms", "zz", "cz", "iswap", "cnot", "xx", "yy", "xy")
#: Single-qubit names: in a native estimate any run of them on one qubit is one layer
#: (every single-qubit unitary is one native single-qubit operation up to virtual Z turns).
ONE_QUBIT = ("x", "y", "z", "h", "rx", "ry", "rz", "s", "si", "t", "ti", "v", "vi", "i",
             "gpi", "gpi2", "prx", "phaseshift")
#: Native two-qubit gates per SWAP (three CNOT-class gates).
SWAP_COST = 3

_ARN = re.compile(r"arn:aws[a-z-]*:braket:([a-z0-9-]*)::device/(qpu|quantum-simulator)/"
                  r"([A-Za-z0-9_-]+)/([A-Za-z0-9_.-]+)\Z")


# ------------------------------------------------------------------ devices
@dataclass(frozen=True)
class DeviceTarget:
    """A device to plan for: ``info`` (qubits, operations, connectivity, native gates),
    its price, and where the facts come from ("snapshot of DATE" or "live properties")."""

    arn: str
    name: str
    provider: str
    info: DeviceInfo
    price: Price | None
    priced_on: str
    source: str

    def cost(self, tasks: int, shots: int) -> float | None:
        if self.price is None:
            return None
        return tasks * (self.price.per_task + shots * self.price.per_shot)


def parse_device_arn(arn: str) -> tuple[str, str, str]:
    """(kind, provider, name) of a Braket device ARN; anything else is one InputError."""
    m = _ARN.match(arn.strip()) if isinstance(arn, str) else None
    if m is None:
        raise InputError(f"--device {str(arn)[:120]!r} is not a Braket device ARN (e.g. "
                         "arn:aws:braket:us-east-1::device/qpu/ionq/Aria-1)")
    return m.group(2), m.group(3).lower(), m.group(4).lower()


@functools.lru_cache(maxsize=1)
def _load_snapshots() -> tuple[str, tuple[dict[str, Any], ...]]:
    text = resources.files("backends").joinpath("data/braket_devices.json").read_text()
    doc = json.loads(text)
    if doc.get("format") != "qcbo.braket-device-snapshots" or doc.get("version") != 1:
        raise BackendUnavailableError("backends/data/braket_devices.json is not a version 1 "
                                      "device snapshot file; reinstall qcbo")
    return doc["snapshot_date"], tuple(doc["devices"])


def _target_from_snapshot(entry: Mapping[str, Any]) -> DeviceTarget:
    conn = entry["connectivity"]
    full = conn == "all-to-all"
    edges = frozenset() if full else frozenset((min(a, b), max(a, b)) for a, b in conn)
    info = DeviceInfo(int(entry["qubit_count"]),
                      frozenset(op.lower() for op in entry["supported_operations"]), full, edges,
                      tuple(g.lower() for g in entry["native_gates"]))
    price = Price(float(entry["price"]["per_task"]), float(entry["price"]["per_shot"]))
    return DeviceTarget(entry["arn"], entry["name"], entry["provider"], info, price,
                        entry["snapshot_date"], f"snapshot of {entry['snapshot_date']}")


def snapshots() -> list[DeviceTarget]:
    """Every shipped device snapshot."""
    return [_target_from_snapshot(e) for e in _load_snapshots()[1]]


def snapshot_target(arn: str) -> DeviceTarget | None:
    """The shipped snapshot of the device ``arn`` names (region ignored), or None."""
    key = parse_device_arn(arn)
    for entry in _load_snapshots()[1]:
        if parse_device_arn(entry["arn"]) == key:
            return _target_from_snapshot(entry)
    return None


def live_target(arn: str, properties: Any) -> DeviceTarget:
    """A target from live device properties (a Braket DeviceCapabilities); the price comes
    from the snapshot of the same device, else from the built-in price table."""
    info = device_info(properties)
    snap = snapshot_target(arn)
    if snap is not None:
        price, priced_on = snap.price, snap.priced_on
    else:
        key = _price_key(arn)
        price, priced_on = (PRICES[key] if key else None), PRICES_DATE
    kind, provider, name = parse_device_arn(arn)
    return DeviceTarget(arn, snap.name if snap else name, snap.provider if snap else provider,
                        info, price, priced_on, "live properties")


# ------------------------------------------------------------------ circuits
class _CircuitShape:
    """What `circuit_plan` reads from a QAOAModel (n, mixer, problem.k, cost_problem,
    edges), without the model's 2**n state bookkeeping: the gate list of a 20-qubit
    sub-block is cheap, its state vector is not. ``prepared=False`` poses k = 0 so that
    `circuit_plan` leaves out the Dicke preparation (the empty Dicke circuit) and returns
    the QAOA layers alone. tests/test_braket_plan.py checks the gates against
    `circuit_plan` on a real QAOAModel."""

    def __init__(self, problem: Problem, mixer: str = "auto", prepared: bool = True):
        from types import SimpleNamespace

        from .qaoa import mixer_edges

        if mixer == "auto":
            mixer = "x" if problem.k is None else "xy-ring"
        if mixer != "x" and problem.k is None:
            raise InputError(f"mixer {mixer} needs a cardinality constraint; use mixer=x")
        self.problem = problem if prepared or mixer == "x" else SimpleNamespace(k=0)
        self.mixer = mixer
        self.n = problem.n
        self.cost_problem = problem if mixer != "x" else problem.to_qubo()[0]
        self.edges = mixer_edges(problem.n, mixer) if mixer != "x" else []


#: (n, k, mixer) -> the state preparation of the circuit (Dicke or |+>), built once.
_PREPARATIONS: dict[tuple, tuple[Gate, ...]] = {}


def _circuit_parts(problem: Problem, mixer: str, p: int) -> tuple[tuple, tuple[Gate, ...],
                                                                   list[Gate], str]:
    """(preparation key, preparation gates, layer gates, mixer) of the QAOA circuit."""
    placeholder = Angles((0.1,) * p, (0.1,) * p)
    shape = _CircuitShape(problem, mixer)
    key = (problem.n, problem.k, shape.mixer)
    if shape.mixer == "x":  # |+> preparation: n gates, nothing to save
        gates = circuit_plan(shape, placeholder)
        return key, tuple(gates[:problem.n]), gates[problem.n:], shape.mixer
    layers = circuit_plan(_CircuitShape(problem, mixer, prepared=False), placeholder)
    prep = _PREPARATIONS.get(key)
    if prep is None:
        full = circuit_plan(shape, placeholder)
        prep = tuple(full[:len(full) - len(layers)])
        if len(_PREPARATIONS) > 256:
            _PREPARATIONS.clear()
        _PREPARATIONS[key] = prep
    return key, prep, layers, shape.mixer


def circuit_shape(problem: Problem, mixer: str = "auto", p: int = 2) -> tuple[list[Gate], str]:
    """(gates, mixer) of the QAOA circuit of ``problem`` with placeholder angles: the gate
    sequence (and so depth and gate counts) does not depend on the angles."""
    _, prep, layers, used = _circuit_parts(problem, mixer, p)
    return list(prep) + layers, used


@dataclass(frozen=True)
class NativeEstimate:
    """A circuit after decomposition into the device's native gates and routing.

    ``depth``: layers, a run of single-qubit gates on one qubit counting as one layer;
    ``two_qubit``: native two-qubit gates, SWAPs included (``SWAP_COST`` each);
    ``native``: the two-qubit gate counted (None: the device lists no native set that the
    rewrites know, and the counts are in its supported operations instead).
    """

    qubits: int
    depth: int
    two_qubit: int
    swaps: int
    native: str | None
    rewrites: tuple[tuple[str, str], ...] = ()


def _bfs(adj: Mapping[int, Sequence[int]], start: int) -> dict[int, int]:
    """{node: previous node on a shortest path from start}."""
    prev = {start: start}
    todo = deque([start])
    while todo:
        u = todo.popleft()
        for v in adj[u]:
            if v not in prev:
                prev[v] = u
                todo.append(v)
    return prev


@functools.lru_cache(maxsize=16)
def _graph(edges: frozenset[tuple[int, int]]) -> tuple[dict[int, tuple[int, ...]],
                                                       dict[int, dict[int, int]]]:
    adj: dict[int, set[int]] = {}
    for a, b in edges:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    frozen = {u: tuple(sorted(vs)) for u, vs in adj.items()}
    return frozen, {u: _bfs(frozen, u) for u in frozen}


def _layout(n: int, edges: frozenset[tuple[int, int]]) -> list[int]:
    """n physical qubits forming a connected patch around the best-connected centre."""
    adj, prev = _graph(edges)

    def reach(u: int) -> tuple[int, float]:
        return len(prev[u]), -sum(_hops(prev, v, u) for v in prev[u]) / len(prev[u])

    centre = max(sorted(adj), key=reach)
    order = list(prev[centre])  # BFS order (dicts keep insertion order)
    if len(order) < n:
        raise UnsupportedProblemError(
            f"the circuit needs {n} connected qubits but the device's largest connected "
            f"set has {len(order)}")
    return order[:n]


def _hops(prev: Mapping[int, Mapping[int, int]], u: int, v: int) -> int:
    """Shortest-path length from v to u (prev[u] is the BFS tree rooted at u)."""
    hops, node = 0, v
    tree = prev[u]
    while node != u:
        node = tree[node]
        hops += 1
    return hops


class _Templates:
    """Each gate name rewritten once, on canonical qubits 0, 1(, 2), into ``ops``: a
    circuit's counts then need no per-gate rewriting (angles change no structure)."""

    def __init__(self, ops: frozenset[str], fewest: bool = True):
        self.ops = ops
        self.fewest = fewest
        self.rewrites: dict[str, str] = {}
        self._cache: dict[str, list[tuple[int, ...]]] = {}
        self.two_qubit: dict[str, int] = {}

    def __getitem__(self, g: Gate) -> list[tuple[int, ...]]:
        tmpl = self._cache.get(g.name)
        if tmpl is None:
            canonical = Gate(g.name, tuple(range(len(g.qubits))), g.angle)
            out, used = decompose([canonical], self.ops, max_depth=8,
                                  fewest_two_qubit=self.fewest)
            self.rewrites.update(used)
            tmpl = self._cache[g.name] = [h.qubits for h in out]
            self.two_qubit[g.name] = sum(1 for qs in tmpl if len(qs) >= 2)
        return tmpl


@functools.lru_cache(maxsize=64)
def _templates(ops: frozenset[str], fewest: bool = True) -> _Templates:
    return _Templates(ops, fewest)


#: Gate names that end the state preparation (Dicke or |+>) of a QAOA circuit.
_LAYER_GATES = frozenset({"rz", "zz", "xy", "rx"})
#: (templates, edges, n, preparation gates) -> counting state after the preparation: the
#: preparation is the same for every sub-block with the same (q, k), the bulk of the gates.
_PREPARED: dict[tuple, tuple] = {}


class _Count:
    """Depth / two-qubit / SWAP counting over physical qubits, with greedy routing."""

    def __init__(self, n: int, info: DeviceInfo):
        self.routed = not (info.fully_connected or not info.edges)
        if self.routed:
            place = _layout(n, info.edges)
            adj, self.prev = _graph(info.edges)
            self.adjacent = {u: set(vs) for u, vs in adj.items()}
        else:
            place = list(range(n))
        self.where = list(place)  # logical -> physical
        self.holder = {phys: q for q, phys in enumerate(place)}
        self.time = dict.fromkeys(place, 0)
        self.single = dict.fromkeys(place, False)  # last layer is a single-qubit run
        self.two = self.swaps = 0

    def copy(self) -> "_Count":
        other = object.__new__(_Count)
        other.__dict__.update(self.__dict__)
        for name in ("where", "holder", "time", "single"):
            setattr(other, name, getattr(self, name).copy())
        return other

    def run(self, gates: Sequence[Gate], templates: "_Templates") -> None:
        where, time, single = self.where, self.time, self.single
        for g in gates:
            qs = g.qubits
            for rel in templates[g]:
                if len(rel) == 1:
                    u = where[qs[rel[0]]]
                    if not single[u]:
                        time[u] += 1
                        single[u] = True
                    continue
                if len(rel) == 2:
                    a, b = where[qs[rel[0]]], where[qs[rel[1]]]
                    if self.routed and b not in self.adjacent[a]:
                        a = self._swap_towards(a, b)
                    t = max(time[a], time[b]) + 1
                    time[a] = time[b] = t
                    single[a] = single[b] = False
                else:
                    phys = [where[qs[r]] for r in rel]
                    t = max(time[u] for u in phys) + 1
                    for u in phys:
                        time[u], single[u] = t, False
                self.two += 1

    def _swap_towards(self, a: int, b: int) -> int:
        tree, holder, where, time = self.prev[b], self.holder, self.where, self.time
        while b not in self.adjacent[a]:
            step = tree[a]  # the next node from a towards b
            qa, qs = holder.get(a), holder.get(step)
            holder[step], holder[a] = qa, qs
            if qa is not None:
                where[qa] = step
            if qs is not None:
                where[qs] = a
            t = max(time.get(a, 0), time.get(step, 0)) + SWAP_COST
            time[a] = time[step] = t
            self.single[a] = self.single[step] = False
            self.swaps += 1
            a = step
        return a


def native_estimate(gates: Sequence[Gate], n: int, info: DeviceInfo, *,
                    prepared: tuple[tuple, int] | None = None) -> NativeEstimate:
    """Decompose into the device's native gates (fewest two-qubit gates), route on its
    connectivity (greedy: move one qubit along a shortest path by SWAPs until the pair is
    adjacent), and count depth and two-qubit gates.

    ``prepared``: (key, length) of a leading state preparation shared by many circuits;
    its count is kept under ``key`` and reused.
    """
    native_two = [g for g in info.native_gates if g in TWO_QUBIT_TARGETS]
    if native_two:
        templates = _templates(frozenset(native_two) | frozenset(ONE_QUBIT))
        label = "/".join(native_two)
    else:  # no usable native set: count in the supported operations
        templates = _templates(frozenset(info.operations))
        label = None
    if prepared is None:
        cut = next((i for i, g in enumerate(gates) if g.name in _LAYER_GATES), len(gates))
        prep_key: tuple = tuple((g.name, g.qubits, g.angle) for g in gates[:cut])
    else:
        prep_key, cut = prepared
    key = (id(templates), info.edges, info.fully_connected, n, prep_key)
    start = _PREPARED.get(key)
    if start is None:
        start = _Count(n, info)
        start.run(gates[:cut], templates)
        start.names = {g.name for g in gates[:cut]}
        if len(_PREPARED) > 256:
            _PREPARED.clear()
        _PREPARED[key] = start
    count = start.copy()
    count.run(gates[cut:], templates)
    names = start.names | {g.name for g in gates[cut:]}
    rewrites = tuple(sorted((k, v) for k, v in templates.rewrites.items() if k in names))
    return NativeEstimate(n, max(count.time.values(), default=0),
                          count.two + SWAP_COST * count.swaps, count.swaps, label, rewrites)


#: preparation key -> ({gate name: count}, {gate name: first gate}) of the preparation.
_PREPARED_NAMES: dict[tuple, tuple[dict[str, int], dict[str, Gate]]] = {}


def _name_counts(gates: Sequence[Gate], names: dict[str, int] | None = None,
                 first: dict[str, Gate] | None = None) -> tuple[dict[str, int], dict[str, Gate]]:
    names = {} if names is None else dict(names)
    first = {} if first is None else dict(first)
    for g in gates:
        names[g.name] = names.get(g.name, 0) + 1
        first.setdefault(g.name, g)
    return names, first


def supported_counts(gates: Sequence[Gate], n: int, info: DeviceInfo, *,
                     prepared: tuple[tuple, int] | None = None) -> tuple[int, int, list[str]]:
    """(two-qubit gates, gates, notes) of the circuit as submitted, written in the device's
    supported operations (what `check_circuit` builds, counted without building it).
    ``prepared``: as for `native_estimate`."""
    if info.qubit_count is not None and n > info.qubit_count:
        raise UnsupportedProblemError(
            f"the circuit needs {n} qubits but the device has {info.qubit_count}")
    templates = _templates(frozenset(info.operations), False)
    if prepared is None:
        names, first = _name_counts(gates)
    else:
        key, cut = prepared
        if key not in _PREPARED_NAMES:
            if len(_PREPARED_NAMES) > 256:
                _PREPARED_NAMES.clear()
            _PREPARED_NAMES[key] = _name_counts(gates[:cut])
        names, first = _name_counts(gates[cut:], *_PREPARED_NAMES[key])
    two = total = 0
    for name, c in names.items():
        tmpl = templates[first[name]]
        two += c * templates.two_qubit[name]
        total += c * len(tmpl)
    notes = [f"{name} written as {how}" for name, how in sorted(templates.rewrites.items())
             if name in names]
    return two, total, notes


# ------------------------------------------------------------------ classical answers
def classical_answer(problem: Problem, *, backend: str = "sa", time_limit: float = 2.0,
                     seed: int = 0) -> tuple[np.ndarray, str]:
    """A feasible answer to cut sub-blocks around, and where it came from.

    The block's own answer (``metadata["answer"]``, e.g. from ``qcbo prune
    --export-blocks``), else its warm start (``metadata["initial"]``), when feasible; else
    a short solve with ``backend``.
    """
    for key, label in (("answer", "block answer"), ("initial", "block warm start")):
        value = problem.metadata.get(key)
        if value is None:
            continue
        x = np.asarray(value)
        if x.shape == (problem.n,) and np.all((x == 0) | (x == 1)) and problem.is_feasible(x):
            return x.astype(np.int8), label
    from . import get_backend

    result = get_backend(backend).solve(problem, seed=seed, time_limit=time_limit)
    if result.x is None or not result.feasible:
        raise UnsupportedProblemError(f"{backend} found no feasible answer to cut sub-blocks "
                                      "around")
    return np.asarray(result.x, dtype=np.int8), backend


# ------------------------------------------------------------------ plans
@dataclass
class TaskPlan:
    """One circuit to run: the whole block ``block`` (``variables`` None) or the sub-block
    over ``variables`` of it, with the rest fixed at the block's classical answer."""

    block: int
    variables: np.ndarray | None
    problem: Problem
    mixer: str
    estimate: NativeEstimate
    check_notes: list[str] = field(default_factory=list)
    supported_two_qubit: int = 0
    supported_gates: int = 0


@dataclass
class BlockPlan:
    """One block of the source: its tasks and, when cut, the classical answer."""

    index: int
    problem: Problem
    tasks: list[TaskPlan]
    classical: np.ndarray | None = None
    classical_source: str | None = None
    name: str | None = None
    #: Sub-blocks (or the whole block) left out: k = 0 or k = n has one feasible state,
    #: the classical answer's, so a device task could not improve on it.
    single_state: int = 0

    @property
    def cut(self) -> bool:
        return self.classical is not None


@dataclass
class SubmissionPlan:
    target: DeviceTarget
    shots: int
    p: int
    sub_block: int
    blocks: list[BlockPlan]

    @property
    def tasks(self) -> list[TaskPlan]:
        return [t for b in self.blocks for t in b.tasks]

    def cost(self, tasks: int | None = None) -> float | None:
        return self.target.cost(len(self.tasks) if tasks is None else tasks, self.shots)


def _structure_key(problem: Problem, mixer: str, p: int) -> tuple:
    cost = problem if mixer != "x" else problem.to_qubo()[0]
    ising = cost.to_ising()
    coupled = np.triu(ising.J, 1) != 0
    return (problem.n, problem.k, mixer, p, np.packbits(coupled).tobytes(),
            np.packbits(ising.h != 0).tobytes())


def _block_name(problem: Problem) -> str | None:
    meta = problem.metadata
    name = meta.get("name") or meta.get("layer")
    return None if name is None else str(name)


def plan_submission(
    problems: Sequence[Problem],
    target: DeviceTarget,
    *,
    shots: int,
    p: int = 2,
    mixer: str = "auto",
    sub_block: int | None = None,
    classical: str = "sa",
    classical_time: float = 2.0,
    seed: int = 0,
    answers: Mapping[int, tuple[np.ndarray, str]] | None = None,
) -> SubmissionPlan:
    """Sub-blocks, device checks and native estimates for every block; no angles trained.

    ``sub_block``: None = the device's qubit count capped at DEFAULT_SUB_BLOCK_CAP; 0 =
    off (a block larger than the device is then refused). ``answers``: {block index: (x,
    source)} classical answers to reuse (a resumed manifest), instead of `classical_answer`.
    """
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise InputError(f"--shots must be a positive integer, got {shots!r}")
    if p < 1:
        raise InputError(f"--p must be >= 1, got {p}")
    qubits = target.info.qubit_count
    if sub_block is None:
        q = min(qubits or DEFAULT_SUB_BLOCK_CAP, DEFAULT_SUB_BLOCK_CAP)
    else:
        q = int(sub_block)
        if q < 0:
            raise InputError(f"--sub-block must be >= 0 (0: off), got {q}")
        if qubits is not None and q > qubits:
            raise InputError(f"--sub-block {q} exceeds the {qubits} qubits of {target.name}; "
                             f"use --sub-block {qubits} or less")
        if q == 1:
            raise InputError("--sub-block must be at least 2 (or 0: off)")
    limit = q if q else qubits
    # size checks for every block first: nothing is solved or built for a plan that fails
    for i, problem in enumerate(problems):
        if limit is not None and problem.n > limit and not q:
            suggest = min(qubits, DEFAULT_SUB_BLOCK_CAP)
            raise UnsupportedProblemError(
                f"block {i + 1} has {problem.n} variables but {target.name} has {qubits} "
                f"qubits and sub-blocks are off; use --sub-block {suggest} (or less) to cut "
                "it into device-size sub-blocks")
    from .subblock import decompose as cut

    cache: dict[tuple, tuple[NativeEstimate, list[str], int, int]] = {}
    blocks = []
    for i, problem in enumerate(problems):
        if problem.k is not None and problem.k in (0, problem.n):
            # One feasible state: answered here, recorded as a cut block with no tasks.
            only = np.full(problem.n, int(problem.k > 0), dtype=np.int8)
            blocks.append(BlockPlan(i, problem, [], only, "single feasible state",
                                    _block_name(problem), single_state=1))
            continue
        if q and problem.n > q:
            if answers is not None and i in answers:
                x, source = np.asarray(answers[i][0], dtype=np.int8), answers[i][1]
            else:
                x, source = classical_answer(problem, backend=classical,
                                             time_limit=classical_time, seed=seed)
            # the sub-problems copy the parent's metadata: keep only its name, not the
            # exported answer and index lists (each a JSON round trip per sub-block)
            slim = problem.replace(metadata={"name": _block_name(problem)})
            pieces = [(sb.index, sb.problem) for sb in cut(slim, x, q)]
            plan = BlockPlan(i, problem, [], x, source, _block_name(problem))
        else:
            pieces = [(None, problem)]
            plan = BlockPlan(i, problem, [], name=_block_name(problem))
        for variables, sub in pieces:
            if sub.k is not None and sub.k in (0, sub.n):
                plan.single_state += 1
                continue
            used = ("x" if sub.k is None else "xy-ring") if mixer == "auto" else mixer
            key = _structure_key(sub, used, p)
            if key not in cache:
                prep_key, prep, layers, _ = _circuit_parts(sub, mixer, p)
                gates = list(prep) + layers
                two, count, notes = supported_counts(gates, sub.n, target.info,
                                                     prepared=(prep_key, len(prep)))
                est = native_estimate(gates, sub.n, target.info, prepared=(prep_key, len(prep)))
                cache[key] = (est, notes, two, count)
            est, notes, two, count = cache[key]
            plan.tasks.append(TaskPlan(i, variables, sub, key[2], est, list(notes), two, count))
        blocks.append(plan)
    return SubmissionPlan(target, int(shots), p, q, blocks)


def format_submission_plan(plan: SubmissionPlan, *, done: int = 0) -> str:
    """The plan as text: device line, one row per block, totals and cost.

    ``done``: tasks already submitted (a resumed manifest); they are not priced again.
    """
    t = plan.target
    info = t.info
    conn = "all-to-all" if info.fully_connected else f"{len(info.edges)} couplers"
    native = " ".join(info.native_gates) or "not listed"
    shots = (f"{info.shots_range[0]}-{info.shots_range[1]} shots per task"
             if info.shots_range else "shot range not known offline (checked on submission)")
    lines = [f"device {t.provider} {t.name} ({t.arn}): {info.qubit_count} qubits, {conn}, "
             f"native gates {native}, {shots}; {t.source}",
             f"QAOA p={plan.p}; " + (f"sub-blocks of at most {plan.sub_block} variables around "
                                     "a classical answer" if plan.sub_block else "sub-blocks off"),
             f"{'block':>5} {'name':<22} {'n':>5} {'k':>5} {'tasks':>5} {'q':>3} {'k_sub':>7} "
             f"{'classical':<16} {'depth':>6} {'2q':>6}"]
    for b in plan.blocks:
        qs = [task.problem.n for task in b.tasks]
        ks = sorted({task.problem.k for task in b.tasks if task.problem.k is not None})
        k_sub = "-" if not ks else (str(ks[0]) if len(ks) == 1 else f"{ks[0]}-{ks[-1]}")
        depth = max((task.estimate.depth for task in b.tasks), default=0)
        two = max((task.estimate.two_qubit for task in b.tasks), default=0)
        name = b.name or "-"
        lines.append(f"{b.index + 1:>5} {name[:22]:<22} {b.problem.n:>5} {str(b.problem.k):>5} "
                     f"{len(b.tasks):>5} {max(qs, default='-'):>3} {k_sub:>7} "
                     f"{(b.classical_source or 'whole block')[:16]:<16} {depth:>6} {two:>6}")
    tasks = plan.tasks
    single = sum(b.single_state for b in plan.blocks)
    if single:
        lines.append(f"{single} block(s) or sub-block(s) with k = 0 or k = n have one feasible "
                     "state: answered classically, no task")
    if not tasks:
        lines.append(f"{len(plan.blocks)} blocks -> 0 tasks: nothing to submit")
        return "\n".join(lines)
    deepest = max(tasks, key=lambda task: task.estimate.depth)
    est = deepest.estimate
    gate = est.native or "supported-operation"
    swaps = sum(task.estimate.swaps for task in tasks)
    lines.append(f"{len(plan.blocks)} blocks -> {len(tasks)} tasks; per task at most "
                 f"{max(task.problem.n for task in tasks)} qubits, depth "
                 f"{max(task.estimate.depth for task in tasks)}, "
                 f"{max(task.estimate.two_qubit for task in tasks)} two-qubit {gate} gates after "
                 "decomposition" + ("" if info.fully_connected else
                                    f" and routing ({swaps} SWAPs over all tasks)"))
    notes = sorted({note for task in tasks for note in task.check_notes})
    if notes:
        lines.append("submitted circuits: " + "; ".join(notes))
    todo = len(tasks) - done
    if t.price is None:
        lines.append("cost: no price known for this device; check "
                     "https://aws.amazon.com/braket/pricing/")
    else:
        lines.append(f"cost estimate for {todo} new task(s): {todo} x (${t.price.per_task:.2f} per "
                     f"task + {plan.shots} x ${t.price.per_shot:.5f} per shot) = "
                     f"${plan.cost(todo):.2f} (prices as of {t.priced_on})")
    return "\n".join(lines)


def manifest_parts(plan: SubmissionPlan) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(per-task fields, parents) of a manifest for ``plan`` (see braket_device)."""
    entries, parents = [], []
    for b in plan.blocks:
        first = len(entries)
        for task in b.tasks:
            entries.append({
                "block": b.index,
                "variables": None if task.variables is None else task.variables.tolist(),
                "name": b.name,
                "n": task.problem.n, "k": task.problem.k,
                "fingerprint": fingerprint(task.problem),
                "depth_estimate": task.estimate.depth,
                "native_two_qubit_estimate": task.estimate.two_qubit,
            })
        if b.cut:
            parents.append({"index": b.index, "n": b.problem.n, "k": b.problem.k,
                            "fingerprint": fingerprint(b.problem),
                            "classical": {"x": b.classical.tolist(),
                                          "energy": b.problem.energy(b.classical),
                                          "source": b.classical_source},
                            "tasks": list(range(first, len(entries)))})
    return entries, parents
