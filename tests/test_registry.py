"""The backend registry and the shared Backend.solve contract."""

import os

import numpy as np
import pytest

import backends
from backends import BACKENDS, BackendSpec, available_backends, get_backend, solve
from backends.base import Backend, Option, RawSolution, child_seeds
from qcbo import BackendUnavailableError, InputError, SolverError

from .helpers import random_problem


def test_exact_is_always_available():
    assert "exact" in available_backends()
    assert solve(random_problem(5, 2, seed=0), "exact", seed=0).status == "optimal"


def test_unknown_backend_names_the_choices():
    with pytest.raises(BackendUnavailableError, match="unknown backend 'nope'.*exact"):
        get_backend("nope")


def test_missing_package_says_what_to_install(monkeypatch):
    spec = BackendSpec("ghost", "backends.ghost:Ghost", ("no_such_package_xyz",), "ghost-extra")
    monkeypatch.setitem(BACKENDS, "ghost", spec)
    assert "ghost" not in available_backends()
    with pytest.raises(BackendUnavailableError, match="pip install ghost-extra"):
        get_backend("ghost")


class _Crashing(Backend):
    name = "crashing"
    options = {"mode": Option(str, "crash", "crash, memory, infeasible, garbage or ok",
                              choices=("crash", "memory", "infeasible", "garbage", "ok"))}

    def _solve(self, problem, *, seed, time_limit, mode):
        if mode == "crash":
            raise RuntimeError("segfault-ish")
        if mode == "memory":  # what numpy raises for an array that options made too large
            raise MemoryError("Unable to allocate 7.28 TiB")
        if mode == "garbage":
            return RawSolution(np.array([2, 0, 7]))
        x = np.ones(problem.n, dtype=np.int8)
        return RawSolution(x, proven_optimal=True)


def test_solver_exceptions_become_solver_error():
    with pytest.raises(SolverError, match="crashing: RuntimeError: segfault-ish"):
        _Crashing().solve(random_problem(3, 1, seed=0), seed=0)


def test_out_of_memory_is_the_users_to_fix():
    with pytest.raises(InputError, match="crashing: out of memory .*7.28 TiB.*lower the options"):
        _Crashing().solve(random_problem(3, 1, seed=0), seed=0, mode="memory")


def test_proven_but_infeasible_answer_is_flagged():
    result = _Crashing().solve(random_problem(3, 1, seed=0), seed=0, mode="infeasible")
    assert result.status == "infeasible" and not result.feasible


def test_seed_is_drawn_and_recorded_when_not_given():
    result = _Crashing().solve(random_problem(3, None, seed=0), mode="ok")
    assert isinstance(result.seed, int) and result.seed >= 0
    # A fresh seed per call, and the recorded one reproduces the answer.
    sa = get_backend("sa")
    problem = random_problem(200, 100, seed=5)
    runs = [sa.solve(problem, sweeps=1, restarts=1) for _ in range(4)]
    assert len({r.seed for r in runs}) == 4
    again = sa.solve(problem, seed=runs[0].seed, sweeps=1, restarts=1)
    assert np.array_equal(again.x, runs[0].x)


def test_time_limit_must_be_positive():
    with pytest.raises(InputError, match="time_limit"):
        get_backend("exact").solve(random_problem(3, 1, seed=0), time_limit=0)


def test_child_seeds_are_reproducible_and_distinct():
    a, b = child_seeds(7, 5), child_seeds(7, 5)
    assert a == b and len(set(a)) == 5


def test_registry_lines_name_real_modules_when_available():
    for name in available_backends():
        cls = backends.backend_class(name)
        assert cls.name == name


def test_malformed_answer_is_a_solver_error():
    with pytest.raises(SolverError, match="crashing: returned an assignment"):
        _Crashing().solve(random_problem(3, 1, seed=0), seed=0, mode="garbage")


def test_option_values_are_checked_against_their_declaration():
    with pytest.raises(InputError, match="option mode must be one of crash, memory, infeasible"):
        _Crashing().solve(random_problem(3, 1, seed=0), seed=0, mode="explode")


@pytest.mark.parametrize("option,good,converted", [
    (Option(int, 5, "h", minimum=1), 3.0, 3),
    (Option(float, 0.5, "h", greater_than=0), 2, 2.0),
    (Option(bool, False, "h"), True, True),
    (Option(int, None, "h", minimum=0), None, None),
    (Option(tuple, None, "h", length=2, greater_than=0), [0.1, 3], (0.1, 3.0)),
])
def test_option_conversion(option, good, converted):
    assert option.validate(good, random_problem(3, None, seed=0)) == converted


@pytest.mark.parametrize("option,bad", [
    (Option(int, 5, "h", minimum=1), "abc"),
    (Option(int, 5, "h", minimum=1), 0),
    (Option(int, 5, "h", minimum=1), 2.5),
    (Option(int, 5, "h", minimum=1), True),
    (Option(int, 5, "h", minimum=1), None),
    (Option(float, 0.5, "h", greater_than=0), 0.0),
    (Option(float, 0.5, "h"), float("nan")),
    (Option(bool, False, "h"), "yes"),
    (Option(str, "a", "h", choices=("a", "b")), "c"),
    (Option(tuple, None, "h", length=2), [1.0]),
    (Option(dict, None, "h"), [1, 2]),
])
def test_option_rejects(option, bad):
    with pytest.raises(ValueError):
        option.validate(bad, random_problem(3, None, seed=0))


def test_unknown_option_is_an_input_error_subclass():
    from qcbo.errors import UnknownOptionError

    with pytest.raises(UnknownOptionError, match="unknown option.*bogus.*known options: mode"):
        _Crashing().solve(random_problem(3, 1, seed=0), seed=0, bogus=1)
    assert issubclass(UnknownOptionError, InputError)


def test_numba_cache_falls_back_to_a_temporary_folder(tmp_path):
    pytest.importorskip("numba")
    from backends._kernels import _cache_fallback

    assert _cache_fallback([tmp_path]) is None
    unwritable = [tmp_path / "file" / "sub", tmp_path / "file2" / "sub"]
    (tmp_path / "file").write_text("x")
    (tmp_path / "file2").write_text("x")
    folder = _cache_fallback(unwritable)
    assert folder is not None and os.access(folder, os.W_OK)
