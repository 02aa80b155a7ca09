"""backends.compare and `qcbo compare`: references, gaps, skips, files."""

import json

import numpy as np
import pytest

from backends.compare import GAP_FLOOR, compare, format_table, relative_gap
from qcbo import InputError, Problem
from qcbo.cli import main
from qcbo.io import write_problem

from .helpers import brute_force, random_problem

#: Short runs keep this file fast; the behaviour under test does not depend on length.
QUICK = {"dwave-tabu": {"num_reads": 1, "timeout_ms": 20}}


def test_relative_gap_is_robust_for_zero_and_negative_references():
    assert relative_gap(-9.0, -10.0) == pytest.approx(0.1)
    assert relative_gap(11.0, 10.0) == pytest.approx(0.1)
    assert relative_gap(1e-12, 0.0) == pytest.approx(1e-3)
    assert relative_gap(-10.0, -10.0) == 0.0
    assert relative_gap(5.0, 0.0) == pytest.approx(5.0 / GAP_FLOOR)


def test_reference_is_the_proven_optimum_and_everyone_is_scored_against_it():
    problems = [random_problem(8, 4, seed=s) for s in range(3)]
    report = compare(problems, ["exact", "dwave-tabu"], seeds=2, options=QUICK)
    for problem, row in zip(problems, report["problems"]):
        best, _ = brute_force(problem)
        assert row["reference"] == pytest.approx(best)
        assert row["reference_proven"] is True
        assert all(r["gap"] >= -1e-12 for rs in row["runs"].values() for r in rs)
    exact = report["summary"]["exact"]
    assert exact["runs"] == 6 and exact["proven_optimal"] == 6
    assert exact["reached_fraction"] == 1.0 and exact["feasible_rate"] == 1.0
    assert exact["worst_gap"] == pytest.approx(0.0, abs=1e-12)
    assert exact["median_wall_s"] > 0
    assert "exact" in format_table(report)


def test_unsupported_problem_is_skipped_with_the_reason():
    big = random_problem(40, 20, seed=0)  # C(40, 20) ~ 1.4e11: too many for exact
    report = compare([random_problem(6, 3, seed=1), big], ["exact", "dwave-tabu"],
                     time_limit=0.2, options=QUICK)
    exact = report["summary"]["exact"]
    assert exact["runs"] == 1
    assert len(exact["skipped"]) == 1 and "exact" in exact["skipped"][0]["reason"]
    assert report["problems"][1]["reference_from"] == "dwave-tabu"
    assert report["summary"]["dwave-tabu"]["runs"] == 2


def test_lower_best_known_becomes_the_reference():
    problem = random_problem(6, 3, seed=2)
    best, _ = brute_force(problem)
    tagged = problem.replace(metadata={"name": "p", "best_known": best - 1.0})
    report = compare([tagged], ["exact"])
    row = report["problems"][0]
    assert row["reference"] == best - 1.0 and row["reference_from"] == "best_known"
    assert row["reference_proven"] is False
    assert report["summary"]["exact"]["reached_fraction"] == 0.0
    assert row["runs"]["exact"][0]["gap"] == pytest.approx(1.0 / abs(best - 1.0))


def test_infeasible_answers_count_against_feasibility_not_gap():
    problem = Problem(-np.eye(6) - 0.1 * (np.ones((6, 6)) - np.eye(6)), 0.0, 2)
    report = compare([problem], ["exact", "dwave-sa"], options={"dwave-sa": {"penalty": 0.0, "num_reads": 5,
                                                                  "num_sweeps": 100}})
    sa = report["summary"]["dwave-sa"]
    assert sa["feasible_rate"] == 0.0 and sa["mean_gap"] is None
    assert sa["reached_fraction"] == 0.0


def test_bad_arguments_are_input_errors():
    with pytest.raises(InputError):
        compare([], ["exact"])
    with pytest.raises(InputError):
        compare([random_problem(4, 2, seed=0)], ["exact"], options={"sa": {}})


def test_cli_writes_report_and_plot(tmp_path, capsys):
    paths = []
    for s in range(2):
        path = tmp_path / f"p{s}.npz"
        write_problem(path, random_problem(7, 3, seed=s))
        paths.append(str(path))
    out = tmp_path / "out"
    code = main(["compare", *paths, "--backends", "exact,dwave-tabu", "--seeds", "2",
                 "-o", "dwave-tabu.num_reads=1", "-o", "dwave-tabu.timeout_ms=20",
                 "--out", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert [row["name"] for row in report["problems"]] == ["p0.npz", "p1.npz"]
    assert report["summary"]["exact"]["reached_fraction"] == 1.0
    assert (out / "gap_vs_time.png").read_bytes()[:4] == b"\x89PNG"
    assert "dwave-tabu" in capsys.readouterr().out


def test_cli_unknown_backend_fails_cleanly_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "p.npz"
    write_problem(path, random_problem(5, 2, seed=0))
    out = tmp_path / "out"
    code = main(["compare", str(path), "--backends", "exact,no-such", "--out", str(out)])
    assert code == 2
    assert "no-such" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("argv,match", [
    (["--backends", "exact", "-o", "exact.bogus=1"], "unknown option(s) 'bogus'"),
    (["--backends", "exact,dwave-tabu", "-o", "dwave-tabu.num_reads=0"], "num_reads must be"),
    (["--backends", "exact", "--workers", "2"], "--workers 2 needs --executor"),
])
def test_cli_bad_options_are_refused_before_any_solve(tmp_path, capsys, argv, match):
    path = tmp_path / "p.npz"
    write_problem(path, random_problem(5, 2, seed=0))
    out = tmp_path / "out"
    code = main(["compare", str(path), *argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and match in err, err  # no progress bar first
    assert not out.exists()


def test_cli_refuses_when_no_backend_takes_any_problem(tmp_path, capsys):
    path = tmp_path / "p.npz"
    write_problem(path, random_problem(40, 20, seed=0))  # too many states for exact
    out = tmp_path / "out"
    code = main(["compare", str(path), "--backends", "exact", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "no backend takes any of the problems" in err and "exact" in err
    assert not out.exists()


def test_out_of_memory_is_one_failed_run_not_the_end_of_the_comparison(monkeypatch):
    from backends import backend_class

    exact = backend_class("exact")
    solve = exact._solve

    def short_of_memory(self, problem, **kwargs):
        if problem.n == 7:
            raise MemoryError("Unable to allocate 1.00 TiB")
        return solve(self, problem, **kwargs)

    monkeypatch.setattr(exact, "_solve", short_of_memory)
    report = compare([random_problem(6, 3, seed=0), random_problem(7, 3, seed=1)], ["exact"],
                     warm_up=False)
    runs = [row["runs"]["exact"][0] for row in report["problems"]]
    assert runs[0]["status"] == "optimal"
    assert runs[1]["status"] == "failed" and "out of memory" in runs[1]["reason"]
