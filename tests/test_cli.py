"""The `qcbo` CLI: solve/convert/info/backends, JSON output, exit codes, no heavy imports."""

import json
import subprocess
import sys

import numpy as np
import pytest

from qcbo.cli import main
from qcbo.io import read_problem, write_native

from .conftest import ROOT
from .helpers import random_problem


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def ubqp(tmp_path):
    # minimise: -x1 - 2 x2 + 3 x3 - 1.0 x1 x2 (pair 1 2 -0.5 counts twice)
    path = tmp_path / "hand.ubqp"
    path.write_text("3 4\n1 1 -1\n2 2 -2\n3 3 3\n1 2 -0.5\n")
    return path


@pytest.fixture
def orlib(tmp_path):
    # two instances, MAXIMISE; instance 2: max at x = (1, 0) with value 3
    path = tmp_path / "tiny.txt"
    path.write_text("2\n3 2\n1 1 5\n2 3 4\n2 3\n1 1 3\n1 2 -2\n2 2 1\n")
    return path


def test_solve_ubqp_json(capsys, ubqp):
    code, out, err = _run(capsys, "solve", str(ubqp), "--backend", "exact", "--json", "--seed", "3")
    assert code == 0, err
    result = json.loads(out)  # exactly one JSON object
    assert result["energy"] == -4.0 and result["x"] == [1, 1, 0]
    assert result["status"] == "optimal" and result["feasible"] is True
    assert result["backend"] == "exact" and result["seed"] == 3
    assert {"wall_time_s", "info"} <= set(result)


def test_solve_ubqp_with_k(capsys, ubqp):
    code, out, _ = _run(capsys, "solve", str(ubqp), "--k", "1", "--backend", "exact", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["energy"] == -2.0 and result["x"] == [0, 1, 0]


def test_solve_orlib_instance(capsys, orlib):
    code, out, _ = _run(capsys, "solve", str(orlib), "--instance", "2", "--backend", "exact", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["energy"] == -3.0 and result["x"] == [1, 0]
    code, out, _ = _run(capsys, "solve", str(orlib), "--instance", "1", "--backend", "exact", "--json")
    assert json.loads(out)["energy"] == -13.0


def test_solve_writes_result_file(capsys, ubqp, tmp_path):
    out_file = tmp_path / "res.json"
    code, out, _ = _run(capsys, "solve", str(ubqp), "--backend", "exact", "--out", str(out_file))
    assert code == 0 and "energy -4" in out
    assert json.loads(out_file.read_text())["energy"] == -4.0


@pytest.mark.parametrize(
    "argv,match",
    [
        (["solve", "MISSING.npz", "--backend", "exact"], "no such file"),
        (["solve", "{orlib}", "--backend", "exact"], "choose one with --instance"),
        (["solve", "{orlib}", "--instance", "9", "--backend", "exact"], "out of range"),
        (["solve", "{ubqp}", "--backend", "nope"], "unknown backend"),
        (["solve", "{ubqp}", "--k", "7", "--backend", "exact"], "out of range"),
        (["solve", "{ubqp}", "--backend", "exact", "-o", "bogus=1"], "unknown option"),
        (["info", "{bad}"], "not finite"),
    ],
)
def test_bad_input_exit_code_2_one_line(capsys, tmp_path, ubqp, orlib, argv, match):
    bad = tmp_path / "bad.ubqp"
    bad.write_text("2 1\n1 1 inf\n")
    argv = [a.format(orlib=orlib, ubqp=ubqp, bad=bad) for a in argv]
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert match in err and err.count("\n") == 1 and "Traceback" not in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["solve"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["solve", "x.npz", "--time-limit", "-1"])
    assert info.value.code == 2


def test_convert_and_info(capsys, tmp_path, orlib):
    out = tmp_path / "all.npz"
    code, _, err = _run(capsys, "convert", str(orlib), str(out))
    assert code == 0, err
    code, text, _ = _run(capsys, "info", str(out), "--json")
    rows = [json.loads(line) for line in text.splitlines()]
    assert [r["n"] for r in rows] == [3, 2]
    assert rows[1]["metadata"]["name"] == "tiny.2"
    single = tmp_path / "one.ubqp"
    code, _, _ = _run(capsys, "convert", str(out), str(single), "--instance", "2")
    assert code == 0
    assert np.array_equal(read_problem(single).Q, read_problem(orlib, instance=2).Q)


def test_out_through_a_symlink_writes_its_target(capsys, ubqp, tmp_path):
    target = tmp_path / "target.json"
    target.write_text("old\n")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    code, _, err = _run(capsys, "solve", str(ubqp), "--backend", "exact", "--out", str(link))
    assert code == 0, err
    assert link.is_symlink() and json.loads(target.read_text())["energy"] == -4.0


def test_convert_through_a_symlink_takes_the_format_of_the_typed_name(capsys, ubqp, tmp_path):
    # content-addressed stores (DVC, git-annex) link a named file to an object without
    # an extension: the format comes from the name typed, the bytes go to the object
    store = tmp_path / "objects"
    store.mkdir()
    target = store / "1234abcd"
    target.write_text("old\n")
    link = tmp_path / "out.npz"
    link.symlink_to(target)
    code, _, err = _run(capsys, "convert", str(ubqp), str(link))
    assert code == 0, err
    assert link.is_symlink() and target.read_bytes()[:2] == b"PK"  # an .npz (zip)
    assert np.array_equal(read_problem(link).Q, read_problem(ubqp).Q)
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop)
    code, _, err = _run(capsys, "solve", str(ubqp), "--backend", "exact", "--out", str(loop))
    assert code == 2 and "does not resolve" in err and err.count("\n") == 1


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no FIFOs here")
def test_out_refuses_a_fifo(capsys, ubqp, tmp_path):
    import os
    import stat

    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    code, _, err = _run(capsys, "solve", str(ubqp), "--backend", "exact", "--out", str(fifo))
    assert code == 2 and "not a regular file" in err and err.count("\n") == 1
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # still a FIFO, not replaced by a file


def test_failed_solve_leaves_out_as_it_was(capsys, ubqp, tmp_path, monkeypatch):
    import backends
    from backends.base import Backend, RawSolution

    class NoAnswer(Backend):
        name = "no-answer"
        options = {}

        def _solve(self, problem, *, seed, time_limit):
            return RawSolution(None, info={"reason": "gave up"})

    monkeypatch.setattr(backends, "get_backend", lambda name: NoAnswer())
    out_file = tmp_path / "res.json"
    out_file.write_text("earlier result\n")
    code, _, err = _run(capsys, "solve", str(ubqp), "--backend", "exact", "--out", str(out_file))
    assert code == 1 and "gave up" in err and "not written" in err
    assert out_file.read_text() == "earlier result\n"


def test_convert_refuses_to_overwrite_input(capsys, tmp_path):
    path = tmp_path / "p.npz"
    write_native(path, random_problem(3, 1, seed=0))
    code, _, err = _run(capsys, "convert", str(path), str(path))
    assert code == 2 and "overwrite" in err


def test_backends_lists_registry(capsys):
    code, out, _ = _run(capsys, "backends", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["exact"]["available"] and "max_seconds" in rows["exact"]["options"]
    assert {"cpsat", "sa", "tabu", "braket-local", "qaoa-qiskit"} <= set(rows)


def test_help_imports_no_heavy_packages():
    code = (
        "import sys; from qcbo.cli import build_parser; build_parser().format_help();"
        "heavy = [m for m in ('torch', 'qiskit', 'braket', 'ortools', 'dimod', 'numba') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_module_entry_point(tmp_path, ubqp):
    out = subprocess.run([sys.executable, "-m", "qcbo", "solve", str(ubqp), "--backend", "exact", "--json"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["energy"] == -4.0
