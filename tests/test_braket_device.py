"""Braket device path without AWS: capability documents from amazon-braket-schemas, gate
rewrites checked by unitaries, and submit -> manifest -> collect on LocalSimulator."""

import json

import numpy as np
import pytest

pytest.importorskip("braket.circuits")

from braket.device_schema.ionq.ionq_device_capabilities_v1 import IonqDeviceCapabilities  # noqa: E402
from braket.device_schema.iqm.iqm_device_capabilities_v1 import IqmDeviceCapabilities  # noqa: E402
from braket.devices import LocalSimulator  # noqa: E402

from backends.braket_device import (check_circuit, check_shots,  # noqa: E402
                                    decode_measurements, decompose,
                                    device_info, estimate_cost, require_aws_credentials,
                                    to_braket_circuit)
from backends.qaoa import Angles, Gate, QAOAModel, circuit_plan  # noqa: E402
from backends.qaoa_braket import to_little_endian  # noqa: E402
from qcbo import BackendUnavailableError, InputError, UnsupportedProblemError  # noqa: E402
from qcbo.cli import build_parser, main  # noqa: E402
from qcbo.commands import collect as collect_cmd  # noqa: E402
from qcbo.commands import submit as submit_cmd  # noqa: E402
from qcbo.io import write_blockset  # noqa: E402

from .helpers import random_problem  # noqa: E402

IONQ_OPS = ["x", "y", "z", "rx", "ry", "rz", "h", "cnot", "s", "si", "t", "ti", "v", "vi",
            "xx", "yy", "zz", "swap"]
IQM_OPS = ["ccnot", "cnot", "cz", "prx", "rx", "ry", "rz", "h", "x", "xy", "swap", "cphaseshift"]


def _doc(kind, ops, qubits, graph=None):
    name = {"ionq": "braket.device_schema.ionq.ionq_device_capabilities",
            "iqm": "braket.device_schema.iqm.iqm_device_capabilities"}[kind]
    doc = {
        "braketSchemaHeader": {"name": name, "version": "1"},
        "service": {"braketSchemaHeader": {"name": "braket.device_schema.device_service_properties",
                                           "version": "1"},
                    "executionWindows": [{"executionDay": "Everyday", "windowStartHour": "00:00",
                                          "windowEndHour": "23:59"}],
                    "shotsRange": [1, 10000]},
        "action": {"braket.ir.openqasm.program": {
            "actionType": "braket.ir.openqasm.program", "version": ["1"],
            "supportedOperations": ops, "supportedResultTypes": []}},
        "paradigm": {"braketSchemaHeader": {
            "name": "braket.device_schema.gate_model_qpu_paradigm_properties", "version": "1"},
            "qubitCount": qubits, "nativeGateSet": [],
            "connectivity": {"fullyConnected": graph is None, "connectivityGraph": graph or {}}},
        "deviceParameters": {},
    }
    cls = IonqDeviceCapabilities if kind == "ionq" else IqmDeviceCapabilities
    return cls.parse_raw_schema(json.dumps(doc))


def _unitary(gates, n):
    circ = to_braket_circuit([Gate("i", (q,)) for q in range(n)] + list(gates), n)
    return circ.to_unitary()


def _same_up_to_phase(a, b):
    k = np.unravel_index(np.argmax(np.abs(a)), a.shape)
    phase = b[k] / a[k]
    return abs(abs(phase) - 1) < 1e-9 and np.allclose(a * phase, b, atol=1e-9)


@pytest.mark.parametrize("gate,ops", [
    (Gate("xy", (0, 1), 0.83), ["xx", "yy"]),
    (Gate("xy", (1, 0), -1.3), ["cnot", "rz", "h", "rx"]),
    (Gate("xx", (0, 1), 0.4), ["h", "zz"]),
    (Gate("yy", (0, 1), 0.4), ["rx", "zz"]),
    (Gate("zz", (0, 1), 0.7), ["cnot", "rz"]),
    (Gate("cnot", (1, 0)), ["cz", "h"]),
    (Gate("ccnot", (0, 1, 2)), ["cnot", "rz", "h"]),
    (Gate("ccnot", (2, 0, 1)), ["cz", "rz", "rx"]),
    (Gate("ry", (0,), 0.9), ["rz", "rx"]),
    (Gate("h", (0,)), ["rz", "rx"]),
    (Gate("x", (0,)), ["rx"]),
    (Gate("xy", (0, 1), 0.83), ["cnot", "rx", "rz"]),
    (Gate("xy", (1, 0), -1.3), ["cz", "rx", "rz", "h"]),
    (Gate("xx", (0, 1), 0.4), ["ms"]),
    (Gate("zz", (1, 0), 0.7), ["ms", "h"]),
    (Gate("cz", (0, 1)), ["zz", "rz"]),
    (Gate("cz", (1, 0)), ["iswap", "rz", "ry", "rx"]),
    (Gate("cnot", (0, 1)), ["iswap", "rz", "ry", "rx", "h"]),
    (Gate("xy", (0, 1), 0.6), ["iswap", "rz", "ry", "rx", "h"]),
])
def test_rewrites_are_exact_up_to_global_phase(gate, ops):
    n = max(gate.qubits) + 1
    out, used = decompose([gate], ops)
    assert all(g.name in ops for g in out) and gate.name in used
    assert _same_up_to_phase(_unitary([gate], n), _unitary(out, n))


@pytest.mark.parametrize("ops,native,count", [
    (["ms"], "ms", 2), (["zz"], "zz", 2), (["cz"], "cz", 2), (["iswap"], "iswap", 4)])
def test_fewest_two_qubit_rewrites(ops, native, count):
    one = ["rx", "ry", "rz", "h"]
    gate = Gate("xy", (0, 1), 0.7)
    out, _ = decompose([gate], ops + one, max_depth=8, fewest_two_qubit=True)
    assert sum(1 for g in out if len(g.qubits) == 2) == count
    assert {g.name for g in out if len(g.qubits) == 2} == {native}
    assert _same_up_to_phase(_unitary([gate], 2), _unitary(out, 2))


def test_undecomposable_gate_is_refused():
    with pytest.raises(UnsupportedProblemError, match="xy"):
        decompose([Gate("xy", (0, 1), 0.3)], ["rz", "h"])


def test_capability_documents_and_checks():
    ionq = device_info(_doc("ionq", IONQ_OPS, 11))
    assert ionq.qubit_count == 11 and ionq.fully_connected and "xy" not in ionq.operations
    problem = random_problem(6, 3, seed=0)
    model = QAOAModel(problem, "xy-ring")
    angles = Angles((0.3 / model.scale,), (0.6,))
    gates = circuit_plan(model, angles)
    check = check_circuit(gates, 6, ionq)
    assert {"xy", "ccnot"} <= set(check.rewrites)
    assert all(g.name in IONQ_OPS for g in check.gates)
    # the rewritten circuit gives the same outcome distribution on the simulator
    sim = LocalSimulator("braket_sv")
    probs = []
    for gs in (gates, check.gates):
        circ = to_braket_circuit(gs, 6)
        circ.probability()
        probs.append(to_little_endian(sim.run(circ, shots=0).result().values[0], 6))
    assert np.max(np.abs(probs[0] - probs[1])) < 1e-8

    iqm = device_info(_doc("iqm", IQM_OPS, 20, {"0": ["1"], "1": ["2"], "2": ["3"], "3": ["4"],
                                                 "4": ["5"]}))
    check = check_circuit(gates, 6, iqm)
    assert "xy" not in check.rewrites and check.non_adjacent_pairs > 0
    assert any("route" in note for note in check.notes)
    with pytest.raises(UnsupportedProblemError, match="12 qubits"):
        check_circuit(circuit_plan(QAOAModel(random_problem(12, 6, seed=1)), angles), 12, ionq)


def test_cost_estimate_uses_the_price_table():
    cost = estimate_cost("arn:aws:braket:us-east-1::device/qpu/ionq/Aria-1", 3, 1000)
    assert cost["known"] and cost["total"] == pytest.approx(3 * (0.30 + 1000 * 0.03))
    assert not estimate_cost("arn:aws:braket:::device/qpu/nobody/thing", 1, 10)["known"]


def test_decode_measurements_handles_qubit_order():
    m = np.array([[1, 0, 1], [0, 1, 1]])
    out = decode_measurements(m, [3, 0, 2], 5)
    assert out.tolist() == [[0, 0, 1, 1, 0], [1, 0, 1, 0, 0]]


class RecordingDevice:
    """LocalSimulator with a task registry (the AWS service keeps tasks for us) and an
    optional failure on the n-th run, to simulate an interrupted submission."""

    def __init__(self, fail_on=None):
        self.inner = LocalSimulator("braket_sv")
        self.tasks = {}
        self.runs = 0
        self.fail_on = fail_on

    @property
    def properties(self):
        return self.inner.properties

    def run(self, circuit, shots, **kwargs):
        self.runs += 1
        if self.fail_on == self.runs:
            raise KeyboardInterrupt
        task = _ArnTask(self.inner.run(circuit, shots=shots, **kwargs))
        self.tasks[task.id] = task
        return task


class _ArnTask:
    """A local task under the ARN a real Braket task would have."""

    def __init__(self, task):
        self.inner = task
        self.id = f"arn:aws:braket:us-east-1:123456789012:quantum-task/{task.id}"

    def state(self):
        return self.inner.state()

    def result(self):
        return self.inner.result()


class QueuedTask:
    def state(self):
        return "QUEUED"


ARN = "arn:aws:braket:us-east-1::device/qpu/ionq/Aria-1"


def _problems():
    return [random_problem(5, 2, seed=1), random_problem(6, 3, seed=2), random_problem(4, None, seed=3)]


def _submit(tmp_path, device, *extra):
    blocks = tmp_path / "blocks.npz"
    if not blocks.exists():
        write_blockset(blocks, _problems())
    manifest = tmp_path / "m.json"
    args = build_parser().parse_args(["submit", str(blocks), "--device", ARN, "--shots", "200",
                                      "--p", "1", "--manifest", str(manifest), *extra])
    return submit_cmd.run(args, device=device), manifest


def test_device_info_reads_the_shots_range():
    info = device_info(_doc("ionq", IONQ_OPS, 4))
    assert info.shots_range == (1, 10000)
    for shots in (1, 10000):  # both ends are accepted
        check_shots(shots, info, "Aria 1")
    for shots in (0, 10001):
        with pytest.raises(InputError, match="outside the 1-10000 shots per task that Aria 1"):
            check_shots(shots, info, "Aria 1")
    doc = json.loads(_doc("ionq", IONQ_OPS, 4).json())
    del doc["service"]["shotsRange"]
    assert device_info(doc).shots_range is None


class NarrowShotsDevice(RecordingDevice):
    """A device that accepts 1-100 shots per task."""

    @property
    def properties(self):
        props = self.inner.properties.copy(deep=True)
        props.service.shotsRange = (1, 100)
        return props


def test_submit_refuses_shots_outside_the_device_range(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "NOT-A-REAL-SECRET-1234")
    device = NarrowShotsDevice()
    with pytest.raises(InputError, match=r"--shots 200 is outside the 1-100 shots per task"):
        _submit(tmp_path, device, "--yes")
    assert device.runs == 0 and not (tmp_path / "m.json").exists()


def test_submit_manifest_collect_roundtrip(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "NOT-A-REAL-SECRET-1234")
    device = RecordingDevice()
    rc, manifest = _submit(tmp_path, device)
    out = capsys.readouterr().out
    assert rc == 0 and device.runs == 0 and not manifest.exists()
    assert "cost estimate" in out and "$" in out

    rc, manifest = _submit(tmp_path, device, "--yes")
    assert rc == 0 and device.runs == 3
    data = json.loads(manifest.read_text())
    assert [b["status"] for b in data["blocks"]] == ["submitted"] * 3
    assert "NOT-A-REAL-SECRET" not in manifest.read_text()

    # submitting again changes nothing
    rc, _ = _submit(tmp_path, device, "--yes")
    assert device.runs == 3

    loads = []

    def load_task(arn):
        loads.append(arn)
        return device.tasks[arn]

    args = build_parser().parse_args(["collect", str(manifest)])
    assert collect_cmd.run(args, load_task=load_task) == 0
    results_path = collect_cmd.default_results(str(manifest))
    first = json.loads(results_path.read_text())
    assert len(first["results"]) == 3 and len(loads) == 3
    for item, problem in zip(first["results"], _problems()):
        x = np.array(item["x"])
        assert item["energy"] == pytest.approx(problem.energy(x))
        assert item["feasible"] == problem.is_feasible(x)
        assert set(item) >= {"backend", "status", "energy", "feasible", "x", "info", "seed"}
        assert item["info"]["shots"] == 200
    # XY blocks: the noiseless simulator keeps every shot feasible
    assert first["results"][0]["info"]["feasible_fraction"] == 1.0
    # collecting twice fetches nothing and writes the same results
    assert collect_cmd.run(args, load_task=load_task) == 0
    assert len(loads) == 3 and json.loads(results_path.read_text()) == first
    assert "NOT-A-REAL-SECRET" not in results_path.read_text()


def test_interrupted_submission_never_resubmits(tmp_path):
    device = RecordingDevice(fail_on=2)
    with pytest.raises(KeyboardInterrupt):
        _submit(tmp_path, device, "--yes")
    manifest = tmp_path / "m.json"
    data = json.loads(manifest.read_text())
    first_arn = data["blocks"][0]["task_arn"]
    assert first_arn and not data["blocks"][1]["task_arn"]
    device.fail_on = None
    _submit(tmp_path, device, "--yes")
    data = json.loads(manifest.read_text())
    assert device.runs == 4  # 1 done + 1 interrupted + 2 new; block 1 not submitted again
    assert data["blocks"][0]["task_arn"] == first_arn
    assert all(b["task_arn"] for b in data["blocks"])


def test_collect_lists_queued_tasks(tmp_path, capsys):
    device = RecordingDevice()
    _, manifest = _submit(tmp_path, device, "--yes")
    queued = json.loads(manifest.read_text())["blocks"][1]["task_arn"]
    load = lambda arn: QueuedTask() if arn == queued else device.tasks[arn]  # noqa: E731
    args = build_parser().parse_args(["collect", str(manifest)])
    capsys.readouterr()
    assert collect_cmd.run(args, load_task=load) == 0
    out = capsys.readouterr().out
    assert f"block 2: QUEUED {queued}" in out
    results = json.loads(collect_cmd.default_results(str(manifest)).read_text())["results"]
    assert [r["problem"]["block"] for r in results] == [0, 2]
    # once it finishes, a second collect picks it up
    assert collect_cmd.run(args, load_task=lambda arn: device.tasks[arn]) == 0
    results = json.loads(collect_cmd.default_results(str(manifest)).read_text())["results"]
    assert [r["problem"]["block"] for r in results] == [0, 1, 2]


def test_missing_aws_configuration_is_one_clear_line(tmp_path, monkeypatch, capsys):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(BackendUnavailableError, match="no AWS credentials"):
        require_aws_credentials()
    path = tmp_path / "one.npz"
    write_blockset(path, [random_problem(4, 2, seed=0)])
    # planning falls back to the shipped snapshot and says so; submitting needs credentials
    rc = main(["submit", str(path), "--device", ARN, "--shots", "10"])
    captured = capsys.readouterr()
    assert rc == 0 and "snapshot" in captured.err and "cost estimate" in captured.out
    rc = main(["submit", str(path), "--device", ARN, "--shots", "10", "--yes"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no AWS credentials" in err[0]
    # a device without a snapshot cannot even be planned without credentials
    rc = main(["submit", str(path), "--device", "arn:aws:braket:::device/qpu/acme/Q1",
               "--shots", "10"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no offline snapshot" in err[0]


def test_bad_angles_file_and_manifest(tmp_path):
    bad = tmp_path / "angles.json"
    bad.write_text('{"gamma": [0.1]}')
    with pytest.raises(InputError, match="angles"):
        _submit(tmp_path, RecordingDevice(), "--angles", str(bad), "--yes")
    other = tmp_path / "x.json"
    other.write_text("{}")
    with pytest.raises(InputError, match="manifest"):
        collect_cmd.run(build_parser().parse_args(["collect", str(other)]),
                        load_task=lambda arn: None)
