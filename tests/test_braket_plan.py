"""Offline Braket planning: device snapshots, sub-blocks, native-gate estimates and one-line
failures, all without AWS (boto3, the Braket AWS classes and sockets raise if touched)."""

import json
import socket

import numpy as np
import pytest

pytest.importorskip("braket.circuits")
pytest.importorskip("numba")

from backends.braket_device import DeviceInfo, collect_results, load_manifest  # noqa: E402
from backends.braket_plan import (DEFAULT_SUB_BLOCK_CAP, _layout, circuit_shape,  # noqa: E402
                                  format_submission_plan, native_estimate, plan_submission,
                                  snapshot_target, snapshots)
from backends.qaoa import Angles, Gate, QAOAModel, circuit_plan  # noqa: E402
from backends.subblock import restrict  # noqa: E402
from qcbo import Problem  # noqa: E402
from qcbo.cli import main  # noqa: E402
from qcbo.commands import collect as collect_cmd  # noqa: E402
from qcbo.errors import InputError, UnsupportedProblemError  # noqa: E402
from qcbo.io import write_blockset  # noqa: E402

from .helpers import random_problem  # noqa: E402

ARIA = "arn:aws:braket:us-east-1::device/qpu/ionq/Aria-1"
GARNET = "arn:aws:braket:eu-north-1::device/qpu/iqm/Garnet"
ANKAA = "arn:aws:braket:us-west-1::device/qpu/rigetti/Ankaa-3"
FORTE = "arn:aws:braket:us-east-1::device/qpu/ionq/Forte-1"


class _Touched(AssertionError):
    pass


@pytest.fixture
def offline(monkeypatch):
    """Any AWS client, session or socket connection fails the test."""
    import boto3
    import braket.aws

    def refuse(*args, **kwargs):
        raise _Touched("the network or AWS was touched")

    monkeypatch.setattr(boto3, "Session", refuse)
    monkeypatch.setattr(boto3, "client", refuse)
    monkeypatch.setattr(braket.aws, "AwsSession", refuse)
    monkeypatch.setattr(braket.aws, "AwsDevice", refuse)
    monkeypatch.setattr(braket.aws, "AwsQuantumTask", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _block(n, k, seed, answer=False):
    """A block with a sparse-ish Q; ``answer``: carry a feasible answer like prune's export."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n)) * (rng.random((n, n)) < 0.4)
    meta = {"name": f"b{n}"}
    if answer:
        x = np.zeros(n, dtype=int)
        x[rng.choice(n, k, replace=False)] = 1
        meta["answer"] = x.tolist()
    return Problem((a + a.T) / 2, 0.5, k, metadata=meta)


def _one_line(capsys, argv):
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert rc == 2, captured
    assert len(err) == 1 and err[0].startswith("qcbo: error: "), err
    assert "Traceback" not in captured.err
    return err[0]


def test_snapshots_are_dated_and_complete():
    targets = {t.arn: t for t in snapshots()}
    assert {ARIA, GARNET, ANKAA, FORTE} <= set(targets)
    aria, garnet = targets[ARIA], targets[GARNET]
    assert aria.info.qubit_count == 25 and aria.info.fully_connected
    assert "ms" in aria.info.native_gates
    assert garnet.info.qubit_count == 20 and not garnet.info.fully_connected
    nodes = {q for e in garnet.info.edges for q in e}
    assert len(nodes) == 20 and len(garnet.info.edges) == 30
    for t in targets.values():
        assert t.source.startswith("snapshot of 20") and t.price.per_shot > 0
    # the region is not part of the match; the README's region-less ARN finds the snapshot
    assert snapshot_target("arn:aws:braket:::device/qpu/ionq/Aria-1").arn == ARIA
    assert snapshot_target("arn:aws:braket:::device/qpu/acme/Q1") is None
    with pytest.raises(InputError, match="not a Braket device ARN"):
        snapshot_target("ionq/Aria-1")


@pytest.mark.parametrize("k,mixer", [(3, "xy-ring"), (3, "xy-complete"), (None, "x")])
def test_circuit_shape_is_the_model_circuit(k, mixer):
    problem = random_problem(7, k, seed=4)
    gates, used = circuit_shape(problem, mixer, p=2)
    model = QAOAModel(problem, mixer)
    expected = circuit_plan(model, Angles((0.1, 0.1), (0.1, 0.1)))
    assert used == model.mixer
    assert [(g.name, g.qubits) for g in gates] == [(g.name, g.qubits) for g in expected]


def test_routing_on_a_line_counts_swaps():
    one = ("prx",)
    line = DeviceInfo(4, frozenset({"cz", "prx"}), False, frozenset({(0, 1), (1, 2), (2, 3)}),
                      ("prx", "cz"))
    full = DeviceInfo(4, frozenset({"cz", "prx"}), True, frozenset(), one + ("cz",))
    place = _layout(4, line.edges)  # logical i sits on physical place[i]
    a, b = place.index(0), place.index(3)  # the logical qubits at the two ends of the line
    gates = [Gate("zz", (a, b), 0.3)]
    routed, direct = native_estimate(gates, 4, line), native_estimate(gates, 4, full)
    assert direct.swaps == 0 and direct.two_qubit == 2 and direct.native == "cz"
    assert routed.swaps == 2 and routed.two_qubit == 2 + 3 * 2
    assert routed.depth > direct.depth
    small = DeviceInfo(6, frozenset({"cz"}), False, frozenset({(0, 1), (2, 3)}), ("cz",))
    with pytest.raises(UnsupportedProblemError, match="connected"):
        native_estimate(gates, 4, small)


def test_plan_cuts_blocks_and_checks_every_device():
    problems = [_block(8, 4, 0), _block(64, 32, 1), _block(256, 128, 2, answer=True)]
    for arn in (ARIA, GARNET, ANKAA, FORTE):
        target = snapshot_target(arn)
        plan = plan_submission(problems, target, shots=100, p=1, classical_time=0.2)
        q = min(target.info.qubit_count, DEFAULT_SUB_BLOCK_CAP)
        assert [len(b.tasks) for b in plan.blocks] == [1, -(-64 // q), -(-256 // q)]
        assert not plan.blocks[0].cut and plan.blocks[1].classical_source == "sa"
        assert plan.blocks[2].classical_source == "block answer"
        for block in plan.blocks[1:]:
            covered = np.concatenate([t.variables for t in block.tasks])
            assert sorted(covered.tolist()) == list(range(block.problem.n))
            for task in block.tasks:
                assert task.problem.n <= q
                assert task.problem.k == int(block.classical[task.variables].sum())
                assert task.estimate.depth > 0 and task.estimate.two_qubit > 0
        assert plan.cost() == pytest.approx(len(plan.tasks) * (target.price.per_task
                                                               + 100 * target.price.per_shot))
        if not target.info.fully_connected:
            assert sum(t.estimate.swaps for t in plan.tasks) > 0


def test_sizes_are_refused_before_any_work():
    aria = snapshot_target(ARIA)
    big = [_block(30, 15, 0)]
    with pytest.raises(UnsupportedProblemError, match="--sub-block 20"):
        plan_submission(big, aria, shots=10, sub_block=0)
    with pytest.raises(InputError, match="exceeds the 25 qubits"):
        plan_submission(big, aria, shots=10, sub_block=26)
    with pytest.raises(InputError, match="shots"):
        plan_submission(big, aria, shots=0)


def test_plan_only_prints_everything_offline(tmp_path, capsys, offline, monkeypatch):
    path = tmp_path / "blocks.npz"
    write_blockset(path, [_block(64, 32, 1, answer=True), _block(300, 150, 2, answer=True),
                          _block(1024, 512, 3, answer=True)])
    monkeypatch.chdir(tmp_path)
    rc = main(["submit", str(path), "--device", ARIA, "--shots", "100", "--plan-only"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    out = captured.out
    assert "IonQ Aria 1" in out and "snapshot of" in out
    assert "shot range not known offline (checked on submission)" in out
    assert "3 blocks -> 71 tasks" in out  # 4 + 15 + 52 sub-blocks of 20
    assert "two-qubit ms gates after decomposition" in out and "depth" in out
    assert "71 x ($0.30 per task + 100 x $0.03000 per shot) = $234.30" in out
    rows = [line.split() for line in out.splitlines()
            if line.split()[:1] in (["1"], ["2"], ["3"]) and "->" not in line]
    assert [r[2] for r in rows] == ["64", "300", "1024"]
    assert [r[4] for r in rows] == ["4", "15", "52"]
    assert "nothing trained or submitted" in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocks.npz"]  # no manifest written


def test_impossible_plans_are_one_line(tmp_path, capsys, offline):
    path = tmp_path / "blocks.npz"
    write_blockset(path, [_block(30, 15, 0, answer=True)])
    base = ["submit", path, "--shots", "10", "--plan-only", "--device"]
    assert "--sub-block 20" in _one_line(capsys, base + [ARIA, "--sub-block", "0"])
    assert "exceeds the 25 qubits" in _one_line(capsys, base + [ARIA, "--sub-block", "40"])
    assert "not a Braket device ARN" in _one_line(capsys, base + ["arn:aws:braket:nope"])
    unknown = "arn:aws:braket:::device/qpu/acme/Q1"
    assert "no offline snapshot" in _one_line(capsys, base + [unknown])
    # refused up front even where the plan would not need them
    assert "--classical-time must be a finite" in _one_line(
        capsys, base + [ARIA, "--classical-time", "inf"])
    assert "unknown backend" in _one_line(capsys, base + [ARIA, "--classical", "nope"])
    assert "--s3 must look like s3://" in _one_line(capsys, base + [ARIA, "--s3", "bucket"])
    with pytest.raises(SystemExit) as exc:  # argparse: usage line, then the error
        main(["submit", str(path), "--shots", "0", "--plan-only", "--device", ARIA])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and "--shots: 0 must be >= 1" in err[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocks.npz"]


@pytest.fixture
def dummy_credentials(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIADUMMYDUMMYDUMMY0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "dummy-secret-not-real")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))


def _raising(exc):
    def fail(*args, **kwargs):
        raise exc
    return fail


def test_dummy_credentials_offline_are_one_line(tmp_path, capsys, monkeypatch,
                                                dummy_credentials):
    import braket.aws
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    monkeypatch.setattr(socket.socket, "connect", _raising(_Touched("socket")))
    path = tmp_path / "blocks.npz"
    write_blockset(path, [random_problem(5, 2, seed=0)])
    monkeypatch.setattr(braket.aws, "AwsSession", lambda **kw: None)
    monkeypatch.setattr(braket.aws, "AwsDevice", _raising(
        EndpointConnectionError(endpoint_url="https://braket.us-east-1.amazonaws.com/device")))
    line = _one_line(capsys, ["submit", path, "--device", ARIA, "--shots", "10"])
    assert "cannot reach AWS" in line and "--plan-only" in line
    denied = ClientError({"Error": {"Code": "UnrecognizedClientException",
                                    "Message": "The security token included in the request "
                                               "is invalid."}}, "GetDevice")
    monkeypatch.setattr(braket.aws, "AwsDevice", _raising(denied))
    assert "rejected the credentials" in _one_line(
        capsys, ["submit", path, "--device", ARIA, "--shots", "10", "--yes"])
    assert not list(tmp_path.glob("*.json"))

    # collect: a manifest with a task, the task lookup fails in the three ways
    manifest = tmp_path / "m.json"
    problem = random_problem(5, 2, seed=0)
    from backends.braket_device import fingerprint
    arn = "arn:aws:braket:us-east-1:123456789012:quantum-task/abc-123"
    manifest.write_text(json.dumps({
        "format": "qcbo.braket-manifest", "version": 2, "device": ARIA, "shots": 10,
        "source": {"path": str(path), "k": None, "instance": None},
        "blocks": [{"index": 0, "block": 0, "variables": None, "fingerprint": fingerprint(problem),
                    "task_arn": arn, "p": 1, "mixer": "xy-ring",
                    "angles": {"gamma": [0.1], "beta": [0.1]}}], "parents": []}))
    for exc, words in ((NoCredentialsError(), "no usable AWS credentials"), (denied, "rejected"),
                       (EndpointConnectionError(endpoint_url="https://x"), "cannot reach AWS")):
        monkeypatch.setattr(braket.aws, "AwsQuantumTask", _raising(exc))
        assert words in _one_line(capsys, ["collect", manifest])
    assert not (tmp_path / "m.results.json").exists()


class _Result:
    def __init__(self, bits):
        self.measurements = np.asarray(bits)
        self.measured_qubits = list(range(self.measurements.shape[1]))


class _Task:
    def __init__(self, bits):
        self.bits = bits

    def state(self):
        return "COMPLETED"

    def result(self):
        return _Result(self.bits)


def _brute(problem):
    best, best_e = None, np.inf
    for i in range(2 ** problem.n):
        y = (i >> np.arange(problem.n)) & 1
        if problem.is_feasible(y) and problem.energy(y) < best_e:
            best, best_e = y, problem.energy(y)
    return best


def test_sub_block_manifest_and_collect_stitch(tmp_path, capsys, monkeypatch):
    """Submit with --sub-block 4 to a local device, then collect fake results that hold each
    sub-block's optimum: the block is re-scored and improves on the classical answer."""
    from .test_braket_device import RecordingDevice

    block = _block(14, 6, 5)
    x0 = np.zeros(14, dtype=int)
    x0[:6] = 1  # a poor classical answer, carried by the block
    block = block.replace(metadata={"name": "b14", "answer": x0.tolist()})
    path = tmp_path / "blocks.npz"
    write_blockset(path, [random_problem(3, 1, seed=1), block])
    manifest = tmp_path / "m.json"
    device = RecordingDevice()
    argv = ["submit", str(path), "--device", ARIA, "--shots", "20", "--p", "1",
            "--sub-block", "4", "--manifest", str(manifest)]
    from qcbo.cli import build_parser
    from qcbo.commands import submit as submit_cmd

    assert submit_cmd.run(build_parser().parse_args(argv + ["--yes"]), device=device) == 0
    data = load_manifest(manifest)
    assert data["version"] == 2 and data["sub_block"] == 4
    # 4 sub-blocks cover the 14 variables; one holds only zeros of x0 (k = 0: a single
    # feasible state), so it gets no task
    assert [e["block"] for e in data["blocks"]] == [0, 1, 1, 1]
    assert data["blocks"][0]["variables"] is None
    parent = data["parents"][0]
    assert parent["index"] == 1 and parent["classical"]["x"] == x0.tolist()
    assert parent["classical"]["source"] == "block answer" and parent["tasks"] == [1, 2, 3]
    for e in data["blocks"][1:]:
        assert 0 < x0[e["variables"]].sum() < len(e["variables"]) <= 4
    left = set(range(14)) - {v for e in data["blocks"][1:] for v in e["variables"]}
    assert 0 < len(left) <= 4 and x0[sorted(left)].sum() in (0, len(left))
    assert device.runs == 4
    # resubmitting finds every task in the manifest and submits nothing
    assert submit_cmd.run(build_parser().parse_args(argv + ["--yes"]), device=device) == 0
    assert device.runs == 4
    assert load_manifest(manifest)["parents"] == data["parents"]

    # fake results: each sub-block task returns its own optimum, 3 shots
    tasks = {}
    for entry in data["blocks"]:
        if entry["variables"] is None:
            tasks[entry["task_arn"]] = _Task([[1, 0, 0]] * 3)
            continue
        sub = restrict(block, x0, np.array(entry["variables"]))
        tasks[entry["task_arn"]] = _Task([_brute(sub)] * 3)
    out = tmp_path / "r.json"
    summary = collect_results(manifest, [random_problem(3, 1, seed=1), block],
                              lambda arn: tasks[arn], out)
    (stitched,) = summary["blocks"]
    x = np.array(stitched["x"])
    assert stitched["classical_energy"] == pytest.approx(block.energy(x0))
    assert stitched["energy"] == pytest.approx(block.energy(x)) and block.is_feasible(x)
    assert stitched["improvement"] == pytest.approx(block.energy(x0) - block.energy(x))
    assert stitched["improvement"] > 0 and stitched["kept"] >= 1
    assert stitched["collected"] == 3 and stitched["sub_blocks"] == 3
    assert json.loads(out.read_text())["blocks"][0]["x"] == stitched["x"]
    # the CLI prints the stitched block with its improvement
    capsys.readouterr()
    args = build_parser().parse_args(["collect", str(manifest)])
    assert collect_cmd.run(args, load_task=lambda arn: tasks[arn]) == 0
    text = capsys.readouterr().out
    assert "block 2 sub-block 3: energy" in text and "improvement" in text


def test_single_state_blocks_get_no_task(tmp_path, capsys, offline):
    """k = 0 or k = n: one feasible state, answered without a device task (and not priced);
    a source of only such blocks has nothing to submit."""
    target = snapshot_target(ARIA)
    plan = plan_submission([_block(40, 0, 1), _block(8, 8, 2), _block(8, 3, 3)], target,
                           shots=100, p=1, classical_time=0.2)
    assert [len(b.tasks) for b in plan.blocks] == [0, 0, 1]
    assert plan.blocks[0].classical.tolist() == [0] * 40
    assert plan.blocks[1].classical.tolist() == [1] * 8
    assert plan.cost() == pytest.approx(target.price.per_task + 100 * target.price.per_shot)
    assert "one feasible state" in format_submission_plan(plan)
    path = tmp_path / "zero.npz"
    write_blockset(path, [_block(40, 0, 1), _block(8, 8, 2)])
    capsys.readouterr()
    assert main(["submit", str(path), "--device", ARIA, "--shots", "100", "--plan-only"]) == 0
    out, err = capsys.readouterr()
    assert "0 tasks: nothing to submit" in out and "nothing to submit" in err
    assert not (tmp_path / "zero.braket-manifest.json").exists()
    # beside a block that needs a task: submitted, and collect returns the single state
    from qcbo.cli import build_parser
    from qcbo.commands import submit as submit_cmd

    from .test_braket_device import RecordingDevice

    small = random_problem(3, 1, seed=1)
    write_blockset(path, [_block(40, 0, 1), small])
    manifest, device = tmp_path / "m.json", RecordingDevice()
    args = build_parser().parse_args(["submit", str(path), "--device", ARIA, "--shots", "5",
                                      "--p", "1", "--manifest", str(manifest), "--yes"])
    assert submit_cmd.run(args, device=device) == 0 and device.runs == 1
    data = load_manifest(manifest)
    assert [e["block"] for e in data["blocks"]] == [1]
    assert data["parents"][0]["index"] == 0 and data["parents"][0]["tasks"] == []
    tasks = {e["task_arn"]: _Task([[1, 0, 0]] * 3) for e in data["blocks"]}
    summary = collect_results(manifest, [_block(40, 0, 1), small], lambda arn: tasks[arn],
                              tmp_path / "r.json")
    (single,) = summary["blocks"]
    assert single["x"] == [0] * 40 and single["feasible"] and single["sub_blocks"] == 0


def test_restrict_with_qx_matches_restrict():
    problem = _block(40, 15, 9)
    rng = np.random.default_rng(0)
    x = np.zeros(40, dtype=np.int8)
    x[rng.choice(40, 15, replace=False)] = 1
    idx = np.sort(rng.choice(40, 9, replace=False))
    plain = restrict(problem, x, idx)
    fast = restrict(problem, x, idx, qx=problem.Q @ x.astype(float))
    assert fast.k == plain.k
    assert np.allclose(fast.Q, plain.Q, atol=1e-12) and fast.offset == pytest.approx(plain.offset)


def test_unreachable_endpoint_is_one_line(tmp_path, capsys, monkeypatch, dummy_credentials):
    """The real boto3 / Braket path against a closed local port (never AWS): one line."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    path = tmp_path / "blocks.npz"
    write_blockset(path, [random_problem(5, 2, seed=0)])
    line = _one_line(capsys, ["submit", path, "--device", ARIA, "--shots", "10"])
    assert "cannot reach AWS" in line and "127.0.0.1:9" in line


def test_snapshot_prices_agree_with_the_price_table():
    from backends.braket_device import estimate_cost

    for target in snapshots():
        cost = estimate_cost(target.arn, 1, 1000)
        assert cost["known"], target.arn
        assert cost["per_task"] == target.price.per_task
        assert cost["per_shot"] == target.price.per_shot
        assert cost["priced_on"] == target.priced_on


@pytest.mark.parametrize("change", [
    {"parents": "x"}, {"parents": [{"index": 0, "n": 4, "fingerprint": "f",
                                    "classical": {"x": [0, 1]}}]},
    {"variables": "0,1"}, {"variables": [0, 1]}, {"block": -1}, {"block": 5},
    {"variables": [0, 9], "parents": [{"index": 0, "n": 4, "fingerprint": "f",
                                       "classical": {"x": [1, 1, 0, 0]}, "tasks": [0]}]},
])
def test_corrupt_sub_block_manifests_are_one_line(tmp_path, capsys, offline, change):
    path = tmp_path / "blocks.npz"
    write_blockset(path, [random_problem(4, 2, seed=0)])
    entry = {"index": 0, "block": 0, "variables": None, "fingerprint": "f", "task_arn": None}
    data = {"format": "qcbo.braket-manifest", "version": 2, "device": ARIA, "shots": 10,
            "source": {"path": str(path), "k": None, "instance": None}, "blocks": [entry],
            "parents": []}
    for key, value in change.items():
        (data if key == "parents" else entry)[key] = value
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(data))
    _one_line(capsys, ["collect", manifest])
    assert not (tmp_path / "m.results.json").exists()


def test_plan_blocks_checks_every_size_before_training(monkeypatch):
    import backends.braket_device as bd

    def no_training(*args, **kwargs):
        raise AssertionError("trained before the size check")

    monkeypatch.setattr(bd, "train_angles", no_training)
    info = snapshot_target(ARIA).info
    with pytest.raises(UnsupportedProblemError, match="block 2 needs 26 qubits.*--sub-block"):
        bd.plan_blocks([random_problem(4, 2, seed=0), random_problem(26, 13, seed=1)], info)
