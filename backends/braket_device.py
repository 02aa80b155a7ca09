"""Running QAOA blocks on Amazon Braket devices: capability checks, gate decomposition,
cost estimates, and manifest-based submit / collect that survive interruption.

Everything takes the device as an object with Braket's device interface (``properties``,
``run(circuit, shots=...)``) and tasks through a ``load_task(arn)`` callable, so tests run
the whole path on ``LocalSimulator``; the CLI passes ``AwsDevice`` / ``AwsQuantumTask``.

Manifest (JSON, rewritten atomically after every task): ``{"format": "qcbo.braket-manifest",
"version": 1, "device", "shots", "source": {"path", "k", "instance"}, "s3", "blocks": [{"index",
"name", "n", "k", "fingerprint", "mixer", "p", "angles", "task_arn", "status", ...}]}``.
A block with a ``task_arn`` is never submitted again. Credentials never enter it, nor logs.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from qcbo.errors import BackendUnavailableError, InputError, UnsupportedProblemError
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
    "decompose",
    "check_circuit",
    "to_braket_circuit",
    "estimate_cost",
    "plan_blocks",
    "submit_blocks",
    "collect_results",
    "decode_measurements",
    "fingerprint",
    "require_aws_credentials",
]

logger = logging.getLogger(__name__)

MANIFEST_FORMAT = "qcbo.braket-manifest"
MANIFEST_VERSION = 1
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
    return DeviceInfo(int(qubits) if qubits is not None else None, ops,
                      bool(conn.get("fullyConnected", False)), frozenset(edges),
                      tuple(paradigm.get("nativeGateSet", []) or ()))


# ------------------------------------------------------------------ decomposition
def _rules(g: Gate) -> list[tuple[str, list[Gate]]]:
    """Alternative rewrites of one gate (equal up to a global phase), tried in order.

    Conventions as in backends.qaoa, plus ``xx/yy(t) = exp(-i t/2 PP)`` (Braket's) and
    ``cz``. Each alternative is labelled by the gate it gets rid of.
    """
    q, t = g.qubits, g.angle
    half = math.pi / 2
    if g.name == "xy":  # exp(-i t/4 XX) exp(-i t/4 YY): XX and YY commute
        return [("xx+yy", [Gate("xx", q, t / 2), Gate("yy", q, t / 2)])]
    if g.name == "xx":
        a, b = q
        return [("h-zz", [Gate("h", (a,)), Gate("h", (b,)), Gate("zz", q, t),
                          Gate("h", (a,)), Gate("h", (b,))])]
    if g.name == "yy":  # rx(pi/2) maps Y to Z under conjugation: Y = rx(-pi/2) Z rx(pi/2)
        a, b = q
        return [("rx-zz", [Gate("rx", (a,), half), Gate("rx", (b,), half), Gate("zz", q, t),
                           Gate("rx", (a,), -half), Gate("rx", (b,), -half)])]
    if g.name == "zz":
        return [("cnot-rz", [Gate("cnot", q), Gate("rz", (q[1],), t), Gate("cnot", q)])]
    if g.name == "cnot":
        c, tg = q
        return [("h-cz", [Gate("h", (tg,)), Gate("cz", q), Gate("h", (tg,))])]
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


def decompose(gates: Sequence[Gate], supported: Iterable[str],
              max_depth: int = 6) -> tuple[list[Gate], dict[str, str]]:
    """Rewrite ``gates`` into ``supported`` operation names (Braket's, lower case).

    Returns (gates, {gate name: rewrite used}); raises UnsupportedProblemError naming the
    gate that cannot be expressed.
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
        for label, seq in _rules(g):
            try:
                out = [h for s in seq for h in expand(s, depth + 1)]
            except UnsupportedProblemError:
                continue
            used.setdefault(g.name, label)
            return out
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


def to_braket_circuit(gates: Sequence[Gate], n: int, *, measure_all: bool = False) -> Any:
    """A braket Circuit of core gates (``xy`` flips sign: Braket's xy(t) = exp(+i t/4 (XX+YY)))."""
    from braket.circuits import Circuit

    circ = Circuit()
    for g in gates:
        if g.name == "xy":
            circ.xy(g.qubits[0], g.qubits[1], -g.angle)
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
    for position, entry in enumerate(blocks):
        where = f"block {position + 1}"
        if not isinstance(entry, dict):
            return f"{where} is not a JSON object"
        if entry.get("index") != position or isinstance(entry.get("index"), bool):
            return f"{where} has index {entry.get('index')!r}, expected {position}"
        if not isinstance(entry.get("fingerprint"), str):
            return f"{where} lacks its problem fingerprint"
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
    if data.get("version") != MANIFEST_VERSION:
        raise InputError(f"{path}: manifest version {data.get('version')} is not supported "
                         f"(this qcbo reads version {MANIFEST_VERSION})")
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
) -> list[dict[str, Any]]:
    """Per problem: train (or take) angles, build and check the circuit.

    ``angles``: None (train each block on the exact state vector), one {"gamma", "beta"}
    for all blocks, or a list with one per block. Each entry gets "gates" (the device
    circuit), "check" (DeviceCheck) and the manifest fields.
    """
    if isinstance(angles, list) and len(angles) != len(problems):
        raise InputError(f"angles: {len(angles)} angle sets for {len(problems)} problems")
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
    return plans


def format_plan(plans: Sequence[Mapping[str, Any]], device_arn: str, shots: int) -> str:
    """The plan table and cost estimate as text."""
    lines = [f"device {device_arn}, {shots} shots per task",
             f"{'block':>5} {'name':<20} {'n':>3} {'k':>4} {'mixer':<12} {'p':>2} "
             f"{'gates':>6} {'2q':>5}  status"]
    todo = 0
    for b in plans:
        if not b.get("task_arn"):
            todo += 1
        lines.append(f"{b['index'] + 1:>5} {str(b.get('name') or '-')[:20]:<20} {b['n']:>3} "
                     f"{str(b['k']):>4} {b['mixer']:<12} {b['p']:>2} {b['gate_count']:>6} "
                     f"{b['two_qubit_gates']:>5}  {b.get('status', 'planned')}")
        for note in b.get("notes", []):
            lines.append(f"{'':>7}note: {note}")
    cost = estimate_cost(device_arn, todo, shots)
    if cost["known"]:
        lines.append(f"cost estimate for {todo} new task(s): {todo} x (${cost['per_task']:.2f} "
                     f"per task + {shots} x ${cost['per_shot']:.5f} per shot) = "
                     f"${cost['total']:.2f} (prices as of {cost['priced_on']})")
    else:
        lines.append(f"cost estimate: no price known for this device (table dated "
                     f"{cost['priced_on']}); check https://aws.amazon.com/braket/pricing/")
    return "\n".join(lines)


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
                "blocks": [{k: v for k, v in b.items() if k != "gates"} for b in plans]}
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
    s3_folder = _parse_s3(s3) if s3 else None
    for plan, entry in zip(plans, manifest["blocks"]):
        if entry.get("task_arn"):
            continue
        circuit = to_braket_circuit(plan["gates"], plan["n"])
        kwargs = {"s3_destination_folder": s3_folder} if s3_folder else {}
        task = device.run(circuit, shots=int(shots), **kwargs)
        entry["task_arn"] = str(task.id)
        entry["status"] = "submitted"
        entry["submitted"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        _atomic_json(path, manifest)
        logger.info("block %d submitted as %s", entry["index"] + 1, entry["task_arn"])
        if progress:
            progress(1)
    return manifest


def _parse_s3(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or len(uri) <= 5:
        raise InputError(f"--s3 must look like s3://bucket/prefix, got {uri!r}")
    bucket, _, prefix = uri[5:].partition("/")
    if not bucket:
        raise InputError(f"--s3 must name a bucket: {uri!r}")
    return bucket, prefix.rstrip("/") or "qcbo"


_DONE = {"COMPLETED"}
_DEAD = {"FAILED", "CANCELLED", "CANCELLING"}


def collect_results(
    manifest_path: str | os.PathLike,
    problems: Sequence[Problem],
    load_task: Callable[[str], Any],
    results_path: str | os.PathLike,
) -> dict[str, Any]:
    """Fetch finished tasks, decode and score them, write the results file; idempotent.

    ``results_path`` holds {"manifest", "results": [one `qcbo solve --json` object per
    finished block]}; blocks already there are not fetched again. Returns {"collected",
    "pending": [(block, arn, state)], "failed", "results"}.
    """
    path = Path(manifest_path)
    manifest = load_manifest(path)
    if len(problems) != len(manifest["blocks"]):
        raise InputError(f"{path}: {len(manifest['blocks'])} blocks but the source has "
                         f"{len(problems)} problems")
    rpath = Path(results_path)
    done: dict[int, Any] = {}
    if rpath.exists():
        try:
            for item in json.loads(rpath.read_text()).get("results", []):
                done[int(item["problem"]["block"])] = item
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{rpath}: not a results file written by qcbo collect ({exc})") \
                from None
    pending, failed, new = [], [], 0
    for entry, problem in zip(manifest["blocks"], problems):
        index = entry["index"]
        if fingerprint(problem) != entry["fingerprint"]:
            raise InputError(f"{path}: block {index + 1} does not match the source problem")
        if index in done or not entry.get("task_arn"):
            continue
        task = load_task(entry["task_arn"])
        state = str(task.state()).upper()
        if state in _DEAD:
            failed.append((index + 1, entry["task_arn"], state))
            continue
        if state not in _DONE:
            pending.append((index + 1, entry["task_arn"], state))
            continue
        result = task.result()
        samples = decode_measurements(result.measurements, result.measured_qubits, problem.n)
        done[index] = _score(problem, samples, entry, manifest["device"])
        new += 1
    results = [done[i] for i in sorted(done)]
    _atomic_json(rpath, {"manifest": str(path), "results": results})
    return {"collected": new, "pending": pending, "failed": failed, "results": results}


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
                          "name": entry.get("name")}
    return payload


def require_aws_credentials() -> None:
    """Raise one clear BackendUnavailableError when no AWS credentials are configured.

    Only asks boto3 whether credentials exist; never reads, logs or stores them.
    """
    try:
        import boto3
    except ImportError:
        raise BackendUnavailableError("submitting to Braket needs boto3 and amazon-braket-sdk; "
                                      "run: pip install amazon-braket-sdk") from None
    if boto3.Session().get_credentials() is None:
        raise BackendUnavailableError(
            "no AWS credentials found; configure them (aws configure, AWS_PROFILE or the "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY variables) and a region with Braket")
