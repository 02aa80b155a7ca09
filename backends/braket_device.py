"""Running QAOA blocks on Amazon Braket devices: capability checks, gate decomposition,
cost estimates, and manifest-based submit / collect that survive interruption.

Everything takes the device as an object with Braket's device interface (``properties``,
``run(circuit, shots=...)``) and tasks through a ``load_task(arn)`` callable, so tests run
the whole path on ``LocalSimulator``; the CLI passes ``AwsDevice`` / ``AwsQuantumTask``.

Manifest (JSON, rewritten atomically after every task): ``{"format": "qcbo.braket-manifest",
"version": 2, "device", "shots", "source": {"path", "k", "instance"}, "s3", "sub_block",
"blocks": [{"index", "block", "variables", "name", "n", "k", "fingerprint", "mixer", "p",
"angles", "task_arn", "status", ...}], "parents": [{"index", "n", "k", "fingerprint",
"classical": {"x", "energy", "source"}, "tasks"}]}``. Each entry of "blocks" is one task:
the source block ``block`` whole (``variables`` null), or its sub-block over ``variables``
with every other variable fixed at the parent's classical answer (`backends.subblock`).
Version 1 manifests (one task per source block, no parents) are still read. A task with a
``task_arn`` is never submitted again. Credentials never enter it, nor logs.

Network and credential failures of boto3, botocore and the Braket SDK leave as one
BackendUnavailableError line (`aws_errors`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from qcbo.errors import BackendUnavailableError, InputError, QCBOError, UnsupportedProblemError
from qcbo.problem import Problem
from qcbo.result import SolveResult

from .qaoa import Angles, Gate, QAOAModel, circuit_plan, train_angles

__all__ = [
    "PRICES",
    "PRICES_DATE",
    "Price",
    "DeviceInfo",
    "DeviceCheck",
    "device_info",
    "check_shots",
    "decompose",
    "check_circuit",
    "to_braket_circuit",
    "estimate_cost",
    "plan_blocks",
    "submit_blocks",
    "parse_s3",
    "collect_results",
    "decode_measurements",
    "fingerprint",
    "require_aws_credentials",
    "aws_credentials_available",
    "aws_errors",
    "open_aws_device",
    "load_manifest",
    "stitch_parents",
]

logger = logging.getLogger(__name__)

MANIFEST_FORMAT = "qcbo.braket-manifest"
MANIFEST_VERSION = 2
#: Manifest versions this module reads.
MANIFEST_READS = (1, 2)
_OPENQASM = "braket.ir.openqasm.program"
_JAQCD = "braket.ir.jaqcd.program"


# ------------------------------------------------------------------ prices
@dataclass(frozen=True)
class Price:
    """USD per task and per shot for a QPU family."""

    per_task: float
    per_shot: float


#: Amazon Braket on-demand QPU prices (https://aws.amazon.com/braket/pricing/), as read on
#: PRICES_DATE; keys are matched against "provider/device" of the ARN, longest first.
#: Managed simulators bill per minute and local simulators are free; both are listed at 0.
PRICES_DATE = "2025-06-01"
PRICES: dict[str, Price] = {
    "ionq/forte": Price(0.30, 0.08),
    "ionq/aria": Price(0.30, 0.03),
    "iqm/garnet": Price(0.30, 0.00145),
    "iqm/emerald": Price(0.30, 0.00160),
    "rigetti/ankaa": Price(0.30, 0.00090),
    "quantum-simulator/amazon": Price(0.0, 0.0),
    "local": Price(0.0, 0.0),
}


def _price_key(arn: str) -> str | None:
    arn = arn.lower()
    tail = arn.split("device/", 1)[1] if "device/" in arn else arn
    tail = tail.removeprefix("qpu/")
    for key in sorted(PRICES, key=len, reverse=True):
        if tail.startswith(key) or arn == key:
            return key
    return None


def estimate_cost(device_arn: str, tasks: int, shots: int) -> dict[str, Any]:
    """{"per_task", "per_shot", "total", "priced_on", "known"} in USD for tasks x shots."""
    key = _price_key(device_arn)
    if key is None:
        return {"per_task": None, "per_shot": None, "total": None, "priced_on": PRICES_DATE,
                "known": False}
    price = PRICES[key]
    total = tasks * (price.per_task + shots * price.per_shot)
    return {"per_task": price.per_task, "per_shot": price.per_shot, "total": total,
            "priced_on": PRICES_DATE, "known": True}


# ------------------------------------------------------------------ device properties
@dataclass(frozen=True)
class DeviceInfo:
    """What the checks need from a device-capabilities document."""

    qubit_count: int | None
    operations: frozenset[str]
    fully_connected: bool
    edges: frozenset[tuple[int, int]]
    native_gates: tuple[str, ...] = ()
    #: (fewest, most) shots per task the device accepts (``service.shotsRange``); None
    #: when the document does not say (the offline snapshots)
    shots_range: tuple[int, int] | None = None


def check_shots(shots: int, info: DeviceInfo, device: str) -> None:
    """InputError unless ``shots`` lies in the device's ``shots_range`` (when known)."""
    if info.shots_range is None:
        return
    low, high = info.shots_range
    if not low <= shots <= high:
        raise InputError(f"--shots {shots} is outside the {low}-{high} shots per task that "
                         f"{device} accepts; choose a value in that range")


def device_info(properties: Any) -> DeviceInfo:
    """Read a Braket ``DeviceCapabilities`` (object, dict or JSON text)."""
    if isinstance(properties, str):
        properties = json.loads(properties)
    if not isinstance(properties, Mapping):
        properties = json.loads(properties.json())
    action = properties.get("action", {})
    spec = action.get(_OPENQASM) or action.get(_JAQCD)
    if spec is None:
        raise UnsupportedProblemError("the device takes no gate-model circuits (no OpenQASM "
                                      "or JAQCD action in its properties)")
    ops = frozenset(op.lower() for op in spec.get("supportedOperations", []))
    paradigm = properties.get("paradigm", {})
    qubits = paradigm.get("qubitCount")
    conn = paradigm.get("connectivity") or {"fullyConnected": True, "connectivityGraph": {}}
    edges = set()
    for a, targets in (conn.get("connectivityGraph") or {}).items():
        for b in targets:
            edges.add((min(int(a), int(b)), max(int(a), int(b))))
    # On-demand tasks' range; a Braket Direct reservation has its own
    # (service.reservationShotsRange), which qcbo does not submit to.
    shots = (properties.get("service") or {}).get("shotsRange")
    shots_range = None
    if isinstance(shots, (list, tuple)) and len(shots) == 2 and \
            all(isinstance(v, int) and not isinstance(v, bool) for v in shots):
        shots_range = (int(shots[0]), int(shots[1]))
    return DeviceInfo(int(qubits) if qubits is not None else None, ops,
                      bool(conn.get("fullyConnected", False)), frozenset(edges),
                      tuple(paradigm.get("nativeGateSet", []) or ()), shots_range)


# ------------------------------------------------------------------ decomposition
def _rules(g: Gate) -> list[tuple[str, list[Gate]]]:
    """Alternative rewrites of one gate (equal up to a global phase), tried in order.

    Conventions as in backends.qaoa, plus ``xx/yy(t) = exp(-i t/2 PP)`` (Braket's) and
    ``cz``. Each alternative is labelled by the gate it gets rid of.
    """
    q, t = g.qubits, g.angle
    half = math.pi / 2
    if g.name == "xy":  # exp(-i t/4 XX) exp(-i t/4 YY): XX and YY commute
        a, b = q
        # CNOT (rx(u) x rz(v)) CNOT = exp(-i u/2 XX) exp(-i v/2 ZZ), and rx(+-pi/2) on both
        # qubits turns ZZ into YY while leaving XX alone: two CNOTs instead of four
        return [("xx+yy", [Gate("xx", q, t / 2), Gate("yy", q, t / 2)]),
                ("2-cnot", [Gate("rx", (a,), -half), Gate("rx", (b,), -half), Gate("cnot", q),
                            Gate("rx", (a,), t / 2), Gate("rz", (b,), t / 2), Gate("cnot", q),
                            Gate("rx", (a,), half), Gate("rx", (b,), half)])]
    if g.name == "xx":  # Braket's ms(0, 0, t) is exp(-i t/2 XX)
        a, b = q
        return [("ms", [Gate("ms", q, t)]),
                ("h-zz", [Gate("h", (a,)), Gate("h", (b,)), Gate("zz", q, t),
                          Gate("h", (a,)), Gate("h", (b,))])]
    if g.name == "yy":  # rx(pi/2) maps Y to Z under conjugation: Y = rx(-pi/2) Z rx(pi/2)
        a, b = q
        return [("rx-zz", [Gate("rx", (a,), half), Gate("rx", (b,), half), Gate("zz", q, t),
                           Gate("rx", (a,), -half), Gate("rx", (b,), -half)])]
    if g.name == "zz":
        a, b = q
        return [("cnot-rz", [Gate("cnot", q), Gate("rz", (q[1],), t), Gate("cnot", q)]),
                ("h-xx", [Gate("h", (a,)), Gate("h", (b,)), Gate("xx", q, t),
                          Gate("h", (a,)), Gate("h", (b,))])]
    if g.name == "cnot":
        c, tg = q
        return [("h-cz", [Gate("h", (tg,)), Gate("cz", q), Gate("h", (tg,))])]
    if g.name == "cz":  # diag(1, 1, 1, -1) = rz(pi/2) x rz(pi/2) zz(-pi/2) up to phase
        a, b = q
        return [("zz", [Gate("zz", q, -half), Gate("rz", (a,), half), Gate("rz", (b,), half)]),
                ("2-iswap", _cz_from_iswap(a, b))]
    if g.name == "ccnot":  # the standard 6-CNOT Toffoli with T = rz(pi/4) up to phase
        a, b, c = q
        tt = math.pi / 4
        seq = [Gate("h", (c,)), Gate("cnot", (b, c)), Gate("rz", (c,), -tt), Gate("cnot", (a, c)),
               Gate("rz", (c,), tt), Gate("cnot", (b, c)), Gate("rz", (c,), -tt),
               Gate("cnot", (a, c)), Gate("rz", (b,), tt), Gate("rz", (c,), tt), Gate("h", (c,)),
               Gate("cnot", (a, b)), Gate("rz", (a,), tt), Gate("rz", (b,), -tt),
               Gate("cnot", (a, b))]
        return [("6-cnot", seq)]
    if g.name == "ry":
        return [("rz-rx", [Gate("rz", q, -half), Gate("rx", q, t), Gate("rz", q, half)])]
    if g.name == "rx":
        return [("h-rz", [Gate("h", q), Gate("rz", q, t), Gate("h", q)])]
    if g.name == "h":
        return [("rz-rx", [Gate("rz", q, half), Gate("rx", q, half), Gate("rz", q, half)])]
    if g.name == "x":
        return [("rx", [Gate("rx", q, math.pi)])]
    return []


def _cz_from_iswap(a: int, b: int) -> list[Gate]:
    """CZ from two iSWAPs (Rigetti's native two-qubit gate) and single-qubit turns.

    Found numerically once and snapped to multiples of pi/4; the unitary test checks it.
    """
    p4 = math.pi / 4

    def turn(q: int, z2: float, y: float, z1: float) -> list[Gate]:
        return [Gate("rz", (q,), z1), Gate("ry", (q,), y), Gate("rz", (q,), z2)]

    return (turn(a, 3 * p4, -4 * p4, 4 * p4) + turn(b, -2 * p4, -2 * p4, p4)
            + [Gate("iswap", (a, b)), Gate("rx", (a,), -2 * p4), Gate("iswap", (a, b))]
            + turn(a, -3 * p4, -4 * p4, 0.0) + turn(b, p4, 2 * p4, -2 * p4))


def decompose(gates: Sequence[Gate], supported: Iterable[str], max_depth: int = 6, *,
              fewest_two_qubit: bool = False) -> tuple[list[Gate], dict[str, str]]:
    """Rewrite ``gates`` into ``supported`` operation names (Braket's, lower case).

    Returns (gates, {gate name: rewrite used}); raises UnsupportedProblemError naming the
    gate that cannot be expressed. By default the first rewrite that works is taken;
    ``fewest_two_qubit`` tries them all (once per gate name) and keeps the one with the
    fewest two-qubit gates, which is what a native-gate estimate wants.
    """
    ops = {s.lower() for s in supported}
    used: dict[str, str] = {}

    def expand(g: Gate, depth: int) -> list[Gate]:
        if g.name in ops:
            return [g]
        if depth >= max_depth:
            raise UnsupportedProblemError(
                f"the device supports none of the ways to write {g.name} known here "
                f"(its operations: {', '.join(sorted(ops))})")
        rules = _rules(g)
        if g.name in used:  # the choice made for this gate name before, tried first
            for label, seq in rules:
                if label == used[g.name]:
                    try:
                        return [h for s in seq for h in expand(s, depth + 1)]
                    except UnsupportedProblemError:
                        break
        best: tuple[int, str, list[Gate]] | None = None
        for label, seq in rules:
            try:
                out = [h for s in seq for h in expand(s, depth + 1)]
            except UnsupportedProblemError:
                continue
            if not fewest_two_qubit:
                used.setdefault(g.name, label)
                return out
            count = sum(1 for h in out if len(h.qubits) >= 2)
            if best is None or count < best[0]:
                best = (count, label, out)
        if best is not None:
            used.setdefault(g.name, best[1])
            return best[2]
        raise UnsupportedProblemError(
            f"the device cannot run {g.name} and no rewrite into its operations "
            f"({', '.join(sorted(ops))}) is known")

    out = [h for g in gates for h in expand(g, 0)]
    return out, used


@dataclass
class DeviceCheck:
    """The verdict on one circuit for one device."""

    gates: list[Gate]
    rewrites: dict[str, str]
    qubits: int
    two_qubit_gates: int
    non_adjacent_pairs: int
    notes: list[str] = field(default_factory=list)


def check_circuit(gates: Sequence[Gate], n: int, info: DeviceInfo) -> DeviceCheck:
    """Qubit count (refused when too many), supported gates (rewritten), connectivity.

    On a device that is not fully connected the circuit is submitted as a normal
    (non-verbatim) program and the provider's compiler routes it: the pairs that are not
    adjacent on the device graph are counted and noted, not refused.
    """
    if info.qubit_count is not None and n > info.qubit_count:
        raise UnsupportedProblemError(
            f"the circuit needs {n} qubits but the device has {info.qubit_count}")
    out, rewrites = decompose(gates, info.operations)
    pairs = {tuple(sorted(g.qubits[:2])) for g in out if len(g.qubits) >= 2}
    pairs |= {tuple(sorted(p)) for g in out if len(g.qubits) == 3
              for p in ((g.qubits[0], g.qubits[2]), (g.qubits[1], g.qubits[2]))}
    non_adjacent = 0 if info.fully_connected else sum(1 for p in pairs if p not in info.edges)
    notes = [f"{name} written as {how}" for name, how in sorted(rewrites.items())]
    if non_adjacent:
        notes.append(f"{non_adjacent} of {len(pairs)} interacting pairs are not adjacent on "
                     "the device; its compiler will route them (SWAPs)")
    two = sum(1 for g in out if len(g.qubits) >= 2)
    return DeviceCheck(out, rewrites, n, two, non_adjacent, notes)


def to_braket_circuit(gates: Sequence[Gate], n: int) -> Any:
    """A braket Circuit of core gates (``xy`` flips sign: Braket's xy(t) = exp(+i t/4 (XX+YY)))."""
    from braket.circuits import Circuit

    circ = Circuit()
    for g in gates:
        if g.name == "xy":
            circ.xy(g.qubits[0], g.qubits[1], -g.angle)
        elif g.name == "ms":
            circ.ms(g.qubits[0], g.qubits[1], 0.0, 0.0, g.angle)
        elif g.angle is None:
            getattr(circ, g.name)(*g.qubits)
        else:
            getattr(circ, g.name)(*g.qubits, g.angle)
    return circ


def decode_measurements(measurements: np.ndarray, measured_qubits: Sequence[int],
                        n: int) -> np.ndarray:
    """(shots, len(measured_qubits)) device bits -> (shots, n) int8 with x_i = qubit i.

    Column j of ``measurements`` is qubit ``measured_qubits[j]``; qubits that no gate
    touched are not measured by Braket and stay 0.
    """
    m = np.asarray(measurements, dtype=np.int8)
    out = np.zeros((m.shape[0], n), dtype=np.int8)
    for col, q in enumerate(measured_qubits):
        if not 0 <= int(q) < n:
            raise InputError(f"measured qubit {q} is outside 0..{n - 1}")
        out[:, int(q)] = m[:, col]
    return out


# ------------------------------------------------------------------ plan / submit / collect
def fingerprint(problem: Problem) -> str:
    """sha256 of (Q, offset, k): ties a manifest entry to its problem."""
    h = hashlib.sha256(np.ascontiguousarray(problem.Q).tobytes())
    h.update(json.dumps([problem.offset, problem.k]).encode())
    return h.hexdigest()[:16]


def _atomic_json(path: Path, data: Any) -> None:
    from qcbo.io import atomic_write

    with atomic_write(path, "w") as handle:
        json.dump(data, handle, indent=1)


#: A Braket quantum task ARN: arn:<partition>:braket:<region>:<account>:quantum-task/<id>.
TASK_ARN = re.compile(r"arn:aws[a-z-]*:braket:[a-z0-9-]+:\d{12}:quantum-task/[A-Za-z0-9-]+\Z")

_OPTIONAL_INT = (int, type(None))


def _manifest_fault(data: Any) -> str | None:
    """What is wrong with a parsed manifest (version already checked), or None."""
    if not isinstance(data.get("device"), str):
        return "'device' is missing or not a string"
    if isinstance(data.get("shots"), bool) or not isinstance(data.get("shots"), int):
        return "'shots' is missing or not an integer"
    source = data.get("source")
    if not isinstance(source, dict) or not isinstance(source.get("path"), str):
        return "'source' is missing or lacks the problem file's path"
    for key in ("k", "instance"):
        if isinstance(source.get(key), bool) or not isinstance(source.get(key), _OPTIONAL_INT):
            return f"source {key} {source.get(key)!r} is not an integer or null"
    blocks = data.get("blocks")
    if not isinstance(blocks, list) or not blocks:
        return "'blocks' is missing or empty"
    parents = data.get("parents", [])
    if not isinstance(parents, list):
        return "'parents' is not a list"
    parent_index = set()
    for position, parent in enumerate(parents):
        where = f"parent {position + 1}"
        if not isinstance(parent, dict) or not isinstance(parent.get("fingerprint"), str):
            return f"{where} is not an object with a fingerprint"
        n, index = parent.get("n"), parent.get("index")
        if isinstance(n, bool) or not isinstance(n, int) or isinstance(index, bool) \
                or not isinstance(index, int):
            return f"{where} lacks its block index or size n"
        classical = parent.get("classical")
        x = classical.get("x") if isinstance(classical, dict) else None
        if not isinstance(x, list) or len(x) != n or any(v not in (0, 1) or isinstance(v, bool)
                                                          for v in x):
            return f"{where} lacks its classical answer (a list of {n} zeros and ones)"
        parent_index.add(index)
    for position, entry in enumerate(blocks):
        where = f"block {position + 1}"
        if not isinstance(entry, dict):
            return f"{where} is not a JSON object"
        if entry.get("index") != position or isinstance(entry.get("index"), bool):
            return f"{where} has index {entry.get('index')!r}, expected {position}"
        if not isinstance(entry.get("fingerprint"), str):
            return f"{where} lacks its problem fingerprint"
        block, variables = entry.get("block", position), entry.get("variables")
        if isinstance(block, bool) or not isinstance(block, int) or block < 0:
            return f"{where} has source block {block!r}, not a non-negative integer"
        if variables is not None:
            if not isinstance(variables, list) or not variables or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in variables):
                return f"{where} has sub-block variables that are not a list of positions"
            if block not in parent_index:
                return f"{where} is a sub-block of block {block + 1}, which has no parent entry"
        arn = entry.get("task_arn")
        if arn is not None and (not isinstance(arn, str) or not TASK_ARN.match(arn)):
            return f"{where} has task id {str(arn)[:80]!r}, which is not a Braket quantum-task ARN"
        if arn is not None:
            if isinstance(entry.get("p"), bool) or not isinstance(entry.get("p"), int):
                return f"{where} lacks its QAOA depth p"
            if not isinstance(entry.get("mixer"), str) or not isinstance(entry.get("angles"), dict):
                return f"{where} lacks its mixer or angles"
    return None


def load_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a manifest written by `submit_blocks`; any fault is one InputError."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such manifest") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable manifest ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise InputError(f"{path}: not a qcbo Braket manifest")
    if data.get("version") not in MANIFEST_READS or isinstance(data.get("version"), bool):
        raise InputError(f"{path}: manifest version {data.get('version')} is not supported "
                         f"(this qcbo reads versions {', '.join(map(str, MANIFEST_READS))})")
    fault = _manifest_fault(data)
    if fault:
        raise InputError(f"{path}: corrupt manifest: {fault}")
    return data


def plan_blocks(
    problems: Sequence[Problem],
    info: DeviceInfo,
    *,
    p: int = 2,
    mixer: str = "auto",
    angles: Any = None,
    seed: int = 0,
    restarts: int = 3,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Per problem: train (or take) angles, build and check the circuit.

    ``angles``: None (train each block on the exact state vector), one {"gamma", "beta"}
    for all blocks, or a list with one per block. Each entry gets "gates" (the device
    circuit), "check" (DeviceCheck) and the manifest fields.
    """
    if isinstance(angles, list) and len(angles) != len(problems):
        raise InputError(f"angles: {len(angles)} angle sets for {len(problems)} problems")
    for i, problem in enumerate(problems):  # every size before any training
        if info.qubit_count is not None and problem.n > info.qubit_count:
            raise UnsupportedProblemError(
                f"block {i + 1} needs {problem.n} qubits but the device has "
                f"{info.qubit_count}; cut it into sub-blocks (qcbo submit --sub-block "
                f"{info.qubit_count})")
    plans = []
    for i, problem in enumerate(problems):
        model = QAOAModel(problem, mixer)
        given = angles[i] if isinstance(angles, list) else angles
        if given is not None:
            ang = Angles.from_dict(given, f"angles for block {i + 1}")
        else:
            ang = train_angles(model, p, rng=np.random.default_rng([seed, i]),
                               restarts=restarts).angles
        check = check_circuit(circuit_plan(model, ang), problem.n, info)
        plans.append({
            "index": i,
            "name": problem.metadata.get("name"),
            "n": problem.n,
            "k": problem.k,
            "fingerprint": fingerprint(problem),
            "mixer": model.mixer,
            "p": ang.p,
            "angles": ang.to_dict(),
            "two_qubit_gates": check.two_qubit_gates,
            "gate_count": len(check.gates),
            "notes": check.notes,
            "task_arn": None,
            "status": "planned",
            "gates": check.gates,
        })
        if progress:
            progress(1)
    return plans


def submit_blocks(
    plans: list[dict[str, Any]],
    device: Any,
    manifest_path: str | os.PathLike,
    *,
    device_arn: str,
    shots: int,
    source: Mapping[str, Any],
    s3: str | None = None,
    progress: Callable[[int], None] | None = None,
    parents: Sequence[Mapping[str, Any]] = (),
    sub_block: int | None = None,
) -> dict[str, Any]:
    """Submit every block without a task ARN; the manifest is rewritten after each task.

    An existing manifest at ``manifest_path`` for the same device/shots/source is resumed:
    its blocks that have a task ARN are kept and not submitted again (their fingerprints
    must match ``plans``).
    """
    path = Path(manifest_path)
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "device": device_arn,
                "shots": int(shots), "source": dict(source), "s3": s3,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "sub_block": sub_block,
                "blocks": [{k: v for k, v in b.items() if k != "gates"} for b in plans],
                "parents": [dict(p) for p in parents]}
    if path.exists():
        old = load_manifest(path)
        if old["device"] != device_arn or old["shots"] != shots or \
                len(old["blocks"]) != len(plans):
            raise InputError(f"{path}: holds a different submission (device, shots or block "
                             "count differ); choose another --manifest")
        for entry, prev in zip(manifest["blocks"], old["blocks"]):
            if prev["fingerprint"] != entry["fingerprint"]:
                raise InputError(f"{path}: block {entry['index'] + 1} is a different problem "
                                 "than the one in the manifest")
            if prev.get("task_arn"):
                entry.update(prev)
        manifest["created"] = old.get("created", manifest["created"])
    _atomic_json(path, manifest)
    s3_folder = parse_s3(s3) if s3 else None
    for plan, entry in zip(plans, manifest["blocks"]):
        if entry.get("task_arn"):
            continue
        circuit = to_braket_circuit(plan["gates"], plan["n"])
        kwargs = {"s3_destination_folder": s3_folder} if s3_folder else {}
        done = sum(1 for b in manifest["blocks"] if b.get("task_arn"))
        with aws_errors(f"submitting task {entry['index'] + 1} ({done} submitted and recorded "
                        f"in {path}; run again to resume)"):
            task = device.run(circuit, shots=int(shots), **kwargs)
        entry["task_arn"] = str(task.id)
        entry["status"] = "submitted"
        entry["submitted"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        _atomic_json(path, manifest)
        logger.info("block %d submitted as %s", entry["index"] + 1, entry["task_arn"])
        if progress:
            progress(1)
    return manifest


def parse_s3(uri: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://bucket/prefix`` (prefix "qcbo" when none); InputError
    for anything else."""
    if not uri.startswith("s3://") or len(uri) <= 5:
        raise InputError(f"--s3 must look like s3://bucket/prefix, got {uri!r}")
    bucket, _, prefix = uri[5:].partition("/")
    if not bucket:
        raise InputError(f"--s3 must name a bucket: {uri!r}")
    return bucket, prefix.rstrip("/") or "qcbo"


_DONE = {"COMPLETED"}
_DEAD = {"FAILED", "CANCELLED", "CANCELLING"}


def _task_problems(manifest: Mapping[str, Any], problems: Sequence[Problem],
                   path: Path) -> list[Problem]:
    """The problem of every task of a manifest, checked against the source problems:
    whole blocks by their fingerprint, sub-blocks rebuilt from their parent (whose
    fingerprint is checked) and its classical answer."""
    from .subblock import restrict

    entries = manifest["blocks"]
    if manifest.get("version") == 1 and len(problems) != len(entries):
        raise InputError(f"{path}: {len(entries)} blocks but the source has "
                         f"{len(problems)} problems")
    parents = {p["index"]: p for p in manifest.get("parents", [])}
    checked: set[int] = set()
    out = []
    for entry in entries:
        b = entry.get("block", entry["index"])
        if b >= len(problems):
            raise InputError(f"{path}: task {entry['index'] + 1} refers to block {b + 1} but the "
                             f"source has {len(problems)} problems")
        problem = problems[b]
        if entry.get("variables") is None:
            if fingerprint(problem) != entry["fingerprint"]:
                raise InputError(f"{path}: block {b + 1} does not match the source problem")
            out.append(problem)
            continue
        parent = parents[b]
        if b not in checked:
            if fingerprint(problem) != parent["fingerprint"]:
                raise InputError(f"{path}: block {b + 1} does not match the source problem")
            checked.add(b)
        variables = entry["variables"]
        if max(variables) >= problem.n or len(set(variables)) != len(variables):
            raise InputError(f"{path}: task {entry['index'] + 1} has sub-block variables "
                             f"outside block {b + 1} (n={problem.n}) or repeated")
        out.append(restrict(problem, np.asarray(parent["classical"]["x"]), np.asarray(variables)))
    return out


def collect_results(
    manifest_path: str | os.PathLike,
    problems: Sequence[Problem],
    load_task: Callable[[str], Any],
    results_path: str | os.PathLike,
) -> dict[str, Any]:
    """Fetch finished tasks, decode and score them, stitch sub-blocks back into their
    blocks, write the results file; idempotent.

    ``results_path`` holds {"manifest", "results": [one `qcbo solve --json` object per
    finished task], "blocks": [one stitched answer per block cut into sub-blocks (see
    `stitch_parents`)]}; tasks already there are not fetched again. Returns {"collected",
    "pending": [(task, arn, state)], "failed", "results", "blocks"}.
    """
    path = Path(manifest_path)
    manifest = load_manifest(path)
    task_problems = _task_problems(manifest, problems, path)
    rpath = Path(results_path)
    done: dict[int, Any] = {}
    if rpath.exists():
        try:
            for item in json.loads(rpath.read_text()).get("results", []):
                done[int(item["problem"]["block"])] = item
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"{rpath}: not a results file written by qcbo collect ({exc})") \
                from None
    pending, failed, new = [], [], 0
    for entry, problem in zip(manifest["blocks"], task_problems):
        index = entry["index"]
        if index in done or not entry.get("task_arn"):
            continue
        arn = entry["task_arn"]
        with aws_errors(f"fetching task {index + 1} ({arn})"):
            task = load_task(arn)
            state = str(task.state()).upper()
            if state in _DEAD:
                failed.append((index + 1, arn, state))
                continue
            if state not in _DONE:
                pending.append((index + 1, arn, state))
                continue
            result = task.result()
        samples = decode_measurements(result.measurements, result.measured_qubits, problem.n)
        done[index] = _score(problem, samples, entry, manifest["device"])
        new += 1
    results = [done[i] for i in sorted(done)]
    blocks = stitch_parents(manifest, problems, task_problems, done)
    _atomic_json(rpath, {"manifest": str(path), "results": results, "blocks": blocks})
    return {"collected": new, "pending": pending, "failed": failed, "results": results,
            "blocks": blocks}


def stitch_parents(manifest: Mapping[str, Any], problems: Sequence[Problem],
                   task_problems: Sequence[Problem],
                   done: Mapping[int, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per block cut into sub-blocks: the collected sub-block answers stitched into the
    fixed classical answer, the full block re-scored.

    Each sub-block was posed around the same classical answer, so answers are stitched
    one at a time, best sub-block improvement first, and one is kept only if the full
    block's energy drops (exact, since the block is re-scored after every stitch).
    Returns [{"block", "n", "k", "sub_blocks", "collected", "kept", "classical_energy",
    "classical_source", "energy", "improvement", "feasible", "x"}].
    """
    from .subblock import stitch

    out = []
    for parent in manifest.get("parents", []):
        b = parent["index"]
        problem = problems[b]
        x = np.asarray(parent["classical"]["x"], dtype=np.int8)
        base = problem.energy(x)
        moves = []
        for t in parent.get("tasks", []):
            item = done.get(t)
            if item is None or not item.get("feasible") or item.get("x") is None:
                continue
            variables = np.asarray(manifest["blocks"][t]["variables"])
            sub = task_problems[t]
            gain = float(item["energy"]) - sub.energy(x[variables])
            moves.append((gain, t, variables, np.asarray(item["x"], dtype=np.int8)))
        best, best_e, kept = x, base, 0
        for gain, t, variables, y in sorted(moves, key=lambda m: (m[0], m[1])):
            candidate = stitch(best, variables, y)
            if not problem.is_feasible(candidate):
                continue
            e = problem.energy(candidate)
            if e < best_e - 1e-12 * max(1.0, abs(best_e)):
                best, best_e, kept = candidate, e, kept + 1
        out.append({"block": b, "n": problem.n, "k": problem.k,
                    "sub_blocks": len(parent.get("tasks", [])), "collected": len(moves),
                    "kept": kept, "classical_energy": base,
                    "classical_source": parent["classical"].get("source"), "energy": best_e,
                    "improvement": base - best_e, "feasible": problem.is_feasible(best),
                    "x": best.tolist()})
    return out


def _score(problem: Problem, samples: np.ndarray, entry: Mapping[str, Any],
           device_arn: str) -> dict[str, Any]:
    """The best feasible sample (or, with none, the most frequent one) as a solve payload."""
    feasible = np.array([problem.is_feasible(s) for s in samples], dtype=bool)
    energies = problem.energies(samples)
    if feasible.any():
        idx = np.flatnonzero(feasible)
        best = samples[idx[int(np.argmin(energies[idx]))]]
    else:
        uniq, counts = np.unique(samples, axis=0, return_counts=True)
        best = uniq[int(np.argmax(counts))]
    prob = float(np.mean(np.all(samples == best, axis=1)))
    info = {"device": device_arn, "task_arn": entry["task_arn"], "p": entry["p"],
            "mixer": entry["mixer"], "angles": entry["angles"], "shots": int(len(samples)),
            "feasible_fraction": float(feasible.mean()), "best_sample_frequency": prob,
            "mean_sample_energy": float(energies.mean()), "qubits": problem.n,
            "two_qubit_gates": entry.get("two_qubit_gates")}
    result = SolveResult.from_solution(problem, best, backend="braket-device",
                                       wall_time_s=0.0, seed=None, samples=samples, info=info)
    payload = result.to_dict()
    payload["problem"] = {"block": entry["index"], "n": problem.n, "k": problem.k,
                          "name": entry.get("name"), "source_block": entry.get("block"),
                          "variables": entry.get("variables")}
    return payload


def aws_credentials_available() -> bool:
    """Whether boto3 finds AWS credentials (it never says what they are, nor do we)."""
    try:
        import boto3
    except ImportError:
        raise BackendUnavailableError("reaching Braket needs boto3 and amazon-braket-sdk; "
                                      "run: pip install amazon-braket-sdk") from None
    with aws_errors("looking up AWS credentials"):
        return boto3.Session().get_credentials() is not None


def require_aws_credentials() -> None:
    """Raise one clear BackendUnavailableError when no AWS credentials are configured.

    Only asks boto3 whether credentials exist; never reads, logs or stores them.
    """
    if not aws_credentials_available():
        raise BackendUnavailableError(
            "no AWS credentials found; configure them (aws configure, AWS_PROFILE or the "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY variables) and a region with Braket")


_AWS_MODULES = ("botocore", "boto3", "braket", "s3transfer", "urllib3", "requests")


def _from_aws(exc: BaseException) -> bool:
    """An exception of, or raised inside, boto3 / botocore / the Braket SDK / HTTP."""
    if any(c.__module__.split(".")[0] in _AWS_MODULES for c in type(exc).__mro__):
        return True
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename if tb is not None else ""
    return any(f"{os.sep}{m}{os.sep}" in filename for m in _AWS_MODULES) or \
        isinstance(exc, (ConnectionError, TimeoutError))


def _describe(exc: BaseException) -> str:
    """One line for an AWS failure, with what to do about it."""
    name = type(exc).__name__
    text = " ".join(str(exc).split())[:300]
    if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
        return (f"no usable AWS credentials ({text}); configure them, or plan offline with "
                "--plan-only")
    if name in ("NoRegionError",):
        return "no AWS region configured; set AWS_DEFAULT_REGION or put the region in the ARN"
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                "ConnectionClosedError", "ProxyConnectionError", "SSLError") \
            or isinstance(exc, (ConnectionError, TimeoutError)):
        return (f"cannot reach AWS ({text}); check the network, or plan offline with "
                "--plan-only")
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping) and isinstance(response.get("Error"), Mapping):
        code = response["Error"].get("Code", name)
        message = " ".join(str(response["Error"].get("Message", "")).split())[:300]
        if code in ("UnrecognizedClientException", "InvalidClientTokenId", "ExpiredToken",
                    "ExpiredTokenException", "InvalidSignatureException", "AccessDenied",
                    "AccessDeniedException", "SignatureDoesNotMatch"):
            return f"AWS rejected the credentials ({code}: {message})"
        if code in ("ResourceNotFoundException", "ValidationException"):
            return f"AWS does not know it ({code}: {message})"
        return f"AWS refused ({code}: {message})"
    return f"{name}: {text}" if text else name


@contextlib.contextmanager
def aws_errors(doing: str) -> Iterator[None]:
    """Turn a boto3 / botocore / Braket SDK / network failure into one
    BackendUnavailableError line ("``doing``: what went wrong; what to do")."""
    try:
        yield
    except QCBOError:
        raise
    except Exception as exc:
        if not _from_aws(exc):
            raise
        raise BackendUnavailableError(f"{doing}: {_describe(exc)}") from exc


def open_aws_device(arn: str) -> Any:
    """``AwsDevice(arn)`` with short timeouts and few retries, so that an unreachable
    endpoint fails in seconds; errors as one line (`aws_errors`)."""
    with aws_errors(f"reading the properties of {arn}"):
        from botocore.config import Config
        from braket.aws import AwsDevice, AwsSession

        config = Config(connect_timeout=5, read_timeout=30,
                        retries={"max_attempts": 2, "mode": "standard"})
        device = AwsDevice(arn, aws_session=AwsSession(config=config))
        device.properties  # noqa: B018 - fetched here, inside the error wrapper
        return device
